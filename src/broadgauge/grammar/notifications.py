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

from broadgauge.text import has_lone_surrogate

from ._serde import string_value, struct_fields
from ._text import JsonSyntaxError, Pairs, json_dumps, json_loads, rust_trim
from .destination import Destination
from .errors import GrammarError
from .identifiers import ProjectIdentifier, UserIdentifier

__all__ = ["EventKind", "Notification", "NotificationEvent"]


class EventKind(enum.Enum):
    """Notification event variants; ``value`` is the JSON tag."""

    USER_ADDED = "UserAdded"
    USER_REMOVED = "UserRemoved"
    USER_CHANGED = "UserChanged"
    USER_BLOCKED = "UserBlocked"
    USER_UNBLOCKED = "UserUnblocked"
    PROJECT_ADDED = "ProjectAdded"
    PROJECT_REMOVED = "ProjectRemoved"
    PROJECT_CHANGED = "ProjectChanged"
    PROJECT_BLOCKED = "ProjectBlocked"
    PROJECT_UNBLOCKED = "ProjectUnblocked"
    AWARD_ADDED = "AwardAdded"
    AWARD_REMOVED = "AwardRemoved"
    AWARD_CHANGED = "AwardChanged"
    AWARD_ACCEPTED = "AwardAccepted"
    AWARD_REJECTED = "AwardRejected"
    FORWARD = "Forward"

    @property
    def tag(self) -> str:
        """The externally tagged JSON variant name (``UserAdded``)."""
        return self.value

    @property
    def keyword(self) -> str:
        """The snake_case keyword of the text form (``user_added``)."""
        return self.name.lower()

    @property
    def takes_user(self) -> bool:
        """Whether the subject is a :class:`UserIdentifier`."""
        return self.name.startswith("USER_")

    @property
    def takes_project(self) -> bool:
        """Whether the subject is a :class:`ProjectIdentifier`."""
        return self.name.startswith(("PROJECT_", "AWARD_"))


_BY_KEYWORD = {kind.keyword: kind for kind in EventKind}


@dataclass(frozen=True)
class NotificationEvent:
    """One event: a kind plus its subject (or, for ``FORWARD``, a notification)."""

    kind: EventKind
    subject: UserIdentifier | ProjectIdentifier | Notification

    def __post_init__(self) -> None:
        expected: type
        if self.kind.takes_user:
            expected = UserIdentifier
        elif self.kind.takes_project:
            expected = ProjectIdentifier
        else:
            expected = Notification
        if not isinstance(self.subject, expected):
            raise TypeError(f"{self.kind.tag} cannot carry {type(self.subject).__name__}")

    @classmethod
    def parse(cls, text: str) -> NotificationEvent:
        """Parse ``<keyword> <identifier>``; :class:`GrammarError` when malformed."""
        name, space, rest = text.partition(" ")
        name, rest = (name, rust_trim(rest)) if space else (rust_trim(text), "")
        kind = _BY_KEYWORD.get(name)
        if kind is None:
            raise GrammarError(f"Unknown notification event: {name!r}")
        if kind is EventKind.FORWARD:
            raise GrammarError("forward is an infrastructure-only event with no text form")
        return cls(kind, subject_of(kind, rest))

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
        try:
            kind = EventKind(tag)
        except ValueError:
            raise GrammarError(f"Unknown notification event variant {tag!r}") from None
        if kind is EventKind.FORWARD:
            return cls(kind, Notification.from_json_value(payload))
        return cls(kind, subject_of(kind, string_value(payload, tag)))


def subject_of(kind: EventKind, text: str) -> UserIdentifier | ProjectIdentifier:
    """The identifier a (non-``FORWARD``) event of ``kind`` carries, parsed from ``text``."""
    if kind.takes_user:
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
    """An event addressed along a destination path (never stored on a board).

    Like the Rust struct, equality includes the ``id``.
    """

    destination: Destination
    event: NotificationEvent
    id: uuid.UUID = field(default_factory=uuid.uuid4)

    @classmethod
    def create(
        cls, destination: Destination, event: NotificationEvent, *, id: uuid.UUID | None = None
    ) -> Notification:
        """A notification with a fresh UUID4 id (unless ``id`` is given)."""
        return cls(destination, event, id if id is not None else uuid.uuid4())

    @classmethod
    def parse(cls, text: str, *, id: uuid.UUID | None = None) -> Notification:
        """Parse ``<destination> <event> <identifier>`` (a fresh id unless ``id`` is given).

        Like Rust, the destination ends at the first ASCII space.  Text holding a lone
        UTF-16 surrogate is refused: a Rust ``String`` cannot hold it.
        """
        if has_lone_surrogate(text):
            raise GrammarError("Invalid notification: it contains a lone UTF-16 surrogate")
        dest_text, space, event_text = text.partition(" ")
        if not space:
            raise GrammarError(f"Notification missing event: {text!r}")
        destination = Destination.parse(rust_trim(dest_text))
        return cls.create(destination, NotificationEvent.parse(rust_trim(event_text)), id=id)

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
