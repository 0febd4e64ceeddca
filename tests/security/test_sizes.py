"""Input size: no endpoint's work may grow faster than its input.

Each signed endpoint is called with a normal input and with one 100 times larger, in the same
run, and the two times are compared: work that grows at most linearly costs at most 100 times
as much (fixed costs only make the ratio smaller), whereas quadratic work, as offerings once
had, costs thousands of times as much.  This is a ratio between two inputs, never a time
limit.  The offerings limits themselves are checked here too.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Awaitable, Callable

import httpx
import pytest

from broadgauge.bridge.config import DEFAULT_MAX_OFFERINGS
from broadgauge.demo import PATH, Network
from tests.bridge.signing import call

from .conftest import job_text, message, still_provisions

#: How much larger the large input is.
FACTOR = 100


def offerings(count: int, tag: str = "r") -> list[str]:
    return [f"{tag}{i}.portal.remote" for i in range(count)]


#: endpoint -> (method, normal body, large body).  Each large body carries 100 times as much
#: of what the endpoint must parse or look through.  (Diagnostics and restart name a first
#: hop that does not exist, so that the bridge's own parsing is timed, not a network wait.)
CASES: dict[str, tuple[str, bytes, bytes]] = {
    "run (instruction)": (
        "post",
        json.dumps({"command": f"{PATH} add_offerings [{', '.join(offerings(100))}]"}).encode(),
        json.dumps(
            {"command": f"{PATH} add_offerings [{', '.join(offerings(100 * FACTOR))}]"}
        ).encode(),
    ),
    "run (identifier)": (
        "post",
        json.dumps({"command": f"{PATH} get_users {'p' * 20}.portal"}).encode(),
        json.dumps({"command": f"{PATH} get_users {'p' * 20 * FACTOR}.portal"}).encode(),
    ),
    "status": (
        "post",
        json.dumps({"job": str(uuid.uuid4()), "pad": "x" * 100}).encode(),
        json.dumps({"job": str(uuid.uuid4()), "pad": "x" * 100 * FACTOR}).encode(),
    ),
    "notify": (
        "post",
        json.dumps({"command": f"portal.provider ping {'n' * 100}"}).encode(),
        json.dumps({"command": f"portal.provider ping {'n' * 100 * FACTOR}"}).encode(),
    ),
    "fetch_job": (
        "post",
        (" " * 100 + json.dumps(str(uuid.uuid4()))).encode(),
        (" " * 100 * FACTOR + json.dumps(str(uuid.uuid4()))).encode(),
    ),
    "fetch_notification": (
        "post",
        (" " * 100 + json.dumps(str(uuid.uuid4()))).encode(),
        (" " * 100 * FACTOR + json.dumps(str(uuid.uuid4()))).encode(),
    ),
    "send_result": (
        "post",
        json.dumps(job_text(result="u" * 1000, result_type="String")).encode(),
        json.dumps(job_text(result="u" * 1000 * FACTOR, result_type="String")).encode(),
    ),
    "diagnostics": (
        "post",
        json.dumps({"destination": ".".join(["nosuch"] + ["a"] * 20)}).encode(),
        json.dumps({"destination": ".".join(["nosuch"] + ["a"] * 20 * FACTOR)}).encode(),
    ),
    "restart": (
        "post",
        json.dumps(
            {"destination": ".".join(["nosuch"] + ["a"] * 20), "restart_type": "soft"}
        ).encode(),
        json.dumps(
            {"destination": ".".join(["nosuch"] + ["a"] * 20 * FACTOR), "restart_type": "soft"}
        ).encode(),
    ),
    "sync_offerings": (
        "post",
        json.dumps(offerings(100)).encode(),
        json.dumps(offerings(100 * FACTOR)).encode(),
    ),
    "add_offerings": (
        "post",
        json.dumps(offerings(100, "a")).encode(),
        json.dumps(offerings(100 * FACTOR, "b")).encode(),
    ),
    "remove_offerings": (
        "post",
        json.dumps(offerings(100, "a")).encode(),
        json.dumps(offerings(100 * FACTOR, "b")).encode(),
    ),
}


async def fastest(times: int, action: Callable[[], Awaitable[httpx.Response]]) -> float:
    """The least time of ``times`` calls (the least is the one least disturbed)."""
    best = float("inf")
    for _ in range(times):
        started = time.perf_counter()
        reply = await action()
        best = min(best, time.perf_counter() - started)
        assert reply.status_code < 500, reply.text
    return best


@pytest.mark.parametrize("endpoint", list(CASES))
async def test_large_input_costs_at_most_proportionally(
    network: Network, http: httpx.AsyncClient, endpoint: str
) -> None:
    bridge = network.bridge
    method, normal, large = CASES[endpoint]
    function = endpoint.split(" ", maxsplit=1)[0]

    def send(body: bytes) -> Callable[[], Awaitable[httpx.Response]]:
        return lambda: call(http, bridge.url, bridge.settings.key, method, function, body)

    normal_time = await fastest(5, send(normal))
    large_time = await fastest(3, send(large))
    ratio = large_time / normal_time
    assert ratio < FACTOR, f"{endpoint}: {FACTOR}x the input took {ratio:.0f}x the time"
    await still_provisions(network)


async def test_held_offerings_are_listed_in_proportion(
    network: Network, http: httpx.AsyncClient
) -> None:
    bridge = network.bridge
    key = bridge.settings.key

    async def listing_time(count: int) -> float:
        reply = await call(
            http, bridge.url, key, "post", "sync_offerings", json.dumps(offerings(count)).encode()
        )
        assert reply.status_code == 200
        return await fastest(3, lambda: call(http, bridge.url, key, "get", "get_offerings"))

    ratio = await listing_time(100 * FACTOR) / await listing_time(100)
    assert ratio < FACTOR


async def test_offerings_limits(network: Network, http: httpx.AsyncClient) -> None:
    bridge = network.bridge
    key = bridge.settings.key
    limit = bridge.runtime.settings.max_offerings
    assert limit == DEFAULT_MAX_OFFERINGS

    async def post(function: str, items: list[str]) -> httpx.Response:
        return await call(http, bridge.url, key, "post", function, json.dumps(items).encode())

    over = await post("add_offerings", offerings(limit + 1))
    assert over.status_code == 413 and "max_offerings" in message(over)
    assert bridge.runtime.offerings == []  # nothing of a refused request is kept
    assert (await post("sync_offerings", offerings(limit))).status_code == 200
    past = await post("add_offerings", offerings(1, "extra"))
    assert past.status_code == 400 and f"at most {limit}" in message(past)
    assert len(bridge.runtime.offerings) == limit
    removed = await post("remove_offerings", offerings(limit // 2))
    assert removed.status_code == 200
    assert [str(d) for d in bridge.runtime.offerings] == offerings(limit)[limit // 2 :]
    await still_provisions(network)
