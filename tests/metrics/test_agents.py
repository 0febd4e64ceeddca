"""``/metrics`` of a running demo network: job counters, links, refusals, bounded labels."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from broadgauge.demo import Network, start_network
from tests.metrics.scrape import label_values, scrape, value

PROJECT = "physics.portal"
USER = "alice.physics.portal"
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@pytest.fixture
async def metered(tmp_path: Path) -> AsyncIterator[Network]:
    """The demo network with every agent's ``/metrics`` served."""
    network = await start_network(tmp_path, metrics=True)
    try:
        yield network
    finally:
        await network.stop()


async def test_one_add_user_moves_the_job_counters_by_one(metered: Network) -> None:
    urls = metered.metrics_urls()
    await metered.submit(f"add_project {PROJECT}")
    before = {name: await scrape(url) for name, url in urls.items()}
    await metered.submit(f"add_user {USER}")
    after = {name: await scrape(url) for name, url in urls.items()}

    def moved(who: str, name: str, **labels: str) -> float:
        return value(after[who], name, **labels) - value(before[who], name, **labels)

    # The bridge creates the submit job, the portal the add_user it carries.
    created, finished = "broadgauge_jobs_created_total", "broadgauge_jobs_finished_total"
    assert moved("bridge", created, agent="bridge", keyword="submit") == 1
    assert moved("bridge", finished, keyword="submit", state="complete") == 1
    assert moved("portal", created, agent="portal", keyword="add_user") == 1
    assert moved("portal", finished, keyword="add_user", state="complete") == 1
    assert moved("portal", finished, keyword="add_user", state="error") == 0
    assert moved("portal", "broadgauge_job_duration_seconds_count", keyword="add_user") == 1
    # The routers between created nothing; the instance asks its leaves (one add_user to
    # the account agent among them).  Nothing is left in flight.
    assert moved("bridge", created) == 1  # the submit alone
    for agent in ("provider", "platform", "account"):
        assert moved(agent, created) == 0, agent
    assert moved("instance", created, keyword="add_user") == 1
    assert moved("instance", created) == moved("instance", finished, state="complete")
    for samples in after.values():
        assert value(samples, "broadgauge_jobs_in_flight") == 0
    # The instance ran add_user; the account agent's back end did the work and audited it.
    calls = "broadgauge_backend_calls_total"
    assert moved("instance", calls, keyword="add_user", outcome="ok") == 1
    assert moved("portal", calls, keyword="add_user") == 0
    assert moved("account", calls, outcome="ok") >= 1
    assert moved("account", "broadgauge_backend_operations_total", outcome="ok") >= 1
    assert moved("account", "broadgauge_audit_entries_total") > 0
    assert moved("portal", "broadgauge_frames_total", direction="out") > 0
    assert moved("portal", "broadgauge_frame_bytes_total", direction="in") > 0
    assert moved("portal", "broadgauge_store_commit_duration_seconds_count") > 0
    # The jobs stay on the boards until they expire.
    assert value(after["portal"], "broadgauge_board_jobs", peer="bridge@default") >= 2
    assert value(after["instance"], "broadgauge_audit_verification_ok") == 1
    assert value(after["bridge"], "process_cpu_seconds_total") > 0  # the main registry
    assert value(after["portal"], "process_cpu_seconds_total") == 0  # one process, one copy


async def test_no_label_names_a_job_a_user_or_a_project(metered: Network) -> None:
    await metered.submit(f"add_project {PROJECT}")
    await metered.submit(f"add_user {USER}")
    await metered.submit(f"remove_user {USER}")
    for url in metered.metrics_urls().values():
        for text in label_values(await scrape(url)):
            assert UUID.search(text) is None, text
            assert "alice" not in text and "physics" not in text, text


async def test_a_stopped_peer_shows_as_down(metered: Network) -> None:
    url = metered.metrics_urls()["instance"]
    samples = await scrape(url)
    assert value(samples, "broadgauge_peer_up", peer="account@default") == 1
    assert value(samples, "broadgauge_peer_up", peer="platform@default") == 1
    await metered.stop_agent("account")
    instance = metered.agents["instance"]
    async with asyncio.timeout(10):
        while any(p.name == "account" for p in instance.service.connected_peers()):
            await asyncio.sleep(0.01)
    samples = await scrape(url)
    assert value(samples, "broadgauge_peer_up", peer="account@default") == 0
    assert value(samples, "broadgauge_peer_up", peer="platform@default") == 1


async def test_a_refused_connection_is_counted_by_reason(metered: Network) -> None:
    url = metered.metrics_urls()["portal"]
    reason = "broadgauge_connections_refused_total"
    before = await scrape(url)
    # A caller without the protocol's salt headers is refused before any key is tried.
    with pytest.raises(InvalidStatus):
        async with connect(metered.agents["portal"].service.url):
            pass
    after = await scrape(url)
    moved = value(after, reason, reason="bad_handshake") - value(
        before, reason, reason="bad_handshake"
    )
    assert moved == 1
    assert value(after, reason, reason="ip_not_allowed") == 0
