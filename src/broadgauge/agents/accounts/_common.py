"""Rules shared by the directory back ends (local, LDAP, FreeIPA)."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

from broadgauge.agents.accounts.backend import AccountError
from broadgauge.grammar import GrammarError, UserIdentifier

#: How long an operation waits for another one on the same user (as OpenPortal: 5 s).
LOCK_WAIT = 5.0


def check_homedir(homedir: str) -> str:
    """Validate a home directory: absolute, and nothing that would corrupt a passwd line."""
    if not homedir.startswith("/"):
        raise AccountError(f"home directory must be an absolute path, not {homedir!r}")
    if ":" in homedir or any(ord(ch) < 32 or ord(ch) == 127 for ch in homedir):
        raise AccountError(f"home directory contains ':' or a control character: {homedir!r}")
    return homedir


def identity_in(values: Iterable[str | None]) -> UserIdentifier | None:
    """The first stored value that is an OpenPortal identity (``None`` when unmanaged)."""
    for value in values:
        if not value:
            continue
        try:
            return UserIdentifier.parse(value)
        except GrammarError:
            continue
    return None


class UserLocks:
    """One lock per user name, so two operations on the same user never interleave.

    Locks live only while someone holds or waits for them.
    """

    def __init__(self, wait: float = LOCK_WAIT) -> None:
        self._wait = wait
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    @asynccontextmanager
    async def hold(self, name: str) -> AsyncIterator[None]:
        """Hold ``name``'s lock, or raise :class:`AccountError` after waiting too long."""
        lock = self._locks.get(name)
        if lock is None:
            lock = self._locks[name] = asyncio.Lock()
        try:
            async with asyncio.timeout(self._wait):
                await lock.acquire()
        except TimeoutError:
            raise AccountError(f"user {name} is locked by another operation") from None
        try:
            yield
        finally:
            lock.release()
