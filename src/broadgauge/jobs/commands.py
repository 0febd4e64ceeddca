"""Templemeads commands as they travel in paddington payload strings (notes §3.6).

Each payload is one externally tagged JSON object - ``{"Put":{"job":{...}}}`` -
not the internally tagged ``{"type":"Put",...}`` the docs describe (notes §0
errata 4-7).  Put/Update/Delete carry a bare Job, ``Register.agent`` is the agent
*type*, ``Sync`` wraps its jobs as ``{"state":{"jobs":[...]}}``.

:func:`decode_command` is the single entry point for untrusted payloads: it
never raises anything but :class:`ProtocolError`, whose message names the
variant and field at fault.  Rust turns an unparseable payload into a local
``Error`` command and logs it; callers here catch ``ProtocolError`` and do the
same (or build an :class:`ErrorCommand` from its text).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Final

from broadgauge import OPENPORTAL_VERSION

from . import _json
from ._canonical import read_job_command
from .agent_type import AgentType
from .errors import JobsError, ProtocolError
from .health import ENGINE, DiagnosticsReport, HealthInfo
from .job import Job
from .notification import Notification, notification_from_json_value
from .published import PublishedRules

__all__ = [
    "HARD_RESTART",
    "SOFT_RESTART",
    "Delete",
    "DiagnosticsRequest",
    "DiagnosticsResponse",
    "ErrorCommand",
    "HealthCheck",
    "HealthResponse",
    "JobCommand",
    "Notify",
    "PlannerRulesRequest",
    "PlannerRulesResponse",
    "Put",
    "Register",
    "Restart",
    "Sync",
    "Update",
    "WireCommand",
    "decode_command",
    "encode_command",
]

#: ``Restart.restart_type`` values the agents act on (the field is free text).
SOFT_RESTART: Final = "soft"
HARD_RESTART: Final = "hard"


@dataclass(frozen=True, slots=True)
class Put:
    """Ask the peer to take the job one hop further (or run it at its destination)."""

    TAG: ClassVar[str] = "Put"
    job: Job

    def body(self) -> dict[str, Any]:
        """The JSON value under the tag."""
        return {"job": self.job.to_json_value()}

    @classmethod
    def from_body(cls, r: _json.Reader) -> Put:
        """Decode the value under the tag."""
        return cls(Job.from_json_value(r.raw("job"), r.sub("job")))


@dataclass(frozen=True, slots=True)
class Update:
    """Send a newer version of a job that already crossed this link."""

    TAG: ClassVar[str] = "Update"
    job: Job

    def body(self) -> dict[str, Any]:
        """The JSON value under the tag."""
        return {"job": self.job.to_json_value()}

    @classmethod
    def from_body(cls, r: _json.Reader) -> Update:
        """Decode the value under the tag."""
        return cls(Job.from_json_value(r.raw("job"), r.sub("job")))


@dataclass(frozen=True, slots=True)
class Delete:
    """Remove a job from the boards along its path (no 0.32.2 agent originates it)."""

    TAG: ClassVar[str] = "Delete"
    job: Job

    def body(self) -> dict[str, Any]:
        """The JSON value under the tag."""
        return {"job": self.job.to_json_value()}

    @classmethod
    def from_body(cls, r: _json.Reader) -> Delete:
        """Decode the value under the tag."""
        return cls(Job.from_json_value(r.raw("job"), r.sub("job")))


@dataclass(frozen=True, slots=True)
class Register:
    """First command on every (re)connection: announce this agent's type."""

    TAG: ClassVar[str] = "Register"
    agent: AgentType
    engine: str = ENGINE
    version: str = OPENPORTAL_VERSION

    def body(self) -> dict[str, Any]:
        """The JSON value under the tag."""
        return {"agent": self.agent.value, "engine": self.engine, "version": self.version}

    @classmethod
    def from_body(cls, r: _json.Reader) -> Register:
        """Decode the value under the tag (any engine/version string is accepted)."""
        try:
            agent = AgentType.from_wire(r.raw("agent"))
        except ValueError as exc:
            r.fail(str(exc), "agent")
        return cls(agent, r.text("engine"), r.text("version"))


@dataclass(frozen=True, slots=True)
class Sync:
    """Second command on every (re)connection: all jobs of the receiver's board."""

    TAG: ClassVar[str] = "Sync"
    jobs: tuple[Job, ...] = ()

    def body(self) -> dict[str, Any]:
        """The JSON value under the tag."""
        return {"state": {"jobs": [job.to_json_value() for job in self.jobs]}}

    @classmethod
    def from_body(cls, r: _json.Reader) -> Sync:
        """Decode the value under the tag (``state.jobs`` is required, as in Rust)."""
        state = _json.Reader(r.raw("state"), r.sub("state"), {"jobs"})
        items = state.array("jobs")
        return cls(
            tuple(
                Job.from_json_value(item, f"{state.sub('jobs')}[{i}]")
                for i, item in enumerate(items)
            )
        )


@dataclass(frozen=True, slots=True)
class HealthCheck:
    """Ask for health; ``visited`` lists agents already in the cascade."""

    TAG: ClassVar[str] = "HealthCheck"
    visited: tuple[str, ...] = ()

    def body(self) -> dict[str, Any]:
        """The JSON value under the tag."""
        return {"visited": list(self.visited)}

    @classmethod
    def from_body(cls, r: _json.Reader) -> HealthCheck:
        """Decode the value under the tag (``visited`` defaults to ``[]``)."""
        return cls(tuple(r.text_list("visited", default_empty=True)))


@dataclass(frozen=True, slots=True)
class HealthResponse:
    """Answer to :class:`HealthCheck`."""

    TAG: ClassVar[str] = "HealthResponse"
    health: HealthInfo

    def body(self) -> dict[str, Any]:
        """The JSON value under the tag."""
        return {"health": self.health.to_json_value()}

    @classmethod
    def from_body(cls, r: _json.Reader) -> HealthResponse:
        """Decode the value under the tag."""
        return cls(HealthInfo.from_json_value(r.raw("health"), r.sub("health")))


@dataclass(frozen=True, slots=True)
class Restart:
    """Restart the agent at ``destination`` (a path relative to the receiver)."""

    TAG: ClassVar[str] = "Restart"
    restart_type: str
    destination: str

    def body(self) -> dict[str, Any]:
        """The JSON value under the tag."""
        return {"restart_type": self.restart_type, "destination": self.destination}

    @classmethod
    def from_body(cls, r: _json.Reader) -> Restart:
        """Decode the value under the tag."""
        return cls(r.text("restart_type"), r.text("destination"))


@dataclass(frozen=True, slots=True)
class DiagnosticsRequest:
    """Ask the agent at ``destination`` (relative path) for a diagnostics report."""

    TAG: ClassVar[str] = "DiagnosticsRequest"
    destination: str

    def body(self) -> dict[str, Any]:
        """The JSON value under the tag."""
        return {"destination": self.destination}

    @classmethod
    def from_body(cls, r: _json.Reader) -> DiagnosticsRequest:
        """Decode the value under the tag."""
        return cls(r.text("destination"))


@dataclass(frozen=True, slots=True)
class DiagnosticsResponse:
    """Answer to :class:`DiagnosticsRequest`."""

    TAG: ClassVar[str] = "DiagnosticsResponse"
    report: DiagnosticsReport

    def body(self) -> dict[str, Any]:
        """The JSON value under the tag."""
        return {"report": self.report.to_json_value()}

    @classmethod
    def from_body(cls, r: _json.Reader) -> DiagnosticsResponse:
        """Decode the value under the tag."""
        return cls(DiagnosticsReport.from_json_value(r.raw("report"), r.sub("report")))


@dataclass(frozen=True, slots=True)
class Notify:
    """Carry a notification one hop along its destination."""

    TAG: ClassVar[str] = "Notify"
    notification: Notification

    def body(self) -> dict[str, Any]:
        """The JSON value under the tag."""
        return {"notification": self.notification.to_json_value()}

    @classmethod
    def from_body(cls, r: _json.Reader) -> Notify:
        """Decode the value under the tag."""
        return cls(notification_from_json_value(r.raw("notification"), r.sub("notification")))


@dataclass(frozen=True, slots=True)
class PlannerRulesRequest:
    """Broadgauge extension: ask the agents below for their published planner rules.

    Not a templemeads variant: a Rust peer logs it as unreadable and ignores it, and the
    sweep lists that peer as silent (see :mod:`broadgauge.runtime.rules_sweep`).
    ``budget_ms`` is how long the asker will wait, so each level can give its own
    children less; ``request_id`` comes back in the response, so a late answer is never
    taken for the answer to a newer request.
    """

    TAG: ClassVar[str] = "PlannerRulesRequest"
    visited: tuple[str, ...] = ()
    budget_ms: int = 2000
    request_id: str = ""

    def body(self) -> dict[str, Any]:
        """The JSON value under the tag."""
        return {
            "visited": list(self.visited),
            "budget_ms": self.budget_ms,
            "request_id": self.request_id,
        }

    @classmethod
    def from_body(cls, r: _json.Reader) -> PlannerRulesRequest:
        """Decode the value under the tag."""
        budget = r.integer("budget_ms", 0, 600_000, "u32") if r.has("budget_ms") else 2000
        visited = tuple(r.text_list("visited", default_empty=True))
        return cls(visited, budget, r.text("request_id", default=""))


@dataclass(frozen=True, slots=True)
class PlannerRulesResponse:
    """Broadgauge extension: the rules published at and below the answering agent.

    Destinations are relative to the answerer and start with its name; ``silent`` lists
    the paths below it that did not answer in time.
    """

    TAG: ClassVar[str] = "PlannerRulesResponse"
    published: tuple[PublishedRules, ...] = ()
    silent: tuple[str, ...] = ()
    request_id: str = ""

    def body(self) -> dict[str, Any]:
        """The JSON value under the tag."""
        return {
            "published": [p.to_json_value() for p in self.published],
            "silent": list(self.silent),
            "request_id": self.request_id,
        }

    @classmethod
    def from_body(cls, r: _json.Reader) -> PlannerRulesResponse:
        """Decode the value under the tag."""
        items = r.array("published", default_empty=True)
        published = tuple(
            PublishedRules.from_json_value(item, f"{r.sub('published')}[{i}]")
            for i, item in enumerate(items)
        )
        silent = tuple(r.text_list("silent", default_empty=True))
        return cls(published, silent, r.text("request_id", default=""))


@dataclass(frozen=True, slots=True)
class ErrorCommand:
    """The ``Error`` variant: Rust builds it locally for unparseable input.

    Receiving one is harmless (it is logged and ignored).
    """

    TAG: ClassVar[str] = "Error"
    error: str

    def body(self) -> dict[str, Any]:
        """The JSON value under the tag."""
        return {"error": self.error}

    @classmethod
    def from_body(cls, r: _json.Reader) -> ErrorCommand:
        """Decode the value under the tag."""
        return cls(r.text("error"))


#: Every command that can cross the wire.
WireCommand = (
    Put
    | Update
    | Delete
    | Register
    | Sync
    | HealthCheck
    | HealthResponse
    | Restart
    | DiagnosticsRequest
    | DiagnosticsResponse
    | Notify
    | PlannerRulesRequest
    | PlannerRulesResponse
    | ErrorCommand
)

#: The commands that carry a job (and may be queued for an offline peer).
JobCommand = Put | Update | Delete

_VARIANTS: Final[dict[str, Any]] = {
    cls.TAG: cls
    for cls in (
        ErrorCommand,
        Put,
        Update,
        Delete,
        Register,
        Sync,
        HealthCheck,
        HealthResponse,
        Restart,
        DiagnosticsRequest,
        DiagnosticsResponse,
        Notify,
        PlannerRulesRequest,
        PlannerRulesResponse,
    )
}

# Field names per variant, so a duplicated known field is rejected (serde).
_BODY_FIELDS: Final[dict[str, frozenset[str]]] = {
    "Error": frozenset({"error"}),
    "Put": frozenset({"job"}),
    "Update": frozenset({"job"}),
    "Delete": frozenset({"job"}),
    "Register": frozenset({"agent", "engine", "version"}),
    "Sync": frozenset({"state"}),
    "HealthCheck": frozenset({"visited"}),
    "HealthResponse": frozenset({"health"}),
    "Restart": frozenset({"restart_type", "destination"}),
    "DiagnosticsRequest": frozenset({"destination"}),
    "DiagnosticsResponse": frozenset({"report"}),
    "Notify": frozenset({"notification"}),
    "PlannerRulesRequest": frozenset({"visited", "budget_ms", "request_id"}),
    "PlannerRulesResponse": frozenset({"published", "silent", "request_id"}),
}


def encode_command(command: WireCommand) -> str:
    """The payload string for ``command`` (compact, externally tagged JSON)."""
    if isinstance(command, Put | Update | Delete):
        # The job's own JSON, written once however often it is stored and sent: the same
        # bytes as encoding the whole command (compact, the same key order).
        return f'{{"{command.TAG}":{{"job":{command.job.to_json()}}}}}'
    return _json.dumps({command.TAG: command.body()})


def decode_command(text: str | bytes) -> WireCommand:
    """Decode one payload string; raises only :class:`ProtocolError`.

    The error message starts with the variant and field path, e.g.
    ``Put.job.state: unknown variant 'pending', ...``.
    """
    try:
        return _decode(text)
    except ProtocolError:
        raise
    except (JobsError, ValueError, TypeError, ArithmeticError, RecursionError) as exc:
        # Defensive: any other failure deep inside a value constructor is still
        # bad input from the peer, never a crash of the receiving agent.
        raise ProtocolError(f"invalid command: {exc}") from None


def _decode(text: str | bytes) -> WireCommand:
    canonical = read_job_command(text)
    if canonical is not None:
        tag, job = canonical
        command: WireCommand = _VARIANTS[tag](job)
        return command
    return decode_strictly(text)


def decode_strictly(text: str | bytes) -> WireCommand:
    """Decode with the strict reader alone, which judges every text the quick one declines.

    Raises :class:`ProtocolError` and the errors :func:`decode_command` turns into one.
    """
    value = _json.loads(text, "command")
    if not isinstance(value, dict):
        raise ProtocolError(
            f"command: expected an object with exactly one variant, got {_json.type_name(value)}"
        )
    if len(value) != 1 or getattr(value, "duplicate_keys", None):
        raise ProtocolError(f"command: expected exactly one variant key, got {sorted(value)[:5]}")
    ((tag, body),) = value.items()
    cls = _VARIANTS.get(tag)
    if cls is None:
        expected = ", ".join(f"`{name}`" for name in _VARIANTS)
        raise ProtocolError(f"command: unknown variant `{tag}`, expected one of {expected}")
    reader = _json.Reader(body, tag, _BODY_FIELDS[tag])
    decoded: WireCommand = cls.from_body(reader)
    return decoded
