"""FreeIPA's JSON-RPC API over httpx: logging in, calling, failing over between servers.

As OpenPortal's ``freeipa`` agent: ``POST <server>/ipa/session/login_password`` (form
``user``/``password``, ``Referer: <server>/ipa``) sets the ``ipa_session`` cookie; each call
is ``POST <server>/ipa/session/json`` with
``{"method": m, "params": [[args], {..., "version": "2.251"}], "id": n}``.  A 401 means the
session expired: log in again (once per expiry, however many calls noticed it) and retry.
Several servers may be given (repeating one gives parallel sessions); calls go round-robin
and fail over to the next server when one cannot be reached.  Every request is bounded by
``timeout``.  The password is only ever put in the login form.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from broadgauge.agents.accounts.backend import AccountError

# The back end's logger: these lines are about its server, whichever module writes them.
logger = logging.getLogger("broadgauge.agents.accounts.freeipa")

API_VERSION = "2.251"
# FreeIPA error codes (ipalib/errors.py) that the rules treat as "already done".
NOT_FOUND = 4001
DUPLICATE_ENTRY = 4002
ALREADY_ACTIVE = 4009
ALREADY_INACTIVE = 4010
EMPTY_MODLIST = 4202


class FreeIpaError(AccountError):
    """FreeIPA answered a call with an error object (``error.code/name/message``)."""

    def __init__(self, method: str, code: int, name: str, message: str) -> None:
        super().__init__(f"FreeIPA {method} failed: {name} ({code}): {message}")
        self.code = code
        self.name = name


def strings(entry: dict[str, Any], key: str) -> list[str]:
    """Every value of ``key`` in an entry FreeIPA returned, as strings."""
    value = entry.get(key)
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def first(entry: dict[str, Any], key: str) -> str | None:
    """The first value of ``key`` in an entry FreeIPA returned."""
    values = strings(entry, key)
    return values[0] if values else None


def flag(value: object) -> bool:
    """A FreeIPA boolean."""
    # nsaccountlock is a JSON boolean in current FreeIPA and ["TRUE"] in old releases.
    if isinstance(value, list):
        return bool(value) and flag(value[0])
    if isinstance(value, str):
        return value.upper() == "TRUE"
    return bool(value)


@dataclass(eq=False)
class _Server:
    base: str
    client: httpx.AsyncClient
    login_lock: asyncio.Lock
    generation: int = 0  # bumped by every login; 0 = never logged in


class IpaClient:
    """Sessions with one or more FreeIPA servers, as one user."""

    def __init__(
        self, servers: list[str], user: str, password: str, *, verify_tls: bool, timeout: float
    ) -> None:
        if not servers:
            raise ValueError("at least one FreeIPA server is needed")
        self._servers = [
            _Server(
                base.rstrip("/"),
                httpx.AsyncClient(verify=verify_tls, timeout=timeout),
                asyncio.Lock(),
            )
            for base in servers
        ]
        self._user = user
        self._password = password  # only ever sent in the login form; never logged
        self._turn = itertools.count()
        self._ids = itertools.count(1)

    async def _login(self, server: _Server, seen: int) -> None:
        async with server.login_lock:
            if server.generation != seen:
                return  # another call logged in again while we waited
            response = await server.client.post(
                f"{server.base}/ipa/session/login_password",
                data={"user": self._user, "password": self._password},
                headers={"Referer": f"{server.base}/ipa", "Accept": "text/plain"},
            )
            if response.status_code != 200:
                reason = response.headers.get("X-IPA-Rejection-Reason", "")
                raise AccountError(
                    f"FreeIPA login as {self._user} at {server.base} was refused: "
                    f"HTTP {response.status_code} {reason}".rstrip()
                )
            server.generation += 1
            logger.info("logged in to FreeIPA at %s as %s", server.base, self._user)

    async def _post(self, server: _Server, method: str, payload: dict[str, Any]) -> httpx.Response:
        for _ in range(3):
            seen = server.generation
            if seen == 0:
                await self._login(server, 0)
                seen = server.generation
            response = await server.client.post(
                f"{server.base}/ipa/session/json",
                json=payload,
                headers={"Referer": f"{server.base}/ipa", "Accept": "application/json"},
            )
            if response.status_code != 401:
                return response
            await self._login(server, seen)  # the session expired
        raise AccountError(f"FreeIPA {method} at {server.base}: still 401 after logging in again")

    async def call(self, method: str, args: Sequence[str] = (), **options: Any) -> dict[str, Any]:
        """Call ``method``; return the ``result`` object, or raise FreeIpaError."""
        request_id = next(self._ids)
        options["version"] = API_VERSION
        payload = {"method": method, "params": [list(args), options], "id": request_id}
        start = next(self._turn)
        failure: Exception | None = None
        # A read may be tried once more than there are servers: a pooled keep-alive
        # connection the server closed as we reused it fails without the call being seen.
        # Writes are not repeated blindly; they fail over to the next server only.
        read_only = method.endswith(("_show", "_find"))
        for offset in range(len(self._servers) + (1 if read_only else 0)):
            server = self._servers[(start + offset) % len(self._servers)]
            try:
                response = await self._post(server, method, payload)
            except httpx.TransportError as exc:
                failure = exc  # unreachable or timed out: fail over to the next server
                logger.warning("FreeIPA %s at %s: %r", method, server.base, exc)
                continue
            if response.status_code != 200:
                raise AccountError(
                    f"FreeIPA {method} at {server.base}: HTTP {response.status_code}"
                )
            try:
                body = response.json()
            except ValueError:
                raise AccountError(f"FreeIPA {method} at {server.base}: not JSON") from None
            if body.get("id") != request_id:
                raise AccountError(f"FreeIPA {method}: answer to request {body.get('id')!r}")
            error = body.get("error")
            if error:
                code, name = int(error.get("code", 0)), str(error.get("name", ""))
                raise FreeIpaError(method, code, name, str(error.get("message", "")))
            result = body.get("result")
            if not isinstance(result, dict):
                raise AccountError(f"FreeIPA {method} at {server.base}: no result object")
            return result
        raise AccountError(f"FreeIPA {method}: no server could be reached ({failure!r})")

    async def tolerate(
        self, codes: tuple[int, ...], method: str, *args: str, **options: Any
    ) -> bool:
        """Call; True if it changed something, False if FreeIPA said it was already so."""
        try:
            await self.call(method, args, **options)
        except FreeIpaError as exc:
            if exc.code in codes:
                return False
            raise
        return True

    async def close(self) -> None:
        """Close the HTTP clients."""
        for server in self._servers:
            await server.client.aclose()
