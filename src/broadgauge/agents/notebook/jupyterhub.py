"""The notebook backend of a real JupyterHub, through its REST API (``<url>hub/api/...``).

The agent is a hub *service* whose token holds the scopes ``docs/operators/notebooks.md``
lists.  The rules, and why:

* Idempotence comes from the hub's own answers, read precisely: 409 on creating a user or
  group means it exists, 404 on deleting or reading one means it is gone.  A 404 counts only
  when it is the hub API's JSON error: an HTML 404 means the URL is not a hub, and treating
  that as "already gone" would make every removal silently succeed against the wrong host.
* Membership is read before it is changed, so that ``audit`` records only real changes.
* Starting polls the user model until ``servers[""]`` is ready, within ``spawn_timeout``.  A
  spawn that fails leaves no server; the hub's reason is then read from the spawn's progress
  stream, the only place the API gives it.  A 5xx answer to the start itself is not final:
  JupyterHub 6.1 answers 500 (an ``InvalidStateError`` inside the hub) when the server
  process dies before its spawn resolves, so the outcome is read from the hub afterwards.
* Blocking joins :data:`BLOCKED_GROUP` *before* stopping the servers, so that the hub's
  ``pre_spawn_hook`` already refuses a restart racing with the stop.
* Names are URL-quoted as one path segment.  Names the API cannot address (empty, ``.``,
  ``..``, or holding ``/``, which the hub's routes never match) are refused before any
  request: httpx would resolve dot segments into another endpoint.
* The token is sent by an :class:`httpx.Auth` whose repr hides it; every message built from
  a hub answer or a transport error is scrubbed of it too.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import json
import logging
import time
from collections.abc import Callable, Generator
from typing import Any
from urllib.parse import quote, urljoin

import httpx

from .backend import BLOCKED_GROUP, NotebookError, Server

__all__ = ["JupyterHubBackend"]

log = logging.getLogger(__name__)

_PAGINATION = "application/jupyterhub-pagination+json"
_POLL = 0.5
_PAGE = 200


class _TokenAuth(httpx.Auth):
    """``Authorization: token ...`` on every request, kept out of reprs and tracebacks."""

    def __init__(self, token: str) -> None:
        self._token = token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"token {self._token}"
        yield request

    def __repr__(self) -> str:
        return "_TokenAuth(<hidden>)"


class JupyterHubBackend:
    """Hub users, groups and servers of one JupyterHub (see the module docstring)."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        timeout: float = 30.0,
        spawn_timeout: float = 120.0,
        audit: Callable[[str, str], None] | None = None,
    ) -> None:
        self.url = url if url.endswith("/") else url + "/"
        self._api = self.url + "hub/api/"
        self._token = token
        self._spawn_timeout = spawn_timeout
        self._audit = audit
        self._client = httpx.AsyncClient(
            auth=_TokenAuth(token), timeout=timeout, follow_redirects=False
        )

    def __repr__(self) -> str:
        return f"JupyterHubBackend({self.url!r})"

    # ---- NotebookBackend -------------------------------------------------------------

    async def add_group(self, group: str) -> None:
        """Create the group (idempotent)."""
        await self._change("POST", f"groups/{_segment(group)}", f"add group {group}")

    async def remove_group(self, group: str) -> None:
        """Delete the group (idempotent; its users are kept)."""
        await self._change("DELETE", f"groups/{_segment(group)}", f"remove group {group}")

    async def groups(self) -> list[str]:
        """Every group on the hub, sorted."""
        return sorted(
            self._str(item, "name", "list groups")
            for item in await self._list("groups", {}, "list groups")
        )

    async def group_members(self, group: str) -> list[str] | None:
        """The hub users in ``group``, sorted; None when there is no such group."""
        what = f"read group {group}"
        model = await self._read(f"groups/{_segment(group)}", what)
        return None if model is None else sorted(self._strings(model, "users", what))

    async def add_user(self, user: str, group: str) -> None:
        """Create the hub user if missing and add it to ``group`` (which must exist)."""
        quoted = _segment(user)  # a name the hub cannot address is refused before any change
        members = await self.group_members(group)
        if members is None:
            raise NotebookError(f"cannot add hub user {user} to group {group}: no such group")
        await self._change("POST", f"users/{quoted}", f"add user {user}")
        if user not in members:
            await self._members("POST", user, group, f"add user {user} to group {group}")

    async def remove_user(self, user: str) -> None:
        """Stop the user's servers and delete the hub user (idempotent)."""
        model = await self._user(user)
        if model is None:
            return
        await self._stop_all(user, model)
        await self._change("DELETE", f"users/{_segment(user)}", f"remove user {user}")

    async def user_exists(self, user: str) -> bool:
        """Whether the hub has ``user``."""
        return await self._user(user) is not None

    async def set_blocked(self, user: str, blocked: bool) -> None:
        """Block (join :data:`BLOCKED_GROUP`, stop every server) or unblock (leave it).

        Blocking an unknown user is a :class:`NotebookError`; unblocking one does nothing.
        """
        model = await self._user(user)
        if model is None:
            if blocked:
                raise NotebookError(f"cannot block hub user {user}: no such user")
            return
        member = BLOCKED_GROUP in self._strings(model, "groups", f"read user {user}")
        if not blocked:
            if member:
                await self._members("DELETE", user, BLOCKED_GROUP, f"unblock user {user}")
            return
        await self.add_group(BLOCKED_GROUP)
        if not member:
            await self._members("POST", user, BLOCKED_GROUP, f"block user {user}")
        # Read again now that the hook refuses new spawns, so that one begun meanwhile is
        # stopped too; and stop even when already blocked: no server may outlive a block.
        model = await self._user(user)
        if model is not None:
            await self._stop_all(user, model)

    async def is_blocked(self, user: str) -> bool:
        """Whether ``user`` is in :data:`BLOCKED_GROUP` (False for an unknown user)."""
        model = await self._user(user)
        return model is not None and BLOCKED_GROUP in self._strings(model, "groups", "read user")

    async def start_server(self, user: str) -> Server:
        """Start the user's default server and wait until it is ready; return it."""
        what = f"start the server of {user}"
        model = await self._user(user)
        if model is None:
            raise NotebookError(f"cannot start a server for hub user {user}: no such user")
        if BLOCKED_GROUP in self._strings(model, "groups", what):
            raise NotebookError(f"cannot start a server for hub user {user}: user is blocked")
        current = self._servers(model, what).get("")
        if current is not None and current.get("ready") is True:
            return self._server(user, model, current, what)
        if current is not None and current.get("pending") == "stop":
            await self._wait_stopped(user, "")
            current = None
        hub_message, ours = "", current is None
        if ours:
            response = await self._request("POST", f"users/{_segment(user)}/server", what)
            code = response.status_code
            running = code == 400 and "already running" in self._message(response)
            if code >= 500:
                hub_message = f"HTTP {code}: {self._message(response)}"
            elif self._is_hub_error(response, 404):
                raise NotebookError(f"cannot start a server for hub user {user}: no such user")
            elif code not in (201, 202) and not running:
                raise self._unexpected(response, what)
        deadline = time.monotonic() + self._spawn_timeout
        while True:
            model = await self._user(user)
            server = None if model is None else self._servers(model, what).get("")
            if model is None or server is None:
                reason = await self._spawn_failure(user) or hub_message
                raise NotebookError(
                    f"JupyterHub at {self.url} could not {what}: "
                    + (reason or "the server stopped while starting (see the hub's log)")
                )
            if server.get("ready") is True:
                if ours:
                    self._record(what)
                return self._server(user, model, server, what)
            if time.monotonic() >= deadline:
                raise NotebookError(
                    f"JupyterHub at {self.url} could not {what}: "
                    f"not ready after {self._spawn_timeout:g} s"
                )
            await asyncio.sleep(_POLL)

    async def stop_server(self, user: str) -> None:
        """Stop the user's default server and wait until it is gone (idempotent)."""
        model = await self._user(user)
        if model is not None and self._servers(model, f"read user {user}").get("") is not None:
            await self._stop(user, "")

    async def servers(self) -> list[Server]:
        """Every running or starting default server on the hub, sorted by user."""
        what = "list active servers"
        result = []
        for model in await self._list("users", {"state": "active"}, what):
            server = self._servers(model, what).get("")
            if server is not None:
                result.append(self._server(self._str(model, "name", what), model, server, what))
        return sorted(result, key=lambda server: server.user)

    async def close(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()

    # ---- helpers ---------------------------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        operation: str,
        *,
        body: Any = None,
        params: dict[str, str | int] | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        try:
            response = await self._client.request(
                method, self._api + path, json=body, params=params, headers=headers
            )
        except httpx.TimeoutException:
            raise NotebookError(
                f"JupyterHub at {self.url} cannot be reached: timed out during {operation}"
            ) from None
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            # from None: the cause is in the message, and the chained exception holds the
            # request, whose headers hold the token, for whatever renders the traceback.
            cause = self._scrub(str(exc)) or type(exc).__name__
            raise NotebookError(f"JupyterHub at {self.url} cannot be reached: {cause}") from None
        if response.status_code in (401, 403):
            raise NotebookError(
                f"JupyterHub at {self.url} refused the API token for {operation} "
                f"(HTTP {response.status_code}: {self._message(response)})"
            )
        return response

    async def _read(self, path: str, what: str) -> dict[str, Any] | None:
        """A user or group model; None for the hub's 404."""
        response = await self._request("GET", path, what)
        if self._is_hub_error(response, 404):
            return None
        if response.status_code != 200:
            raise self._unexpected(response, what)
        data = self._json(response, what)
        if not isinstance(data, dict):
            raise self._malformed(what)
        return data

    async def _user(self, user: str) -> dict[str, Any] | None:
        return await self._read(f"users/{_segment(user)}", f"read user {user}")

    async def _change(self, method: str, path: str, what: str) -> None:
        """Create (POST: 201, or 409 if it exists) or delete (DELETE: 204, or 404 if gone)."""
        response = await self._request(method, path, what)
        if response.status_code in (201, 204):
            self._record(what)
        elif not self._is_hub_error(response, 409 if method == "POST" else 404):
            raise self._unexpected(response, what)

    async def _members(self, method: str, user: str, group: str, what: str) -> None:
        path = f"groups/{_segment(group)}/users"
        response = await self._request(method, path, what, body={"users": [user]})
        if self._is_hub_error(response, 404):
            raise NotebookError(f"JupyterHub at {self.url} could not {what}: no such group")
        if response.status_code != 200:
            raise self._unexpected(response, what)
        self._record(what)

    async def _list(
        self, path: str, params: dict[str, str | int], what: str
    ) -> list[dict[str, Any]]:
        """Every item of a collection, page by page where the hub paginates (JupyterHub 2+).

        The next page is asked with our own URL and the answer's offset: the ``next.url``
        the hub writes is built from its own view of the request, which behind a proxy may
        be an address we cannot reach.
        """
        items: list[dict[str, Any]] = []
        offset = 0
        while True:
            query = {**params, "offset": offset, "limit": _PAGE}
            response = await self._request(
                "GET", path, what, params=query, headers={"Accept": _PAGINATION}
            )
            if response.status_code != 200:
                raise self._unexpected(response, what)
            data = self._json(response, what)
            page = data.get("items") if isinstance(data, dict) else data
            if not isinstance(page, list) or not all(isinstance(i, dict) for i in page):
                raise self._malformed(what)
            items.extend(page)
            following = data.get("_pagination", {}).get("next") if isinstance(data, dict) else None
            if not isinstance(following, dict):
                return items
            next_offset = following.get("offset")
            if not isinstance(next_offset, int) or next_offset <= offset:
                raise self._malformed(what)
            offset = next_offset

    async def _stop_all(self, user: str, model: dict[str, Any]) -> None:
        for name in sorted(self._servers(model, f"read user {user}")):
            await self._stop(user, name)

    async def _stop(self, user: str, name: str) -> None:
        what = f"stop the server of {user}" + (f" named {name}" if name else "")
        quoted = _segment(user)
        path = f"users/{quoted}/servers/{_segment(name)}" if name else f"users/{quoted}/server"
        response = await self._request("DELETE", path, what)
        if self._is_hub_error(response, 404):
            return
        if response.status_code not in (202, 204):
            raise self._unexpected(response, what)
        if response.status_code == 202:
            await self._wait_stopped(user, name)
        self._record(what)

    async def _wait_stopped(self, user: str, name: str) -> None:
        deadline = time.monotonic() + self._spawn_timeout
        while True:
            model = await self._user(user)
            if model is None or name not in self._servers(model, f"read user {user}"):
                return
            if time.monotonic() >= deadline:
                raise NotebookError(
                    f"JupyterHub at {self.url} did not stop the server of {user} "
                    f"within {self._spawn_timeout:g} s"
                )
            await asyncio.sleep(_POLL)

    async def _spawn_failure(self, user: str) -> str:
        """The hub's reason for the failed spawn, from its progress stream ('' if none)."""
        path = self._api + f"users/{_segment(user)}/server/progress"
        try:
            async with asyncio.timeout(self._client.timeout.read or 30.0):
                async with self._client.stream("GET", path) as response:
                    if response.status_code != 200:
                        return ""
                    async for line in response.aiter_lines():
                        if not line.startswith("data:"):
                            continue
                        event = json.loads(line[5:])
                        if isinstance(event, dict) and event.get("failed"):
                            return self._scrub(str(event.get("message", "")))[:500]
        except (httpx.HTTPError, TimeoutError, ValueError):
            # Only the reason is lost: the caller still reports that the spawn failed.
            return ""
        return ""

    def _server(
        self, user: str, model: dict[str, Any], server: dict[str, Any], what: str
    ) -> Server:
        started = self._time(server, "started", what)
        if started is None:
            raise self._malformed(what)
        return Server(
            user=user,
            started=started,
            last_activity=self._time(server, "last_activity", what),
            url=urljoin(self.url, self._str(server, "url", what)),
            ready=server.get("ready") is True,
            groups=tuple(sorted(self._strings(model, "groups", what))),
        )

    def _record(self, operation: str) -> None:
        log.info("jupyterhub %s: %s", self.url, operation)
        if self._audit is not None:
            self._audit(f"jupyterhub {operation}", "ok")

    @staticmethod
    def _body(response: httpx.Response) -> Any:
        """The answer's JSON, or None when it is not JSON."""
        try:
            return response.json()
        except ValueError:
            return None

    def _json(self, response: httpx.Response, what: str) -> Any:
        data = self._body(response)
        if data is None:
            raise self._malformed(what)
        return data

    def _is_hub_error(self, response: httpx.Response, status: int) -> bool:
        """Whether the answer is the hub API's own JSON error ``status`` (not some 404 page)."""
        data = self._body(response) if response.status_code == status else None
        return isinstance(data, dict) and data.get("status") == status

    def _message(self, response: httpx.Response) -> str:
        data = self._body(response)
        text = data.get("message") if isinstance(data, dict) else None
        if not isinstance(text, str):
            text = response.text.strip().splitlines()[0] if response.text.strip() else ""
        return self._scrub(text)[:300] or response.reason_phrase

    # Readers of hub models: a field of the wrong type is the hub's malformed answer.

    def _str(self, model: dict[str, Any], key: str, what: str) -> str:
        value = model.get(key)
        if not isinstance(value, str):
            raise self._malformed(what)
        return value

    def _strings(self, model: dict[str, Any], key: str, what: str) -> list[str]:
        value = model.get(key)
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise self._malformed(what)
        return value

    def _servers(self, model: dict[str, Any], what: str) -> dict[str, dict[str, Any]]:
        """The user's active servers by name (the default one is ``""``)."""
        servers = model.get("servers", {})
        if not isinstance(servers, dict) or not all(isinstance(v, dict) for v in servers.values()):
            raise self._malformed(what)
        return servers

    def _time(self, model: dict[str, Any], key: str, what: str) -> _dt.datetime | None:
        """A hub timestamp (ISO 8601, ``Z`` or offset; naive is UTC) as aware UTC, or None."""
        if model.get(key) is None:
            return None
        try:
            parsed = _dt.datetime.fromisoformat(self._str(model, key, what))
        except ValueError:
            raise self._malformed(what) from None
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=_dt.UTC)).astimezone(_dt.UTC)

    def _unexpected(self, response: httpx.Response, what: str) -> NotebookError:
        return NotebookError(
            f"JupyterHub at {self.url} could not {what}: "
            f"HTTP {response.status_code}: {self._message(response)}"
        )

    def _malformed(self, what: str) -> NotebookError:
        return NotebookError(f"JupyterHub at {self.url} answered malformed JSON for {what}")

    def _scrub(self, text: str) -> str:
        return text.replace(self._token, "<token>") if self._token else text


def _segment(name: str) -> str:
    """``name`` as one quoted path segment; refused if the hub's API cannot address it."""
    if name in ("", ".", "..") or "/" in name:
        raise NotebookError(f"{name!r} is not a name the JupyterHub API can address")
    return quote(name, safe="")
