"""The booking store every planner process behind one name shares, with no double booking.

A site's capacity (cores and memory) is booked by sessions: :meth:`BookingStore.offer`
inserts an OFFERED session only if, at every instant of its interval, what the sessions in
:data:`~.records.HOLDING` phases hold on that site plus the new one fits the capacity; an
OFFERED session holds only until it ``expires``.  :meth:`BookingStore.accept` turns one
offer into ACCEPTED and rejects its siblings, releasing their capacity.  Both are atomic
across processes, so two planners offering the last core at once never both get it.

Two engines, chosen by :func:`open_store`: SQLite (:mod:`.sqlite_store`, one file shared by
the processes of one host) and PostgreSQL (:mod:`.postgres_store`, any number of hosts).

Rules both keep (the tests run every one against both):

* Time is never read from the clock here: every call that depends on it takes ``now``
  (POSIX seconds), so the caller (and the tests) decide what time it is.
* Expiry is lazy: whatever reads or changes a session first turns an OFFERED one whose
  ``expires <= now`` into EXPIRED (stored, ``modified=now``); :meth:`BookingStore.expire`
  sweeps them all, for a periodic job, but nothing depends on it running.
* Capacity is taken only by :meth:`~BookingStore.offer` and kept only through
  :meth:`~BookingStore.accept`: :meth:`~BookingStore.transition` refuses (ValueError) to
  move a session into a holding phase from OFFERED or a non-holding phase, and to move one
  out of a FINAL phase, since either would bypass the capacity check or undo an end.
* Storage (``storage_gib``) is recorded but not booked: capacity is cores and memory.
* Lowering a capacity never touches existing holds; it only makes later offers fail.
"""

from __future__ import annotations

from typing import Any, Protocol

from ._booking import BookingConflict
from .records import OfferSetRecord, Phase, SessionRecord
from .sqlite_store import SqliteBookingStore

__all__ = ["BookingConflict", "BookingStore", "open_store"]


class BookingStore(Protocol):
    """Offer sets, sessions and site capacities, shared by every planner process.

    Unknown session uuids raise :class:`KeyError` from the methods that change a session;
    the getters return None.  Duplicate uuids raise :class:`ValueError`.
    """

    async def set_capacity(self, resource: str, cores: int, memory_mib: int) -> None:
        """Set (insert or replace) the capacity of site ``resource``."""
        ...

    async def capacity(self, resource: str) -> tuple[int, int] | None:
        """``(cores, memory_mib)`` of site ``resource``, or None if it has none."""
        ...

    async def create_offerset(self, record: OfferSetRecord) -> None:
        """Store a new offer set."""
        ...

    async def get_offerset(self, uuid: str) -> OfferSetRecord | None:
        """The offer set ``uuid``, or None."""
        ...

    async def offer(self, record: SessionRecord, now: float) -> bool:
        """Insert ``record`` as OFFERED if it fits the site's capacity over its interval.

        Returns False, writing nothing, if it does not fit at some instant of
        ``[record.start, record.end)`` or the site has no capacity.  Atomic across processes.
        """
        ...

    async def get_session(self, uuid: str, now: float) -> SessionRecord | None:
        """The session ``uuid`` (an offer lapsed by ``now`` is stored as EXPIRED first)."""
        ...

    async def sessions_of(self, offerset: str, now: float) -> list[SessionRecord]:
        """The sessions of ``offerset``, by start then uuid, lapsed offers expired."""
        ...

    async def expire(self, now: float) -> int:
        """Turn every OFFERED session with ``expires <= now`` into EXPIRED; how many."""
        ...

    async def accept(self, uuid: str, now: float) -> SessionRecord:
        """Accept offer ``uuid`` and reject its OFFERED siblings, atomically.

        Raises :class:`BookingConflict` unless it is OFFERED and ``expires > now`` (a lapsed
        one is stored as EXPIRED first).  Of concurrent accepts in one offer set, one wins.
        """
        ...

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
        """Compare-and-set: move ``uuid`` to ``to`` if its phase is in ``allowed``.

        Also replaces the connectors and appends ``message`` when given; ``modified=now``.
        Raises :class:`BookingConflict` otherwise.
        """
        ...

    async def add_message(self, uuid: str, message: dict[str, Any], now: float) -> SessionRecord:
        """Append ``message`` to the session's messages (any phase); ``modified=now``."""
        ...

    async def close(self) -> None:
        """Release the store's connections."""
        ...


def open_store(url: str) -> BookingStore:
    """Open the store at ``url``; nothing connects until the first call.

    ``postgresql://…`` (or ``postgres://…``) is PostgreSQL, needing the ``postgres`` extra
    (psycopg 3).  ``sqlite://`` followed by a path (``sqlite:///var/lib/b.db`` is
    ``/var/lib/b.db``), or a bare path, is SQLite.
    """
    if url.startswith(("postgresql://", "postgres://")):
        # Imported here so that installs without the postgres extra never need psycopg.
        from .postgres_store import PostgresBookingStore  # noqa: PLC0415

        return PostgresBookingStore(url)
    return SqliteBookingStore(url.removeprefix("sqlite://"))
