"""A whole demo network per test: nine agents on loopback under ``tmp_path``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from broadgauge.demo import Network, start_network

from .helpers import Site


@pytest.fixture
async def network(tmp_path: Path) -> AsyncIterator[Network]:
    """A started demo network (bridge → … → account/filesystem/scheduler), stopped after."""
    started = await start_network(tmp_path)
    try:
        yield started
    finally:
        await started.stop()


@pytest.fixture
async def site(network: Network) -> AsyncIterator[Site]:
    """``network`` with read access to its backends; extra agents it made are stopped after."""
    view = Site(network)
    try:
        yield view
    finally:
        await view.close()
