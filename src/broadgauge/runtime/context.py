"""What the parts of an agent may ask of it: narrow, typed interfaces that :class:`Agent` meets.

The control plane, the rules sweep and the receiving half (:class:`~.handling.Inbound`) each
take one of these protocols instead of the whole :class:`~broadgauge.runtime.agent.Agent`.
That keeps the import graph acyclic (the agent imports its parts; its parts import only
this module), says in one place exactly what each part may touch, and lets a part be tested
with a small fake instead of a running agent.

* :class:`AgentContext` - identity, peers, control messages, the boards as a whole, audit:
  what the control plane and the rules sweep use.
* :class:`JobsContext` - that, plus the boards in motion (record, update, put, remove), the
  durable store, the handlers and the agent's own tasks: what :class:`~.handling.Inbound`
  uses to route and run jobs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any, Protocol

from broadgauge.jobs.agent_type import AgentType
from broadgauge.jobs.board import AddResult, Board, RemoveResult
from broadgauge.jobs.commands import (
    DiagnosticsRequest,
    DiagnosticsResponse,
    HealthCheck,
    HealthResponse,
    JobCommand,
    PlannerRulesRequest,
    PlannerRulesResponse,
    Restart,
    WireCommand,
)
from broadgauge.jobs.job import Job
from broadgauge.runtime.envelope import Handler, NotifyHandler, PeerInfo
from broadgauge.runtime.store import BoardStore
from broadgauge.runtime.trace import Action, TraceEvent
from broadgauge.wire import PeerId, ServiceConfig

__all__ = [
    "AgentContext",
    "ControlReceiver",
    "JobMetrics",
    "JobsContext",
    "Links",
    "RulesReceiver",
]


class Links(Protocol):
    """The agent's wire service, as far as its parts see it."""

    @property
    def config(self) -> ServiceConfig:
        """The service's configuration (its peers and their keys)."""

    def connected_peers(self) -> list[PeerId]:
        """The neighbours connected now."""

    async def disconnect(self, name: str, zone: str) -> Any:
        """Close the link to one neighbour (it reconnects by itself)."""


class AgentContext(Protocol):
    """What the control plane and the rules sweep may ask of their agent."""

    @property
    def name(self) -> str:
        """This agent's name."""

    @property
    def agent_type(self) -> AgentType:
        """This agent's role."""

    @property
    def service(self) -> Links:
        """Its links to its neighbours."""

    @property
    def started_at(self) -> datetime:
        """When the agent started (health reports give its uptime)."""

    @property
    def recent_events(self) -> list[TraceEvent]:
        """The latest traced actions, oldest first (diagnostics reports show them)."""

    def clock(self) -> float:
        """Now, in seconds since the epoch (replaced by tests)."""

    def peer_info(self, peer: PeerId) -> PeerInfo:
        """How ``peer`` is linked to this agent and what it registered as."""

    def peer_named(self, name: str, zone: str | None) -> PeerId:
        """The neighbour called ``name`` (in ``zone``, if given)."""

    async def send_control(self, peer: PeerId, command: WireCommand) -> None:
        """Send a command that goes on no board (a missing link drops it)."""

    def boards(self) -> list[Board]:
        """Every board this agent holds."""

    def boards_by_peer(self) -> list[tuple[PeerId, Board]]:
        """Every board, with the neighbour it is shared with."""

    def clear_boards(self) -> None:
        """Forget every job on every board, and in the store (a soft restart)."""

    def busy_workers(self) -> int:
        """How many handlers are running now."""

    def audit_operation(self, operation: str, outcome: str = "ok") -> None:
        """Write one entry that is not about a job to the audit log."""


class ControlReceiver(Protocol):
    """The control plane's side of the commands the receiving half passes to it."""

    @property
    def restarting(self) -> bool:
        """Whether a soft restart is under way (new jobs are refused meanwhile)."""

    async def received_health_check(self, peer: PeerId, check: HealthCheck) -> None:
        """Answer a neighbour's health check."""

    def received_health_response(self, peer: PeerId, response: HealthResponse) -> None:
        """Deliver a neighbour's health answer to whoever asked."""

    async def received_diagnostics_request(self, peer: PeerId, request: DiagnosticsRequest) -> None:
        """Answer or pass on a diagnostics request."""

    async def received_diagnostics_response(
        self, peer: PeerId, response: DiagnosticsResponse
    ) -> None:
        """Deliver a diagnostics report to whoever asked."""

    async def received_restart(self, peer: PeerId, restart: Restart) -> None:
        """Restart, or pass the order on."""


class RulesReceiver(Protocol):
    """The rules sweep's side of the planner-rules commands."""

    async def received_request(self, peer: PeerId, request: PlannerRulesRequest) -> None:
        """Answer a neighbour above with the rules published below."""

    def received_response(self, peer: PeerId, response: PlannerRulesResponse) -> None:
        """Deliver a neighbour's published rules to the sweep that asked."""


class JobMetrics(Protocol):
    """The metrics hooks the runtime calls (:class:`~.metrics.AgentMetrics` meets it)."""

    def recorded(self, result: AddResult) -> None:
        """A job was added to or changed on a board."""

    def expired(self, job: Job) -> None:
        """The cleaner swept ``job`` from a board."""

    def executed(self, keyword: str, finished: Job, seconds: float) -> None:
        """A handler of this agent ran a job."""

    def operation(self, operation: str, outcome: str) -> None:
        """A back end reported an operation for the audit trail."""


class JobsContext(AgentContext, Protocol):
    """What the receiving half may ask of its agent to route and run jobs."""

    peer_types: dict[PeerId, AgentType]
    #: None while metrics are off (then the hot path pays one attribute test).
    metrics: JobMetrics | None

    @property
    def handlers(self) -> Mapping[str, Handler]:
        """The handler for each instruction keyword this agent runs."""

    @property
    def notify_handler(self) -> NotifyHandler | None:
        """Where notifications addressed to this agent go."""

    @property
    def registrations(self) -> asyncio.Condition:
        """Notified whenever a neighbour registers its type."""

    @property
    def store(self) -> BoardStore | None:
        """The durable store (None for an agent that keeps its boards in memory)."""

    @property
    def control(self) -> ControlReceiver:
        """Where health, diagnostics and restart commands go."""

    @property
    def planner_rules(self) -> RulesReceiver:
        """Where planner-rules commands go."""

    def spawn(self, coro: Awaitable[object]) -> None:
        """Run ``coro`` as one of the agent's own tasks."""

    def track(self, task: asyncio.Task[Any]) -> None:
        """Keep ``task`` among the agent's own tasks (cancelled when it stops)."""

    def wake(self, jobs: tuple[Job, ...] | list[Job]) -> None:
        """Wake whoever waits for these jobs to finish."""

    def board(self, peer: PeerId) -> Board:
        """The board shared with ``peer``."""

    def record(self, peer: PeerId, job: Job) -> AddResult:
        """Add ``job`` to ``peer``'s board, the store first."""

    def remove(self, peer: PeerId, job: Job) -> RemoveResult:
        """Remove ``job`` from ``peer``'s board, the store first."""

    def commit_ticket(self) -> int | None:
        """The batch of store changes that changes made now join (group commit)."""

    async def durable(self, ticket: int | None = None) -> None:
        """Return once the store changes made so far (or ``ticket``'s) are committed."""

    async def put(self, peer: PeerId, job: Job) -> None:
        """Record ``job`` and send it to ``peer`` to run or pass on."""

    async def update(self, peer: PeerId, job: Job) -> None:
        """Record ``job``'s new version and send it back to ``peer``."""

    async def send_job(
        self, peer: PeerId, command: JobCommand, then: Callable[[], None] | None = None
    ) -> None:
        """Send a job command (queued for the next connection if the link is down)."""

    def trace(
        self, action: Action, job: Job, peer: PeerId, detail: str = "", *, kept: bool = False
    ) -> None:
        """Trace one action on a job (to the audit log and the recent events); ``kept``:
        raise the audit log's error rather than go ahead unrecorded."""

    def job_context(self, job: Job, peer: PeerId) -> TraceEvent | None:
        """What the audit log should say about who asked for ``job``."""
