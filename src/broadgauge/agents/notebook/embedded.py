"""The embedded notebook backend: a stand-in for a JupyterHub that serves no notebooks.

``broadgauge demo`` uses it by default, as it uses the SQLite scheduler ledger instead of
Slurm: it keeps what a hub would keep (hub users, groups, memberships and each user's
default server) in a SQLite file and follows the rules of
:class:`~broadgauge.agents.notebook.backend.NotebookBackend`, but it runs no Jupyter server
and no proxy.  "Starting" a server only records one, with a URL under the configured hub
URL where nothing answers.

A real JupyterHub is used instead when the notebook agent is configured with
``jupyterhub-url`` and the secret ``jupyterhub-token``.
"""

from __future__ import annotations

import datetime as _dt
import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote

from broadgauge.agents._sqlite import SqliteFile

from .backend import BLOCKED_GROUP, NotebookError, Server

__all__ = ["EmbeddedHub"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS groups (
    name TEXT PRIMARY KEY,
    created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS members (
    user TEXT NOT NULL,
    grp TEXT NOT NULL,
    PRIMARY KEY (user, grp)
);
CREATE TABLE IF NOT EXISTS servers (
    user TEXT PRIMARY KEY,
    started TEXT NOT NULL,
    last_activity TEXT NOT NULL
);
"""


def _system_clock() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC)


class EmbeddedHub:
    """:class:`~broadgauge.agents.notebook.backend.NotebookBackend` on a SQLite file.

    ``audit(operation, outcome)`` is called once for each change, after it is committed
    (never for a call that changed nothing or failed).  ``clock`` gives the start time of
    new servers (timezone-aware; the system's UTC time by default).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        url: str = "http://127.0.0.1:8000/",
        audit: Callable[[str, str], None] | None = None,
        clock: Callable[[], _dt.datetime] | None = None,
    ) -> None:
        """Open (or create) the hub's file at ``path`` (``":memory:"`` for a throwaway one)."""
        # The Protocol promises a URL ending in "/", and server URLs are built on it.
        self.url = url if url.endswith("/") else url + "/"
        self._audit = audit
        self._clock = clock or _system_clock
        self._file = SqliteFile(path, _SCHEMA)

    # ---- plumbing ----------------------------------------------------------------------

    async def _call(self, work: Callable[[sqlite3.Connection, list[str]], _T]) -> _T:
        """Run ``work`` in one transaction on a worker thread, then audit its changes.

        ``work`` appends a description of each change to the list it is given; they are
        reported only once committed, and from the event loop's thread rather than the
        worker's, so the audit hook need not be thread-safe.
        """
        changes: list[str] = []

        def noted(db: sqlite3.Connection) -> _T:
            return work(db, changes)

        result = await self._file.transaction(noted)
        for change in changes:
            log.info("embedded hub: %s", change)
            if self._audit is not None:
                self._audit(f"embedded hub: {change}", "ok")
        return result

    def _now(self) -> str:
        now = self._clock()
        if now.tzinfo is None:
            raise ValueError("the embedded hub's clock must give timezone-aware times")
        return now.astimezone(_dt.UTC).isoformat()

    @staticmethod
    def _has_user(db: sqlite3.Connection, user: str) -> bool:
        return db.execute("SELECT 1 FROM users WHERE name = ?", (user,)).fetchone() is not None

    @staticmethod
    def _in_group(db: sqlite3.Connection, user: str, group: str) -> bool:
        row = db.execute("SELECT 1 FROM members WHERE user = ? AND grp = ?", (user, group))
        return row.fetchone() is not None

    @staticmethod
    def _stop(db: sqlite3.Connection, user: str, changes: list[str]) -> None:
        if db.execute("DELETE FROM servers WHERE user = ?", (user,)).rowcount:
            changes.append(f"stopped the server of {user}")

    def _server(
        self, db: sqlite3.Connection, user: str, started: str, last_activity: str
    ) -> Server:
        groups = db.execute("SELECT grp FROM members WHERE user = ? ORDER BY grp", (user,))
        return Server(
            user=user,
            started=_dt.datetime.fromisoformat(started),
            last_activity=_dt.datetime.fromisoformat(last_activity),
            url=f"{self.url}user/{quote(user, safe='')}/",
            ready=True,
            groups=tuple(row[0] for row in groups),
        )

    # ---- NotebookBackend ---------------------------------------------------------------

    async def add_group(self, group: str) -> None:
        """Create the group (idempotent)."""

        def work(db: sqlite3.Connection, changes: list[str]) -> None:
            if db.execute(
                "INSERT OR IGNORE INTO groups (name, created) VALUES (?, ?)", (group, self._now())
            ).rowcount:
                changes.append(f"added group {group}")

        await self._call(work)

    async def remove_group(self, group: str) -> None:
        """Delete the group and its memberships (idempotent; its users are kept)."""

        def work(db: sqlite3.Connection, changes: list[str]) -> None:
            db.execute("DELETE FROM members WHERE grp = ?", (group,))
            if db.execute("DELETE FROM groups WHERE name = ?", (group,)).rowcount:
                changes.append(f"removed group {group}")

        await self._call(work)

    async def groups(self) -> list[str]:
        """Every group, sorted (:data:`BLOCKED_GROUP` too, once anyone was blocked)."""

        def work(db: sqlite3.Connection, changes: list[str]) -> list[str]:
            return [row[0] for row in db.execute("SELECT name FROM groups ORDER BY name")]

        return await self._call(work)

    async def group_members(self, group: str) -> list[str] | None:
        """The hub users in ``group``, sorted; None when there is no such group."""

        def work(db: sqlite3.Connection, changes: list[str]) -> list[str] | None:
            if db.execute("SELECT 1 FROM groups WHERE name = ?", (group,)).fetchone() is None:
                return None
            rows = db.execute("SELECT user FROM members WHERE grp = ? ORDER BY user", (group,))
            return [row[0] for row in rows]

        return await self._call(work)

    async def add_user(self, user: str, group: str) -> None:
        """Create the hub user if missing and make it a member of ``group`` (idempotent).

        The group must exist (:class:`NotebookError` otherwise, and no user is created).
        """

        def work(db: sqlite3.Connection, changes: list[str]) -> None:
            if db.execute("SELECT 1 FROM groups WHERE name = ?", (group,)).fetchone() is None:
                raise NotebookError(f"cannot add hub user {user} to group {group}: no such group")
            if db.execute(
                "INSERT OR IGNORE INTO users (name, created) VALUES (?, ?)", (user, self._now())
            ).rowcount:
                changes.append(f"added user {user}")
            if db.execute(
                "INSERT OR IGNORE INTO members (user, grp) VALUES (?, ?)", (user, group)
            ).rowcount:
                changes.append(f"added user {user} to group {group}")

        await self._call(work)

    async def remove_user(self, user: str) -> None:
        """Stop the user's server and delete the hub user and its memberships (idempotent)."""

        def work(db: sqlite3.Connection, changes: list[str]) -> None:
            self._stop(db, user, changes)
            db.execute("DELETE FROM members WHERE user = ?", (user,))
            if db.execute("DELETE FROM users WHERE name = ?", (user,)).rowcount:
                changes.append(f"removed user {user}")

        await self._call(work)

    async def user_exists(self, user: str) -> bool:
        """Whether the hub has ``user``."""
        return await self._call(lambda db, changes: self._has_user(db, user))

    async def set_blocked(self, user: str, blocked: bool) -> None:
        """Block (stop the server, join :data:`BLOCKED_GROUP`) or unblock (leave it).

        Both are idempotent.  Blocking an unknown user is a :class:`NotebookError` (as a
        hub refuses to add an unknown user to a group); unblocking one does nothing.
        :data:`BLOCKED_GROUP` is created when first needed.
        """

        def work(db: sqlite3.Connection, changes: list[str]) -> None:
            if not blocked:
                if db.execute(
                    "DELETE FROM members WHERE user = ? AND grp = ?", (user, BLOCKED_GROUP)
                ).rowcount:
                    changes.append(f"unblocked user {user}")
                return
            if not self._has_user(db, user):
                raise NotebookError(f"cannot block hub user {user}: no such user")
            if db.execute(
                "INSERT OR IGNORE INTO groups (name, created) VALUES (?, ?)",
                (BLOCKED_GROUP, self._now()),
            ).rowcount:
                changes.append(f"added group {BLOCKED_GROUP}")
            # Stop even when already blocked: a server must never outlive a block.
            self._stop(db, user, changes)
            if db.execute(
                "INSERT OR IGNORE INTO members (user, grp) VALUES (?, ?)", (user, BLOCKED_GROUP)
            ).rowcount:
                changes.append(f"blocked user {user}")

        await self._call(work)

    async def is_blocked(self, user: str) -> bool:
        """Whether ``user`` is in :data:`BLOCKED_GROUP`."""
        return await self._call(lambda db, changes: self._in_group(db, user, BLOCKED_GROUP))

    async def start_server(self, user: str) -> Server:
        """Record the user's default server as started and ready; return it.

        Nothing is spawned: the server exists only in this file, its start (and last
        activity) is the clock's time, and its URL (``<url>user/<quoted name>/``) serves
        nothing.  Its ``groups`` are the user's groups at the time of the call.  Already
        running: returned as it is.  Blocked or unknown user: :class:`NotebookError`.
        """

        def work(db: sqlite3.Connection, changes: list[str]) -> Server:
            if not self._has_user(db, user):
                raise NotebookError(f"cannot start a server for hub user {user}: no such user")
            if self._in_group(db, user, BLOCKED_GROUP):
                raise NotebookError(f"cannot start a server for hub user {user}: user is blocked")
            row = db.execute(
                "SELECT started, last_activity FROM servers WHERE user = ?", (user,)
            ).fetchone()
            if row is not None:
                return self._server(db, user, row[0], row[1])
            started = self._now()
            db.execute(
                "INSERT INTO servers (user, started, last_activity) VALUES (?, ?, ?)",
                (user, started, started),
            )
            changes.append(f"started the server of {user}")
            return self._server(db, user, started, started)

        return await self._call(work)

    async def stop_server(self, user: str) -> None:
        """Forget the user's default server (idempotent)."""
        await self._call(lambda db, changes: self._stop(db, user, changes))

    async def servers(self) -> list[Server]:
        """Every recorded server, sorted by user."""

        def work(db: sqlite3.Connection, changes: list[str]) -> list[Server]:
            rows = db.execute("SELECT user, started, last_activity FROM servers ORDER BY user")
            return [self._server(db, *row) for row in rows.fetchall()]

        return await self._call(work)

    async def close(self) -> None:
        """Close the database."""
        self._file.close()
