"""Health and diagnostics payloads (templemeads ``health.rs`` / ``diagnostics.rs``).

These travel inside ``HealthResponse`` and ``DiagnosticsResponse``.  The shapes
are fixed by Rust; the values are best-effort, so a Python agent fills zeros
where it has no equivalent metric (notes §7.2).  Field order below is the Rust
struct order, which is the order ``serde_json`` writes.

Timestamps are timezone-aware :class:`~datetime.datetime` values written as
RFC 3339 in UTC the way chrono does (``Z`` suffix; fractional seconds only when
non-zero, as 3 or 6 digits).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, TypeVar

from broadgauge import OPENPORTAL_VERSION

from . import _json
from .agent_type import AgentType

__all__ = [
    "ENGINE",
    "DiagnosticsReport",
    "ExpiredJobEntry",
    "FailedJobEntry",
    "HealthInfo",
    "LogEntry",
    "NotificationStatistics",
    "RunningJobEntry",
    "SlowJobEntry",
    "format_datetime",
    "parse_datetime",
]

#: The engine name every templemeads agent announces.
ENGINE: Final = "templemeads"

_T = TypeVar("_T", bound="_Codec")

# Field kinds understood by the generic codec.  Nested dataclass kinds are
# given as ("list", cls) / ("map", cls) / ("obj", cls).
_KIND: Final = "json_kind"
_DEFAULT: Final = "json_default"


def _m(kind: object, *, serde_default: bool = False) -> dict[str, object]:
    """Field metadata: the JSON kind, and whether Rust defaults the field when absent."""
    return {_KIND: kind, _DEFAULT: serde_default}


def format_datetime(value: datetime) -> str:
    """RFC 3339 in UTC as chrono writes it (``2024-06-03T07:33:20.5Z`` -> ``.500Z``)."""
    if value.tzinfo is None:
        raise ValueError("datetimes on the wire must be timezone-aware")
    utc = value.astimezone(UTC)
    if utc.year < 1000:
        return _format_with_strftime(utc)
    # isoformat is several times faster than strftime, and for a four-digit year it writes
    # the same digits: YYYY-MM-DDTHH:MM:SS, then .ffffff unless the microseconds are zero.
    text = utc.isoformat()
    micro = utc.microsecond
    if micro == 0:
        return text[:19] + "Z"
    return (text[:23] if micro % 1000 == 0 else text[:26]) + "Z"


def _format_with_strftime(utc: datetime) -> str:
    # strftime writes a year below 1000 without padding (isoformat would pad it), and that
    # is what this format has always written for one.
    base = utc.strftime("%Y-%m-%dT%H:%M:%S")
    micro = utc.microsecond
    if micro == 0:
        frac = ""
    elif micro % 1000 == 0:
        frac = f".{micro // 1000:03d}"
    else:
        frac = f".{micro:06d}"
    return f"{base}{frac}Z"


def parse_datetime(text: str) -> datetime:
    """Parse an RFC 3339 timestamp with an offset; ``ValueError`` otherwise.

    Extra fractional digits (chrono may send nanoseconds) are truncated to
    microseconds.
    """
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"invalid RFC 3339 timestamp {text!r}") from None
    if value.tzinfo is None:
        raise ValueError(f"timestamp {text!r} has no UTC offset")
    try:
        return value.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00 is before year 1 in UTC
        raise ValueError(f"timestamp {text!r} is out of range") from None


def _encode_float(value: float) -> float | None:
    # serde_json writes non-finite floats as null.
    return value if math.isfinite(value) else None


def _encode_agent_type(value: AgentType) -> str:
    return value.value


def _encode_object(value: _Codec) -> dict[str, Any]:
    return value.to_json_value()


def _encode_items(value: tuple[_Codec, ...]) -> list[dict[str, Any]]:
    return [item.to_json_value() for item in value]


def _encode_mapping(value: dict[str, _Codec]) -> dict[str, dict[str, Any]]:
    return {key: item.to_json_value() for key, item in value.items()}


def _decode_value(r: _json.Reader, name: str, kind: object, has_default: bool) -> Any:
    if kind == "str":
        return r.text(name)
    if kind == "u64":
        return r.u64(name)
    if kind == "i64":
        return r.i64(name)
    if kind == "float":
        return r.number(name)
    if kind == "bool":
        return r.boolean(name)
    if kind == "str_list":
        return tuple(r.text_list(name, default_empty=has_default))
    if kind == "datetime":
        try:
            return parse_datetime(r.text(name))
        except ValueError as exc:
            r.fail(str(exc), name)
    if kind == "agent_type":
        try:
            return AgentType.from_wire(r.raw(name))
        except ValueError as exc:
            r.fail(str(exc), name)
    if isinstance(kind, tuple):
        shape, cls = kind
        if isinstance(cls, str):
            # A self-referencing kind (HealthInfo.peers) names its class.
            cls = globals()[cls]
        if shape == "list":
            items = r.array(name, default_empty=has_default)
            where = r.sub(name)
            return tuple(cls.from_json_value(item, f"{where}[{i}]") for i, item in enumerate(items))
        if shape == "map":
            mapping = r.mapping(name, default_empty=has_default)
            where = r.sub(name)
            return {
                _json.check_text(key, f"{where} key"): cls.from_json_value(item, f"{where}.{key}")
                for key, item in mapping.items()
            }
        if has_default and not r.has(name):
            return cls()
        return cls.from_json_value(r.raw(name), r.sub(name))
    raise AssertionError(f"unknown field kind {kind!r}")  # pragma: no cover


# --- sending on what was read ------------------------------------------------------------
#
# Every relay on the way back decodes a health or diagnostics answer (checking it) and
# encodes it again; for the operator console's view of a 50-agent network that is thousands
# of objects.  A decoded object keeps the JSON object it was read from when encoding would
# give exactly that object back, and encoding it then is a copy: a relay sends on what it
# received.  Whether it would is decided field by field, below; the kinds not listed
# (strings, integers, booleans, string lists, agent types) are always written as read.


def _same_float(raw: Any, value: float) -> bool:
    # An integer in a float field is read as a float and written as one ("1" -> "1.0").
    return type(raw) is float and math.isfinite(raw)


#: What format_datetime writes for a year from 1000 on: a fraction of 3 digits only when the
#: last 3 of 6 are zeros, and none when all are.
_CHRONO_TIME: Final = re.compile(
    r"[1-9]\d{3}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.(?!000Z)\d{3}|\.(?!\d{3}000Z)\d{6})?Z",
    re.ASCII,
)


def _same_datetime(raw: Any, value: datetime) -> bool:
    # The text parsed, as UTC ("Z"), to ``value``: in this shape it holds value's own digits.
    return _CHRONO_TIME.fullmatch(raw) is not None


def _same_object(raw: Any, value: _Codec) -> bool:
    return hasattr(value, "_wire")


def _same_items(raw: Any, value: tuple[_Codec, ...]) -> bool:
    return all(hasattr(item, "_wire") for item in value)


def _same_mapping(raw: Any, value: dict[str, _Codec]) -> bool:
    return all(hasattr(item, "_wire") for item in value.values())


_Encoder = Callable[[Any], Any]
_Same = Callable[[Any, Any], bool]

#: Per scalar kind: how to encode it (None: as it is), and the test that it was written as
#: read (None: always).
_SCALARS: Final[dict[str, tuple[_Encoder | None, _Same | None]]] = {
    "str": (None, None),
    "u64": (None, None),
    "i64": (None, None),
    "float": (_encode_float, _same_float),
    "bool": (None, None),
    "str_list": (list, None),
    "datetime": (format_datetime, _same_datetime),
    "agent_type": (_encode_agent_type, None),
}
_NESTED: Final[dict[str, tuple[_Encoder, _Same]]] = {
    "list": (_encode_items, _same_items),
    "map": (_encode_mapping, _same_mapping),
    "obj": (_encode_object, _same_object),
}


@dataclass(frozen=True, slots=True)
class _Plan:
    """One codec class's fields, worked out once (a sweep of a big network decodes
    thousands of these objects)."""

    #: (name, kind, has a serde default), in Rust struct order; the reader's input.
    fields: tuple[tuple[str, object, bool], ...]
    names: frozenset[str]
    order: tuple[str, ...]
    #: (name, encoder or None to write the value as it is)
    encoders: tuple[tuple[str, _Encoder | None], ...]
    #: (name, test that the value is written as read), for the kinds that may not be
    same: tuple[tuple[str, _Same], ...]


_PLANS: dict[type, _Plan] = {}


def _plan(cls: type) -> _Plan:
    plan = _PLANS.get(cls)
    if plan is not None:
        return plan
    fields = tuple(
        (f.name, f.metadata[_KIND], bool(f.metadata[_DEFAULT]))
        for f in dataclasses.fields(cls)
        if _KIND in f.metadata
    )
    encoders: list[tuple[str, _Encoder | None]] = []
    same: list[tuple[str, _Same]] = []
    for name, kind, _ in fields:
        encode, test = _NESTED[kind[0]] if isinstance(kind, tuple) else _SCALARS[str(kind)]
        encoders.append((name, encode))
        if test is not None:
            same.append((name, test))
    plan = _PLANS[cls] = _Plan(
        fields=fields,
        names=frozenset(name for name, _, _ in fields),
        order=tuple(name for name, _, _ in fields),
        encoders=tuple(encoders),
        same=tuple(same),
    )
    return plan


class _Codec:
    """JSON codec for the dataclasses below, driven by field metadata."""

    # ``_wire``: the JSON object this was decoded from, set only when encoding would give
    # exactly it back (a relay then sends on what it received).  A slot, not a dataclass
    # field: it is no part of equality, and a copy made by ``replace`` starts without it.
    __slots__ = ("_wire",)
    _wire: dict[str, Any]

    def to_json_value(self) -> dict[str, Any]:
        """The JSON object, in Rust struct field order.

        For an object decoded from wire text that encodes back to exactly that text, a copy
        of the object read (its nested values are shared with this object: do not change
        them).
        """
        wire = getattr(self, "_wire", None)
        if wire is not None:
            return dict(wire)
        value: dict[str, Any] = {}
        for name, encode in _plan(type(self)).encoders:
            item = getattr(self, name)
            value[name] = item if encode is None else encode(item)
        return value

    def to_json(self) -> str:
        """Compact JSON text."""
        return _json.dumps(self.to_json_value())

    @classmethod
    def from_json_value(cls: type[_T], value: object, path: str | None = None) -> _T:
        """Decode a parsed JSON value; ``ProtocolError`` names the bad field."""
        plan = _PLANS.get(cls) or _plan(cls)
        r = _json.Reader(value, path or cls.__name__, plan.names)
        kwargs = {
            name: _decode_value(r, name, kind, default) for name, kind, default in plan.fields
        }
        decoded = cls(**kwargs)
        # Only an object the strict loader made from wire text is kept (no caller holds it
        # to change it later), and only if it has the fields in order and no other.
        if (
            type(value) is _json.JsonObject
            and tuple(value) == plan.order
            and all(test(value[name], kwargs[name]) for name, test in plan.same)
        ):
            object.__setattr__(decoded, "_wire", value)
        return decoded

    @classmethod
    def from_json(cls: type[_T], text: str | bytes) -> _T:
        """Decode JSON text."""
        return cls.from_json_value(_json.loads(text, cls.__name__), cls.__name__)


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class NotificationStatistics(_Codec):
    """Notification totals of one agent (all zero by default, as Rust's ``Default``)."""

    total_received: int = field(default=0, metadata=_m("u64"))
    total_sent: int = field(default=0, metadata=_m("u64"))
    total_failed: int = field(default=0, metadata=_m("u64"))


@dataclass(frozen=True, slots=True)
class _InstructionEntry(_Codec):
    """The two fields every job entry of a diagnostics report starts with."""

    destination: str = field(metadata=_m("str"))
    instruction: str = field(metadata=_m("str"))


@dataclass(frozen=True, slots=True)
class FailedJobEntry(_InstructionEntry):
    """A failed instruction, aggregated by destination + instruction."""

    error_message: str = field(metadata=_m("str"))
    count: int = field(metadata=_m("u64"))
    first_seen: datetime = field(metadata=_m("datetime"))
    last_seen: datetime = field(metadata=_m("datetime"))


@dataclass(frozen=True, slots=True)
class SlowJobEntry(_InstructionEntry):
    """One of the slowest completed jobs."""

    duration_ms: float = field(metadata=_m("float"))
    completed_at: datetime = field(metadata=_m("datetime"))


@dataclass(frozen=True, slots=True)
class ExpiredJobEntry(_InstructionEntry):
    """An instruction whose jobs expired, aggregated."""

    created_at: datetime = field(metadata=_m("datetime"))
    expired_at: datetime = field(metadata=_m("datetime"))
    count: int = field(metadata=_m("u64"))


@dataclass(frozen=True, slots=True)
class RunningJobEntry(_InstructionEntry):
    """An instruction currently running, aggregated."""

    started_at: datetime = field(metadata=_m("datetime"))
    count: int = field(metadata=_m("u64"))
    running_for_seconds: int = field(metadata=_m("i64"))


@dataclass(frozen=True, slots=True)
class LogEntry(_Codec):
    """One recent log line."""

    timestamp: datetime = field(metadata=_m("datetime"))
    level: str = field(metadata=_m("str"))
    target: str = field(metadata=_m("str"))
    message: str = field(metadata=_m("str"))


@dataclass(frozen=True, slots=True)
class DiagnosticsReport(_Codec):
    """Answer to ``DiagnosticsRequest``.

    The four job lists and ``warnings`` are required on input (Rust has no
    default for them); ``recent_logs`` defaults to ``[]`` and
    ``notification_statistics`` to zeros.
    """

    agent_name: str = field(metadata=_m("str"))
    generated_at: datetime = field(default=_EPOCH, metadata=_m("datetime"))
    failed_jobs: tuple[FailedJobEntry, ...] = field(
        default=(), metadata=_m(("list", FailedJobEntry))
    )
    slowest_jobs: tuple[SlowJobEntry, ...] = field(default=(), metadata=_m(("list", SlowJobEntry)))
    expired_jobs: tuple[ExpiredJobEntry, ...] = field(
        default=(), metadata=_m(("list", ExpiredJobEntry))
    )
    running_jobs: tuple[RunningJobEntry, ...] = field(
        default=(), metadata=_m(("list", RunningJobEntry))
    )
    warnings: tuple[str, ...] = field(default=(), metadata=_m("str_list"))
    recent_logs: tuple[LogEntry, ...] = field(
        default=(), metadata=_m(("list", LogEntry), serde_default=True)
    )
    notification_statistics: NotificationStatistics = field(
        default=NotificationStatistics(),
        metadata=_m(("obj", NotificationStatistics), serde_default=True),
    )


@dataclass(frozen=True, slots=True)
class HealthInfo(_Codec):
    """Answer to ``HealthCheck`` (``peers`` nests the answers of further agents).

    Counters are Rust ``usize``/``u64`` (non-negative), ``cpu_percent`` is an
    ``f32`` and the ``job_time_*_ms`` values ``f64``; ``uptime_seconds`` is
    signed.  Only ``peers`` may be absent on input (default ``{}``).
    """

    name: str = field(metadata=_m("str"))
    agent_type: AgentType = field(metadata=_m("agent_type"))
    connected: bool = field(default=True, metadata=_m("bool"))
    active_jobs: int = field(default=0, metadata=_m("u64"))
    pending_jobs: int = field(default=0, metadata=_m("u64"))
    running_jobs: int = field(default=0, metadata=_m("u64"))
    completed_jobs: int = field(default=0, metadata=_m("u64"))
    duplicate_jobs: int = field(default=0, metadata=_m("u64"))
    successful_jobs: int = field(default=0, metadata=_m("u64"))
    expired_jobs: int = field(default=0, metadata=_m("u64"))
    errored_jobs: int = field(default=0, metadata=_m("u64"))
    inflight_jobs: int = field(default=0, metadata=_m("u64"))
    queued_jobs: int = field(default=0, metadata=_m("u64"))
    worker_count: int = field(default=0, metadata=_m("u64"))
    memory_bytes: int = field(default=0, metadata=_m("u64"))
    cpu_percent: float = field(default=0.0, metadata=_m("float"))
    system_memory_total: int = field(default=0, metadata=_m("u64"))
    system_cpus: int = field(default=0, metadata=_m("u64"))
    job_time_min_ms: float = field(default=0.0, metadata=_m("float"))
    job_time_max_ms: float = field(default=0.0, metadata=_m("float"))
    job_time_mean_ms: float = field(default=0.0, metadata=_m("float"))
    job_time_median_ms: float = field(default=0.0, metadata=_m("float"))
    job_time_count: int = field(default=0, metadata=_m("u64"))
    total_completed: int = field(default=0, metadata=_m("u64"))
    total_failed: int = field(default=0, metadata=_m("u64"))
    total_expired: int = field(default=0, metadata=_m("u64"))
    total_slow: int = field(default=0, metadata=_m("u64"))
    start_time: datetime = field(default=_EPOCH, metadata=_m("datetime"))
    current_time: datetime = field(default=_EPOCH, metadata=_m("datetime"))
    uptime_seconds: int = field(default=0, metadata=_m("i64"))
    engine: str = field(default=ENGINE, metadata=_m("str"))
    version: str = field(default=OPENPORTAL_VERSION, metadata=_m("str"))
    last_updated: datetime = field(default=_EPOCH, metadata=_m("datetime"))
    peers: dict[str, HealthInfo] = field(
        default_factory=dict, metadata=_m(("map", "HealthInfo"), serde_default=True)
    )

    @classmethod
    def new(
        cls,
        name: str,
        agent_type: AgentType,
        *,
        connected: bool,
        start_time: datetime,
        now: datetime,
    ) -> HealthInfo:
        """Zero counters, times filled in and uptime computed (Rust ``HealthInfo::new``)."""
        return cls(
            name=name,
            agent_type=agent_type,
            connected=connected,
            start_time=start_time,
            current_time=now,
            last_updated=now,
            uptime_seconds=int((now - start_time).total_seconds()),
        )

    def with_peer(self, peer: HealthInfo) -> HealthInfo:
        """A copy with ``peer`` nested under its name (replacing any older answer)."""
        return dataclasses.replace(self, peers={**self.peers, peer.name: peer})
