"""Usage and storage report values (results of the ``*_report(s)`` instructions).

JSON shapes follow the Rust structs field for field (notes §3.8).  Rust keeps
the maps in ``HashMap``s, so their key order on the wire is arbitrary; we
always write keys sorted, which any reader accepts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Generic, Self, TypeVar

from ._serde import bool_value, map_value, string_value, struct_fields, u64_value
from .calendar import Date, Timestamp
from .identifiers import PortalIdentifier, ProjectIdentifier, UserIdentifier
from .values import Quota, Usage, Volume, parse_date

__all__ = [
    "DailyProjectUsageReport",
    "DailyStorageReport",
    "ProjectStorageReport",
    "ProjectUsageReport",
    "StorageReport",
    "UsageReport",
    "decode_quota_map",
    "encode_quota_map",
]

_K = TypeVar("_K")
_V = TypeVar("_V")


def _typed_map(
    value: Any,
    what: str,
    key: Callable[[str], _K],
    item: Callable[[Any], _V],
) -> dict[_K, _V]:
    """Decode a JSON object into a typed dict (later duplicates win, like HashMap)."""
    result: dict[_K, _V] = {}
    for raw_key, raw_item in map_value(value, what):
        result[key(string_value(raw_key, f"{what} key"))] = item(raw_item)
    return result


def _sorted_json(mapping: dict[Any, Any], item: Callable[[Any], Any]) -> dict[str, Any]:
    return {str(k): item(v) for k, v in sorted(mapping.items(), key=lambda kv: str(kv[0]))}


def decode_quota_map(value: Any, what: str = "HashMap<Volume, Quota>") -> dict[Volume, Quota]:
    """Decode ``{"volume": Quota}`` (volume keys are not validated, as in Rust)."""
    return _typed_map(value, what, Volume, Quota.from_json_value)


def encode_quota_map(quotas: dict[Volume, Quota]) -> dict[str, Any]:
    """Encode ``{Volume: Quota}`` as a JSON-ready dict."""
    return _sorted_json(quotas, lambda q: q.to_json_value())


def _field_names(cls: type) -> tuple[str, ...]:
    """A report's JSON member names: its fields, in the Rust struct's order."""
    return tuple(f.name for f in fields(cls))


def _string_item(value: Any) -> str:
    return string_value(value, "value")


@dataclass(frozen=True)
class DailyProjectUsageReport:
    """One day's usage of one project, keyed by local user name."""

    reports: dict[str, Usage] = field(default_factory=dict)
    components: dict[str, dict[str, Usage]] = field(default_factory=dict)
    user_job_counts: dict[str, int] = field(default_factory=dict)
    user_wait_seconds: dict[str, int] = field(default_factory=dict)
    num_jobs: int = 0
    total_wait_seconds: int = 0
    is_complete: bool = False

    @property
    def total_usage(self) -> Usage:
        """Sum of every user's usage."""
        return Usage(sum(u.seconds for u in self.reports.values()))

    def to_json_value(self) -> dict[str, Any]:
        """JSON object in Rust field order."""
        return {
            "reports": _sorted_json(self.reports, lambda u: u.to_json_value()),
            "components": _sorted_json(
                self.components, lambda m: _sorted_json(m, lambda u: u.to_json_value())
            ),
            "user_job_counts": _sorted_json(self.user_job_counts, int),
            "user_wait_seconds": _sorted_json(self.user_wait_seconds, int),
            "num_jobs": self.num_jobs,
            "total_wait_seconds": self.total_wait_seconds,
            "is_complete": self.is_complete,
        }

    @classmethod
    def from_json_value(cls, value: Any) -> DailyProjectUsageReport:
        """Decode (all maps and counters default to empty/zero when absent)."""
        f = struct_fields(
            value,
            cls.__name__,
            _field_names(cls),
            required=("reports", "is_complete"),
            defaults=("components", "user_job_counts", "user_wait_seconds", "num_jobs"),
        )

        def counts(name: str) -> dict[str, int]:
            if name not in f:
                return {}
            return _typed_map(f[name], name, str, lambda v: u64_value(v, name))

        components: dict[str, dict[str, Usage]] = {}
        if "components" in f:
            components = _typed_map(
                f["components"],
                "components",
                str,
                lambda m: _typed_map(m, "component", str, Usage.from_json_value),
            )
        return cls(
            reports=_typed_map(f["reports"], "reports", str, Usage.from_json_value),
            components=components,
            user_job_counts=counts("user_job_counts"),
            user_wait_seconds=counts("user_wait_seconds"),
            num_jobs=u64_value(f.get("num_jobs", 0), "num_jobs"),
            total_wait_seconds=u64_value(f.get("total_wait_seconds", 0), "total_wait_seconds"),
            is_complete=bool_value(f["is_complete"], "is_complete"),
        )


@dataclass(frozen=True)
class ProjectUsageReport:
    """Daily usage reports of one project plus the identifier -> local user map."""

    project: ProjectIdentifier
    reports: dict[Date, DailyProjectUsageReport] = field(default_factory=dict)
    users: dict[UserIdentifier, str] = field(default_factory=dict)

    def to_json_value(self) -> dict[str, Any]:
        """JSON object in Rust field order."""
        return {
            "project": str(self.project),
            "reports": _sorted_json(self.reports, lambda r: r.to_json_value()),
            "users": _sorted_json(self.users, str),
        }

    @classmethod
    def from_json_value(cls, value: Any) -> ProjectUsageReport:
        """Decode the JSON object (all three fields are required)."""
        names = _field_names(cls)
        f = struct_fields(value, cls.__name__, names, required=names)
        return cls(
            project=ProjectIdentifier.parse(string_value(f["project"], "project")),
            reports=_typed_map(
                f["reports"], "reports", parse_date, DailyProjectUsageReport.from_json_value
            ),
            users=_typed_map(f["users"], "users", UserIdentifier.parse, _string_item),
        )


_R = TypeVar("_R", "ProjectUsageReport", "ProjectStorageReport")


@dataclass(frozen=True)
class _PortalReports(Generic[_R]):
    """The reports of every project of a portal (``UsageReport``, ``StorageReport``)."""

    portal: PortalIdentifier
    reports: dict[ProjectIdentifier, _R] = field(default_factory=dict)

    #: the class of each project's report
    _project_report: ClassVar[type[Any]]

    def to_json_value(self) -> dict[str, Any]:
        """JSON object in Rust field order."""
        return {
            "portal": str(self.portal),
            "reports": _sorted_json(self.reports, lambda r: r.to_json_value()),
        }

    @classmethod
    def from_json_value(cls, value: Any) -> Self:
        """Decode the JSON object."""
        f = struct_fields(
            value, cls.__name__, ("portal", "reports"), required=("portal", "reports")
        )
        return cls(
            portal=PortalIdentifier.parse(string_value(f["portal"], "portal")),
            reports=_typed_map(
                f["reports"],
                "reports",
                ProjectIdentifier.parse,
                cls._project_report.from_json_value,
            ),
        )


@dataclass(frozen=True)
class UsageReport(_PortalReports[ProjectUsageReport]):
    """Usage reports of every project of a portal."""

    _project_report = ProjectUsageReport


@dataclass(frozen=True)
class _StorageSnapshot:
    """The quotas of one project and its users at one moment (fields shared below)."""

    project: ProjectIdentifier
    generated_at: Timestamp
    project_quotas: dict[Volume, Quota] = field(default_factory=dict)
    user_quotas: dict[UserIdentifier, dict[Volume, Quota]] = field(default_factory=dict)

    def to_json_value(self) -> dict[str, Any]:
        """JSON object in Rust field order."""
        return {
            "project": str(self.project),
            "generated_at": str(self.generated_at),
            "project_quotas": encode_quota_map(self.project_quotas),
            "user_quotas": _sorted_json(self.user_quotas, encode_quota_map),
        }

    @staticmethod
    def _snapshot(f: dict[str, Any]) -> dict[str, Any]:
        """Decode the shared fields from ``struct_fields`` output."""
        return {
            "project": ProjectIdentifier.parse(string_value(f["project"], "project")),
            "generated_at": Timestamp.parse(string_value(f["generated_at"], "generated_at")),
            "project_quotas": decode_quota_map(f["project_quotas"], "project_quotas"),
            "user_quotas": _typed_map(
                f["user_quotas"], "user_quotas", UserIdentifier.parse, decode_quota_map
            ),
        }


@dataclass(frozen=True)
class DailyStorageReport(_StorageSnapshot):
    """A historical storage snapshot kept inside :class:`ProjectStorageReport`."""

    @classmethod
    def from_json_value(cls, value: Any) -> DailyStorageReport:
        """Decode the JSON object."""
        names = _field_names(cls)
        return cls(**cls._snapshot(struct_fields(value, cls.__name__, names, required=names)))


@dataclass(frozen=True)
class ProjectStorageReport(_StorageSnapshot):
    """Storage quotas and usage of one project (and its users)."""

    users: dict[UserIdentifier, str] = field(default_factory=dict)
    daily_reports: dict[Date, DailyStorageReport] = field(default_factory=dict)

    def to_json_value(self) -> dict[str, Any]:
        """JSON object in Rust field order (``daily_reports`` omitted when empty)."""
        value = super().to_json_value()
        value["users"] = _sorted_json(self.users, str)
        if self.daily_reports:
            value["daily_reports"] = _sorted_json(self.daily_reports, lambda r: r.to_json_value())
        return value

    @classmethod
    def from_json_value(cls, value: Any) -> ProjectStorageReport:
        """Decode the JSON object."""
        names = _field_names(cls)
        f = struct_fields(
            value, cls.__name__, names, required=names[:5], defaults=("daily_reports",)
        )
        daily: dict[Date, DailyStorageReport] = {}
        if "daily_reports" in f:
            daily = _typed_map(
                f["daily_reports"],
                "daily_reports",
                parse_date,
                DailyStorageReport.from_json_value,
            )
        return cls(
            **cls._snapshot(f),
            users=_typed_map(f["users"], "users", UserIdentifier.parse, _string_item),
            daily_reports=daily,
        )


@dataclass(frozen=True)
class StorageReport(_PortalReports[ProjectStorageReport]):
    """Storage reports of every project of a portal."""

    _project_report = ProjectStorageReport
