"""Turning the bridge's JSON replies into client values (shared by sync and async clients)."""

from __future__ import annotations

import uuid
from typing import Any

from broadgauge.client._protocol import BridgeError
from broadgauge.client.types import Diagnostics, Health, Job, RestartResponse
from broadgauge.grammar import Destination, PortalIdentifier
from broadgauge.jobs.errors import ProtocolError
from broadgauge.jobs.job import Job as WireJob
from broadgauge.jobs.notification import Notification, notification_from_json_value

__all__ = [
    "as_id",
    "destinations",
    "diagnostics",
    "health",
    "job",
    "jobs",
    "notification",
    "portal",
    "restart",
]


def as_id(value: str | uuid.UUID | Job | Notification) -> str:
    """The UUID text of a job, a notification, or an id given directly."""
    if isinstance(value, Job | Notification):
        return str(value.id)
    return str(uuid.UUID(str(value)))


def _wire(function: str, value: Any) -> WireJob:
    try:
        return WireJob.from_json_value(value)
    except ProtocolError as exc:
        raise BridgeError(function, 200, f"bad job in reply: {exc}") from None


def job(function: str, value: Any, client: Any) -> Job:
    return Job(_wire(function, value), client)


def jobs(function: str, value: Any, client: Any) -> list[Job]:
    if not isinstance(value, list):
        raise BridgeError(function, 200, "expected a list of jobs")
    return [job(function, item, client) for item in value]


def notification(function: str, value: Any) -> Notification:
    try:
        return notification_from_json_value(value)
    except ProtocolError as exc:
        raise BridgeError(function, 200, f"bad notification in reply: {exc}") from None


def destinations(function: str, value: Any) -> list[Destination]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BridgeError(function, 200, "expected a list of destinations")
    return [Destination.parse(v) for v in value]


def portal(function: str, value: Any) -> PortalIdentifier:
    if not isinstance(value, str):
        raise BridgeError(function, 200, "expected the portal's name")
    return PortalIdentifier.parse(value)


def _status(function: str, value: Any) -> tuple[str, dict[str, Any]]:
    if not isinstance(value, dict) or not isinstance(value.get("status"), str):
        raise BridgeError(function, 200, 'expected {"status": …}')
    return value["status"], value


def health(value: Any) -> Health:
    status, body = _status("health", value)
    detail = body.get("health")
    return Health(status, detail if isinstance(detail, dict) else None)


def diagnostics(value: Any) -> Diagnostics:
    status, body = _status("diagnostics", value)
    detail = body.get("report")
    return Diagnostics(status, detail if isinstance(detail, dict) else None)


def restart(value: Any) -> RestartResponse:
    status, body = _status("restart", value)
    return RestartResponse(status, str(body.get("message", "")))
