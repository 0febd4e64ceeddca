"""The embedded account directory: users and groups in one SQLite file.

This is the default backend when a site has neither LDAP nor FreeIPA: it keeps the same
records a directory would (user name, uid, primary gid, OpenPortal identity, home, shell,
enabled, locked; group name, gid, project identifier, members) and follows every rule of
:mod:`broadgauge.agents.accounts.backend`:

* names from :mod:`broadgauge.agents.naming`; the identity string is stored with the user
  (like FreeIPA's ``cn``) and the project identifier with the group;
* a user is *managed* iff it is a member of ``openportal``; an existing unmanaged user, or
  one whose name is in ``protected``, is never changed;
* ``remove_user`` clears ``enabled`` and drops the user's group memberships except the
  ``openportal`` and ``openportal.blocked`` markers, so the row, and therefore its uid,
  stay; ``remove_project`` keeps the group and its gid;
* blocking sets ``locked`` and adds the user to ``openportal.blocked``; it survives a
  remove and a re-add (``add_user`` leaves a blocked user untouched).

Allocation: a ``counters`` row per kind holds the next candidate number.  Allocation
reads and advances it inside the same ``BEGIN IMMEDIATE`` transaction that inserts the
user or group, so two processes sharing the file cannot hand out the same number, and no
table is scanned (the only other lookup is the unique index on ``uid``/``gid``, which
skips numbers already taken by rows added outside Broadgauge).  Numbers are never reused.

Threading: every operation runs as one transaction in a worker thread
(:func:`asyncio.to_thread`) on one shared connection guarded by a lock.  The statements
themselves take microseconds, but a commit with ``synchronous=FULL`` waits for an fsync
and, when another process (an admin tool, a backup) holds the write lock, SQLite waits
up to the busy timeout; doing either on the event loop would stall every other task of
the agent (heartbeats, the websocket links).  One thread hop per operation is cheap, and
running the whole operation in one call makes it atomic without per-user locks.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from broadgauge.agents import naming
from broadgauge.agents.accounts._common import (
    DEFAULT_SHELL,
    Directory,
    check_homedir,
    check_ranges,
    identity_in,
    portal_projects,
)
from broadgauge.agents.accounts.backend import AccountError, AuditHook
from broadgauge.grammar import (
    PortalIdentifier,
    ProjectIdentifier,
    ProjectMapping,
    UserIdentifier,
    UserMapping,
)
from broadgauge.runtime.durable import open_sqlite

__all__ = ["LocalDirectory"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

SCHEMA_VERSION = 1

#: What an operator does about a damaged directory (see docs/operators/storage.md).
RECOVERY = (
    "stop the account agent, keep a copy of the file, and restore the directory from a backup "
    "(removing its -wal and -shm files). Do not start with an empty directory: it would hand "
    "out uids already in use"
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    next INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS groups (
    name TEXT PRIMARY KEY,
    gid INTEGER NOT NULL UNIQUE,
    identifier TEXT
);
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    uid INTEGER NOT NULL UNIQUE,
    gid INTEGER NOT NULL,
    identity TEXT,
    home TEXT NOT NULL,
    shell TEXT NOT NULL,
    enabled INTEGER NOT NULL DEFAULT 1,
    locked INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS members (
    group_name TEXT NOT NULL REFERENCES groups(name),
    user_name TEXT NOT NULL,
    PRIMARY KEY (group_name, user_name)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS members_by_user ON members(user_name);
"""


@dataclass(frozen=True, slots=True)
class _User:
    name: str
    uid: int
    gid: int
    identity: str | None
    home: str
    enabled: bool
    locked: bool


class LocalDirectory(Directory):
    """Users and groups in a SQLite file (WAL), following the account backend rules."""

    _label = "local"
    _log = logger

    def __init__(
        self,
        path: str | Path,
        *,
        uid_range: tuple[int, int] = (20000, 29999),
        gid_range: tuple[int, int] = (20000, 29999),
        protected: frozenset[str] = frozenset(),
        audit: AuditHook | None = None,
        busy_timeout: float = 10.0,
    ) -> None:
        super().__init__(protected=protected, audit=audit)
        self._ranges = check_ranges(uid_range, gid_range)
        self._path = Path(path)
        self._lock = threading.Lock()
        # Autocommit: we issue BEGIN IMMEDIATE ourselves so the write lock is taken before
        # the first read of a transaction (read-then-write stays atomic).  A damaged file
        # stops the agent here (DamagedFileError): the directory is the site's record of
        # uids, never to be started afresh behind the operator's back.
        self._db: sqlite3.Connection | None = open_sqlite(
            self._path, what="the local account directory", recovery=RECOVERY, timeout=busy_timeout
        )
        # FULL: an account the agent reported as created must survive a power cut.
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        with self._transaction() as db:
            version = int(db.execute("PRAGMA user_version").fetchone()[0])
            if version > SCHEMA_VERSION:
                raise AccountError(f"{self._path} was written by a newer Broadgauge ({version})")
            # Statement by statement: executescript() would COMMIT our transaction first.
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    # -- plumbing -------------------------------------------------------------------------

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        if self._db is None:
            raise AccountError("the local account directory is closed")
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:  # SQLite may already have rolled back (e.g. disk full)
                db.execute("ROLLBACK")
            raise

    def _execute(self, op: Callable[[sqlite3.Connection, list[str]], T]) -> tuple[T, list[str]]:
        notes: list[str] = []
        with self._lock:
            try:
                with self._transaction() as db:
                    result = op(db, notes)
            except sqlite3.Error as exc:
                raise AccountError(f"local account directory {self._path}: {exc}") from exc
        return result, notes

    async def _run(self, op: Callable[[sqlite3.Connection, list[str]], T]) -> T:
        # Audited once the transaction has committed, even if our caller was cancelled.
        return await self._in_thread(functools.partial(self._execute, op))

    # -- row helpers (run inside a transaction) -------------------------------------------

    @staticmethod
    def _user(db: sqlite3.Connection, name: str) -> _User | None:
        row = db.execute(
            "SELECT name, uid, gid, identity, home, enabled, locked FROM users WHERE name = ?",
            (name,),
        ).fetchone()
        if row is None:
            return None
        return _User(row[0], row[1], row[2], row[3], row[4], bool(row[5]), bool(row[6]))

    @staticmethod
    def _gid(db: sqlite3.Connection, group: str) -> int | None:
        row = db.execute("SELECT gid FROM groups WHERE name = ?", (group,)).fetchone()
        return None if row is None else int(row[0])

    @staticmethod
    def _groups_of(db: sqlite3.Connection, name: str) -> set[str]:
        rows = db.execute("SELECT group_name FROM members WHERE user_name = ?", (name,))
        return {row[0] for row in rows}

    def _allocate(self, db: sqlite3.Connection, kind: str) -> int:
        low, high = self._ranges[kind]
        row = db.execute("SELECT next FROM counters WHERE name = ?", (kind,)).fetchone()
        if row is None:
            db.execute("INSERT INTO counters (name, next) VALUES (?, ?)", (kind, low))
            candidate = low
        else:
            # max(): the configured range may have moved up since the counter was made.
            candidate = max(int(row[0]), low)
        table = "users" if kind == "uid" else "groups"
        while True:
            if candidate > high:
                raise AccountError(f"no free {kind} left in the range {low}-{high}")
            taken = db.execute(f"SELECT 1 FROM {table} WHERE {kind} = ?", (candidate,))
            if taken.fetchone() is None:
                break
            candidate += 1
        db.execute("UPDATE counters SET next = ? WHERE name = ?", (candidate + 1, kind))
        return candidate

    def _ensure_group(
        self, db: sqlite3.Connection, group: str, identifier: str | None, notes: list[str]
    ) -> int:
        gid = self._gid(db, group)
        if gid is not None:
            return gid
        gid = self._allocate(db, "gid")
        db.execute(
            "INSERT INTO groups (name, gid, identifier) VALUES (?, ?, ?)", (group, gid, identifier)
        )
        notes.append(f"created group {group} (gid {gid})")
        return gid

    def _join(self, db: sqlite3.Connection, group: str, name: str, notes: list[str]) -> None:
        cursor = db.execute(
            "INSERT OR IGNORE INTO members (group_name, user_name) VALUES (?, ?)", (group, name)
        )
        if cursor.rowcount:
            notes.append(f"added {name} to group {group}")

    def _leave(self, db: sqlite3.Connection, group: str, name: str, notes: list[str]) -> None:
        cursor = db.execute(
            "DELETE FROM members WHERE group_name = ? AND user_name = ?", (group, name)
        )
        if cursor.rowcount:
            notes.append(f"removed {name} from group {group}")

    def _is_protected(self, db: sqlite3.Connection, name: str) -> bool:
        if name in self._protected:
            return True
        return self._user(db, name) is not None and naming.MANAGED_GROUP not in self._groups_of(
            db, name
        )

    @staticmethod
    def _check_identity(row: _User, user: UserIdentifier) -> None:
        # user.project names can collide across portals (alice.proj of two portals);
        # never let one identity take over another's account.
        if row.identity != str(user):
            raise AccountError(
                f"account {row.name} belongs to {row.identity!r}, not to {str(user)!r}"
            )

    def _disable(self, db: sqlite3.Connection, row: _User, notes: list[str]) -> None:
        for group in sorted(
            self._groups_of(db, row.name) - {naming.MANAGED_GROUP, naming.BLOCKED_GROUP}
        ):
            self._leave(db, group, row.name, notes)
        if row.enabled:
            db.execute("UPDATE users SET enabled = 0 WHERE name = ?", (row.name,))
            notes.append(f"disabled {row.name} (uid {row.uid} kept)")

    # -- projects -------------------------------------------------------------------------

    async def add_project(self, project: ProjectIdentifier) -> ProjectMapping:
        """Create the project's group (idempotent)."""
        mapping = naming.project_mapping(project)

        def op(db: sqlite3.Connection, notes: list[str]) -> ProjectMapping:
            self._ensure_group(db, mapping.local_group, str(project), notes)
            return mapping

        return await self._run(op)

    async def remove_project(self, project: ProjectIdentifier) -> ProjectMapping:
        """Disable every managed, unprotected member; keep the group and its gid."""
        mapping = naming.project_mapping(project)

        def op(db: sqlite3.Connection, notes: list[str]) -> ProjectMapping:
            if self._gid(db, mapping.local_group) is None:
                raise AccountError(f"project group {mapping.local_group} does not exist")
            rows = db.execute(
                "SELECT user_name FROM members WHERE group_name = ? ORDER BY user_name",
                (mapping.local_group,),
            ).fetchall()
            for (name,) in rows:
                row = self._user(db, name)
                identity = identity_in([row.identity if row else None])
                if row is None or identity is None or identity.project_identifier != project:
                    continue
                if not self._is_protected(db, name):
                    self._disable(db, row, notes)
            return mapping

        return await self._run(op)

    async def get_projects(self, portal: PortalIdentifier) -> list[ProjectMapping]:
        """Every project group of ``portal``."""
        naming.portal_name(portal)

        def op(db: sqlite3.Connection, notes: list[str]) -> list[ProjectMapping]:
            rows = db.execute("SELECT name, identifier FROM groups WHERE identifier IS NOT NULL")
            return portal_projects(rows, portal)

        return await self._run(op)

    async def is_existing_project(self, project: ProjectIdentifier) -> bool:
        """Whether the project's group exists."""
        group = naming.project_group(project)
        return await self._run(lambda db, notes: self._gid(db, group) is not None)

    # -- users ----------------------------------------------------------------------------

    async def add_user(self, user: UserIdentifier) -> UserMapping:
        """Create, or re-enable, the user in its project group (idempotent)."""
        mapping = naming.user_mapping(user)
        name = mapping.local_user

        def op(db: sqlite3.Connection, notes: list[str]) -> UserMapping:
            if self._is_protected(db, name):
                return mapping
            row = self._user(db, name)
            if row is not None:
                self._check_identity(row, user)
                if row.locked:
                    return mapping  # blocked: only unblock_user may change it
            gid = self._ensure_group(db, mapping.local_group, str(user.project_identifier), notes)
            self._ensure_group(db, naming.MANAGED_GROUP, None, notes)
            if row is None:
                uid = self._allocate(db, "uid")
                db.execute(
                    "INSERT INTO users (name, uid, gid, identity, home, shell) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (name, uid, gid, str(user), f"/home/{name}", DEFAULT_SHELL),
                )
                notes.append(f"created user {name} (uid {uid}) for {user}")
            elif not row.enabled:
                db.execute("UPDATE users SET enabled = 1 WHERE name = ?", (name,))
                notes.append(f"re-enabled {name} (uid {row.uid})")
            self._join(db, naming.MANAGED_GROUP, name, notes)
            self._join(db, mapping.local_group, name, notes)
            return mapping

        return await self._run(op)

    async def remove_user(self, user: UserIdentifier) -> UserMapping:
        """Disable the user and drop its project membership; keep the uid."""
        mapping = naming.user_mapping(user)

        def op(db: sqlite3.Connection, notes: list[str]) -> UserMapping:
            row = self._user(db, mapping.local_user)
            if row is None or self._is_protected(db, mapping.local_user):
                return mapping
            self._check_identity(row, user)
            self._disable(db, row, notes)
            return mapping

        return await self._run(op)

    async def get_users(self, project: ProjectIdentifier) -> list[UserMapping]:
        """Members of the project's group whose stored identity belongs to the project."""
        group = naming.project_group(project)

        def op(db: sqlite3.Connection, notes: list[str]) -> list[UserMapping]:
            rows = db.execute(
                "SELECT u.identity FROM members m JOIN users u ON u.name = m.user_name "
                "WHERE m.group_name = ? ORDER BY u.name",
                (group,),
            )
            found = []
            for (identity_text,) in rows:
                identity = identity_in([identity_text])
                if identity is not None and identity.project_identifier == project:
                    found.append(naming.user_mapping(identity))
            return found

        return await self._run(op)

    async def is_existing_user(self, user: UserIdentifier) -> bool:
        """Whether the account exists and has not been removed."""
        mapping = naming.user_mapping(user)

        def op(db: sqlite3.Connection, notes: list[str]) -> bool:
            if self._user(db, mapping.local_user) is None:
                return False
            groups = self._groups_of(db, mapping.local_user)
            return naming.MANAGED_GROUP not in groups or mapping.local_group in groups

        return await self._run(op)

    async def is_protected_user(self, user: UserIdentifier) -> bool:
        """Whether the account is unmanaged or named in the protected list."""
        name = naming.user_name(user)
        return await self._run(lambda db, notes: self._is_protected(db, name))

    async def block_user(self, user: UserIdentifier) -> UserMapping:
        """Lock the account and add it to ``openportal.blocked``."""
        return await self._set_blocked(user, True)

    async def unblock_user(self, user: UserIdentifier) -> UserMapping:
        """Unlock the account and remove it from ``openportal.blocked``."""
        return await self._set_blocked(user, False)

    async def _set_blocked(self, user: UserIdentifier, blocked: bool) -> UserMapping:
        mapping = naming.user_mapping(user)

        def op(db: sqlite3.Connection, notes: list[str]) -> UserMapping:
            if self._is_protected(db, mapping.local_user):
                return mapping
            row = self._existing(db, user)
            if blocked:
                self._ensure_group(db, naming.BLOCKED_GROUP, None, notes)
                self._join(db, naming.BLOCKED_GROUP, row.name, notes)
            else:
                self._leave(db, naming.BLOCKED_GROUP, row.name, notes)
            if row.locked != blocked:
                db.execute("UPDATE users SET locked = ? WHERE name = ?", (int(blocked), row.name))
                notes.append(f"{'locked' if blocked else 'unlocked'} {row.name}")
            return mapping

        return await self._run(op)

    async def is_blocked_user(self, user: UserIdentifier) -> bool:
        """Whether the account exists and is locked."""
        name = naming.user_name(user)

        def op(db: sqlite3.Connection, notes: list[str]) -> bool:
            row = self._user(db, name)
            return row is not None and row.locked

        return await self._run(op)

    async def update_homedir(self, user: UserIdentifier, homedir: str) -> str:
        """Set the home directory (a protected account keeps, and returns, its own)."""
        check_homedir(homedir)

        def op(db: sqlite3.Connection, notes: list[str]) -> str:
            row = self._existing(db, user)
            if self._is_protected(db, row.name) or row.home == homedir:
                return row.home
            db.execute("UPDATE users SET home = ? WHERE name = ?", (homedir, row.name))
            notes.append(f"set the home directory of {row.name} to {homedir}")
            return homedir

        return await self._run(op)

    def _existing(self, db: sqlite3.Connection, user: UserIdentifier) -> _User:
        name = naming.user_name(user)
        row = self._user(db, name)
        if row is None:
            raise AccountError(f"user {name} does not exist")
        if not self._is_protected(db, name):
            self._check_identity(row, user)
        return row

    async def close(self) -> None:
        """Close the database (later calls fail with AccountError)."""

        def shut() -> None:
            with self._lock:
                if self._db is not None:
                    self._db.close()
                    self._db = None

        await asyncio.to_thread(shut)
