"""``/metrics`` on the bridge's API and on the planner: requests, refusals and answers."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from broadgauge.bridge.auth import format_date
from broadgauge.demo import Network, start_network
from broadgauge.planner.app import create_app
from broadgauge.planner.config import parse_config
from broadgauge.planner.metrics import instrument
from broadgauge.runtime.metrics import PlannerMetrics
from broadgauge.serving import AppServer
from tests.metrics.scrape import scrape, value
from tests.planner.rulesets import yes_rule


@pytest.fixture
async def metered(tmp_path: Path) -> AsyncIterator[Network]:
    """The demo network with metrics, and the bridge's HTTP API serving."""
    network = await start_network(tmp_path, metrics=True)
    try:
        await network.roles["bridge"].start()
        yield network
    finally:
        await network.stop()


async def test_bridge_refusals_are_counted_by_reason(metered: Network) -> None:
    base = metered.bridge.url
    now = format_date(time.time())
    async with httpx.AsyncClient(base_url=base) as client:
        assert (await client.get("/health")).status_code == 401  # no signature
        headers = {"Authorization": "forged", "Date": "yesterday"}
        assert (await client.get("/health", headers=headers)).status_code == 401
        headers = {"Authorization": "forged", "Date": now, "X-Nonce": "not-a-uuid"}
        assert (await client.get("/health", headers=headers)).status_code == 401
        headers = {
            "Authorization": "forged",
            "Date": now,
            "X-Nonce": "0" * 8 + "-0000" * 3 + "-" + "0" * 12,
        }
        assert (await client.get("/health", headers=headers)).status_code == 401  # bad key
    samples = await scrape(f"{base}metrics")
    refusals = "broadgauge_bridge_refusals_total"
    assert value(samples, refusals, agent="bridge", reason="signature") == 2
    assert value(samples, refusals, reason="date") == 1
    assert value(samples, refusals, reason="nonce") == 1
    assert value(samples, refusals, reason="rate_limit") == 0
    requests = "broadgauge_bridge_requests_total"
    assert value(samples, requests, endpoint="health", status="401") == 4
    assert value(samples, requests, status="200") == 0
    # The bridge agent's own series are in the same registry.
    assert value(samples, "broadgauge_peer_up", agent="bridge", peer="portal@default") == 1


async def test_network_planner_answers_are_counted(metered: Network) -> None:
    url = metered.planner.url
    await metered.planner.start()
    async with httpx.AsyncClient(base_url=url) as client:
        response = await client.get("/accepts", params={"tasktype": "no-such-task"})
        assert response.status_code == 200
    samples = await scrape(f"{url}metrics")
    assert value(samples, "broadgauge_planner_answers_total", outcome="no") == 1
    assert value(samples, "broadgauge_planner_answers_total", outcome="yes") == 0


async def test_planner_answers_are_counted_by_outcome() -> None:
    config = parse_config(
        {
            "service": {"name": "test"},
            "rules": [
                yes_rule("open", "open-task"),
                yes_rule(
                    "members",
                    "members-task",
                    deny_reason="members only",
                    identity={"groups_any": ["members"]},
                ),
            ],
        }
    )
    metrics = PlannerMetrics.standalone()
    server = AppServer(instrument(create_app(config), metrics), "127.0.0.1", 0)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url) as client:
            for task in ("open-task", "open-task", "members-task", "other-task"):
                response = await client.get("/accepts", params={"tasktype": task})
                assert response.status_code == 200
        samples = await scrape(f"{server.url}metrics")
    finally:
        await server.stop()
    answers = "broadgauge_planner_answers_total"
    assert value(samples, answers, outcome="yes") == 2
    assert value(samples, answers, outcome="forbidden") == 1
    assert value(samples, answers, outcome="no") == 1
    assert value(samples, "process_cpu_seconds_total") > 0
