"""Notifications: fire-and-forget events such as ``user_added`` (notes §3.9).

Text form ``"<destination> <event_keyword> <identifier>"`` (split on the first
ASCII space, then trimmed); JSON form ``{"id": uuid, "destination": "a.b",
"event": {"UserAdded": "u.p.portal"}}`` with the event externally tagged.
``Forward`` wraps a whole nested notification and cannot be written as text.
"""

from __future__ import annotations

import enum
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from ._serde import string_value, struct_fields
from ._text import JsonSyntaxError, Pairs, json_dumps, json_loads, rust_trim
from .destination import Destination
from .errors import GrammarError
from .identifiers import ProjectIdentifier, UserIdentifier

__all__ = ["EventKind", "Notification", "NotificationEvent"]


class EventKind(enum.Enum):
    """Event variants: value = (JSON tag, text keyword)."""

    USER_ADDED = ("UserAdded", "user_added")
    USER_REMOVED = ("UserRemoved", "user_removed")
    USER_CHANGED = ("UserChanged", "user_changed")
    USER_BLOCKED = ("UserBlocked", "user_blocked")
    USER_UNBLOCKED = ("UserUnblocked", "user_unblocked")
    PROJECT_ADDED = ("ProjectAdded", "project_added")
    PROJECT_REMOVED = ("ProjectRemoved", "project_removed")
    PROJECT_CHANGED = ("ProjectChanged", "project_changed")
    PROJECT_BLOCKED = ("ProjectBlocked", "project_blocked")
    PROJECT_UNBLOCKED = ("ProjectUnblocked", "project_unblocked")
    AWARD_ADDED = ("AwardAdded", "award_added")
    AWARD_REMOVED = ("AwardRemoved", "award_removed")
    AWARD_CHANGED = ("AwardChanged", "award_changed")
    AWARD_ACCEPTED = ("AwardAccepted", "award_accepted")
    AWARD_REJECTED = ("AwardRejected", "award_rejected")
    FORWARD = ("Forward", "forward")

    @property
    def tag(self) -> str:
        """The externally-tagged JSON variant name."""
        return self.value[0]

    @property
    def keyword(self) -> str:
        """The snake_case text keyword."""
        return self.value[1]

    @property
    def is_user_event(self) -> bool:
        """Whether the argument is a UserIdentifier (else a ProjectIdentifier)."""
        return self.tag.startswith("User")


_BY_TAG = {kind.tag: kind for kind in EventKind}
_BY_KEYWORD = {kind.keyword: kind for kind in EventKind}


@dataclass(frozen=True)
class NotificationEvent:
    """One event: a kind plus its subject (or, for ``FORWARD``, a notification)."""

    kind: EventKind
    subject: UserIdentifier | ProjectIdentifier | Notification

    def __post_init__(self) -> None:
        expected: type
        if self.kind is EventKind.FORWARD:
            expected = Notification
        elif self.kind.is_user_event:
            expected = UserIdentifier
        else:
            expected = ProjectIdentifier
        if not isinstance(self.subject, expected):
            raise GrammarError(f"{self.kind.keyword} needs a {expected.__name__}")

    @classmethod
    def parse(cls, text: str) -> NotificationEvent:
        """Parse ``<keyword> <identifier>``."""
        name, space, rest = text.partition(" ")
        name, rest = (name, rust_trim(rest)) if space else (rust_trim(text), "")
        kind = _BY_KEYWORD.get(name)
        if kind is None:
            raise GrammarError(f"Unknown notification event: {name!r}")
        if kind is EventKind.FORWARD:
            raise GrammarError("forward is an infrastructure-only event with no text form")
        return cls(kind, _subject(kind, rest))

    def __str__(self) -> str:
        if self.kind is EventKind.FORWARD:
            return f"forward [{self.subject}]"
        return f"{self.kind.keyword} {self.subject}"

    def to_json_value(self) -> dict[str, Any]:
        """``{"UserAdded": "u.p.portal"}`` / ``{"Forward": {...}}``."""
        if isinstance(self.subject, Notification):
            return {self.kind.tag: self.subject.to_json_value()}
        return {self.kind.tag: str(self.subject)}

    @classmethod
    def from_json_value(cls, value: Any) -> NotificationEvent:
        """Decode the externally tagged form."""
        if isinstance(value, dict):
            value = Pairs(value.items())
        if not isinstance(value, Pairs) or len(value) != 1:
            raise GrammarError("notification event must be an object with one variant")
        tag, payload = value[0]
        kind = _BY_TAG.get(tag)
        if kind is None:
            raise GrammarError(f"Unknown notification event variant {tag!r}")
        if kind is EventKind.FORWARD:
            return cls(kind, Notification.from_json_value(payload))
        return cls(kind, _subject(kind, string_value(payload, tag)))


def _subject(kind: EventKind, text: str) -> UserIdentifier | ProjectIdentifier:
    if kind.is_user_event:
        return UserIdentifier.parse(text)
    return ProjectIdentifier.parse(text)


# The uuid crate accepts the simple, hyphenated, braced and urn forms only.
_UUID = re.compile(
    r"(?:urn:uuid:)?(?P<h>[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
    r"[0-9a-fA-F]{12})|\{(?P<b>[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
    r"[0-9a-fA-F]{12})\}|(?P<s>[0-9a-fA-F]{32})"
)


def parse_uuid(text: str) -> uuid.UUID:
    """Parse a UUID as Rust's ``uuid`` crate does."""
    if not _UUID.fullmatch(text):
        raise GrammarError(f"Invalid UUID {text!r}")
    return uuid.UUID(text.removeprefix("urn:uuid:"))


@dataclass(frozen=True)
class Notification:
    """An event addressed along a destination path.

    Like the Rust struct, equality includes the ``id``.
    """

    destination: Destination
    event: NotificationEvent
    id: uuid.UUID = field(default_factory=uuid.uuid4)

    @classmethod
    def parse(cls, text: str) -> Notification:
        """Parse ``<destination> <event> <identifier>`` (a fresh id is assigned)."""
        dest_text, space, event_text = text.partition(" ")
        if not space:
            raise GrammarError(f"Notification missing event: {text!r}")
        destination = Destination.parse(rust_trim(dest_text))
        return cls(destination, NotificationEvent.parse(rust_trim(event_text)))

    def __str__(self) -> str:
        return f"{self.destination} {self.event}"

    def to_json_value(self) -> dict[str, Any]:
        """``{"id", "destination", "event"}``."""
        return {
            "id": str(self.id),
            "destination": str(self.destination),
            "event": self.event.to_json_value(),
        }

    def to_json(self) -> str:
        """Compact JSON text."""
        return json_dumps(self.to_json_value())

    @classmethod
    def from_json_value(cls, value: Any) -> Notification:
        """Decode the JSON object."""
        names = ("id", "destination", "event")
        f = struct_fields(value, "Notification", names, required=names)
        return cls(
            destination=Destination.parse(string_value(f["destination"], "destination")),
            event=NotificationEvent.from_json_value(f["event"]),
            id=parse_uuid(string_value(f["id"], "id")),
        )

    @classmethod
    def from_json(cls, text: str) -> Notification:
        """Decode JSON text."""
        try:
            return cls.from_json_value(json_loads(text))
        except JsonSyntaxError as exc:
            raise GrammarError(f"Invalid notification JSON: {exc}") from None
