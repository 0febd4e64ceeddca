"""An instance missing a leaf agent refuses the work that needs it before any back end acts.

Not linked at all (no client entry could be that agent): refused at once, saying how to link
one.  Linked but away: waited for (saying so in the log), then refused naming the client.
"""

from __future__ import annotations

import logging

import pytest

from broadgauge.agents.instance import Instance
from broadgauge.agents.leaves import REQUIRED_AGENTS
from broadgauge.jobs.agent_type import AgentType

from .helpers import Site, eventually, mapping

ALICE = "alice.physics.portal"
PROJECT = "physics.portal"


def instance_rules(site: Site) -> Instance:
    """The instance's business rules."""
    rules = site.network.roles["instance"].instance
    assert rules is not None
    return rules


async def unlink(site: Site, name: str) -> None:
    """Remove leaf ``name`` from the instance's clients (as if never linked) and stop it."""
    instance = site.agent("instance")
    instance.service.remove_client(name)
    await site.agent(name).stop()
    await eventually(lambda: name not in {p.name for p in instance.service.connected_peers()})


async def stop(site: Site, name: str) -> None:
    """Stop leaf ``name`` (still linked) and wait until the instance has seen it go."""
    instance = site.agent("instance")
    await site.agent(name).stop()
    await eventually(lambda: name not in {p.name for p in instance.service.connected_peers()})


def untouched(site: Site) -> None:
    """No leaf agent ran a job or changed its back end."""
    for leaf in ("account", "filesystem", "scheduler"):
        started = [e for e in site.audit(leaf) if e["action"] == "started"]
        assert started == [], leaf
        assert site.operations(leaf) == [], leaf
    assert site.directory_rows("SELECT name FROM users") == []
    assert site.directory_rows("SELECT name FROM groups") == []
    assert site.ledger_rows("SELECT name FROM accounts") == []


@pytest.mark.parametrize("instruction", [f"add_user {ALICE}", f"add_project {PROJECT}"])
async def test_without_a_filesystem_agent_the_job_fails_before_the_account_is_made(
    site: Site, instruction: str
) -> None:
    await unlink(site, "filesystem")
    # Were the instance to wait, this would show: it has no wait left to give.
    instance_rules(site).leaves.wait = 3600.0

    message = await site.refused(instruction)

    assert "instance has no connected filesystem agent: link one with " in message
    assert "`broadgauge filesystem server --add invite_NAME_ZONE.toml`" in message
    assert "`broadgauge instance client --add NAME --ip ADDRESS`" in message
    assert "docs/operators/roles.md" in message
    # Nothing was asked of any back end, so there was nothing to undo.
    untouched(site)


async def test_every_missing_role_is_named_at_once(site: Site) -> None:
    await unlink(site, "filesystem")
    await unlink(site, "scheduler")

    message = await site.refused(f"remove_user {ALICE}")

    assert "instance has no connected filesystem or scheduler agent: link one" in message
    untouched(site)


async def test_a_linked_agent_that_is_away_is_waited_for_in_the_log_then_named(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "broadgauge.agents.instance")
    await stop(site, "filesystem")
    instance_rules(site).leaves.wait = 0.2

    message = await site.refused(f"add_user {ALICE}")

    assert message == (
        "RuntimeError{instance has no connected filesystem agent: its client(s) "
        "filesystem@default did not connect within 0.2 s; start the agent (`broadgauge "
        "filesystem run`) and check its log for why it cannot connect; "
        "see docs/operators/roles.md}"
    )
    waiting = [r.getMessage() for r in caplog.records if "waiting up to" in r.getMessage()]
    assert waiting == [
        "instance: waiting up to 0.2 s for its filesystem agent to connect (filesystem@default)"
    ]
    untouched(site)


async def test_work_that_needs_only_the_agents_present_still_runs(site: Site) -> None:
    await unlink(site, "filesystem")

    # The account agent alone answers this one, and the scheduler is asked for limits.
    assert (await site.value(f"is_existing_user {ALICE}")) is False
    limit = await site.refused(f"get_limit {PROJECT}")  # no such project: a different error
    assert "no connected" not in limit
    assert "no connected filesystem agent" in await site.refused(f"get_home_dir {ALICE}")


def test_each_instruction_needs_the_agents_its_steps_ask() -> None:
    every = {AgentType.ACCOUNT, AgentType.FILESYSTEM, AgentType.SCHEDULER}
    for keyword in ("add_user", "remove_user", "add_project", "remove_project"):
        assert set(REQUIRED_AGENTS[keyword]) == every, keyword
    assert set(REQUIRED_AGENTS["set_limit"]) == {AgentType.ACCOUNT, AgentType.SCHEDULER}
    assert set(REQUIRED_AGENTS["set_user_quota"]) == {AgentType.ACCOUNT, AgentType.FILESYSTEM}
    assert REQUIRED_AGENTS["get_local_home_dir"] == (AgentType.FILESYSTEM,)
    assert REQUIRED_AGENTS["block_user"] == (AgentType.ACCOUNT,)


async def test_with_every_agent_present_add_user_still_works(site: Site) -> None:
    assert (await site.value(f"add_user {ALICE}")) == mapping(ALICE)
