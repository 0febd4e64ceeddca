"""Shared fixtures for the grammar tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .oracle import Oracle


@pytest.fixture(scope="session")
def oracle() -> Iterator[Oracle]:
    """One official-wheel worker for the whole session (restarted after crashes)."""
    worker = Oracle()
    yield worker
    worker.close()
