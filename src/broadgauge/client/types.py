"""Values the client returns, shaped like the official module's (``Job``, ``Status``, …).

:class:`Job` wraps :class:`broadgauge.jobs.job.Job` (the exact wire form) and adds the
official conveniences: ``result`` decoded by ``result_type``, ``completed``/``errored``
to answer a bridge-board job, and ``update``/``wait`` to poll the bridge.
"""

from __future__ import annotations

import enum
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from broadgauge.client._protocol import poll_schedule
from broadgauge.grammar import Destination, Instruction
from broadgauge.jobs.job import Job as WireJob
from broadgauge.jobs.status import Status as WireStatus

__all__ = ["Diagnostics", "Health", "Job", "RestartResponse", "Status"]


class Status(enum.Enum):
    """A job's state; ``str()`` is lowercase, as the official ``Status`` prints."""

    CREATED = "Created"
    PENDING = "Pending"
    RUNNING = "Running"
    COMPLETE = "Complete"
    ERROR = "Error"
    DUPLICATE = "Duplicate"

    def __str__(self) -> str:
        return self.value.lower()


class _Poller(Protocol):
    def status(self, job: Job) -> Job: ...


class Job:
    """A job as the bridge reports it (immutable wire data; ``update`` refreshes it)."""

    def __init__(self, wire: WireJob, client: _Poller | None = None) -> None:
        self.wire = wire
        self._client = client

    # --- the official attributes -----------------------------------------------------------

    @property
    def id(self) -> uuid.UUID:
        return self.wire.id

    @property
    def version(self) -> int:
        return self.wire.version

    @property
    def created(self) -> datetime:
        return datetime.fromtimestamp(self.wire.created, UTC)

    @property
    def changed(self) -> datetime:
        return datetime.fromtimestamp(self.wire.changed, UTC)

    @property
    def expires(self) -> datetime:
        return datetime.fromtimestamp(self.wire.expires, UTC)

    @property
    def state(self) -> Status:
        return Status(self.wire.state.value)

    @property
    def destination(self) -> Destination:
        return self.wire.destination

    @property
    def instruction(self) -> Instruction:
        return self.wire.instruction

    @property
    def forwarded_for(self) -> Destination | None:
        return self.wire.forwarded_for

    @property
    def result_type(self) -> str | None:
        return self.wire.result_type

    @property
    def result(self) -> Any:
        """The decoded value of a completed job (a grammar value), else ``None``."""
        if self.wire.state is not WireStatus.COMPLETE:
            return None
        return self.wire.result_value()

    @property
    def error_message(self) -> str | None:
        return self.wire.error_message

    @property
    def progress_message(self) -> str:
        return self.wire.progress_message

    @property
    def is_finished(self) -> bool:
        return self.wire.is_finished

    @property
    def is_error(self) -> bool:
        return self.wire.is_error

    @property
    def is_duplicate(self) -> bool:
        return self.wire.is_duplicate

    @property
    def is_expired(self) -> bool:
        return self.wire.is_expired(time.time())

    # --- answering a bridge-board job ------------------------------------------------------

    def completed(self, value: object, result_type: str | None = None) -> Job:
        """A finished copy holding ``value`` (+1000), ready for ``send_result``.

        Unlike the official wheel this can also produce ``Vec<ProjectDetails>`` and
        ``Destinations`` (pass ``result_type`` when the type is ambiguous).
        """
        return Job(self.wire.complete_with(value, now=time.time(), result_type=result_type))

    def errored(self, message: str) -> Job:
        """A copy finished with the error ``message`` (+1000)."""
        return Job(self.wire.errored(message, now=time.time()))

    # --- polling (blocking; the async client has its own) ----------------------------------

    def update(self) -> Job:
        """Refresh from the bridge (nothing to do once finished); returns ``self``."""
        if not self.wire.is_finished:
            if self._client is None:
                raise RuntimeError("this job was not returned by a client; cannot update it")
            self.wire = self._client.status(self).wire
        return self

    def wait(self, max_ms: int = 1000) -> bool:
        """Poll until finished or ``max_ms`` pass (negative: forever); whether it finished."""
        interval, deadline = poll_schedule(max_ms, time.monotonic())
        self.update()
        while not self.is_finished and (deadline is None or time.monotonic() < deadline):
            time.sleep(interval)
            self.update()
        return self.is_finished

    # --- JSON ------------------------------------------------------------------------------

    def to_json(self) -> str:
        return self.wire.to_json()

    @classmethod
    def from_json(cls, text: str) -> Job:
        return cls(WireJob.from_json(text))

    def __str__(self) -> str:
        return str(self.wire)

    def __repr__(self) -> str:
        return f"Job({self.wire.to_json()})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Job) and other.wire == self.wire

    def __hash__(self) -> int:
        return hash(self.wire.id)


@dataclass(frozen=True)
class _Report:
    """A status, ``"ok"`` or ``"error"``, and the JSON object that details it."""

    status: str
    detail: dict[str, Any] | None

    def is_healthy(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True)
class Health(_Report):
    """``health()``: ``status`` is ``"ok"`` or ``"error"``; ``detail`` the nested HealthInfo."""

    def keys(self) -> list[str]:
        return sorted(self.detail) if self.detail else []


@dataclass(frozen=True)
class Diagnostics(_Report):
    """``diagnostics()``: ``detail`` is the DiagnosticsReport JSON object."""

    @property
    def logs(self) -> list[Any]:
        return list((self.detail or {}).get("recent_logs", []))


@dataclass(frozen=True)
class RestartResponse:
    """``restart()``'s answer."""

    status: str
    message: str

    def is_ok(self) -> bool:
        return self.status == "ok"
