"""The official ``openportal==0.32.2`` client against our bridge on a running network."""

from __future__ import annotations

import asyncio
import json

import pytest

from broadgauge.demo import Network
from broadgauge.jobs.job import Job

from .conftest import Official, OfficialError, Signals, ask_portal_software

PATH = "portal.provider.platform.instance"


async def test_setup_and_portal(official: Official) -> None:
    assert await official.call("result = op.is_config_loaded()") is True
    assert await official.call("result = str(op.get_portal())") == "portal"


async def test_health_cascades_through_the_network(official: Official) -> None:
    health = await official.call(
        "h = op.health(); result = [h.status, h.is_healthy(), str(h.detail)[:20000]]"
    )
    assert health[0] == "ok" and health[1] is True
    # The nested detail names agents below the bridge.
    assert "instance" in health[2]


async def test_run_add_user_end_to_end(official: Official, network: Network) -> None:
    await official.call(f"result = op.run('{PATH} add_project physics.portal', max_ms=20000)")
    reply = await official.call(
        f"j = op.run('{PATH} add_user alice.physics.portal', max_ms=20000)\n"
        "result = [j.to_json(), str(j.state), j.is_finished, str(j.result),"
        " type(j.result).__name__]"
    )
    job = Job.from_json(reply[0])
    assert reply[2] is True and job.is_finished and not job.is_error
    assert job.result_type == "UserMapping"
    assert json.loads(job.result or "") == "alice.physics.portal:alice.physics:portal.physics"
    assert reply[4] == "UserMapping" and reply[3].startswith("alice.physics.portal:")
    # The wrapper is the bridge's submit job, as in OpenPortal.
    assert str(job.command).startswith(f"bridge.portal submit {PATH} add_user")


async def test_run_then_status_and_get(official: Official) -> None:
    reply = await official.call(
        f"j = op.run('{PATH} add_project chem.portal')\n"
        "s = op.status(j)\n"
        "j.update()\n"
        "j.wait(20000)\n"
        "g = op.get(str(j.id))\n"
        "result = [str(s.state), j.is_finished, g.to_json()]"
    )
    assert reply[0] in ("Pending", "Running", "Complete", "pending", "running", "complete")
    assert reply[1] is True
    assert Job.from_json(reply[2]).result_type == "ProjectMapping"


async def test_offerings(official: Official) -> None:
    async def offerings(function: str, *names: str) -> list[str]:
        args = f"[op.Destination(x) for x in {list(names)!r}]" if names else ""
        reply = await official.call(f"result = [str(x) for x in op.{function}({args})]")
        assert isinstance(reply, list)
        return reply

    assert await offerings("get_offerings") == []
    assert await offerings("sync_offerings", "a.b.c", "d.e.f", "a.b.c") == ["a.b.c", "d.e.f"]
    assert await offerings("add_offerings", "g.h.i") == ["g.h.i"]
    assert await offerings("remove_offerings", "a.b.c") == ["a.b.c"]
    assert await offerings("get_offerings") == ["d.e.f", "g.h.i"]


async def test_diagnostics_and_restart(official: Official) -> None:
    report = await official.call(
        "d = op.diagnostics('portal'); result = [d.status, d.is_healthy(), str(d.detail)]"
    )
    assert report[0] == "ok" and report[1] is True
    assert "portal" in report[2]
    restart = await official.call(
        "r = op.restart('soft', 'portal.provider.platform.instance.scheduler')\n"
        "result = [r.status, r.message, r.is_ok()]"
    )
    assert restart == ["ok", "Restart command sent successfully", True]


async def test_bridge_board_round_trip(
    official: Official, network: Network, signals: Signals
) -> None:
    asking, job_id = await ask_portal_software(
        network, signals, "get_project_mapping physics.portal"
    )
    reply = await official.call(
        "jobs = op.fetch_jobs()\n"
        f"j = op.fetch_job({job_id!r})\n"
        "done = j.completed(op.ProjectMapping('physics.portal:physics'))\n"
        "op.send_result(done)\n"
        "result = [[x.to_json() for x in jobs], j.to_json()]"
    )
    assert [Job.from_json(text).id for text in reply[0]] == [Job.from_json(reply[1]).id]
    assert str(Job.from_json(reply[1]).id) == job_id
    finished = await asyncio.wait_for(asking, 10)
    assert finished.result_type == "ProjectMapping"
    assert json.loads(finished.result or "") == "physics.portal:physics"
    # Answered: nothing left to fetch.
    assert await official.call("result = op.fetch_jobs()") == []
    with pytest.raises(OfficialError):
        await official.call(f"op.fetch_job({job_id!r})")


async def test_bridge_board_error_answer(
    official: Official, network: Network, signals: Signals
) -> None:
    from broadgauge.runtime.agent import JobFailed

    asking, job_id = await ask_portal_software(
        network, signals, 'create_project x.portal {"name": "X"}'
    )
    await official.call(f"op.send_result(op.fetch_job({job_id!r}).errored('no such award'))")
    with pytest.raises(JobFailed, match="no such award"):
        await asyncio.wait_for(asking, 10)


async def test_notifications(official: Official, network: Network, signals: Signals) -> None:
    # Into the network: the portal receives the forwarded notification.
    await official.call("op.notify('portal.provider user_added alice.physics.portal')")
    portal = network.roles["portal"].portal
    assert portal is not None
    async with asyncio.timeout(5):
        while not portal.notifications:
            await asyncio.sleep(0.02)
    assert "user_added alice.physics.portal" in str(portal.notifications[-1])
    # Out of the network: adding a user makes the instance notify the portal software.
    await official.call(f"op.run('{PATH} add_project physics.portal', max_ms=20000)")
    await official.call(f"op.run('{PATH} add_user bob.physics.portal', max_ms=20000)")
    while True:
        notification_id = await signals.next("notification_id")
        fetched = await official.call(
            f"n = op.fetch_notification({notification_id!r})\n"
            "result = [n.to_json(), str(n.event_type), str(n.event_argument)]"
        )
        if "bob.physics.portal" in fetched[2]:
            break
    assert json.loads(fetched[0])["event"] == {"UserAdded": "bob.physics.portal"}
    with pytest.raises(OfficialError):
        await official.call("op.fetch_notification('00000000-0000-4000-8000-000000000000')")


async def test_unparseable_instruction_is_an_error_not_a_crash(
    official: Official, network: Network
) -> None:
    with pytest.raises(OfficialError):
        await official.call("op.run('portal.provider add_user not-an-identifier')")
    assert await official.call("result = str(op.get_portal())") == "portal"


async def test_official_client_backs_off_on_429(official: Official, network: Network) -> None:
    limiter = network.bridge.api.limiter
    limiter.limit, limiter.period = 1, 0.5
    try:
        names = await official.call("result = [str(op.get_portal()) for _ in range(3)]")
    finally:
        limiter.limit, limiter.period = 10_000, 10.0
    assert names == ["portal"] * 3
