"""Talking to an LDAP server through ldap3: bound sessions, and a pool that lends them out.

ldap3 is synchronous, so each operation of :mod:`broadgauge.agents.accounts.ldap` is a
function of a :class:`Session` that runs in a worker thread; :class:`SessionPool` lends it
a bound connection (``size`` at most in use), retries it once on a fresh connection when a
pooled one turns out to have been dropped, and turns ldap3's exceptions into
:class:`AccountError`.  Every request is bounded by ``timeout``.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, TypeVar

import ldap3  # type: ignore[import-untyped, unused-ignore]
from ldap3.core.exceptions import (  # type: ignore[import-untyped, unused-ignore]
    LDAPCommunicationError,
    LDAPException,
)
from ldap3.utils.conv import escape_filter_chars  # type: ignore[import-untyped, unused-ignore]

from broadgauge.agents.accounts.backend import AccountError

T = TypeVar("T")

# LDAP result codes (RFC 4511) that the rules treat as "already done".
SUCCESS = 0
NO_SUCH_ATTRIBUTE = 16
VALUE_EXISTS = 20
NO_SUCH_OBJECT = 32
ALREADY_EXISTS = 68


def esc(value: str | int) -> str:
    """``value`` escaped for a search filter."""
    return str(escape_filter_chars(str(value)))


@dataclass(frozen=True, slots=True)
class Entry:
    """One search result: its DN and its attributes, every value as a string."""

    dn: str
    attributes: Mapping[str, list[str]]

    def values(self, name: str) -> list[str]:
        return self.attributes.get(name, [])

    def first(self, name: str) -> str | None:
        values = self.values(name)
        return values[0] if values else None


class Session:
    """One bound ldap3 connection, used by one thread at a time."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def _code(self) -> int:
        return int(self.conn.result["result"])

    def _error(self, what: str, target: str) -> AccountError:
        result = self.conn.result
        return AccountError(
            f"LDAP {what} {target} failed: {result['description']} {result['message']}"
        )

    def search(
        self, base: str, query: str, attributes: list[str], *, scope: str = ldap3.SUBTREE
    ) -> list[Entry]:
        # Paged: listings (get_projects) must not stop at the server's size limit.
        responses = self.conn.extend.standard.paged_search(
            base, query, search_scope=scope, attributes=attributes, paged_size=500, generator=False
        )
        if self._code() not in (SUCCESS, NO_SUCH_OBJECT):
            raise self._error("search", f"{query} under {base}")
        entries = []
        for response in responses or []:
            if response.get("type") != "searchResEntry":
                continue
            attrs = {
                str(key): [str(v) for v in (value if isinstance(value, list) else [value])]
                for key, value in response["attributes"].items()
            }
            entries.append(Entry(str(response["dn"]), attrs))
        return entries

    def read(self, dn: str, attributes: list[str]) -> Entry | None:
        found = self.search(dn, "(objectClass=*)", attributes, scope=ldap3.BASE)
        return found[0] if found else None

    def add(self, dn: str, classes: list[str], attributes: Mapping[str, object]) -> int:
        self.conn.add(dn, classes, dict(attributes))
        return self._code()

    def modify(self, dn: str, changes: Mapping[str, list[tuple[str, list[str]]]]) -> int:
        self.conn.modify(dn, dict(changes))
        return self._code()

    def must(self, code: int, what: str, target: str, *tolerated: int) -> None:
        if code != SUCCESS and code not in tolerated:
            raise self._error(what, target)


#: An operation: what it does with a session, noting each change it makes.
Op = Callable[[Session, list[str]], T]


class SessionPool:
    """Bound connections to one server, each lent to one worker thread at a time.

    Callers hold :attr:`slots` (``size`` of them) while an operation runs, so no more than
    ``size`` connections are ever open.
    """

    def __init__(self, url: str, bind_dn: str, password: str, *, timeout: float, size: int) -> None:
        self.url = url
        self._bind_dn = bind_dn
        self._password = password  # only ever handed to ldap3; never logged
        self._timeout = timeout
        self._server = ldap3.Server(url, connect_timeout=timeout, get_info=ldap3.NONE)
        self.idle: list[Session] = []
        self._lock = threading.Lock()
        self.slots = asyncio.Semaphore(size)

    def _connect(self) -> Session:
        conn = ldap3.Connection(
            self._server,
            user=self._bind_dn,
            password=self._password,
            # ldap3 packs this into SO_RCVTIMEO as whole seconds: it must be an int.
            receive_timeout=max(1, math.ceil(self._timeout)),
            raise_exceptions=False,
        )
        if not conn.bind():
            description = conn.result.get("description", "unknown error") if conn.result else ""
            raise AccountError(f"LDAP bind as {self._bind_dn} to {self.url} failed: {description}")
        return Session(conn)

    def execute(self, op: Op[T]) -> tuple[T, list[str]]:
        """Run ``op`` on a pooled session (in the calling thread): its result and notes."""
        for attempt in (1, 2):
            notes: list[str] = []
            with self._lock:
                session = self.idle.pop() if self.idle else None
            try:
                session = session or self._connect()
                result = op(session, notes)
            except LDAPCommunicationError as exc:
                # A pooled connection may have been dropped by the server; every operation
                # is idempotent, so one retry on a fresh connection is safe.
                self._discard(session)
                if attempt == 2 or session is None:
                    raise AccountError(f"LDAP server {self.url} unreachable: {exc}") from None
                continue
            except LDAPException as exc:
                self._discard(session)
                raise AccountError(f"LDAP error from {self.url}: {exc}") from None
            except AccountError:
                if session is not None:  # a refusal, not a broken connection: keep it
                    with self._lock:
                        self.idle.append(session)
                raise
            with self._lock:
                self.idle.append(session)
            return result, notes
        raise AssertionError("unreachable")

    @staticmethod
    def _discard(session: Session | None) -> None:
        if session is not None:
            with suppress(LDAPException):
                session.conn.unbind()

    async def close(self) -> None:
        """Unbind every idle connection."""
        with self._lock:
            idle, self.idle = self.idle, []
        for session in idle:
            await asyncio.to_thread(self._discard, session)
