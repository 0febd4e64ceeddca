"""The notebook agent's record of server sessions, for usage reports and project limits.

A JupyterHub keeps no history: it reports only the servers running now, each with its
``started`` time (and ``last_activity``).  So the agent keeps its own record in a SQLite
file.  A *session* is one server of one hub user, from its ``started`` time until it ends,
counted against the project group the user belonged to when it was first seen.

How sessions are counted:

* The agent polls the hub and passes what runs to :meth:`SessionLedger.observe`.  A
  (user, started) pair not seen before opens a session beginning at ``started`` (so time
  before the first observation is counted).  Each observation moves the session's
  ``last_seen`` forward to the observation's time.
* A session whose server is no longer reported (or whose user now has a server with
  another ``started``, i.e. a new server) is closed at its ``last_seen``.  The server
  really stopped somewhere between that and the next observation, so this under-counts by
  at most one polling interval.  A server started and stopped entirely between two
  observations is never seen and not counted.
* When the agent itself stops a server it calls :meth:`SessionLedger.stopped`, which
  closes the session exactly at that time.
* A closed session is never reopened, even if a later observation still reports its
  server (a stop the hub has not finished yet): counting errs towards less, never twice.
* Usage is whole seconds of server time per UTC day per hub user; a session spanning
  midnight is split between the days, and an open session counts up to the ``now`` given.

History is never deleted.  Every time is a timezone-aware datetime, stored in UTC.
"""

from __future__ import annotations

import datetime as _dt
import sqlite3
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

from broadgauge.agents._sqlite import SqliteFile

__all__ = ["SessionLedger"]

_T = TypeVar("_T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id INTEGER PRIMARY KEY,
    user TEXT NOT NULL,
    grp TEXT NOT NULL,
    started TEXT NOT NULL,
    last_seen TEXT NOT NULL,
    closed TEXT,  -- NULL while the server is running
    UNIQUE (user, started)
);
CREATE INDEX IF NOT EXISTS sessions_by_group ON sessions (grp, started);
CREATE INDEX IF NOT EXISTS sessions_open ON sessions (closed) WHERE closed IS NULL;
CREATE TABLE IF NOT EXISTS limits (
    grp TEXT PRIMARY KEY,
    seconds INTEGER NOT NULL
);
"""

_MICROSECOND = _dt.timedelta(microseconds=1)
_DAY = _dt.timedelta(days=1)


def _utc(when: _dt.datetime) -> _dt.datetime:
    if when.tzinfo is None:
        raise ValueError(f"naive datetime {when.isoformat()}: session times must be aware")
    return when.astimezone(_dt.UTC)


def _store(when: _dt.datetime) -> str:
    # A fixed-width form, so that SQLite's text comparison orders times correctly.
    return _utc(when).isoformat(timespec="microseconds")


def _load(text: str) -> _dt.datetime:
    return _dt.datetime.fromisoformat(text)


def _midnight(day: _dt.date) -> _dt.datetime:
    return _dt.datetime(day.year, day.month, day.day, tzinfo=_dt.UTC)


class SessionLedger:
    """Notebook server sessions and project limits in a SQLite file."""

    def __init__(self, path: str | Path) -> None:
        """Open (or create) the ledger at ``path`` (``":memory:"`` for a throwaway one)."""
        self._file = SqliteFile(path, _SCHEMA)

    async def _call(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``work`` in one transaction on a worker thread."""
        return await self._file.transaction(work)

    # ---- recording ---------------------------------------------------------------------

    async def observe(
        self, now: _dt.datetime, running: Mapping[str, tuple[_dt.datetime, str]]
    ) -> None:
        """Record one poll of the hub at ``now``.

        ``running`` maps each hub user with a running server to (the server's ``started``
        time, the project group it counts against).  Open sessions still running are seen
        again at ``now``; the others are closed at their ``last_seen`` (see the module
        docstring for what that misses); new servers open sessions.
        """
        seen = _store(now)
        current = {user: (_store(started), group) for user, (started, group) in running.items()}

        def work(db: sqlite3.Connection) -> None:
            open_rows = db.execute(
                "SELECT id, user, started, last_seen FROM sessions WHERE closed IS NULL"
            ).fetchall()
            for session, user, started, last_seen in open_rows:
                if user in current and current[user][0] == started:
                    # max(): an observation out of order must not move last_seen back.
                    db.execute(
                        "UPDATE sessions SET last_seen = ? WHERE id = ?",
                        (max(last_seen, seen), session),
                    )
                else:
                    db.execute("UPDATE sessions SET closed = last_seen WHERE id = ?", (session,))
            for user, (started, group) in current.items():
                # OR IGNORE: a session already open is updated above, and a closed one
                # stays closed (the module docstring says why).
                db.execute(
                    "INSERT OR IGNORE INTO sessions (user, grp, started, last_seen)"
                    " VALUES (?, ?, ?, ?)",
                    (user, group, started, max(started, seen)),
                )

        await self._call(work)

    async def stopped(self, user: str, when: _dt.datetime) -> None:
        """The agent stopped ``user``'s server at ``when``: close its open session then.

        Nothing happens when the user has no open session.
        """
        end = _store(when)

        def work(db: sqlite3.Connection) -> None:
            # A session cannot end before it began (clocks of agent and hub may differ).
            db.execute(
                "UPDATE sessions SET closed = MAX(started, ?), last_seen = MAX(started, ?)"
                " WHERE user = ? AND closed IS NULL",
                (end, end, user),
            )

        await self._call(work)

    # ---- reporting ---------------------------------------------------------------------

    async def _intervals(
        self, group: str, start: _dt.datetime | None, end: _dt.datetime, now: _dt.datetime
    ) -> list[tuple[str, _dt.datetime, _dt.datetime]]:
        """(user, begin, end) of each session of ``group``, clipped to ``[start, end)``."""
        low = _store(start) if start is not None else ""
        high = _store(end)

        def work(db: sqlite3.Connection) -> list[tuple[str, str, str | None]]:
            return db.execute(
                "SELECT user, started, closed FROM sessions"
                " WHERE grp = ? AND started < ? AND (closed IS NULL OR closed > ?)",
                (group, high, low),
            ).fetchall()

        clipped = []
        for user, started, closed in await self._call(work):
            begin = _load(started)
            finish = _load(closed) if closed is not None else _utc(now)
            if start is not None:
                begin = max(begin, start)
            finish = min(finish, end)
            if finish > begin:
                clipped.append((user, begin, finish))
        return clipped

    async def usage(
        self, group: str, first_day: _dt.date, last_day: _dt.date, now: _dt.datetime
    ) -> dict[_dt.date, dict[str, int]]:
        """Whole seconds of server time per UTC day per hub user, for ``group``'s sessions.

        Covers ``first_day`` to ``last_day`` inclusive; only days with usage are keys.
        Open sessions count up to ``now``.  Each day's figure is rounded down.
        """
        start = _midnight(first_day)
        end = _midnight(last_day) + _DAY
        # Sum exact microseconds first and round once per (day, user), so that many
        # short sessions are not each rounded down.
        exact: dict[_dt.date, dict[str, int]] = {}
        for user, begin, finish in await self._intervals(group, start, end, now):
            cursor = begin
            while cursor < finish:
                day_end = min(finish, _midnight(cursor.date()) + _DAY)
                per_user = exact.setdefault(cursor.date(), {})
                per_user[user] = per_user.get(user, 0) + (day_end - cursor) // _MICROSECOND
                cursor = day_end
        report: dict[_dt.date, dict[str, int]] = {}
        for day, per_user in sorted(exact.items()):
            seconds = {user: micro // 1_000_000 for user, micro in sorted(per_user.items())}
            if any(seconds.values()):
                report[day] = {user: value for user, value in seconds.items() if value}
        return report

    async def total(self, group: str, now: _dt.datetime) -> int:
        """Every whole second of server time ever counted against ``group`` (open sessions
        up to ``now``)."""
        intervals = await self._intervals(group, None, _utc(now), now)
        micro = sum((finish - begin) // _MICROSECOND for _, begin, finish in intervals)
        return micro // 1_000_000

    # ---- limits ------------------------------------------------------------------------

    async def set_limit(self, group: str, seconds: int) -> int:
        """Store ``group``'s limit in seconds of server time (0 clears it); return it."""
        if seconds < 0:
            raise ValueError("a limit cannot be negative")

        def work(db: sqlite3.Connection) -> None:
            if seconds:
                db.execute(
                    "INSERT INTO limits (grp, seconds) VALUES (?, ?)"
                    " ON CONFLICT (grp) DO UPDATE SET seconds = excluded.seconds",
                    (group, seconds),
                )
            else:
                db.execute("DELETE FROM limits WHERE grp = ?", (group,))

        await self._call(work)
        return await self.get_limit(group)

    async def get_limit(self, group: str) -> int:
        """``group``'s limit in seconds of server time (0 when there is none)."""

        def work(db: sqlite3.Connection) -> int:
            row = db.execute("SELECT seconds FROM limits WHERE grp = ?", (group,)).fetchone()
            return int(row[0]) if row is not None else 0

        return await self._call(work)

    async def close(self) -> None:
        """Close the database."""
        self._file.close()
