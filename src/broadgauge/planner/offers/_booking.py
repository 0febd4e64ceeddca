"""What both booking engines share: the conflict, the row codecs, the checks and the sweep.

Private to :mod:`.booking` and its engines (:mod:`.sqlite_store`, :mod:`.postgres_store`);
:class:`BookingConflict` is public as :class:`.booking.BookingConflict`.  A module of its
own so that :mod:`.booking` can choose an engine without the engines importing it back.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from .records import FINAL, HOLDING, OfferSetRecord, Phase, SessionRecord

__all__ = [
    "OFFERSET_COLUMNS",
    "SESSION_COLUMNS",
    "BookingConflict",
    "check_offer",
    "check_transition",
    "dump",
    "fits",
    "offerset_from_row",
    "offerset_row",
    "peak_usage",
    "session_from_row",
    "session_row",
]


class BookingConflict(Exception):
    """A session is not in a phase that allows the change asked for."""

    def __init__(self, uuid: str, phase: Phase, allowed: Iterable[Phase]) -> None:
        """Say that session ``uuid`` is in ``phase``, not one of ``allowed``."""
        self.uuid = uuid
        self.phase = phase
        self.allowed = frozenset(allowed)
        wanted = ", ".join(sorted(self.allowed)) or "nothing"
        super().__init__(f"session {uuid} is {phase.value}, not {wanted}")


#: The sessions table's columns, in the order :func:`session_row` writes them.
SESSION_COLUMNS = (
    "uuid, offerset, owner, resource, cores, memory_mib, storage_gib, start_at, end_at,"
    " expires, phase, executable, created, modified, connectors, messages"
)
OFFERSET_COLUMNS = "uuid, owner, name, result, created, messages, request"


def dump(value: Any) -> str:
    """JSON text for a stored object (compact, keys kept in their order)."""
    return json.dumps(value, separators=(",", ":"))


def session_row(record: SessionRecord, phase: Phase) -> tuple[Any, ...]:
    """``record`` as a sessions row (in :data:`SESSION_COLUMNS` order), in ``phase``."""
    return (
        record.uuid,
        record.offerset,
        record.owner,
        record.resource,
        record.cores,
        record.memory_mib,
        record.storage_gib,
        record.start,
        record.end,
        record.expires,
        phase.value,
        dump(record.executable),
        record.created,
        record.modified,
        dump(list(record.connectors)),
        dump(list(record.messages)),
    )


def session_from_row(row: Sequence[Any]) -> SessionRecord:
    """A sessions row (:data:`SESSION_COLUMNS` order) as a record."""
    return SessionRecord(
        uuid=row[0],
        offerset=row[1],
        owner=row[2],
        resource=row[3],
        cores=int(row[4]),
        memory_mib=int(row[5]),
        storage_gib=int(row[6]),
        start=float(row[7]),
        end=float(row[8]),
        expires=float(row[9]),
        phase=Phase(row[10]),
        executable=json.loads(row[11]),
        created=float(row[12]),
        modified=float(row[13]),
        connectors=tuple(json.loads(row[14])),
        messages=tuple(json.loads(row[15])),
    )


def offerset_row(record: OfferSetRecord) -> tuple[Any, ...]:
    """``record`` as an offersets row (in :data:`OFFERSET_COLUMNS` order)."""
    return (
        record.uuid,
        record.owner,
        record.name,
        record.result,
        record.created,
        dump(list(record.messages)),
        dump(record.request),
    )


def offerset_from_row(row: Sequence[Any]) -> OfferSetRecord:
    """An offersets row as a record."""
    return OfferSetRecord(
        uuid=row[0],
        owner=row[1],
        name=row[2],
        result=row[3],
        created=float(row[4]),
        messages=tuple(json.loads(row[5])),
        request=json.loads(row[6]),
    )


def check_offer(record: SessionRecord, now: float) -> None:
    """Refuse (ValueError) an offer that could never be a sensible hold."""
    if not record.end > record.start:
        raise ValueError(f"session {record.uuid}: end {record.end} is not after {record.start}")
    if record.cores < 0 or record.memory_mib < 0:
        raise ValueError(f"session {record.uuid}: negative cores or memory")
    if not record.expires > now:
        raise ValueError(f"session {record.uuid}: offer expires ({record.expires}) by now")


def check_transition(allowed: frozenset[Phase], to: Phase) -> None:
    """Refuse (ValueError) a transition that would bypass booking or leave a final phase."""
    if allowed & FINAL:
        raise ValueError(f"phases {sorted(allowed & FINAL)} are final: sessions never leave them")
    if to is Phase.OFFERED or to is Phase.INITIAL:
        raise ValueError(f"only offer() makes sessions; cannot transition to {to.value}")
    if to in HOLDING and not allowed <= HOLDING - {Phase.OFFERED}:
        # Capacity is checked only by offer() and carried over only by accept(): entering a
        # holding phase from anywhere else could book capacity nobody checked.
        raise ValueError(
            f"{to.value} holds capacity: reach it only from accepted (holding) phases, "
            "and from OFFERED only through accept()"
        )


def peak_usage(
    holds: Iterable[tuple[float, float, int, int]], start: float, end: float
) -> tuple[int, int]:
    """The most cores and the most memory held at any instant of ``[start, end)``.

    ``holds`` are ``(start, end, cores, memory_mib)`` over half-open intervals.  A sweep over
    their start and end points, not a sum: holds at 10-20 and 20-30 never overlap, so their
    peak is the larger one, not both.  The two peaks may fall at different instants; that is
    still exact for the capacity check, since cores and memory must each fit on their own.
    """
    events: list[tuple[float, int, int, int]] = []
    for hold_start, hold_end, cores, memory in holds:
        lo, hi = max(hold_start, start), min(hold_end, end)
        if lo < hi:
            # Second key: at one instant, ends (0) before starts (1), as intervals are
            # half-open; so partial sums never count a hold that has ended with one beginning.
            events.append((lo, 1, cores, memory))
            events.append((hi, 0, -cores, -memory))
    events.sort(key=lambda event: (event[0], event[1]))
    cores_now = memory_now = peak_cores = peak_memory = 0
    for _, _, cores, memory in events:
        cores_now += cores
        memory_now += memory
        peak_cores = max(peak_cores, cores_now)
        peak_memory = max(peak_memory, memory_now)
    return peak_cores, peak_memory


def fits(
    record: SessionRecord,
    capacity: tuple[int, int],
    holds: Iterable[tuple[float, float, int, int]],
) -> bool:
    """Whether ``record`` fits ``capacity`` at every instant, on top of ``holds``."""
    peak_cores, peak_memory = peak_usage(holds, record.start, record.end)
    return (
        peak_cores + record.cores <= capacity[0] and peak_memory + record.memory_mib <= capacity[1]
    )
