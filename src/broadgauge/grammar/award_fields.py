"""The value types of award details' fields, each with the rules OpenPortal checks.

``ProjectTemplate`` (a template name), ``Allocation`` (``<size> <units>`` with
canonical unit names), ``DomainPattern`` (``example.com``, ``*.example.com`` or an
e-mail address, with OpenPortal's domain and e-mail validation), ``Link`` (an
external record with a validated URL), ``Note`` (a timestamped note) and
``MembershipControl``.  :mod:`broadgauge.grammar.award` puts them together into
:class:`~broadgauge.grammar.award.AwardDetails`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from ._serde import optional_string, string_value, struct_fields
from ._text import Pairs, format_f64, parse_rust_f64, rust_split_whitespace, rust_trim
from ._unicode import is_rust_alphanumeric
from ._url import is_valid_url
from .calendar import Timestamp
from .errors import GrammarError

__all__ = [
    "Allocation",
    "DomainPattern",
    "Link",
    "MembershipControl",
    "Note",
    "ProjectTemplate",
    "validate_email",
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
