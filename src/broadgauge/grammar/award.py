"""Award (project) details: the JSON argument of ``create_project``/``update_project``.

``AwardDetails`` (called ``ProjectDetails`` in result types) is parsed from
JSON with serde-derive rules and re-serialised compactly in a fixed key order
(notes §4.2, erratum 20):

``name, template, key, description, members, start_date, end_date,
allocation`` (always written, ``null`` when unset), ``breakdown`` (omitted when
empty), ``award, call, project_link, renewal`` (omitted when absent), ``notes``
(always written), ``earliest_approve, membership_control`` (omitted when
absent), ``allowed_domains`` (always written).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ._serde import optional_string, string_map, string_value, struct_fields
from ._text import (
    JsonSyntaxError,
    Pairs,
    format_f64,
    is_array,
    json_dumps,
    json_loads,
    parse_rust_f64,
    rust_split_whitespace,
    rust_trim,
)
from ._unicode import is_rust_alphanumeric
from ._url import is_valid_url
from .calendar import Date, Timestamp
from .errors import GrammarError
from .values import parse_date

__all__ = [
    "Allocation",
    "AwardDetails",
    "DomainPattern",
    "Link",
    "MembershipControl",
    "Note",
    "ProjectDetails",
    "ProjectTemplate",
]


@dataclass(frozen=True, slots=True)
class ProjectTemplate:
    """A portal-defined project template name (alphanumerics, ``_``, ``-``)."""

    name: str

    @classmethod
    def parse(cls, text: str) -> ProjectTemplate:
        """Trimmed, non-empty, only alphanumerics, underscores and dashes."""
        name = rust_trim(text)
        if not name:
            raise GrammarError("Invalid ProjectTemplate - cannot be empty")
        if not all(is_rust_alphanumeric(ch) or ch in "_-" for ch in name):
            raise GrammarError(
                f"Invalid ProjectTemplate {name!r} - only alphanumerics, '_' and '-' allowed"
            )
        return cls(name)

    def __str__(self) -> str:
        return self.name


_UNIT_ALIASES = {
    "node hours": "NHR",
    "node hour": "NHR",
    "nhr": "NHR",
    "gpu hours": "GPUHR",
    "gpu hour": "GPUHR",
    "gpuhr": "GPUHR",
    "cpu hours": "CPUHR",
    "cpu hour": "CPUHR",
    "cpuhr": "CPUHR",
    "core hours": "COREHR",
    "core hour": "COREHR",
    "corehr": "COREHR",
    "gb hours": "GBHR",
    "gb hour": "GBHR",
    "gbhr": "GBHR",
    "billing hours": "BHR",
    "billing hour": "BHR",
    "bhr": "BHR",
}


@dataclass(frozen=True, slots=True)
class Allocation:
    """An allocation size and units, or no allocation (``size is None``)."""

    size: float | None = None
    units: str | None = None

    @staticmethod
    def canonical_units(units: str) -> str:
        """Known unit spellings become ``NHR``, ``GPUHR``...; others are lowercased."""
        lowered = rust_trim(units).lower()
        return _UNIT_ALIASES.get(lowered, lowered)

    @classmethod
    def parse(cls, text: str) -> Allocation:
        """Parse ``none``/``no allocation`` or ``<f64 size> <units...>``."""
        trimmed = rust_trim(text)
        if not trimmed:
            raise GrammarError("Invalid Allocation - cannot be empty")
        if trimmed.lower() in ("none", "no allocation"):
            return cls()
        parts = rust_split_whitespace(trimmed)
        if len(parts) < 2:
            raise GrammarError(f"Invalid Allocation - must contain a size and units {text!r}")
        size = parse_rust_f64(parts[0])
        if size is None:
            raise GrammarError(f"Invalid Allocation - size must be a number {parts[0]!r}")
        if size < 0.0:
            raise GrammarError(f"Invalid Allocation - size cannot be negative {parts[0]!r}")
        return cls(size, cls.canonical_units(" ".join(parts[1:])))

    @property
    def is_empty(self) -> bool:
        """True for "No allocation"."""
        return self.size is None

    def __str__(self) -> str:
        if self.size is None:
            return "No allocation"
        if self.units is None:
            return format_f64(self.size)
        return f"{format_f64(self.size)} {self.units}"


def _validate_domain_name(domain: str) -> None:
    if not domain:
        raise GrammarError("Domain name cannot be empty")
    for label in domain.split("."):
        if not label:
            raise GrammarError(f"Domain name {domain!r} has an empty label")
        if not all(ch.isascii() and (ch.isalnum() or ch == "-") for ch in label):
            raise GrammarError(f"Domain label {label!r} contains invalid characters")
        if label.startswith("-") or label.endswith("-"):
            raise GrammarError(f"Domain label {label!r} cannot start or end with a hyphen")


_EMAIL_LOCAL_EXTRA = set("._%+-")


def validate_email(email: str) -> None:
    """Check ``local@domain`` as OpenPortal does (raises :class:`GrammarError`)."""
    local, at, domain = email.partition("@")
    if not at:
        raise GrammarError(f"Email address {email!r} must contain '@'")
    if not local:
        raise GrammarError(f"Email local part cannot be empty in {email!r}")
    if not all((ch.isascii() and ch.isalnum()) or ch in _EMAIL_LOCAL_EXTRA for ch in local):
        raise GrammarError(f"Email local part {local!r} contains invalid characters")
    if "@" in domain:
        raise GrammarError(f"Email address {email!r} must contain exactly one '@'")
    _validate_domain_name(domain)


@dataclass(frozen=True, slots=True)
class DomainPattern:
    """``example.com``, ``*.example.com`` (any depth) or an e-mail address."""

    pattern: str

    @classmethod
    def parse(cls, text: str) -> DomainPattern:
        """Validate a pattern (no trimming is applied)."""
        if not text:
            raise GrammarError("Domain pattern cannot be empty")
        if "@" in text:
            validate_email(text)
        elif text.startswith("*."):
            domain = text[2:]
            if not domain:
                raise GrammarError("Wildcard pattern must have a domain after '*.'")
            if "*" in domain:
                raise GrammarError(f"Wildcard '*' only allowed at the start of {text!r}")
            _validate_domain_name(domain)
        else:
            if "*" in text:
                raise GrammarError(f"Wildcard '*' only allowed as a '*.' prefix in {text!r}")
            _validate_domain_name(text)
        return cls(text)

    @property
    def is_email(self) -> bool:
        """True when the pattern is a single e-mail address."""
        return "@" in self.pattern

    def matches(self, domain: str) -> bool:
        """Does ``domain`` match (case-insensitive; ``*.`` covers any depth)?"""
        if self.is_email:
            return False
        pattern = self.pattern.lower()
        domain = domain.lower()
        if pattern.startswith("*."):
            # WildMatch semantics: "*" matches any run, so any depth matches.
            return domain.endswith(pattern[1:])
        return pattern == domain

    def matches_email(self, email: str) -> bool:
        """Does the e-mail pattern equal ``email`` (case-insensitive)?"""
        return self.is_email and self.pattern.lower() == email.lower()

    def __str__(self) -> str:
        return self.pattern


@dataclass(frozen=True, slots=True)
class Link:
    """A reference to an external record: optional ``id`` and ``url``."""

    id: str | None = None
    url: str | None = None

    def to_json_value(self) -> dict[str, str]:
        """Object with absent members omitted."""
        value: dict[str, str] = {}
        if self.id is not None:
            value["id"] = self.id
        if self.url is not None:
            value["url"] = self.url
        return value

    @classmethod
    def from_json_value(cls, value: Any) -> Link:
        """Decode; a non-empty ``url`` must be a valid absolute URL."""
        fields = struct_fields(value, "Link", ("id", "url"))
        link_id = optional_string(fields.get("id"), "Link.id")
        url = optional_string(fields.get("url"), "Link.url")
        if url and not is_valid_url(url):
            raise GrammarError(f"Invalid URL for link: {url!r}")
        return cls(link_id, url)

    @property
    def is_empty(self) -> bool:
        """True when neither id nor url is set."""
        return self.id is None and self.url is None


@dataclass(frozen=True, slots=True)
class Note:
    """A timestamped note attached to an award."""

    timestamp: Timestamp
    author: str
    text: str

    def to_json_value(self) -> dict[str, str]:
        """``{"timestamp": RFC 3339 UTC, "author": ..., "text": ...}``."""
        return {"timestamp": str(self.timestamp), "author": self.author, "text": self.text}

    @classmethod
    def from_json_value(cls, value: Any) -> Note:
        """Decode (offsets are converted to UTC)."""
        fields = struct_fields(
            value, "Note", ("timestamp", "author", "text"), required=("timestamp", "author", "text")
        )
        stamp = Timestamp.parse(string_value(fields["timestamp"], "Note.timestamp"))
        return cls(
            stamp,
            string_value(fields["author"], "Note.author"),
            string_value(fields["text"], "Note.text"),
        )


class MembershipControl(enum.Enum):
    """Whether the receiving portal may change membership or roles."""

    OPEN = "open"
    MEMBERS_ONLY = "members_only"
    ROLES_ONLY = "roles_only"
    LOCKED = "locked"

    @classmethod
    def from_json_value(cls, value: Any) -> MembershipControl:
        """A variant name, or serde's ``{"variant": null}`` map form."""
        if isinstance(value, dict):
            value = Pairs(value.items())
        if isinstance(value, Pairs):
            if len(value) != 1 or value[0][1] is not None:
                raise GrammarError("membership_control: expected a unit variant")
            value = value[0][0]
        if not isinstance(value, str):
            raise GrammarError("membership_control: expected a string")
        try:
            return cls(value)
        except ValueError:
            raise GrammarError(f"membership_control: unknown variant {value!r}") from None

    @property
    def can_change_membership(self) -> bool:
        """May the receiving portal add or remove members?"""
        return self in (MembershipControl.OPEN, MembershipControl.MEMBERS_ONLY)

    @property
    def can_change_roles(self) -> bool:
        """May the receiving portal change members' roles?"""
        return self in (MembershipControl.OPEN, MembershipControl.ROLES_ONLY)


_FIELDS = (
    "name",
    "template",
    "key",
    "description",
    "members",
    "start_date",
    "end_date",
    "allocation",
    "breakdown",
    "award",
    "call",
    "project_link",
    "renewal",
    "notes",
    "earliest_approve",
    "membership_control",
    "allowed_domains",
)

StrPairs = tuple[tuple[str, str], ...]


def _sorted_pairs(mapping: Mapping[str, str]) -> StrPairs:
    return tuple(sorted(mapping.items()))


@dataclass(frozen=True, slots=True)
class AwardDetails:
    """Details of an award/project.  All fields optional; maps kept sorted.

    ``members`` and ``breakdown`` are stored as key-sorted tuples of pairs so
    the value is hashable; use :meth:`members_dict`/:meth:`breakdown_dict` or
    :meth:`build` for a dict-based interface.
    """

    name: str | None = None
    template: ProjectTemplate | None = None
    key: str | None = None
    description: str | None = None
    members: StrPairs | None = None
    start_date: Date | None = None
    end_date: Date | None = None
    allocation: Allocation | None = None
    breakdown: StrPairs = ()
    award: Link | None = None
    call: Link | None = None
    project_link: Link | None = None
    renewal: Link | None = None
    notes: tuple[Note, ...] = ()
    earliest_approve: Timestamp | None = None
    membership_control: MembershipControl | None = None
    allowed_domains: tuple[DomainPattern, ...] | None = field(default=None)

    @classmethod
    def build(
        cls,
        *,
        members: Mapping[str, str] | None = None,
        breakdown: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> AwardDetails:
        """Construct with dicts for ``members``/``breakdown`` (sorted for you)."""
        return cls(
            members=None if members is None else _sorted_pairs(members),
            breakdown=_sorted_pairs(breakdown or {}),
            **kwargs,
        )

    def members_dict(self) -> dict[str, str] | None:
        """``members`` as a dict (``None`` when unset)."""
        return None if self.members is None else dict(self.members)

    def breakdown_dict(self) -> dict[str, str]:
        """``breakdown`` as a dict."""
        return dict(self.breakdown)

    @classmethod
    def parse(cls, text: str) -> AwardDetails:
        """Parse the JSON text form (serde_json strictness)."""
        try:
            value = json_loads(text)
        except JsonSyntaxError as exc:
            raise GrammarError(f"Invalid AwardDetails JSON: {exc}") from None
        return cls.from_json_value(value)

    @classmethod
    def from_json_value(cls, value: Any) -> AwardDetails:
        """Decode a parsed JSON value (object or serde's positional array)."""
        f = struct_fields(value, "AwardDetails", _FIELDS, defaults=("breakdown", "notes"))

        def opt(name: str) -> Any:
            return f.get(name)

        members_value = opt("members")
        members = (
            None if members_value is None else _sorted_pairs(string_map(members_value, "members"))
        )
        breakdown: StrPairs = ()
        if "breakdown" in f:
            breakdown = _sorted_pairs(string_map(f["breakdown"], "breakdown"))
        notes: tuple[Note, ...] = ()
        if "notes" in f:
            if not is_array(f["notes"]):
                raise GrammarError("notes: expected an array")
            notes = tuple(Note.from_json_value(item) for item in f["notes"])
        domains_value = opt("allowed_domains")
        domains: tuple[DomainPattern, ...] | None = None
        if domains_value is not None:
            if not is_array(domains_value):
                raise GrammarError("allowed_domains: expected an array")
            domains = tuple(
                DomainPattern.parse(string_value(item, "allowed_domains[]"))
                for item in domains_value
            )
        template = opt("template")
        start = opt("start_date")
        end = opt("end_date")
        allocation = opt("allocation")
        approve = opt("earliest_approve")
        control = opt("membership_control")

        def link(name: str) -> Link | None:
            raw = opt(name)
            return None if raw is None else Link.from_json_value(raw)

        return cls(
            name=optional_string(opt("name"), "name"),
            template=None
            if template is None
            else ProjectTemplate.parse(string_value(template, "template")),
            key=optional_string(opt("key"), "key"),
            description=optional_string(opt("description"), "description"),
            members=members,
            start_date=None if start is None else parse_date(string_value(start, "start_date")),
            end_date=None if end is None else parse_date(string_value(end, "end_date")),
            allocation=None
            if allocation is None
            else Allocation.parse(string_value(allocation, "allocation")),
            breakdown=breakdown,
            award=link("award"),
            call=link("call"),
            project_link=link("project_link"),
            renewal=link("renewal"),
            notes=notes,
            earliest_approve=None
            if approve is None
            else Timestamp.parse(string_value(approve, "earliest_approve")),
            membership_control=None
            if control is None
            else MembershipControl.from_json_value(control),
            allowed_domains=domains,
        )

    def to_json_value(self) -> dict[str, Any]:
        """The JSON object in canonical key order (as a Python dict)."""
        value: dict[str, Any] = {
            "name": self.name,
            "template": None if self.template is None else self.template.name,
            "key": self.key,
            "description": self.description,
            "members": None if self.members is None else dict(self.members),
            "start_date": None if self.start_date is None else str(self.start_date),
            "end_date": None if self.end_date is None else str(self.end_date),
            "allocation": None if self.allocation is None else str(self.allocation),
        }
        if self.breakdown:
            value["breakdown"] = dict(self.breakdown)
        for name in ("award", "call", "project_link", "renewal"):
            link: Link | None = getattr(self, name)
            if link is not None:
                value[name] = link.to_json_value()
        value["notes"] = [note.to_json_value() for note in self.notes]
        if self.earliest_approve is not None:
            value["earliest_approve"] = str(self.earliest_approve)
        if self.membership_control is not None:
            value["membership_control"] = self.membership_control.value
        value["allowed_domains"] = (
            None if self.allowed_domains is None else [d.pattern for d in self.allowed_domains]
        )
        return value

    def to_json(self) -> str:
        """Canonical compact JSON text."""
        return json_dumps(self.to_json_value())

    def __str__(self) -> str:
        return self.to_json()

    def is_domain_allowed(self, domain: str) -> bool:
        """No list allows everything; an empty list allows nothing."""
        if self.allowed_domains is None:
            return True
        return any(pattern.matches(domain) for pattern in self.allowed_domains)

    def is_email_allowed(self, email: str) -> bool:
        """Allowed by an exact e-mail pattern or a domain pattern on its domain."""
        if self.allowed_domains is None:
            return True
        domain = email.partition("@")[2]
        return any(
            pattern.matches_email(email) or (bool(domain) and pattern.matches(domain))
            for pattern in self.allowed_domains
        )

    def merge(self, other: AwardDetails) -> AwardDetails:
        """Overlay ``other`` on ``self`` as the Rust ``AwardDetails::merge`` does.

        Set fields of ``other`` replace ours; ``breakdown`` entries are merged
        key by key; notes not already present are appended and all notes sorted
        by timestamp; allowed domains are unioned (order kept).  Differing
        templates are an error.
        """
        template = self.template
        if template is None:
            template = other.template
        elif other.template is not None and other.template != template:
            raise GrammarError(
                "Cannot merge project details with different project templates: "
                f"{template.name!r} != {other.template.name!r}"
            )
        breakdown = dict(self.breakdown)
        breakdown.update(other.breakdown)
        notes = list(self.notes)
        for note in other.notes:
            if note not in notes:
                notes.append(note)
        notes.sort(key=lambda n: n.timestamp)
        domains = self.allowed_domains
        if other.allowed_domains is not None:
            if domains is None:
                domains = other.allowed_domains
            else:
                merged = list(domains)
                for pattern in other.allowed_domains:
                    if pattern not in merged:
                        merged.append(pattern)
                domains = tuple(merged)

        def pick(name: str) -> Any:
            theirs = getattr(other, name)
            return getattr(self, name) if theirs is None else theirs

        return replace(
            self,
            name=pick("name"),
            template=template,
            key=pick("key"),
            description=pick("description"),
            members=pick("members"),
            start_date=pick("start_date"),
            end_date=pick("end_date"),
            allocation=pick("allocation"),
            breakdown=_sorted_pairs(breakdown),
            award=pick("award"),
            call=pick("call"),
            project_link=pick("project_link"),
            renewal=pick("renewal"),
            notes=tuple(notes),
            earliest_approve=pick("earliest_approve"),
            membership_control=pick("membership_control"),
            allowed_domains=domains,
        )


ProjectDetails = AwardDetails
"""``ProjectDetails`` is the result-type name of :class:`AwardDetails`."""
