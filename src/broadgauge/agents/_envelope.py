"""A typed view of the instruction inside an envelope, handlers that call a back end, and
telling the portal what a job changed."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from broadgauge.grammar import Destination, Instruction
from broadgauge.jobs.notification import EventKind, Notification, NotificationEvent
from broadgauge.runtime.agent import Agent, Envelope, JobRefused, Typed

log = logging.getLogger("broadgauge.agents")

_I = TypeVar("_I")
_K = TypeVar("_K", bound=Instruction)


def instruction_of(envelope: Envelope, kind: type[_I]) -> _I:
    """The envelope's instruction, checked to be a ``kind`` (handlers are registered per kind)."""
    instruction = envelope.job.instruction
    if not isinstance(instruction, kind):
        raise TypeError(f"handler for {kind.__name__} was given {instruction}")
    return instruction


def answer(agent: Agent, kind: type[_K], call: Callable[[_K], Awaitable[object]]) -> None:
    """Answer every ``kind`` instruction (by its keyword) with what ``call`` of it returns."""

    async def handler(envelope: Envelope) -> object:
        return await call(instruction_of(envelope, kind))

    agent.add_handler(kind.keyword, handler)


async def typed(items: Awaitable[Sequence[object]], result_type: str) -> Typed:
    """A list result with its OpenPortal type named (an empty list does not tell it)."""
    return Typed(await items, result_type)


async def notify_portal(agent: Agent, envelope: Envelope, kind: EventKind, argument: str) -> None:
    """Tell the portal what changed, back along the job's path (best effort)."""
    path = envelope.job.destination
    if len(path.agents) < 2:
        return
    try:
        reverse = Destination.parse(".".join(reversed(path.agents)))
        event = NotificationEvent.parse(f"{kind.keyword} {argument}")
        await agent.notify(Notification.create(reverse, event))
    except (JobRefused, ValueError) as exc:
        log.info("%s: notification %s not sent: %s", agent.name, kind.keyword, exc)
