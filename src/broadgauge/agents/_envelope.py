"""A typed view of the instruction inside an envelope, and handlers that call a back end."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from broadgauge.grammar import Instruction
from broadgauge.runtime.agent import Agent, Envelope, Typed

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
