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


def _encode_value(kind: object, value: Any) -> Any:
    if kind == "datetime":
        return format_datetime(value)
    if kind == "float":
        # serde_json writes non-finite floats as null.
        return value if math.isfinite(value) else None
    if kind == "agent_type":
        return value.value
    if isinstance(kind, tuple):
        shape = kind[0]
        if shape == "list":
            return [item.to_json_value() for item in value]
        if shape == "map":
            return {key: item.to_json_value() for key, item in value.items()}
        return value.to_json_value()
    if kind == "str_list":
        return list(value)
    return value


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


#: Per codec class: (field name, kind, has serde default), in field order; and the names.
_SPECS: dict[type, tuple[tuple[tuple[str, object, bool], ...], frozenset[str]]] = {}


def _spec(cls: type) -> tuple[tuple[tuple[str, object, bool], ...], frozenset[str]]:
    # dataclasses.fields() walks the class's fields on every call; a health sweep of a big
    # network decodes thousands of these objects, so the walk is done once per class.
    spec = _SPECS.get(cls)
    if spec is None:
        fields = dataclasses.fields(cls)
        spec = _SPECS[cls] = (
            tuple((f.name, f.metadata[_KIND], f.metadata[_DEFAULT]) for f in fields),
            frozenset(f.name for f in fields),
        )
    return spec


class _Codec:
    """Generic JSON codec for the dataclasses below, driven by field metadata."""

    __slots__ = ()

    def to_json_value(self) -> dict[str, Any]:
        """The JSON object, in Rust struct field order."""
        return {
            name: _encode_value(kind, getattr(self, name)) for name, kind, _ in _spec(type(self))[0]
        }

    def to_json(self) -> str:
        """Compact JSON text."""
        return _json.dumps(self.to_json_value())

    @classmethod
    def from_json_value(cls: type[_T], value: object, path: str | None = None) -> _T:
        """Decode a parsed JSON value; ``ProtocolError`` names the bad field."""
        fields, names = _spec(cls)
        r = _json.Reader(value, path or cls.__name__, names)
        kwargs = {name: _decode_value(r, name, kind, default) for name, kind, default in fields}
        return cls(**kwargs)

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
