"""Waiting, as an agent stops, for back-end work that cannot be cancelled.

A directory change in a worker thread, or a batched ``sacctmgr`` call that other jobs share,
runs on when the job that started it is cancelled.  The agent awaits such work before it
closes its audit log (:meth:`broadgauge.runtime.agent.Agent.before_close`), so each change is
recorded; work still running after :data:`SETTLE_WAIT` seconds is given up on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Set
from typing import Any, Final

__all__ = ["SETTLE_WAIT", "settle"]

#: How long an agent that is stopping waits for the work already running.
SETTLE_WAIT: Final = 30.0


async def settle(working: Set[asyncio.Future[Any]], timeout: float = SETTLE_WAIT) -> int:
    """Wait until ``working`` (a live set: work started meanwhile counts too) is empty, or
    ``timeout`` seconds have passed; how many were still running then."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while working:
        left = deadline - loop.time()
        if left <= 0:
            return len(working)
        await asyncio.wait(set(working), timeout=left)
    return 0
