"""A typed view of the instruction inside an envelope."""

from __future__ import annotations

from typing import TypeVar

from broadgauge.jobs.agent import Envelope

_I = TypeVar("_I")


def instruction_of(envelope: Envelope, kind: type[_I]) -> _I:
    """The envelope's instruction, checked to be a ``kind`` (handlers are registered per kind)."""
    instruction = envelope.job.instruction
    if not isinstance(instruction, kind):
        raise TypeError(f"handler for {kind.__name__} was given {instruction}")
    return instruction
