"""Values the agent runtime hands to handlers, and the errors it raises."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from broadgauge.jobs.agent_type import AgentType
from broadgauge.jobs.directions import Link
from broadgauge.jobs.job import Job
from broadgauge.jobs.notification import Notification
from broadgauge.runtime.trace import TraceEvent
from broadgauge.wire import PeerId


class JobFailed(Exception):
    """A job finished in the ``Error`` state; :attr:`job` holds it (message in ``result``)."""

    def __init__(self, job: Job) -> None:
        super().__init__(job.error_message or "job failed")
        self.job = job


class JobExpired(JobFailed, TimeoutError):
    """A job expired (or the caller's timeout passed) before it finished."""


class JobRefused(Exception):
    """Raised by a handler, or the runtime, to refuse a job with a reason."""


@dataclass(frozen=True)
class PeerInfo:
    """A neighbour as the runtime sees it: identity, how it is linked, what it registered as."""

    peer: PeerId
    link: Link
    agent_type: AgentType | None


@dataclass(frozen=True)
class Envelope:
    """A job handed to a handler: the job, who handed it over, and on which link."""

    recipient: str
    sender: PeerInfo
    job: Job

    @property
    def zone(self) -> str:
        """The zone of the link the job arrived on; sub-jobs reuse it."""
        return self.sender.peer.zone


TraceSink = Callable[[TraceEvent], None]


@dataclass(frozen=True)
class Typed:
    """A handler's result with its OpenPortal ``result_type`` named explicitly.

    Needed where the type cannot be told from the value, such as an empty list
    (``Vec<UserMapping>`` or ``Vec<ProjectMapping>``?).
    """

    value: object
    result_type: str


Handler = Callable[[Envelope], Awaitable[object]]
NotifyHandler = Callable[[PeerInfo, Notification], Awaitable[None]]
