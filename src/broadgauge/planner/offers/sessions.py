"""Sessions on the wire: ISO-8601 times, session and offer-set JSON, updates, phases (pure).

Calycopis spells times in ISO-8601.  Only what an execution request needs is parsed:
instants with a time zone, durations in days, hours, minutes and seconds (``PnDTnHnMnS``),
and intervals ``start/end``, ``start/duration`` or ``duration/end``.  Years, months and
weeks are refused because a month or a year has no fixed length in seconds; repeating
intervals (``R...``) are refused because a request asks for one execution, not a series.
The ISO parsers raise :class:`ValueError` saying what is wrong; callers add the path.

:func:`session_json` and :func:`offerset_json` render stored records as Calycopis v1.0 JSON;
:func:`parse_update` reads a ``POST /sessions/{uuid}`` body; :data:`BROKER_TRANSITIONS` is
the phase graph every change is checked against.  :mod:`.model` re-exports all of this, so
callers import from there.  Times are POSIX seconds (floats).
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from broadgauge.planner.offers.records import FINAL, OfferSetRecord, Phase, SessionRecord

_CALYCOPIS = "https://www.purl.org/ivoa.net/Calycopis-openapi/schema/v1.0/kinds/"

#: The session kind we render: the scheduled session, because our offers carry a schedule.
SESSION_KIND = _CALYCOPIS + "session/scheduled-execution-session.yaml"
COMPUTE_KIND = _CALYCOPIS + "compute/simple-compute-resource.yaml"
STORAGE_KIND = _CALYCOPIS + "storage/simple-storage-resource.yaml"


class RequestError(ValueError):
    """A request or update is malformed; ``path`` says where (``""`` for the whole body).

    ``str(error)`` is ``"path: text"``, or just ``text`` for the whole body.
    """

    def __init__(self, path: str, text: str) -> None:
        super().__init__(f"{path}: {text}" if path else text)
        self.path = path
        self.text = text


def describe(value: object) -> str:
    """How an error message names a JSON value it did not expect."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


def as_object(value: object, path: str, what: str = "an object") -> Mapping[str, Any]:
    """``value`` if it is a JSON object, else a :class:`RequestError` at ``path``."""
    if not isinstance(value, Mapping):
        raise RequestError(path, f"must be {what}, not {describe(value)}")
    return value


# Strict: uppercase designators, integer days/hours/minutes, a fraction only on seconds.
_DURATION = re.compile(
    r"P(?:(?P<d>\d+)D)?(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?"
)
# More digits than any sane duration has; keeps float conversion far from overflow.
_MAX_DIGITS = 12


def parse_duration(text: str) -> float:
    """Seconds in an ISO-8601 duration such as ``PT2H``, ``P1DT30M`` or ``PT0.5S``.

    Raises :class:`ValueError` for anything else, including years, months, weeks and
    negative durations.
    """
    match = _DURATION.fullmatch(text)
    if match is None or text in ("P", "PT") or text.endswith("T"):
        date_part = text[1:].split("T", 1)[0] if text.startswith("P") else ""
        if any(unit in date_part for unit in "YMW"):
            raise ValueError(
                f"{text!r}: years, months and weeks are not supported (their length varies); "
                "use days, hours, minutes and seconds, e.g. P1DT2H"
            )
        raise ValueError(f"{text!r} is not an ISO-8601 duration like PT2H, PT1H30M or P1DT12H")
    parts = match.groupdict()
    if any(value is not None and len(value) > _MAX_DIGITS for value in parts.values()):
        raise ValueError(f"{text!r} is too long to be a duration")
    days, hours, minutes = (int(parts[key] or 0) for key in ("d", "h", "m"))
    return days * 86400 + hours * 3600 + minutes * 60 + float(parts["s"] or 0)


def parse_instant(text: str) -> float:
    """POSIX seconds of an ISO-8601 date-time with a time zone (``Z`` or ``+hh:mm``)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is not an ISO-8601 date-time like 2026-12-06T20:00:00Z"
        ) from None
    if moment.tzinfo is None:
        # A time without a zone means a different instant on every server; refuse to guess.
        raise ValueError(f"{text!r} has no time zone; add Z (UTC) or an offset like +01:00")
    return moment.timestamp()


def parse_interval(text: str) -> tuple[float, float]:
    """The ``[first, last]`` instants of an ISO-8601 interval, or ``[t, t]`` for a bare instant.

    Accepts ``start/end``, ``start/duration``, ``duration/end`` and a bare ``start``.
    """
    if text.startswith("R"):
        raise ValueError(f"{text!r}: repeating intervals (R...) are not supported")
    pieces = text.split("/")
    if len(pieces) == 1:
        at = parse_instant(text)
        return at, at
    if len(pieces) != 2:
        raise ValueError(f"{text!r} is not an ISO-8601 interval like 2026-12-06T20:00:00Z/PT1H")
    first, second = pieces
    if first.startswith("P") and second.startswith("P"):
        raise ValueError(f"{text!r}: an interval needs at least one date-time, not two durations")
    if first.startswith("P"):
        end = parse_instant(second)
        return end - parse_duration(first), end
    start = parse_instant(first)
    if second.startswith("P"):
        return start, start + parse_duration(second)
    end = parse_instant(second)
    if end < start:
        raise ValueError(f"{text!r} ends before it starts")
    return start, end


def iso(t: float) -> str:
    """``t`` as an ISO-8601 UTC date-time to the second, e.g. ``2026-12-06T20:00:00Z``."""
    # Floor, not round: a time shown must never be later than the time meant.
    moment = datetime.fromtimestamp(math.floor(t), tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_duration(seconds: float) -> str:
    """``seconds`` as an ISO-8601 duration in whole seconds: ``PT2H``, ``PT1H30M``, ``PT45S``.

    Hours are not folded into days, as Java's ``Duration.toString`` (Calycopis) does not.
    """
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"a duration must be a finite number of seconds >= 0, not {seconds!r}")
    total = round(seconds)
    if total == 0:
        return "PT0S"
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    text = "PT"
    text += f"{hours}H" if hours else ""
    text += f"{minutes}M" if minutes else ""
    text += f"{secs}S" if secs else ""
    return text


# --- rendering -------------------------------------------------------------------------------

_LEVELS = frozenset({"DEBUG", "INFO", "WARN", "ERROR"})


def message_item(time: float, level: str, text: str) -> dict[str, Any]:
    """A message as records keep it: ``{"time": POSIX seconds, "level", "message"}``."""
    if level not in _LEVELS:
        raise ValueError(
            f"message level must be one of {', '.join(sorted(_LEVELS))}, not {level!r}"
        )
    return {"time": time, "level": level, "message": text}


def _message_json(item: Mapping[str, Any]) -> dict[str, Any]:
    time = item.get("time")
    level = str(item.get("level", "INFO")).upper()
    # Python's logging says WARNING; Calycopis's MessageItem says WARN.
    level = "WARN" if level == "WARNING" else level
    return {
        "time": iso(time) if isinstance(time, int | float) else time,
        "level": level if level in _LEVELS else "INFO",
        "message": str(item.get("message", "")),
    }


def _url(base_url: str, collection: str, uuid: str) -> str:
    return f"{base_url if base_url.endswith('/') else base_url + '/'}{collection}/{uuid}"


def _gib(mib: int) -> int | float:
    # Whole GiB as integers, so that ``1024`` MiB renders as ``1``, not ``1.0``.
    return mib // 1024 if mib % 1024 == 0 else mib / 1024


def session_json(record: SessionRecord, base_url: str) -> dict[str, Any]:
    """A session as a Calycopis v1.0 ``ScheduledExecutionSession``.

    ``expires`` appears only while the session is OFFERED.  ``schedule.available`` says when
    it starts (an interval of no length: offers are precise) and for how long.  ``site`` is a
    Broadgauge addition: the OpenPortal destination that made the offer, which the IVOA
    draft leaves out although an aggregating broker needs it to tell offers apart.
    """
    body: dict[str, Any] = {
        "kind": SESSION_KIND,
        "meta": {
            "uuid": record.uuid,
            "url": _url(base_url, "sessions", record.uuid),
            "created": iso(record.created),
            "modified": iso(record.modified),
            "messages": [_message_json(item) for item in record.messages],
        },
        "phase": record.phase.value,
    }
    if record.phase is Phase.OFFERED:
        body["expires"] = iso(record.expires)
    body["executable"] = copy.deepcopy(record.executable)
    memory = _gib(record.memory_mib)
    body["compute"] = {
        "kind": COMPUTE_KIND,
        "cores": {"min": record.cores, "max": record.cores},
        "memory": {"min": memory, "max": memory},
    }
    if record.storage_gib:
        body["storage"] = [
            {"kind": STORAGE_KIND, "size": {"min": record.storage_gib, "max": record.storage_gib}}
        ]
    body["schedule"] = {
        "available": {
            "start": f"{iso(record.start)}/PT0S",
            "duration": iso_duration(record.end - record.start),
        }
    }
    body["connectors"] = [dict(connector) for connector in record.connectors]
    body["site"] = record.resource
    return body


def offerset_json(
    record: OfferSetRecord, sessions: list[SessionRecord], base_url: str
) -> dict[str, Any]:
    """An offer set as Calycopis's ``OfferSetResponse``: its meta, YES or NO, and the offers.

    ``sessions`` are rendered in the order given; each must belong to ``record``.
    """
    for session in sessions:
        if session.offerset != record.uuid:
            raise ValueError(
                f"session {session.uuid} belongs to {session.offerset}, not {record.uuid}"
            )
    return {
        "meta": {
            "uuid": record.uuid,
            "name": record.name,
            "url": _url(base_url, "offersets", record.uuid),
            "created": iso(record.created),
            "messages": [_message_json(item) for item in record.messages],
        },
        "result": record.result,
        "offers": [session_json(session, base_url) for session in sessions],
    }


# --- updates and phases ----------------------------------------------------------------------

_UPDATE_KIND = "enum-value-update"
_PURL = "https://www.purl.org/ivoa.net/"


def _is_update_kind(kind: object) -> bool:
    if not isinstance(kind, str):
        return False
    if kind in (_UPDATE_KIND, f"uri:{_UPDATE_KIND}"):
        return True
    segment = kind.rsplit("/", 1)[-1].removesuffix(".yaml").removesuffix("-1.0")
    return kind.startswith(_PURL) and segment == _UPDATE_KIND


class IllegalTransition(ValueError):
    """A session may not move from one phase to another."""

    def __init__(self, frm: Phase, to: Phase, text: str) -> None:
        super().__init__(text)
        self.frm = frm
        self.to = to


#: For each value a user may set, the phases a session may be in when they set it.
USER_TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    Phase.ACCEPTED: frozenset({Phase.OFFERED}),
    Phase.CANCELLED: frozenset(
        {
            Phase.OFFERED,
            Phase.ACCEPTED,
            Phase.WAITING,
            Phase.PREPARING,
            Phase.AVAILABLE,
            Phase.RUNNING,
        }
    ),
}

#: The legal phase graph.  Final phases have no exit: a cancelled session's resources are
#: released by the broker before it records CANCELLED, so there is no CANCELLED → RELEASING.
#: RELEASING cannot be cancelled, only finish (COMPLETED) or fail (FAILED).
BROKER_TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    Phase.INITIAL: frozenset({Phase.OFFERED, Phase.FAILED}),
    Phase.OFFERED: frozenset({Phase.ACCEPTED, Phase.REJECTED, Phase.EXPIRED, Phase.CANCELLED}),
    Phase.ACCEPTED: frozenset({Phase.WAITING, Phase.FAILED, Phase.CANCELLED}),
    Phase.WAITING: frozenset({Phase.PREPARING, Phase.FAILED, Phase.CANCELLED}),
    Phase.PREPARING: frozenset({Phase.AVAILABLE, Phase.FAILED, Phase.CANCELLED}),
    Phase.AVAILABLE: frozenset({Phase.RUNNING, Phase.RELEASING, Phase.FAILED, Phase.CANCELLED}),
    Phase.RUNNING: frozenset({Phase.RELEASING, Phase.FAILED, Phase.CANCELLED}),
    Phase.RELEASING: frozenset({Phase.COMPLETED, Phase.FAILED}),
    **{phase: frozenset() for phase in FINAL},
}


def parse_update(body: object) -> Phase:
    """The phase a ``POST /sessions/{uuid}`` body asks for: ACCEPTED or CANCELLED.

    Calycopis sends ``{"kind": "uri:enum-value-update", "path": "phase", "value": ...}``; the
    Working Draft wraps it as ``{"update": {...}}``, names the discriminator ``type`` and the
    path ``state``.  All of these are accepted.  Raises :class:`RequestError`.
    """
    if not isinstance(body, Mapping):
        raise RequestError("", f"an update must be a JSON object, not {describe(body)}")
    prefix = ""
    if "update" in body:
        body, prefix = as_object(body["update"], "update"), "update."
    key = "kind" if "kind" in body or "type" not in body else "type"
    if key not in body:
        raise RequestError(prefix + key, "is required")
    if not _is_update_kind(body[key]):
        raise RequestError(
            prefix + key, f"unsupported update {body[key]!r}; only uri:{_UPDATE_KIND} is"
        )
    if body.get("path") not in ("phase", "state"):
        raise RequestError(
            prefix + "path", f"only the phase can be updated, not {describe(body.get('path'))}"
        )
    value = body.get("value")
    wanted = ", ".join(USER_TRANSITIONS)
    if not isinstance(value, str) or value not in USER_TRANSITIONS:
        raise RequestError(prefix + "value", f"must be one of {wanted}, not {describe(value)}")
    return Phase(value)


def check_transition(frm: Phase, to: Phase) -> None:
    """Raise :class:`IllegalTransition` unless the phase graph allows ``frm`` → ``to``."""
    allowed = BROKER_TRANSITIONS[frm]
    if to in allowed:
        return
    if not allowed:
        text = f"a session cannot go from {frm} to {to}: {frm} is final"
    else:
        exits = ", ".join(sorted(allowed))
        text = f"a session cannot go from {frm} to {to}; from {frm} it may go to {exits}"
    raise IllegalTransition(frm, to, text)


def check_user_update(current: Phase, value: Phase) -> None:
    """Raise :class:`IllegalTransition` unless a user may set ``value`` on a ``current`` session."""
    allowed = USER_TRANSITIONS.get(value, frozenset())
    if current in allowed:
        return
    if not allowed:
        text = f"a user cannot set a session to {value}"
    else:
        text = (
            f"a {current} session cannot be set to {value}; only "
            f"{', '.join(sorted(allowed))} sessions can"
        )
    raise IllegalTransition(current, value, text)
