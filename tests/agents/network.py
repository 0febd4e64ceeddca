"""The demo-network fixture: a whole network on loopback under ``tmp_path``, per test.

``tests/agents/conftest.py`` provides it to the tests here; elsewhere, import it into the
test module (``from tests.agents.network import network``, listed in ``__all__``) or into
that directory's ``conftest.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from broadgauge.demo import Network, start_network

__all__ = ["network"]


@pytest.fixture
async def network(tmp_path: Path) -> AsyncIterator[Network]:
    """A started demo network (bridge → portal ← provider ← platform ← instance ← leaves:
    account, filesystem and scheduler), stopped after the test."""
    started = await start_network(tmp_path)
    try:
        yield started
    finally:
        await started.stop()
