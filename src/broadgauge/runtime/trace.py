"""Trace events: one record for every action an agent takes on a job.

The runtime emits a :class:`TraceEvent` for each thing it does: a job received, forwarded,
run, refused, finished or expired.  Sinks (the log, metrics) subscribe with
:meth:`Agent.on_trace <broadgauge.runtime.agent.Agent.on_trace>`; the hash-chained audit log
is the tracer's keeper, which the actions that must not happen unrecorded have to reach.
"""

from __future__ import annotations

import enum
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from broadgauge.jobs.job import Job

log = logging.getLogger("broadgauge.jobs")


class Action(enum.Enum):
    """What the agent did."""

    RECEIVED = "received"
    FORWARDED = "forwarded"
    STARTED = "started"
    FINISHED = "finished"
    REFUSED = "refused"
    RETURNED = "returned"
    QUEUED = "queued"
    EXPIRED = "expired"
    RESUMED = "resumed"
    DUPLICATE = "duplicate"


@dataclass(frozen=True)
class TraceEvent:
    """One action on one job.

    ``path`` is the job's full destination (the chain of agents it travels), ``peer`` the
    neighbour involved (who asked, or whom we passed it to), ``detail`` the outcome: a result
    type, an error message, or a reason for refusing.
    """

    time: float
    agent: str
    action: Action
    job_id: str
    instruction: str
    path: str
    peer: str
    state: str
    detail: str = ""

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready dict."""
        return {
            "time": self.time,
            "agent": self.agent,
            "action": self.action.value,
            "job": self.job_id,
            "instruction": self.instruction,
            "path": self.path,
            "peer": self.peer,
            "state": self.state,
            "detail": self.detail,
        }


class Tracer:
    """One agent's trace: its last few hundred actions, and the sinks given each one.

    Rendering an event costs more than routing a job, so actions are kept raw and rendered
    only for a reader (a sink, or a diagnostics report).  ``peer`` is anything whose
    ``str`` names the neighbour.
    """

    def __init__(self, agent: str, capacity: int) -> None:
        self.agent = agent
        self.sinks: list[Callable[[TraceEvent], None]] = []
        #: The sink that keeps the agent's record (its audit log), if any: it is given every
        #: action first, and an action traced with ``kept=True`` must reach it.
        self.keeper: Callable[[TraceEvent], None] | None = None
        self._recent: deque[tuple[float, Action, Job, object, str]] = deque(maxlen=capacity)

    def record(
        self,
        time: float,
        action: Action,
        job: Job,
        peer: object,
        detail: str,
        *,
        kept: bool = False,
    ) -> None:
        """Keep one action, and give it to the keeper and every sink.

        A failing sink is logged, not raised, and so is a failing keeper, unless ``kept``:
        then the keeper's error is raised before anything else sees the action, so that the
        caller does not go ahead with an action its record does not hold.
        """
        entry = (time, action, job, peer, detail)
        if self.keeper is None and not self.sinks:
            self._recent.append(entry)
            return
        event = self.event(*entry)
        if self.keeper is not None:
            try:
                self.keeper(event)
            except Exception as exc:
                if kept:
                    raise
                # A full disk needs no traceback; a bug in the keeper does.
                log.error(
                    "%s: the audit log could not record %s %s: %s",
                    self.agent, action.value, job.id, exc,
                    exc_info=not isinstance(exc, OSError),
                )  # fmt: skip
        self._recent.append(entry)
        for sink in self.sinks:
            try:
                sink(event)
            except Exception:
                log.exception("%s: trace sink failed", self.agent)

    def event(self, time: float, action: Action, job: Job, peer: object, detail: str) -> TraceEvent:
        """Render one action."""
        return TraceEvent(
            time=time,
            agent=self.agent,
            action=action,
            job_id=job.id_text,
            instruction=job.command.instruction_text,
            path=job.command.destination_text,
            peer=str(peer),
            state=job.state.value,
            detail=detail,
        )

    def recent(self) -> list[TraceEvent]:
        """The kept actions, oldest first."""
        return [self.event(*entry) for entry in self._recent]
