"""The standing attack suite: a running demo network, and the check every attack ends with.

Each test in this folder throws one class of hostile input at the network, asserts that it is
refused cleanly (a 4xx with a JSON message, a refused frame, or a job error naming the
cause), and then calls :func:`still_provisions` to show that the network still completes a
normal ``add_user`` end to end.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from broadgauge.demo import PROJECT, Network
from tests.agents.network import demo_network

__all__ = ["demo_network"]  # the shared demo-network fixture, used below

_fresh = itertools.count()


@pytest.fixture
async def network(demo_network: Network) -> Network:
    """The shared demo network with its bridge API serving and the demo project created."""
    await demo_network.bridge.start()
    job = await demo_network.submit(f"add_project {PROJECT}")
    assert job.is_finished and not job.is_error, job.to_json()
    return demo_network


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=60) as client:
        yield client


async def still_provisions(network: Network) -> None:
    """A normal add_user, through the bridge to every back end, still completes."""
    user = f"survivor{next(_fresh)}.{PROJECT}"
    job = await network.submit(f"add_user {user}")
    assert job.is_finished and not job.is_error, job.to_json()


def job_text(**changes: object) -> dict[str, object]:
    """A finished Job's JSON value (a fresh id), with ``changes`` applied."""
    job: dict[str, object] = {
        "id": str(uuid.uuid4()),
        "created": 1717400000,
        "changed": 1717400000,
        "expires": 4717400300,
        "version": 3,
        "command": f"instance.platform get_users {PROJECT}",
        "state": "Complete",
        "result": "[]",
        "result_type": "Vec<UserIdentifier>",
        "forwarded_for": None,
    }
    job.update(changes)
    return job


def message(reply: httpx.Response) -> str:
    """The JSON ``message`` of a refusal (asserting that it is one)."""
    assert reply.headers["content-type"].startswith("application/json")
    text = reply.json()["message"]
    assert isinstance(text, str)
    return text
