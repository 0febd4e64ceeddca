"""The demo-network fixtures: a whole network on loopback under ``tmp_path``, per test.

``demo_network`` is the one network every suite starts from; ``network`` is the same network
under the name the agent tests use.  Suites that need more (the bridge's HTTP API serving,
the planner serving, a demo project) define their own ``network`` on top of
``demo_network``.  ``tests/agents/conftest.py`` provides both here; elsewhere, import them
into the test module (listed in ``__all__``) or into that directory's ``conftest.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from broadgauge.demo import Network, start_network

__all__ = ["demo_network", "network"]


@pytest.fixture
async def demo_network(tmp_path: Path) -> AsyncIterator[Network]:
    """A started demo network (bridge → portal ← provider ← platform ← instance ← leaves:
    account, filesystem and scheduler), stopped after the test."""
    started = await start_network(tmp_path)
    try:
        yield started
    finally:
        await started.stop()


@pytest.fixture
def network(demo_network: Network) -> Network:
    """The demo network, as is."""
    return demo_network
