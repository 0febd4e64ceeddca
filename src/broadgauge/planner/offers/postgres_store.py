"""The booking store on PostgreSQL (psycopg 3), shared by planner processes on any hosts.

Why row locks, not SERIALIZABLE: :meth:`~PostgresBookingStore.offer` locks the site's
capacity row (``SELECT … FOR UPDATE``) before it reads the holds, so offers on one site
queue behind each other, in READ COMMITTED, and each sees every hold committed before it
got the lock (each statement takes a fresh snapshot).  Offers on different sites do not
wait for each other.  SERIALIZABLE would give the same safety but fails the losers with
serialisation errors that need a retry loop, which under contention (fifty offers on the
last cores) means many retries; a lock just waits, once.

Changes to sessions lock the rows they change.  Every statement that locks several session
rows locks them in uuid order (``ORDER BY uuid FOR UPDATE``), so that two such transactions
(an accept and an expiry sweep, two accepts of siblings) queue rather than deadlock; an
accept first locks all of its offer set's sessions, so of concurrent accepts of siblings
the first wins and the others see it ACCEPTED or REJECTED.

Within a process a small pool of connections (made on demand, autocommit with explicit
transactions) lets calls run concurrently.  The tables are made on the first call, under
an advisory lock, since concurrent ``CREATE TABLE IF NOT EXISTS`` can collide.

After a crash: a call that has returned has committed, and PostgreSQL's commit is durable
(with the default ``fsync`` and ``synchronous_commit``); a call interrupted by the crash is
rolled back as a whole.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg

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

__all__ = ["PostgresBookingStore"]

_Conn = psycopg.AsyncConnection[tuple[Any, ...]]

#: The key of the advisory lock that serialises schema creation (any constant will do).
_SCHEMA_LOCK = 0x0B00C1

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS booking_capacity (
        resource TEXT PRIMARY KEY,
        cores BIGINT NOT NULL,
        memory_mib BIGINT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS booking_offersets (
        uuid TEXT PRIMARY KEY, owner TEXT, name TEXT NOT NULL, result TEXT NOT NULL,
        created DOUBLE PRECISION NOT NULL, messages TEXT NOT NULL, request TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS booking_sessions (
        uuid TEXT PRIMARY KEY, offerset TEXT NOT NULL, owner TEXT, resource TEXT NOT NULL,
        cores BIGINT NOT NULL, memory_mib BIGINT NOT NULL, storage_gib BIGINT NOT NULL,
        start_at DOUBLE PRECISION NOT NULL, end_at DOUBLE PRECISION NOT NULL,
        expires DOUBLE PRECISION NOT NULL, phase TEXT NOT NULL, executable TEXT NOT NULL,
        created DOUBLE PRECISION NOT NULL, modified DOUBLE PRECISION NOT NULL,
        connectors TEXT NOT NULL, messages TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS booking_sessions_resource ON booking_sessions (resource, phase)",
    "CREATE INDEX IF NOT EXISTS booking_sessions_offerset ON booking_sessions (offerset)",
)

_HOLDING = sorted(phase.value for phase in HOLDING)
_SELECT_SESSION = f"SELECT {SESSION_COLUMNS} FROM booking_sessions"
_OFFERED, _EXPIRED = Phase.OFFERED.value, Phase.EXPIRED.value


async def _expire_where(conn: _Conn, where: str, params: tuple[Any, ...], now: float) -> int:
    """Store as EXPIRED the OFFERED sessions matching ``where`` that lapsed by ``now``."""
    cursor = await conn.execute(
        "UPDATE booking_sessions SET phase = %s, modified = %s WHERE uuid IN ("
        "SELECT uuid FROM booking_sessions"
        f" WHERE phase = %s AND expires <= %s AND {where} ORDER BY uuid FOR UPDATE)"
        # Checked again: a row the subquery waited for may have been accepted meanwhile.
        " AND phase = %s",
        (_EXPIRED, now, _OFFERED, now, *params, _OFFERED),
    )
    return cursor.rowcount


async def _session(conn: _Conn, uuid: str, now: float, *, lock: bool) -> SessionRecord | None:
    """Session ``uuid`` after lazy expiry; ``lock``: hold its row until commit."""
    await _expire_where(conn, "uuid = %s", (uuid,), now)
    suffix = " FOR UPDATE" if lock else ""
    cursor = await conn.execute(f"{_SELECT_SESSION} WHERE uuid = %s{suffix}", (uuid,))
    row = await cursor.fetchone()
    return None if row is None else session_from_row(row)


async def _known(conn: _Conn, uuid: str, now: float) -> SessionRecord:
    record = await _session(conn, uuid, now, lock=True)
    if record is None:
        raise KeyError(uuid)
    return record


async def _update(
    conn: _Conn,
    record: SessionRecord,
    phase: Phase,
    now: float,
    *,
    connectors: tuple[dict[str, Any], ...],
    messages: tuple[dict[str, Any], ...],
) -> SessionRecord:
    await conn.execute(
        "UPDATE booking_sessions SET phase = %s, modified = %s, connectors = %s, messages = %s"
        " WHERE uuid = %s",
        (phase.value, now, dump(list(connectors)), dump(list(messages)), record.uuid),
    )
    return await _known(conn, record.uuid, now)


class PostgresBookingStore:
    """:class:`~.booking.BookingStore` on a PostgreSQL database (use it from one event loop)."""

    def __init__(self, url: str, *, pool_size: int = 4) -> None:
        """Use the database at ``url``; connections and tables are made on demand."""
        self._url = url
        self._idle: list[_Conn] = []
        self._slots = asyncio.Semaphore(pool_size)
        self._schema_lock = asyncio.Lock()
        self._schema_ready = False

    # ---- plumbing ----------------------------------------------------------------------

    async def _connect(self) -> _Conn:
        conn = await psycopg.AsyncConnection.connect(self._url, autocommit=True)
        if not self._schema_ready:
            async with self._schema_lock:
                if not self._schema_ready:
                    async with conn.transaction():
                        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                        for statement in _SCHEMA:
                            await conn.execute(statement)
                    self._schema_ready = True
        return conn

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[_Conn]:
        """One transaction on a pooled connection (``psycopg.Rollback`` rolls back quietly)."""
        async with self._slots:
            conn = self._idle.pop() if self._idle else await self._connect()
            try:
                async with conn.transaction():
                    yield conn
            finally:
                # A connection that is broken (server gone) or left inside a transaction
                # (cancelled mid-rollback) is dropped rather than handed to the next call.
                idle = psycopg.pq.TransactionStatus.IDLE
                if conn.closed or conn.broken or conn.info.transaction_status != idle:
                    await conn.close()
                else:
                    self._idle.append(conn)

    # ---- capacity and offer sets -------------------------------------------------------

    async def set_capacity(self, resource: str, cores: int, memory_mib: int) -> None:
        """Set (insert or replace) the capacity of site ``resource``."""
        async with self._transaction() as conn:
            await conn.execute(
                "INSERT INTO booking_capacity (resource, cores, memory_mib) VALUES (%s, %s, %s)"
                " ON CONFLICT (resource) DO UPDATE"
                " SET cores = excluded.cores, memory_mib = excluded.memory_mib",
                (resource, cores, memory_mib),
            )

    async def capacity(self, resource: str) -> tuple[int, int] | None:
        """``(cores, memory_mib)`` of site ``resource``, or None."""
        async with self._transaction() as conn:
            cursor = await conn.execute(
                "SELECT cores, memory_mib FROM booking_capacity WHERE resource = %s", (resource,)
            )
            row = await cursor.fetchone()
        return None if row is None else (int(row[0]), int(row[1]))

    async def create_offerset(self, record: OfferSetRecord) -> None:
        """Store a new offer set (ValueError if the uuid exists)."""
        try:
            async with self._transaction() as conn:
                await conn.execute(
                    f"INSERT INTO booking_offersets ({OFFERSET_COLUMNS})"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s)",
                    offerset_row(record),
                )
        except psycopg.errors.UniqueViolation as error:
            raise ValueError(f"offer set {record.uuid} exists") from error

    async def get_offerset(self, uuid: str) -> OfferSetRecord | None:
        """The offer set ``uuid``, or None."""
        async with self._transaction() as conn:
            cursor = await conn.execute(
                f"SELECT {OFFERSET_COLUMNS} FROM booking_offersets WHERE uuid = %s", (uuid,)
            )
            row = await cursor.fetchone()
        return None if row is None else offerset_from_row(row)

    # ---- booking -----------------------------------------------------------------------

    async def offer(self, record: SessionRecord, now: float) -> bool:
        """Insert ``record`` as OFFERED if it fits; False (nothing written) if not."""
        check_offer(record, now)
        inserted = False
        try:
            async with self._transaction() as conn:
                # The lock that makes check-then-insert atomic: every offer on this site
                # waits here until the one before it has committed or rolled back.
                cursor = await conn.execute(
                    "SELECT cores, memory_mib FROM booking_capacity WHERE resource = %s FOR UPDATE",
                    (record.resource,),
                )
                row = await cursor.fetchone()
                if row is None:
                    raise psycopg.Rollback()
                # Store the lapsed offers we are about to ignore as EXPIRED, so that a late
                # accept (say, from a process whose clock is behind) cannot revive capacity
                # this offer has taken.
                await _expire_where(conn, "resource = %s", (record.resource,), now)
                cursor = await conn.execute(
                    "SELECT start_at, end_at, cores, memory_mib FROM booking_sessions"
                    " WHERE resource = %s AND phase = ANY(%s) AND start_at < %s AND end_at > %s",
                    (record.resource, _HOLDING, record.end, record.start),
                )
                holds = await cursor.fetchall()
                if not fits(record, (int(row[0]), int(row[1])), holds):
                    raise psycopg.Rollback()
                await conn.execute(
                    f"INSERT INTO booking_sessions ({SESSION_COLUMNS})"
                    f" VALUES ({', '.join(['%s'] * 16)})",
                    session_row(record, Phase.OFFERED),
                )
                inserted = True
        except psycopg.errors.UniqueViolation as error:
            raise ValueError(f"session {record.uuid} exists") from error
        return inserted

    async def get_session(self, uuid: str, now: float) -> SessionRecord | None:
        """The session ``uuid`` (lapsed offers stored as EXPIRED first), or None."""
        async with self._transaction() as conn:
            return await _session(conn, uuid, now, lock=False)

    async def sessions_of(self, offerset: str, now: float) -> list[SessionRecord]:
        """The sessions of ``offerset``, by start then uuid, lapsed offers expired."""
        async with self._transaction() as conn:
            await _expire_where(conn, "offerset = %s", (offerset,), now)
            cursor = await conn.execute(
                f"{_SELECT_SESSION} WHERE offerset = %s ORDER BY start_at, uuid", (offerset,)
            )
            rows = await cursor.fetchall()
        return [session_from_row(row) for row in rows]

    async def expire(self, now: float) -> int:
        """Store every lapsed offer as EXPIRED; how many there were."""
        async with self._transaction() as conn:
            return await _expire_where(conn, "TRUE", (), now)

    async def accept(self, uuid: str, now: float) -> SessionRecord:
        """Accept offer ``uuid`` and reject its OFFERED siblings, atomically."""
        async with self._transaction() as conn:
            cursor = await conn.execute(
                "SELECT offerset FROM booking_sessions WHERE uuid = %s", (uuid,)
            )
            found = await cursor.fetchone()
            if found is None:
                raise KeyError(uuid)
            # Lock the whole offer set in uuid order first: concurrent accepts of siblings
            # then queue here, and the first to get the locks wins.
            await conn.execute(
                "SELECT uuid FROM booking_sessions WHERE offerset = %s ORDER BY uuid FOR UPDATE",
                (found[0],),
            )
            record = await _known(conn, uuid, now)
            if record.phase is not Phase.OFFERED:
                # Returned, not raised, so that a lazy expiry just stored is committed.
                conflict = BookingConflict(uuid, record.phase, {Phase.OFFERED})
            else:
                conflict = None
                await conn.execute(
                    "UPDATE booking_sessions SET phase = %s, modified = %s WHERE uuid = %s",
                    (Phase.ACCEPTED.value, now, uuid),
                )
                # Lapsed siblings become EXPIRED (that is what happened to them), live ones
                # REJECTED; either way their capacity is free from this commit on.
                await _expire_where(conn, "offerset = %s", (record.offerset,), now)
                await conn.execute(
                    "UPDATE booking_sessions SET phase = %s, modified = %s"
                    " WHERE offerset = %s AND phase = %s AND uuid <> %s",
                    (Phase.REJECTED.value, now, record.offerset, _OFFERED, uuid),
                )
                record = await _known(conn, uuid, now)
        if conflict is not None:
            raise conflict
        return record

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
        async with self._transaction() as conn:
            record = await _known(conn, uuid, now)
            if record.phase not in allowed:
                conflict: BookingConflict | None = BookingConflict(uuid, record.phase, allowed)
            else:
                conflict = None
                messages = record.messages if message is None else (*record.messages, message)
                new_connectors = record.connectors if connectors is None else connectors
                record = await _update(
                    conn, record, to, now, connectors=new_connectors, messages=messages
                )
        if conflict is not None:
            raise conflict
        return record

    async def add_message(self, uuid: str, message: dict[str, Any], now: float) -> SessionRecord:
        """Append ``message`` to the session's messages, in any phase."""
        async with self._transaction() as conn:
            record = await _known(conn, uuid, now)
            messages = (*record.messages, message)
            return await _update(
                conn, record, record.phase, now, connectors=record.connectors, messages=messages
            )

    async def close(self) -> None:
        """Close the idle connections (a later call would open new ones)."""
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.close()
