"""A client of slurmrestd: a JWT from a command, a version check, errors as SchedulerError.

Authentication is the reference's: ``token-command`` (e.g. ``scontrol token``) is run as an
argument list (``shlex``-split, never a shell), with ``username=<slurm-user>`` appended when
this process runs as another Unix user and ``lifespan=<token-lifespan>`` always appended; the
first word of its output that holds ``=`` gives the token (``SLURM_JWT=<token>``).  Every request
carries ``X-SLURM-USER-NAME`` and ``X-SLURM-USER-TOKEN``.  The token is fetched again before
its lifespan runs out (:data:`REFRESH_MARGIN` seconds early, or half the lifespan when that is
shorter), and once more after a 401.

The token never leaves this module: it is kept in a :class:`_Secret` whose ``repr`` is
redacted, and no message built here contains the command's output or a header.

Every failure becomes a :class:`SchedulerError` naming its cause: slurmrestd unreachable or too
slow, a 401 that a fresh token does not cure, an HTTP error status, a body that is not a JSON
object, or a non-empty ``errors`` array (slurmrestd answers some errors with status 200).  The
one error read as an answer is "Nothing found" (``error_number`` 9003), which slurmrestd returns
for a lookup of something that does not exist; callers ask for that with ``missing_ok``.

Requests that change something (every method but GET) go one at a time: slurmdbd loses some
associations that concurrent requests create (``add_user`` for many users of one account at
once left some without their association), as it does with concurrent ``sacctmgr`` changes.

``server`` is an ``http(s)://host:port`` URL, as in the reference, or (a Broadgauge extension)
``unix:/path/to/socket`` for a slurmrestd listening on a Unix socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import getpass
import json
import logging
import shlex
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import httpx

from .backend import SchedulerError
from .commands import run_once

__all__ = ["API_VERSION", "REFRESH_MARGIN", "SlurmRestClient", "token_argv"]

log = logging.getLogger(__name__)

#: The OpenAPI plugin version this client speaks (``openapi/v0.0.38``, ``openapi/dbv0.0.38``:
#: Slurm 22.05 and 23.02).
API_VERSION = "v0.0.38"
#: Seconds before the token's lifespan ends at which a new one is fetched.
REFRESH_MARGIN = 10.0
#: Where slurmrestd describes its API (read once, to check :data:`API_VERSION`).
SPEC_PATH = "/openapi.json"
#: slurmrestd's error number for a lookup that found nothing.
NOTHING_FOUND = 9003
#: The client whose change this task is making (:meth:`SlurmRestClient.post_all_when_due`):
#: its requests already hold the change lock.
_HOLDING: contextvars.ContextVar[object] = contextvars.ContextVar("slurmrestd_change", default=None)


class _Secret:
    """A string that does not print itself."""

    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "<redacted>"

    __str__ = __repr__


def token_argv(command: str, user: str, lifespan: int, process_user: str) -> list[str]:
    """The argument list that asks ``token-command`` for a token (as the reference builds it)."""
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise SchedulerError(f"token-command cannot be parsed: {exc}") from None
    if not argv:
        raise SchedulerError("token-command is empty")
    if user != process_user:
        argv.append(f"username={user}")
    argv.append(f"lifespan={lifespan}")
    return argv


class SlurmRestClient:
    """Requests to one slurmrestd, as one Slurm user, with a JWT kept fresh."""

    def __init__(
        self,
        server: str,
        *,
        user: str,
        token_command: str,
        token_lifespan: int = 1800,
        timeout: float = 30.0,
        max_requests: int = 5,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``transport`` replaces the network (tests); ``clock`` times the token's age."""
        if not user:
            raise SchedulerError("slurm-user is empty")
        self._user = user
        self._lifespan = max(10, int(token_lifespan))
        self._argv = token_argv(token_command, user, self._lifespan, getpass.getuser())
        self._timeout = timeout
        self._clock = clock
        self._server = server.rstrip("/")
        if server.startswith("unix:"):
            path = server.removeprefix("unix:")
            transport = transport or httpx.AsyncHTTPTransport(uds=path)
            base = "http://localhost"
        elif server.startswith(("http://", "https://")):
            base = self._server
        else:
            raise SchedulerError(
                f"slurm-server must be http://host:port, https://host:port or unix:/path, "
                f"not {server!r}"
            )
        self._http = httpx.AsyncClient(base_url=base, transport=transport, timeout=timeout)
        self._token: _Secret | None = None
        self._token_at = 0.0
        self._token_lock = asyncio.Lock()
        self._requests = asyncio.Semaphore(max(1, max_requests))
        # slurmdbd loses some of the changes it is sent at once (associations made by
        # concurrent requests go missing), so changes go one at a time, as sacctmgr's do.
        self._changing = asyncio.Lock()
        self._checked = False

    @property
    def server(self) -> str:
        """The configured ``slurm-server``."""
        return self._server

    async def close(self) -> None:
        """Close the HTTP connections."""
        await self._http.aclose()

    # ---- requests ----------------------------------------------------------------------

    async def post(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST a JSON body to ``path``; see :meth:`request`."""
        return await self.request("POST", path, body=body)

    async def post_all_when_due(
        self, requests: Callable[[], Sequence[tuple[str, Mapping[str, Any]]]]
    ) -> None:
        """POST each ``(path, body)`` that ``requests()`` gives, in order, as one change: no
        other change runs between them, and ``requests`` is asked only once it is this
        change's turn (so that whoever asks meanwhile can still join it)."""
        async with self._changing:
            token = _HOLDING.set(self)
            try:
                for path, body in requests():
                    await self.request("POST", path, body=body)
            finally:
                _HOLDING.reset(token)

    async def request(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None = None,
        *,
        body: Mapping[str, Any] | None = None,
        missing_ok: bool = False,
    ) -> dict[str, Any]:
        """The JSON object slurmrestd answers, ``{}`` for 304 (nothing changed).

        With ``missing_ok``, "Nothing found" is an answer (the body, with its empty lists);
        every other error raises :class:`SchedulerError`.
        """
        if not self._checked and path != SPEC_PATH:
            await self._check_version()
        response = await self._send(method, path, params, body)
        if response.status_code == 401:
            # The token may have been revoked or the key rotated: one fresh token, one retry.
            await self._refresh(stale=True)
            response = await self._send(method, path, params, body)
            if response.status_code == 401:
                raise SchedulerError(
                    f"slurmrestd refused the token of Slurm user {self._user} on {method} "
                    f"{path} (401 Unauthorized), also after fetching a new one with "
                    f"token-command"
                )
        return self._answer(method, path, response, missing_ok)

    async def _send(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None,
        body: Mapping[str, Any] | None,
    ) -> httpx.Response:
        token = await self._current_token()
        headers = {
            "Accept": "application/json",
            "X-SLURM-USER-NAME": self._user,
            "X-SLURM-USER-TOKEN": token.value,
        }
        one_at_a_time: contextlib.AbstractAsyncContextManager[object] = (
            contextlib.nullcontext()
            if method == "GET" or _HOLDING.get() is self
            else self._changing
        )
        async with one_at_a_time, self._requests:
            try:
                return await self._http.request(
                    method, path, params=params, json=body, headers=headers
                )
            except httpx.TimeoutException:
                raise SchedulerError(
                    f"slurmrestd at {self._server} did not answer {method} {path} within "
                    f"{self._timeout:g} s"
                ) from None
            except httpx.HTTPError as exc:
                # httpx's message names the URL and the socket error, never the headers.
                raise SchedulerError(
                    f"slurmrestd at {self._server} is unreachable ({method} {path}): "
                    f"{type(exc).__name__}: {exc}"
                ) from None

    def _answer(
        self, method: str, path: str, response: httpx.Response, missing_ok: bool
    ) -> dict[str, Any]:
        status = response.status_code
        where = f"slurmrestd {method} {path}"
        if status == 304:
            return {}
        try:
            data = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            data = None
        if not isinstance(data, dict):
            raise SchedulerError(
                f"{where} answered HTTP {status} with a body that is not a JSON object "
                f"(malformed JSON): {response.text[:120]!r}"
            )
        errors = data.get("errors") or []
        if not isinstance(errors, list):
            raise SchedulerError(f"{where} answered malformed JSON: 'errors' is not a list")
        if errors:
            if missing_ok and all(_number(e) == NOTHING_FOUND for e in errors):
                return data
            raise SchedulerError(f"{where} failed (HTTP {status}): {_describe(errors)}")
        if status >= 400:
            raise SchedulerError(f"{where} failed: HTTP {status} {response.reason_phrase}")
        return data

    async def _check_version(self) -> None:
        """Refuse a slurmrestd that does not serve :data:`API_VERSION` (once)."""
        spec = await self.request("GET", SPEC_PATH)
        paths = spec.get("paths")
        if not isinstance(paths, dict):
            raise SchedulerError("slurmrestd /openapi.json has no 'paths'")
        offered = sorted({p.split("/")[2] for p in paths if p.startswith("/slurm")})
        needed = {f"/slurm/{API_VERSION}/", f"/slurmdb/{API_VERSION}/"}
        if not all(any(p.startswith(n) for p in paths) for n in needed):
            raise SchedulerError(
                f"slurmrestd at {self._server} does not serve openapi/{API_VERSION} and "
                f"openapi/db{API_VERSION} (it offers {', '.join(offered) or 'none'}); "
                f"start it with -s openapi/{API_VERSION},openapi/db{API_VERSION}"
            )
        self._checked = True

    # ---- the token ---------------------------------------------------------------------

    async def _current_token(self) -> _Secret:
        margin = min(REFRESH_MARGIN, self._lifespan / 2)
        if self._token is None or self._clock() - self._token_at >= self._lifespan - margin:
            await self._refresh(stale=False)
        assert self._token is not None
        return self._token

    async def _refresh(self, *, stale: bool) -> None:
        seen = self._token
        async with self._token_lock:
            if self._token is not seen:
                return  # another request fetched one meanwhile
            if not stale and self._token is not None:
                margin = min(REFRESH_MARGIN, self._lifespan / 2)
                if self._clock() - self._token_at < self._lifespan - margin:
                    return
            began = self._clock()
            self._token = _Secret(await self._run_token_command())
            self._token_at = began
            log.info("fetched a Slurm JWT for %s (lifespan %d s)", self._user, self._lifespan)

    async def _run_token_command(self) -> str:
        shown = f"token-command `{shlex.join(self._argv)}`"
        code, out, err = await run_once(self._argv, shown, self._timeout)
        if code != 0:
            # stderr only: stdout is where a token would be.
            reason = " ".join(err.decode(errors="replace").split())[:300]
            raise SchedulerError(f"{shown} failed (exit {code}): {reason}")
        token = _parse_token(out.decode(errors="replace"))
        if not token:
            raise SchedulerError(f"{shown} printed no NAME=TOKEN word (expected SLURM_JWT=...)")
        return token


def _parse_token(output: str) -> str:
    """The value of the first ``NAME=VALUE`` word (``SLURM_JWT=<token>``), or ``""``."""
    for word in output.split():
        name, sep, value = word.partition("=")
        if sep and name:
            return value
    return ""


def _number(error: object) -> int | None:
    if isinstance(error, dict):
        number = error.get("error_number", error.get("error_code"))
        return number if isinstance(number, int) else None
    return None


def _describe(errors: Sequence[object]) -> str:
    """slurmrestd's errors in one line: description (error, number) ..."""
    parts = []
    for error in errors[:5]:
        if isinstance(error, dict):
            text = str(error.get("description") or error.get("error") or "error")
            detail = [str(error[k]) for k in ("error", "error_number") if error.get(k)]
            if detail and detail[0] == text:
                detail = detail[1:]
            parts.append(f"{text} ({', '.join(detail)})" if detail else text)
        else:
            parts.append(str(error))
    return "; ".join(parts)[:500]
