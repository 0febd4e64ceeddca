"""A real Prometheus scraping the demo network, with the repository's rules and dashboard.

The network is started as ``broadgauge demo --serve`` starts it (``start_network(...,
metrics=True)``: each agent's ``/metrics`` on its own loopback port), in this process, so the
test can kill one agent and watch Prometheus notice.  Portal software's jobs go through the
bridge's HTTP API with Broadgauge's client.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from broadgauge.client import AsyncClient
from broadgauge.demo import PATH, Network, start_network
from tests.backends.prometheus import Prometheus, running_prometheus

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "broadgauge-network.json"
GUARD = 90.0


@pytest.fixture
async def network(tmp_path: Path) -> AsyncIterator[Network]:
    started = await start_network(tmp_path / "network", metrics=True)
    try:
        await started.bridge.start()
        await started.planner.start()
        yield started
    finally:
        await started.stop()


def targets(network: Network) -> dict[str, str]:
    """Agent name → the ``host:port`` Prometheus scrapes."""
    return {name: urlsplit(url).netloc for name, url in network.metrics_urls().items()}


async def value(prometheus: Prometheus, expr: str) -> float | None:
    result = await asyncio.to_thread(prometheus.query, expr)
    return float(result[0]["value"][1]) if result else None


async def until(prometheus: Prometheus, expr: str, wanted: float) -> None:
    """Wait until ``expr`` is ``wanted`` (a hang guard, not a timing assertion)."""
    async with asyncio.timeout(GUARD):
        while await value(prometheus, expr) != wanted:
            await asyncio.sleep(0.5)


async def test_prometheus_sees_jobs_rules_and_a_dead_agent(
    network: Network, tmp_path: Path
) -> None:
    addresses = targets(network)
    client_file = tmp_path / "bridge.toml"
    network.bridge.client_file().save(client_file)
    prometheus_dir = tmp_path / "prometheus"
    prometheus_dir.mkdir()
    with running_prometheus(prometheus_dir, {"broadgauge": list(addresses.values())}) as prom:
        async with AsyncClient.from_file(client_file, timeout=GUARD) as client:
            for instruction in (
                "add_project physics.portal",
                "add_user alice.physics.portal",
                "add_user bob.physics.portal",
                "remove_user bob.physics.portal",
            ):
                job = await client.run(f"{PATH} {instruction}", max_ms=30_000)
                assert job.is_finished and not job.is_error, job
        # What the rules and the dashboard also watch: a refused connection, a refused bridge
        # request, and a planner answer.
        with pytest.raises(InvalidStatus):
            async with connect(network.agents["portal"].service.url):
                pass
        async with httpx.AsyncClient(timeout=30) as http:
            forged = await http.get(f"{network.bridge.url}health", headers={"Date": "x"})
            assert forged.status_code == 401
            asked = await http.get(f"{network.planner.url}accepts?tasktype=jupyter-notebook")
            assert asked.status_code == 200

        # Every target is up, and the counters moved by exactly what was done.
        portal = 'agent="portal",state="complete"'
        await until(prom, f'broadgauge_jobs_finished_total{{{portal},keyword="add_user"}}', 2)
        await until(prom, f'broadgauge_jobs_finished_total{{{portal},keyword="remove_user"}}', 1)
        await until(prom, 'count(up{job="broadgauge"} == 1)', len(addresses))
        assert await value(prom, 'count(up{job="broadgauge"} == 0)') is None
        submits = 'broadgauge_jobs_created_total{agent="bridge",keyword="submit"}'
        assert await value(prom, submits) == 4
        account_ops = 'sum(broadgauge_backend_operations_total{agent="account"})'
        assert (await value(prom, account_ops) or 0) > 0

        # Every panel of the dashboard has data.
        dashboard = json.loads(DASHBOARD.read_text())
        queries = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
        assert len(queries) >= 15
        for expr in queries:
            result = await asyncio.to_thread(prom.wait_for, expr, GUARD)
            assert result, f"no data for {expr}"

        # A killed agent: its target goes down, and its neighbour's link gauge to it goes to 0.
        await network.stop_agent("scheduler")
        await until(prom, f'up{{instance="{addresses["scheduler"]}"}}', 0)
        await until(prom, 'broadgauge_peer_up{agent="instance",peer="scheduler@default"}', 0)
        answer = await asyncio.to_thread(httpx.get, f"{prom.url}api/v1/rules", timeout=10)
        rules = answer.json()["data"]["groups"]
        assert {r["name"] for g in rules for r in g["rules"]} >= {
            "BroadgaugeProcessDown",
            "BroadgaugePeerLinkDown",
        }
