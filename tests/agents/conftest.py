"""A whole demo network per test: nine agents on loopback under ``tmp_path``."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from broadgauge.demo import Network

from .helpers import Site
from .network import demo_network, network

__all__ = ["demo_network", "network", "site"]


@pytest.fixture
async def site(network: Network) -> AsyncIterator[Site]:
    """``network`` with read access to its backends; extra agents it made are stopped after."""
    view = Site(network)
    try:
        yield view
    finally:
        await view.close()
