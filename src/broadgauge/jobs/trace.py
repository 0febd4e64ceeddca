"""Trace events: one record for every action an agent takes on a job.

The runtime emits a :class:`TraceEvent` for each thing it does: a job received, forwarded,
run, refused, finished or expired.  Sinks (the log, the hash-chained audit log, metrics)
subscribe with :meth:`Agent.on_trace <broadgauge.jobs.agent.Agent.on_trace>`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


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
