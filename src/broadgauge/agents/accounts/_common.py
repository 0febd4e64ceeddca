"""Rules shared by the directory back ends (local, LDAP, FreeIPA)."""

from __future__ import annotations

import asyncio
import logging
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, ClassVar, TypeVar

from broadgauge.agents._settling import SETTLE_WAIT, settle
from broadgauge.agents.accounts.backend import AccountError, AuditHook
from broadgauge.agents.naming import project_mapping, user_mapping
from broadgauge.grammar import (
    GrammarError,
    PortalIdentifier,
    ProjectIdentifier,
    ProjectMapping,
    UserIdentifier,
    UserMapping,
)

#: How long an operation waits for another one on the same user (as OpenPortal: 5 s).
LOCK_WAIT = 5.0
#: The login shell of every account a back end creates.
DEFAULT_SHELL = "/bin/bash"

T = TypeVar("T")


def check_homedir(homedir: str) -> str:
    """Validate a home directory: absolute, and nothing that would corrupt a passwd line."""
    if not homedir.startswith("/"):
        raise AccountError(f"home directory must be an absolute path, not {homedir!r}")
    if ":" in homedir or any(ord(ch) < 32 or ord(ch) == 127 for ch in homedir):
        raise AccountError(f"home directory contains ':' or a control character: {homedir!r}")
    return homedir


def check_ranges(
    uid_range: tuple[int, int], gid_range: tuple[int, int]
) -> dict[str, tuple[int, int]]:
    """The uid and gid ranges by kind, each checked to be ``0 < low <= high``."""
    ranges = {"uid": uid_range, "gid": gid_range}
    for what, (low, high) in ranges.items():
        if not 0 < low <= high:
            raise ValueError(f"invalid {what} range {low}-{high}")
    return ranges


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


def check_owner(account: str, cns: tuple[str, ...], identity: UserIdentifier) -> None:
    """Refuse ``identity`` an account whose ``cn`` values (where identities are kept) lack it.

    ``username.project`` collides across portals; never hand one identity another's account.
    """
    if str(identity) not in cns:
        raise AccountError(f"account {account} belongs to {cns!r}, not {identity}")


def project_description(project: ProjectIdentifier) -> str:
    """A project group's description in LDAP and FreeIPA (the FreeIPA convention)."""
    return f"{project} | OpenPortal project"


def described_project(description: str | None) -> str | None:
    """The project identifier a group's description holds: the part before ``|``."""
    return description.split("|", 1)[0] if description else None


def portal_projects(
    groups: Iterable[tuple[str | None, str | None]], portal: PortalIdentifier
) -> list[ProjectMapping]:
    """The project groups of ``portal`` among ``(group name, project identifier)`` pairs,
    by group name.

    A pair that lacks either, whose identifier does not parse, or that belongs to another
    portal (a directory may have matched the portal case-insensitively) is left out.
    """
    found = []
    for name, identifier in groups:
        if not name or not identifier:
            continue
        try:
            project = ProjectIdentifier.parse(identifier)
        except GrammarError:
            continue
        if project.portal == portal.portal:
            found.append(ProjectMapping(project, name))
    return sorted(found, key=lambda m: m.local_group)


class Directory:
    """What every directory back end shares: the naming-rule mappings, the protected
    names, and telling the log and the audit hook about each change."""

    #: The back end's name in log lines, and its module's logger.
    _label: ClassVar[str]
    _log: ClassVar[logging.Logger]

    def __init__(self, *, protected: frozenset[str], audit: AuditHook | None) -> None:
        self._protected = frozenset(protected)
        self._audit = audit
        self._working: set[asyncio.Future[Any]] = set()

    async def get_project_mapping(self, project: ProjectIdentifier) -> ProjectMapping:
        """The project's mapping by the naming rules."""
        return project_mapping(project)

    async def get_user_mapping(self, user: UserIdentifier) -> UserMapping:
        """The user's mapping by the naming rules."""
        return user_mapping(user)

    def _note(self, text: str) -> None:
        """Log one change and tell the audit hook."""
        self._log.info("%s accounts: %s", self._label, text)
        if self._audit is not None:
            self._audit(text)

    async def _in_thread(self, work: Callable[[], tuple[T, list[str]]]) -> T:
        """Run ``work`` (which returns its result and notes) in a worker thread.

        The notes are audited on the event loop once the thread is done, even if our caller
        was cancelled meanwhile (the thread cannot be stopped, so its changes happen).
        """
        future = asyncio.ensure_future(asyncio.to_thread(work))
        future.add_done_callback(self._tell)
        self._working.add(future)
        future.add_done_callback(self._working.discard)
        result, _ = await asyncio.shield(future)
        return result

    async def settle(self, timeout: float = SETTLE_WAIT) -> None:
        """Wait for the changes already running in worker threads, and their audit notes.

        Their callers may have been cancelled (an agent stopping), but the threads run on:
        the agent awaits this before it closes its audit log, so no change goes unrecorded.
        A thread still running after ``timeout`` seconds is logged as an error, and the
        agent stops without it (its change, if it lands, is in the back end but not audited).
        """
        running = await settle(self._working, timeout)
        if running:
            self._log.error(
                "%s accounts: %d change(s) still running after %.0f s; stopping without "
                "their audit notes",
                self._label,
                running,
                timeout,
            )

    def _tell(self, work: asyncio.Future[tuple[T, list[str]]]) -> None:
        if work.cancelled() or work.exception() is not None:
            return
        for note in work.result()[1]:
            self._note(note)


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


class NameLocks:
    """One thread lock per name, for worker threads; a lock lives only while it is used.

    For back ends whose operations run in worker threads and may wait on the network while
    they hold the lock: one lock per name means a slow call holds up only callers of the
    same name, never the rest.
    """

    def __init__(self) -> None:
        self._guard = threading.Lock()
        #: name -> (its lock, how many threads hold or wait for it)
        self._locks: dict[str, tuple[threading.Lock, int]] = {}

    @contextmanager
    def hold(self, name: str) -> Iterator[None]:
        """Hold ``name``'s lock (blocking the calling thread until it is free)."""
        with self._guard:
            lock, users = self._locks.get(name, (threading.Lock(), 0))
            self._locks[name] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._guard:
                lock, users = self._locks[name]
                if users == 1:
                    del self._locks[name]
                else:
                    self._locks[name] = (lock, users - 1)
