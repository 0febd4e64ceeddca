"""Notifications on the wire (templemeads ``notification.rs``, notes §3.9).

The types are the grammar's (:mod:`broadgauge.grammar.notifications`); this module reads
them from the jobs layer's JSON model, where a malformed part is a :class:`ProtocolError`
naming its path (``Notify.notification.event.UserAdded: ...``), as every other wire value.

JSON: ``{"id":"<uuid>","destination":"a.b.c","event":{"UserAdded":"u.p.portal"}}``: the
event is an externally tagged enum whose argument is the identifier's canonical string, or
for ``Forward`` a nested notification object (the docs show the display string instead;
notes §0 erratum 28).
"""

from __future__ import annotations

from typing import Final

from broadgauge.grammar import Destination, GrammarError
from broadgauge.grammar.notifications import (
    EventKind,
    Notification,
    NotificationEvent,
    subject_of,
)

from . import _json
from .errors import ProtocolError
from .job import parse_uuid

__all__ = [
    "EventKind",
    "Notification",
    "NotificationEvent",
    "event_from_json_value",
    "notification_from_json",
    "notification_from_json_value",
]

_FIELDS: Final = frozenset({"id", "destination", "event"})


def notification_from_json_value(value: object, path: str = "notification") -> Notification:
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
    event = event_from_json_value(r.raw("event"), r.sub("event"))
    return Notification(destination, event, note_id)


def event_from_json_value(value: object, path: str = "event") -> NotificationEvent:
    """Decode an externally tagged event; :class:`ProtocolError` names the bad part."""
    if not isinstance(value, dict) or len(value) != 1:
        shape = _json.type_name(value) if not isinstance(value, dict) else "object"
        raise ProtocolError(f"{path}: expected an object with exactly one event, got {shape}")
    ((tag, body),) = value.items()
    try:
        kind = EventKind(tag)
    except ValueError:
        expected = ", ".join(f"`{k.value}`" for k in EventKind)
        raise ProtocolError(f"{path}: unknown event `{tag}`, expected one of {expected}") from None
    sub = f"{path}.{tag}"
    if kind is EventKind.FORWARD:
        return NotificationEvent(kind, notification_from_json_value(body, sub))
    text = _json.check_text(body, sub)
    try:
        return NotificationEvent(kind, subject_of(kind, text))
    except ValueError as exc:
        raise ProtocolError(f"{sub}: {exc}") from None


def notification_from_json(text: str | bytes) -> Notification:
    """Decode JSON text with the jobs layer's JSON reader."""
    return notification_from_json_value(_json.loads(text, "notification"), "notification")
