"""Fire-and-forget notifications (templemeads ``notification.rs``, notes §3.9).

JSON: ``{"id":"<uuid>","destination":"a.b.c","event":{"UserAdded":"u.p.portal"}}``
- the event is an externally tagged enum whose argument is the identifier's
canonical string, or for ``Forward`` a nested notification object (the docs
show the display string instead; notes §0 erratum 28).

Text form: ``"<destination> <event_keyword> <argument>"`` with snake_case
keywords (``portal.clusters.shared user_added chris.p.portal``); ``Forward`` is
written ``forward [<inner text>]`` and cannot be parsed from text.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from typing import Any, Final

from broadgauge.grammar import Destination, GrammarError, ProjectIdentifier, UserIdentifier
from broadgauge.text import has_lone_surrogate

from . import _json
from .errors import ProtocolError
from .job import parse_uuid

__all__ = ["EventKind", "Notification", "NotificationEvent"]

# Rust's ``str::trim`` strips the Unicode White_Space set, which differs from
# Python's ``str.strip()`` (Python also strips U+001C..U+001F).
_RUST_WHITESPACE: Final = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)

_FIELDS: Final = frozenset({"id", "destination", "event"})


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
    def keyword(self) -> str:
        """The snake_case keyword of the text form (``user_added``)."""
        return self.name.lower()

    @property
    def takes_user(self) -> bool:
        """Whether the argument is a :class:`UserIdentifier`."""
        return self.name.startswith("USER_")

    @property
    def takes_project(self) -> bool:
        """Whether the argument is a :class:`ProjectIdentifier`."""
        return self.name.startswith(("PROJECT_", "AWARD_"))

    @classmethod
    def from_keyword(cls, keyword: str) -> EventKind:
        """Look up a text keyword; ``forward`` is refused like in Rust."""
        if keyword == "forward":
            raise ValueError(
                "NotificationEvent::Forward is an infrastructure-only event and cannot "
                "be parsed from a string"
            )
        for kind in cls:
            if kind.keyword == keyword:
                return kind
        raise ValueError(f"Unknown notification event: '{keyword}'")


@dataclass(frozen=True, slots=True)
class NotificationEvent:
    """One event: its kind and its argument (identifier, or the forwarded notification)."""

    kind: EventKind
    argument: UserIdentifier | ProjectIdentifier | Notification

    def __post_init__(self) -> None:
        if self.kind.takes_user:
            ok = isinstance(self.argument, UserIdentifier)
        elif self.kind.takes_project:
            ok = isinstance(self.argument, ProjectIdentifier)
        else:
            ok = isinstance(self.argument, Notification)
        if not ok:
            raise TypeError(f"{self.kind.value} cannot carry {type(self.argument).__name__}")

    @classmethod
    def parse(cls, text: str) -> NotificationEvent:
        """Parse ``"<keyword> <identifier>"``; ``ValueError`` when malformed."""
        keyword, sep, rest = text.partition(" ")
        keyword = keyword if sep else keyword.strip(_RUST_WHITESPACE)
        kind = EventKind.from_keyword(keyword)
        return cls(kind, _parse_argument(kind, rest.strip(_RUST_WHITESPACE)))

    def __str__(self) -> str:
        if self.kind is EventKind.FORWARD:
            return f"forward [{self.argument}]"
        return f"{self.kind.keyword} {self.argument}"

    def to_json_value(self) -> dict[str, Any]:
        """Externally tagged JSON object."""
        arg = self.argument
        return {self.kind.value: arg.to_json_value() if isinstance(arg, Notification) else str(arg)}

    @classmethod
    def from_json_value(cls, value: object, path: str = "event") -> NotificationEvent:
        """Decode the externally tagged JSON object."""
        if not isinstance(value, dict) or len(value) != 1:
            shape = _json.type_name(value) if not isinstance(value, dict) else "object"
            raise ProtocolError(f"{path}: expected an object with exactly one event, got {shape}")
        ((tag, body),) = value.items()
        try:
            kind = EventKind(tag)
        except ValueError:
            expected = ", ".join(f"`{k.value}`" for k in EventKind)
            raise ProtocolError(
                f"{path}: unknown event `{tag}`, expected one of {expected}"
            ) from None
        sub = f"{path}.{tag}"
        if kind is EventKind.FORWARD:
            return cls(kind, Notification.from_json_value(body, sub))
        text = _json.check_text(body, sub)
        try:
            return cls(kind, _parse_argument(kind, text))
        except ValueError as exc:
            raise ProtocolError(f"{sub}: {exc}") from None


def _parse_argument(kind: EventKind, text: str) -> UserIdentifier | ProjectIdentifier:
    # GrammarError is a ValueError, so callers see one exception type.
    if kind.takes_user:
        return UserIdentifier.parse(text)
    return ProjectIdentifier.parse(text)


@dataclass(frozen=True, slots=True)
class Notification:
    """A notification addressed along ``destination`` (never stored on a board)."""

    id: uuid.UUID
    destination: Destination
    event: NotificationEvent

    @classmethod
    def create(
        cls, destination: Destination, event: NotificationEvent, *, id: uuid.UUID | None = None
    ) -> Notification:
        """A new notification with a fresh UUID4 id (unless ``id`` is given)."""
        return cls(id if id is not None else uuid.uuid4(), destination, event)

    @classmethod
    def parse(cls, text: str, *, id: uuid.UUID | None = None) -> Notification:
        """Parse the text form ``"<destination> <keyword> <identifier>"``.

        Like Rust, the destination ends at the first ASCII space; the result
        gets a fresh id.  Raises ``ValueError`` (a :class:`GrammarError` for a
        bad destination or identifier, or text holding a lone UTF-16 surrogate, which a
        Rust ``String`` cannot hold).
        """
        if has_lone_surrogate(text):
            raise GrammarError("Invalid notification: it contains a lone UTF-16 surrogate")
        dest_text, sep, event_text = text.partition(" ")
        if not sep:
            raise ValueError(f"Notification missing event: '{text}'")
        destination = Destination.parse(dest_text.strip(_RUST_WHITESPACE))
        event = NotificationEvent.parse(event_text.strip(_RUST_WHITESPACE))
        return cls.create(destination, event, id=id)

    def __str__(self) -> str:
        return f"{self.destination} {self.event}"

    def to_json_value(self) -> dict[str, Any]:
        """JSON object with keys ``id, destination, event``."""
        return {
            "id": str(self.id),
            "destination": str(self.destination),
            "event": self.event.to_json_value(),
        }

    def to_json(self) -> str:
        """Compact JSON text."""
        return _json.dumps(self.to_json_value())

    @classmethod
    def from_json_value(cls, value: object, path: str = "notification") -> Notification:
        """Decode a parsed JSON value; :class:`ProtocolError` names the bad part."""
        r = _json.Reader(value, path, _FIELDS)
        try:
            note_id = parse_uuid(r.text("id"))
        except ValueError as exc:
            r.fail(str(exc), "id")
        try:
            destination = Destination.parse(r.text("destination"))
        except GrammarError as exc:
            r.fail(str(exc), "destination")
        event = NotificationEvent.from_json_value(r.raw("event"), r.sub("event"))
        return cls(note_id, destination, event)

    @classmethod
    def from_json(cls, text: str | bytes) -> Notification:
        """Decode JSON text."""
        return cls.from_json_value(_json.loads(text, "notification"), "notification")
