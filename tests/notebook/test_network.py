"""The notebook platform in the demo network, with the embedded hub: every instruction's
meaning, sent the way portal software sends it (``submit`` through the bridge).

The same story against a real JupyterHub is in ``test_real_hub.py``.
"""

from __future__ import annotations

import datetime as dt

import pytest

from broadgauge.agents.notebook.embedded import EmbeddedHub
from broadgauge.agents.notebook.rules import NotebookInstance
from broadgauge.demo import NOTEBOOKS, Network
from broadgauge.grammar import ProjectUsageReport, Usage, UserMapping
from broadgauge.runtime.agent import JobFailed
from tests.agents.network import demo_network

__all__ = ["demo_network"]

PROJECT = "physics.portal"
ALICE = "alice.physics.portal"
BOB = "bob.physics.portal"


def notebooks(network: Network) -> NotebookInstance:
    role = network.roles["jupyter"].notebooks
    assert role is not None
    return role


async def run(network: Network, instruction: str) -> object:
    job = await network.submit(instruction, path=NOTEBOOKS)
    return job.result_value()


async def refused(network: Network, instruction: str) -> str:
    with pytest.raises(JobFailed) as caught:
        await network.submit(instruction, path=NOTEBOOKS)
    return str(caught.value)


async def test_project_and_users_become_a_hub_group_and_its_members(
    demo_network: Network,
) -> None:
    hub = notebooks(demo_network).hub
    mapping = await run(demo_network, f"add_project {PROJECT}")
    assert str(mapping) == "physics.portal:portal.physics"
    assert await hub.group_members("portal.physics") == []
    for user in (ALICE, BOB):
        assert isinstance(await run(demo_network, f"add_user {user}"), UserMapping)
    assert await hub.group_members("portal.physics") == ["alice.physics", "bob.physics"]
    users = await run(demo_network, f"get_users {PROJECT}")
    assert isinstance(users, list)
    assert sorted(str(u) for u in users) == [
        "alice.physics.portal:alice.physics:portal.physics",
        "bob.physics.portal:bob.physics:portal.physics",
    ]
    assert await run(demo_network, f"is_existing_user {ALICE}") is True
    assert await run(demo_network, "is_existing_user carol.physics.portal") is False
    # Adding again changes nothing.
    await run(demo_network, f"add_user {ALICE}")
    assert await hub.group_members("portal.physics") == ["alice.physics", "bob.physics"]

    await run(demo_network, f"remove_user {BOB}")
    assert not await hub.user_exists("bob.physics")
    assert await hub.group_members("portal.physics") == ["alice.physics"]
    await run(demo_network, f"remove_project {PROJECT}")
    assert await hub.group_members("portal.physics") is None
    assert not await hub.user_exists("alice.physics")


async def test_servers_start_stop_and_blocking_refuses_them(demo_network: Network) -> None:
    hub = notebooks(demo_network).hub
    await run(demo_network, f"add_user {ALICE}")
    url = await run(demo_network, f"start_notebook {ALICE}")
    assert url == "https://jupyter.instance.example/user/alice.physics/"
    assert [s.user for s in await hub.servers()] == ["alice.physics"]

    await run(demo_network, f"block_user {ALICE}")
    assert await hub.servers() == []
    assert await run(demo_network, f"is_blocked_user {ALICE}") is True
    message = await refused(demo_network, f"start_notebook {ALICE}")
    assert "blocked" in message
    assert await hub.servers() == []

    await run(demo_network, f"unblock_user {ALICE}")
    assert await run(demo_network, f"is_blocked_user {ALICE}") is False
    await run(demo_network, f"start_notebook {ALICE}")
    assert await run(demo_network, f"stop_notebook {ALICE}") is None
    assert await run(demo_network, f"stop_notebook {ALICE}") is None  # already stopped
    assert await hub.servers() == []


async def test_usage_report_counts_server_time_per_user_and_day(demo_network: Network) -> None:
    instance = notebooks(demo_network)
    await run(demo_network, f"add_user {ALICE}")
    await run(demo_network, f"start_notebook {ALICE}")
    # The stand-in's server started now; say the hub had started it two hours ago.
    now = dt.datetime.now(dt.UTC)
    started = now - dt.timedelta(hours=2)
    await instance.ledger.stopped("alice.physics", now)
    await instance.ledger.observe(now, {"alice.physics": (started, "portal.physics")})
    await run(demo_network, f"stop_notebook {ALICE}")

    today = now.date()
    report = await run(demo_network, f"get_usage_report {PROJECT} {started.date()}:{today}")
    assert isinstance(report, ProjectUsageReport)
    total = sum(
        usage.seconds for daily in report.reports.values() for usage in daily.reports.values()
    )
    # Each day's figure is rounded down: across midnight the total may lose under a second
    # per day of the report.
    assert 2 * 3600 - len(report.reports) < total < 2 * 3600 + 120
    assert {str(k): v for k, v in report.users.items()} == {ALICE: "alice.physics"}
    assert report.reports[max(report.reports)].is_complete is False


async def test_limit_is_server_time_and_refuses_a_start_once_used(demo_network: Network) -> None:
    instance = notebooks(demo_network)
    await run(demo_network, f"add_user {ALICE}")
    assert await run(demo_network, f"set_limit {PROJECT} 1 hours") == Usage(3600)
    assert await run(demo_network, f"get_limit {PROJECT}") == Usage(3600)
    now = dt.datetime.now(dt.UTC)
    await instance.ledger.observe(
        now, {"alice.physics": (now - dt.timedelta(hours=2), "portal.physics")}
    )
    await instance.ledger.stopped("alice.physics", now)
    message = await refused(demo_network, f"start_notebook {ALICE}")
    assert "of its 3600 s of notebook server time" in message
    assert await instance.hub.servers() == []


async def test_instructions_without_meaning_here_say_so(demo_network: Network) -> None:
    await run(demo_network, f"add_user {ALICE}")
    for instruction in (
        f"set_project_quota {PROJECT} home 10 GB",
        f"get_home_dir {ALICE}",
        f"get_storage_report {PROJECT}",
    ):
        message = await refused(demo_network, instruction)
        assert "has no meaning for a notebook service" in message


async def test_hostile_names_never_reach_the_hub(demo_network: Network) -> None:
    hub = notebooks(demo_network).hub
    assert isinstance(hub, EmbeddedHub)
    before = await hub.groups()
    message = await refused(demo_network, "add_user -rf.physics.portal")
    assert "-rf" in message
    message = await refused(demo_network, "add_project Physics!.portal")
    assert await hub.groups() == before
    assert not await hub.user_exists("-rf.physics")
