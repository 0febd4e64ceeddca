"""Which event loop runs an agent: asyncio's own, or uvloop.

uvloop (libuv under asyncio's API) is an optional extra, ``pip install 'broadgauge[fast]'``:
the default install never needs it, and every agent behaves the same on either loop.
``broadgauge <role> run --event-loop uvloop`` chooses it; ``bench/jobs.py --event-loop``
measures what it changes.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Coroutine
from typing import Any, Final, TypeVar

__all__ = ["EVENT_LOOPS", "EventLoopUnavailable", "run"]

#: The loops :func:`run` knows, the default first.
EVENT_LOOPS: Final = ("asyncio", "uvloop")

_T = TypeVar("_T")


class EventLoopUnavailable(RuntimeError):
    """The chosen event loop is not installed (or not known)."""


def run(main: Coroutine[Any, Any, _T], event_loop: str = "asyncio") -> _T:
    """Run ``main`` to completion on a new loop of the kind ``event_loop`` names."""
    if event_loop == "asyncio":
        return asyncio.run(main)
    try:
        if event_loop != "uvloop":
            raise EventLoopUnavailable(
                f"unknown event loop {event_loop!r}: choose one of {', '.join(EVENT_LOOPS)}"
            )
        try:
            uvloop = importlib.import_module("uvloop")  # optional: only when chosen
        except ImportError:
            raise EventLoopUnavailable(
                "the uvloop event loop is not installed: pip install 'broadgauge[fast]'"
            ) from None
    except EventLoopUnavailable:
        main.close()  # never awaited: say so quietly instead of a RuntimeWarning
        raise
    result: _T = uvloop.run(main)
    return result
