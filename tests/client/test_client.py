"""Our client (blocking and asyncio) against our bridge on a running network: the official
client's scenarios, plus 429 back-off."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

import broadgauge.client as bg
from broadgauge.bridge import BridgeServer
from broadgauge.client import AsyncClient, BridgeError, Client, ClientConfig
from broadgauge.client._protocol import Request
from broadgauge.demo import Network
from broadgauge.runtime.agent import JobFailed

from ..bridge.conftest import Signals, ask_portal_software

PATH = "portal.provider.platform.instance"


async def test_module_api_end_to_end(client_file: Path, network: Network) -> None:
    def scenario() -> tuple[object, ...]:
        bg.load_config(client_file)
        assert bg.is_config_loaded()
        portal = bg.get_portal()
        health = bg.health()
        bg.run(f"{PATH} add_project physics.portal", max_ms=20000)
        job = bg.run(f"{PATH} add_user alice.physics.portal", max_ms=20000)
        again = bg.get(job.id)
        return portal, health, job, again

    portal, health, job, again = await asyncio.to_thread(scenario)
    assert str(portal) == "portal"
    assert isinstance(health, bg.Health) and health.is_healthy()
    assert isinstance(job, bg.Job) and job.is_finished and not job.is_error
    assert job.result_type == "UserMapping"
    assert str(job.result) == "alice.physics.portal:alice.physics:portal.physics"
    assert str(job.state) == "complete"
    assert isinstance(again, bg.Job) and again.to_json() == job.to_json()
    assert bg.Job.from_json(job.to_json()) == job


async def test_wait_polls_until_finished(client_file: Path, network: Network) -> None:
    def scenario() -> tuple[bool, bool, str]:
        with Client(ClientConfig.load(client_file)) as client:
            job = client.run(f"{PATH} add_project bio.portal")
            first = job.is_finished
            finished = job.wait(20000)
            return first, finished, str(job.result)

    _, finished, result = await asyncio.to_thread(scenario)
    assert finished and result == "bio.portal:portal.bio"


async def test_operations_and_offerings(client_file: Path, network: Network) -> None:
    def scenario() -> tuple[object, ...]:
        with Client(ClientConfig.load(client_file)) as c:
            diagnostics = c.diagnostics("portal")
            restart = c.restart("soft", f"{PATH}.scheduler")
            synced = c.sync_offerings(["a.b.c", "d.e.f", "a.b.c"])
            added = c.add_offerings([bg.Destination.parse("g.h.i")])
            removed = c.remove_offerings(["a.b.c"])
            return diagnostics, restart, synced, added, removed, c.get_offerings()

    diagnostics, restart, synced, added, removed, now = await asyncio.to_thread(scenario)
    assert isinstance(diagnostics, bg.Diagnostics) and diagnostics.is_healthy()
    assert diagnostics.detail is not None and diagnostics.detail["agent_name"] == "portal"
    assert isinstance(restart, bg.RestartResponse) and restart.is_ok()
    assert [str(d) for d in synced] == ["a.b.c", "d.e.f"]  # type: ignore[attr-defined]
    assert [str(d) for d in added] == ["g.h.i"]  # type: ignore[attr-defined]
    assert [str(d) for d in removed] == ["a.b.c"]  # type: ignore[attr-defined]
    assert [str(d) for d in now] == ["d.e.f", "g.h.i"]  # type: ignore[attr-defined]


async def test_bridge_board_round_trip_sync(
    client_file: Path, network: Network, signals: Signals
) -> None:
    asking, job_id = await ask_portal_software(
        network, signals, "get_project_mapping physics.portal"
    )

    def portal_software() -> list[str]:
        with Client(ClientConfig.load(client_file)) as c:
            waiting = c.fetch_jobs()
            job = c.fetch_job(job_id)
            c.send_result(job.completed(bg.ProjectMapping.parse("physics.portal:physics")))
            return [str(j.id) for j in waiting]

    assert await asyncio.to_thread(portal_software) == [job_id]
    finished = await asyncio.wait_for(asking, 10)
    assert json.loads(finished.result or "") == "physics.portal:physics"


async def test_async_client_scenarios(
    client_file: Path, network: Network, signals: Signals
) -> None:
    async with AsyncClient.from_file(client_file) as c:
        assert str(await c.get_portal()) == "portal"
        assert (await c.health()).is_healthy()
        await c.run(f"{PATH} add_project physics.portal", max_ms=20000)
        job = await c.run(f"{PATH} add_user carol.physics.portal", max_ms=20000)
        assert job.is_finished and job.result_type == "UserMapping"
        assert (await c.get(job.id)).version == job.version
        # Bridge board, answered with an error this time.
        asking, job_id = await ask_portal_software(network, signals, "get_projects portal")
        held = await c.fetch_job(job_id)
        await c.send_result(held.errored("portal software says no"))
        with pytest.raises(JobFailed, match="portal software says no"):
            await asyncio.wait_for(asking, 10)
        # Notifications, both ways.
        await c.notify("portal.provider project_added physics.portal")
        notification_id = await signals.next("notification_id")
        fetched = await c.fetch_notification(notification_id)
        assert str(fetched.id) == notification_id
        with pytest.raises(BridgeError) as refused:
            await c.fetch_job(job_id)
        assert refused.value.status == 404


async def test_errors_are_oserrors_with_the_bridge_message(
    client_file: Path, network: Network
) -> None:
    async with AsyncClient.from_file(client_file) as c:
        with pytest.raises(OSError) as bad:
            await c.run("portal.provider add_user not-an-identifier")
        assert isinstance(bad.value, BridgeError) and bad.value.status == 400
        assert "not-an-identifier" in bad.value.message


async def test_429_is_retried_with_back_off(tmp_path: Path, network: Network) -> None:
    bridge: BridgeServer = network.bridge
    bridge.api.limiter.limit = 1
    bridge.api.limiter.period = 0.5
    path = tmp_path / "c.toml"
    bridge.client_file().save(path)
    async with AsyncClient.from_file(path) as c:
        started = time.monotonic()
        first = await c.call(Request.get("get_portal"))
        second = await c.call(Request.get("get_portal"))  # refused, then retried
        elapsed = time.monotonic() - started
    assert first == second == "portal"
    assert elapsed >= 0.1


async def test_answers_the_official_client_cannot_build(
    client_file: Path, network: Network, signals: Signals
) -> None:
    """``get_awards`` needs ``Vec<ProjectDetails>``, which the official wheel cannot produce."""
    asking, job_id = await ask_portal_software(network, signals, "get_awards portal")
    award = bg.AwardDetails.parse('{"name": "Physics", "description": "Dark matter"}')
    async with AsyncClient.from_file(client_file) as c:
        held = await c.fetch_job(job_id)
        await c.send_result(held.completed([award], result_type="Vec<ProjectDetails>"))
    finished = await asyncio.wait_for(asking, 10)
    assert finished.result_type == "Vec<ProjectDetails>"
    assert json.loads(finished.result or "")[0]["name"] == "Physics"
