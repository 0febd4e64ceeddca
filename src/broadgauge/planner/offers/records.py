"""What the booking store keeps: offer sets and sessions, as plain records (pure).

The broker (:mod:`broadgauge.planner.offers.broker`) turns an execution request into an offer
set whose sessions are OFFERED reservations of one site's capacity; the researcher accepts
one, and the broker drives it through provisioning.  Every planner process behind one name
shares these records through one :class:`~broadgauge.planner.offers.booking.BookingStore`,
so the record, not a process's memory, is the truth.

Times are POSIX seconds (floats).  Memory is in MiB and storage in GiB, as whole numbers.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class Phase(enum.StrEnum):
    """The session phases of Calycopis (IVOA ExecutionBroker), spelt as on the wire."""

    INITIAL = "INITIAL"
    OFFERED = "OFFERED"
    ACCEPTED = "ACCEPTED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"
    WAITING = "WAITING"
    PREPARING = "PREPARING"
    AVAILABLE = "AVAILABLE"
    RUNNING = "RUNNING"
    RELEASING = "RELEASING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


#: Phases whose session holds capacity.  OFFERED holds it only until ``expires``.
HOLDING = frozenset(
    {
        Phase.OFFERED,
        Phase.ACCEPTED,
        Phase.WAITING,
        Phase.PREPARING,
        Phase.AVAILABLE,
        Phase.RUNNING,
        Phase.RELEASING,
    }
)

#: Phases a session never leaves.
FINAL = frozenset({Phase.REJECTED, Phase.EXPIRED, Phase.COMPLETED, Phase.FAILED, Phase.CANCELLED})


@dataclass(frozen=True)
class SessionRecord:
    """One session: an offer, and, once accepted, the execution it became."""

    uuid: str
    offerset: str
    #: the subject of the researcher who asked (None: anonymous)
    owner: str | None
    #: the site that made the offer: an OpenPortal destination (``portal.provider.p.i``)
    resource: str
    cores: int
    memory_mib: int
    storage_gib: int
    #: the reserved interval [start, end)
    start: float
    end: float
    #: when an OFFERED session lapses to EXPIRED
    expires: float
    phase: Phase
    #: the request's executable, as sent (a JSON object)
    executable: dict[str, Any]
    created: float
    modified: float
    #: how to reach the running session (``{"kind", "status", "protocol", "location"}``)
    connectors: tuple[dict[str, Any], ...] = ()
    #: what happened (``{"time", "level", "message"}``), oldest first
    messages: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class OfferSetRecord:
    """One answer to an execution request: YES with offers, or NO with messages."""

    uuid: str
    owner: str | None
    name: str
    #: "YES" or "NO"
    result: str
    created: float
    #: why (a NO always says), ``{"time", "level", "message"}``
    messages: tuple[dict[str, Any], ...] = ()
    #: the request as sent (a JSON object), kept for the record
    request: dict[str, Any] = field(default_factory=dict)
