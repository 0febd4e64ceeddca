"""The booking store on one SQLite file, shared by every planner process of one host.

Every call is one ``BEGIN IMMEDIATE`` transaction: it takes the file's write lock before it
reads, so the check and the write of :meth:`~SqliteBookingStore.offer` (and of every other
change) are serialised across all processes on the file, and no two offers can both take
the last capacity.  Reads take the write lock too, because lazy expiry may write.  A
process that finds the lock taken waits (``busy_timeout``) rather than fails.

Within a process one connection, used by worker threads (``asyncio.to_thread``) under a
lock, keeps blocking SQLite calls off the event loop.  The connection and the tables are
made on the first call, on a worker thread, so opening never blocks the loop.

After a crash: the file is in WAL mode with ``synchronous=FULL``, so every call that has
returned is on disk (the WAL is synced at each commit) and survives a process, OS or power
failure; a call interrupted by the crash has left no trace.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from ._booking import (
    OFFERSET_COLUMNS,
    SESSION_COLUMNS,
    BookingConflict,
    check_offer,
    check_transition,
    dump,
    fits,
    offerset_from_row,
    offerset_row,
    session_from_row,
    session_row,
)
from .records import HOLDING, OfferSetRecord, Phase, SessionRecord

__all__ = ["SqliteBookingStore"]

_T = TypeVar("_T")

#: How long a call waits for another process's write lock before failing.
BUSY_TIMEOUT_SECONDS = 60.0

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS booking_capacity (
        resource TEXT PRIMARY KEY,
        cores INTEGER NOT NULL,
        memory_mib INTEGER NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS booking_offersets (
        uuid TEXT PRIMARY KEY, owner TEXT, name TEXT NOT NULL, result TEXT NOT NULL,
        created REAL NOT NULL, messages TEXT NOT NULL, request TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS booking_sessions (
        uuid TEXT PRIMARY KEY, offerset TEXT NOT NULL, owner TEXT, resource TEXT NOT NULL,
        cores INTEGER NOT NULL, memory_mib INTEGER NOT NULL, storage_gib INTEGER NOT NULL,
        start_at REAL NOT NULL, end_at REAL NOT NULL, expires REAL NOT NULL,
        phase TEXT NOT NULL, executable TEXT NOT NULL, created REAL NOT NULL,
        modified REAL NOT NULL, connectors TEXT NOT NULL, messages TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS booking_sessions_resource ON booking_sessions (resource, phase)",
    "CREATE INDEX IF NOT EXISTS booking_sessions_offerset ON booking_sessions (offerset)",
)

_HOLDING = tuple(sorted(phase.value for phase in HOLDING))
_SELECT_SESSION = f"SELECT {SESSION_COLUMNS} FROM booking_sessions"
_OFFERED, _EXPIRED = Phase.OFFERED.value, Phase.EXPIRED.value


class _Abandon(Exception):
    """Raised by a transaction's work to roll it back and return ``value``."""

    def __init__(self, value: object) -> None:
        super().__init__()
        self.value = value


def _expire_where(db: sqlite3.Connection, where: str, params: tuple[Any, ...], now: float) -> int:
    """Store as EXPIRED the OFFERED sessions matching ``where`` that lapsed by ``now``."""
    cursor = db.execute(
        "UPDATE booking_sessions SET phase = ?, modified = ?"
        f" WHERE phase = ? AND expires <= ? AND {where}",
        (_EXPIRED, now, _OFFERED, now, *params),
    )
    return cursor.rowcount


def _session(db: sqlite3.Connection, uuid: str, now: float) -> SessionRecord | None:
    """Session ``uuid`` after lazy expiry (inside the caller's transaction)."""
    _expire_where(db, "uuid = ?", (uuid,), now)
    row = db.execute(f"{_SELECT_SESSION} WHERE uuid = ?", (uuid,)).fetchone()
    return None if row is None else session_from_row(row)


def _known(db: sqlite3.Connection, uuid: str, now: float) -> SessionRecord:
    record = _session(db, uuid, now)
    if record is None:
        raise KeyError(uuid)
    return record


def _update(
    db: sqlite3.Connection,
    record: SessionRecord,
    phase: Phase,
    now: float,
    *,
    connectors: tuple[dict[str, Any], ...],
    messages: tuple[dict[str, Any], ...],
) -> SessionRecord:
    db.execute(
        "UPDATE booking_sessions SET phase = ?, modified = ?, connectors = ?, messages = ?"
        " WHERE uuid = ?",
        (phase.value, now, dump(list(connectors)), dump(list(messages)), record.uuid),
    )
    return _known(db, record.uuid, now)


class SqliteBookingStore:
    """:class:`~.booking.BookingStore` on a SQLite file (``":memory:"``: one process only)."""

    def __init__(self, path: str) -> None:
        """Use the file at ``path``; it and its tables are made on the first call."""
        self._path = path
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None

    # ---- plumbing ----------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        # timeout= is SQLite's busy timeout: a second process waits for the write lock.
        db = sqlite3.connect(
            self._path,
            timeout=BUSY_TIMEOUT_SECONDS,
            isolation_level=None,
            check_same_thread=False,
        )
        try:
            db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_SECONDS * 1000)}")
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = FULL")
            db.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA:
                db.execute(statement)
            db.execute("COMMIT")
        except BaseException:
            db.close()
            raise
        return db

    async def _call(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``work`` in one write transaction on a worker thread."""

        def transaction() -> _T:
            with self._lock:
                if self._db is None:
                    self._db = self._connect()
                db = self._db
                db.execute("BEGIN IMMEDIATE")
                try:
                    result = work(db)
                except _Abandon as abandon:
                    db.execute("ROLLBACK")
                    return abandon.value  # type: ignore[return-value]
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
                return result

        return await asyncio.to_thread(transaction)

    # ---- capacity and offer sets -------------------------------------------------------

    async def set_capacity(self, resource: str, cores: int, memory_mib: int) -> None:
        """Set (insert or replace) the capacity of site ``resource``."""

        def work(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO booking_capacity (resource, cores, memory_mib) VALUES (?, ?, ?)"
                " ON CONFLICT (resource) DO UPDATE"
                " SET cores = excluded.cores, memory_mib = excluded.memory_mib",
                (resource, cores, memory_mib),
            )

        await self._call(work)

    async def capacity(self, resource: str) -> tuple[int, int] | None:
        """``(cores, memory_mib)`` of site ``resource``, or None."""

        def work(db: sqlite3.Connection) -> tuple[int, int] | None:
            row = db.execute(
                "SELECT cores, memory_mib FROM booking_capacity WHERE resource = ?", (resource,)
            ).fetchone()
            return None if row is None else (int(row[0]), int(row[1]))

        return await self._call(work)

    async def create_offerset(self, record: OfferSetRecord) -> None:
        """Store a new offer set (ValueError if the uuid exists)."""

        def work(db: sqlite3.Connection) -> None:
            try:
                db.execute(
                    f"INSERT INTO booking_offersets ({OFFERSET_COLUMNS}) VALUES (?,?,?,?,?,?,?)",
                    offerset_row(record),
                )
            except sqlite3.IntegrityError as error:
                raise ValueError(f"offer set {record.uuid} exists") from error

        await self._call(work)

    async def get_offerset(self, uuid: str) -> OfferSetRecord | None:
        """The offer set ``uuid``, or None."""

        def work(db: sqlite3.Connection) -> OfferSetRecord | None:
            row = db.execute(
                f"SELECT {OFFERSET_COLUMNS} FROM booking_offersets WHERE uuid = ?", (uuid,)
            ).fetchone()
            return None if row is None else offerset_from_row(row)

        return await self._call(work)

    # ---- booking -----------------------------------------------------------------------

    async def offer(self, record: SessionRecord, now: float) -> bool:
        """Insert ``record`` as OFFERED if it fits; False (nothing written) if not."""
        check_offer(record, now)

        def work(db: sqlite3.Connection) -> bool:
            row = db.execute(
                "SELECT cores, memory_mib FROM booking_capacity WHERE resource = ?",
                (record.resource,),
            ).fetchone()
            if row is None:
                return False
            if db.execute(
                "SELECT 1 FROM booking_sessions WHERE uuid = ?", (record.uuid,)
            ).fetchone():
                raise ValueError(f"session {record.uuid} exists")
            # Store the lapsed offers we are about to ignore as EXPIRED, so that a late
            # accept (say, from a process whose clock is behind) cannot revive capacity
            # this offer has taken.
            _expire_where(db, "resource = ?", (record.resource,), now)
            holds = db.execute(
                "SELECT start_at, end_at, cores, memory_mib FROM booking_sessions"
                f" WHERE resource = ? AND phase IN ({','.join('?' * len(_HOLDING))})"
                " AND start_at < ? AND end_at > ?",
                (record.resource, *_HOLDING, record.end, record.start),
            ).fetchall()
            if not fits(record, (int(row[0]), int(row[1])), holds):
                raise _Abandon(False)
            db.execute(
                f"INSERT INTO booking_sessions ({SESSION_COLUMNS}) VALUES ({','.join('?' * 16)})",
                session_row(record, Phase.OFFERED),
            )
            return True

        return await self._call(work)

    async def get_session(self, uuid: str, now: float) -> SessionRecord | None:
        """The session ``uuid`` (lapsed offers stored as EXPIRED first), or None."""
        return await self._call(lambda db: _session(db, uuid, now))

    async def sessions_of(self, offerset: str, now: float) -> list[SessionRecord]:
        """The sessions of ``offerset``, by start then uuid, lapsed offers expired."""

        def work(db: sqlite3.Connection) -> list[SessionRecord]:
            _expire_where(db, "offerset = ?", (offerset,), now)
            rows = db.execute(
                f"{_SELECT_SESSION} WHERE offerset = ? ORDER BY start_at, uuid", (offerset,)
            ).fetchall()
            return [session_from_row(row) for row in rows]

        return await self._call(work)

    async def expire(self, now: float) -> int:
        """Store every lapsed offer as EXPIRED; how many there were."""
        return await self._call(lambda db: _expire_where(db, "1 = 1", (), now))

    async def accept(self, uuid: str, now: float) -> SessionRecord:
        """Accept offer ``uuid`` and reject its OFFERED siblings, atomically."""

        def work(db: sqlite3.Connection) -> SessionRecord | BookingConflict:
            record = _known(db, uuid, now)
            if record.phase is not Phase.OFFERED:
                # Returned, not raised, so that a lazy expiry just stored is committed.
                return BookingConflict(uuid, record.phase, {Phase.OFFERED})
            db.execute(
                "UPDATE booking_sessions SET phase = ?, modified = ? WHERE uuid = ?",
                (Phase.ACCEPTED.value, now, uuid),
            )
            # Lapsed siblings become EXPIRED (that is what happened to them), live ones
            # REJECTED; either way their capacity is free from this commit on.
            _expire_where(db, "offerset = ?", (record.offerset,), now)
            db.execute(
                "UPDATE booking_sessions SET phase = ?, modified = ?"
                " WHERE offerset = ? AND phase = ? AND uuid != ?",
                (Phase.REJECTED.value, now, record.offerset, _OFFERED, uuid),
            )
            return _known(db, uuid, now)

        result = await self._call(work)
        if isinstance(result, BookingConflict):
            raise result
        return result

    async def transition(
        self,
        uuid: str,
        allowed: frozenset[Phase],
        to: Phase,
        now: float,
        *,
        connectors: tuple[dict[str, Any], ...] | None = None,
        message: dict[str, Any] | None = None,
    ) -> SessionRecord:
        """Compare-and-set the phase (see :meth:`.booking.BookingStore.transition`)."""
        check_transition(allowed, to)

        def work(db: sqlite3.Connection) -> SessionRecord | BookingConflict:
            record = _known(db, uuid, now)
            if record.phase not in allowed:
                return BookingConflict(uuid, record.phase, allowed)
            messages = record.messages if message is None else (*record.messages, message)
            new_connectors = record.connectors if connectors is None else connectors
            return _update(db, record, to, now, connectors=new_connectors, messages=messages)

        result = await self._call(work)
        if isinstance(result, BookingConflict):
            raise result
        return result

    async def add_message(self, uuid: str, message: dict[str, Any], now: float) -> SessionRecord:
        """Append ``message`` to the session's messages, in any phase."""

        def work(db: sqlite3.Connection) -> SessionRecord:
            record = _known(db, uuid, now)
            messages = (*record.messages, message)
            return _update(
                db, record, record.phase, now, connectors=record.connectors, messages=messages
            )

        return await self._call(work)

    async def close(self) -> None:
        """Close the connection (a later call would open a new one)."""

        def work() -> None:
            with self._lock:
                if self._db is not None:
                    self._db.close()
                    self._db = None

        await asyncio.to_thread(work)
