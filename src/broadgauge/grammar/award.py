"""Award (project) details: the JSON argument of ``create_project``/``update_project``.

``AwardDetails`` (called ``ProjectDetails`` in result types) is parsed from
JSON with serde-derive rules and re-serialised compactly in a fixed key order
(notes §4.2, erratum 20):

``name, template, key, description, members, start_date, end_date,
allocation`` (always written, ``null`` when unset), ``breakdown`` (omitted when
empty), ``award, call, project_link, renewal`` (omitted when absent), ``notes``
(always written), ``earliest_approve, membership_control`` (omitted when
absent), ``allowed_domains`` (always written).

The value types of the fields (``ProjectTemplate``, ``Allocation``,
``DomainPattern`` ...) live in :mod:`broadgauge.grammar.award_fields` and are
re-exported here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from ._serde import optional_string, string_map, string_value, struct_fields
from ._text import JsonSyntaxError, is_array, json_dumps, json_loads
from .award_fields import (
    Allocation,
    DomainPattern,
    Link,
    MembershipControl,
    Note,
    ProjectTemplate,
    validate_email,
)
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
    "validate_email",
]


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


#: the JSON member names, in the Rust struct's (and the canonical output's) order
_FIELDS = tuple(f.name for f in fields(AwardDetails))

ProjectDetails = AwardDetails
"""``ProjectDetails`` is the result-type name of :class:`AwardDetails`."""
