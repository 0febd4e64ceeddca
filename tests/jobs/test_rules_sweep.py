"""Sweeping published planner rules across a whole demo network on real loopback sockets."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from broadgauge.demo import Network
from broadgauge.jobs.commands import PlannerRulesRequest, PlannerRulesResponse
from broadgauge.jobs.published import PublishedRules
from broadgauge.runtime.rules_sweep import MAX_ENTRIES_PER_CHILD, SweepResult
from broadgauge.wire import MessageTooLarge, PeerId
from tests.agents.network import demo_network

__all__ = ["demo_network"]  # the shared demo-network fixture

INSTANCE_PATH = "portal.provider.platform.instance"
PLATFORM_PATH = "portal.provider.platform"
INSTANCE_DOC: dict[str, Any] = {
    "site": {"name": "physics-cluster", "cores": 512},
    "rules": [{"match": "add_user", "action": "allow"}],
}
PLATFORM_DOC: dict[str, Any] = {"site": {"name": "platform-wide"}, "rules": []}
#: A hang guard only: every sweep here should finish in a few seconds at most.
GUARD = 10.0


@pytest.fixture
def network(demo_network: Network) -> Network:
    """The demo network publishing only what each test publishes: the rules the demo's
    notebook instance publishes by default are withdrawn."""
    demo_network.agents["jupyter"].planner_rules.publish(None)
    return demo_network


def audit(network: Network, agent: str) -> list[dict[str, Any]]:
    """Every entry of ``agent``'s audit log."""
    path = network.root / agent / "audit.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def planner_operations(network: Network, agent: str) -> list[dict[str, Any]]:
    """The planner-rules operations ``agent`` audited."""
    return [
        e
        for e in audit(network, agent)
        if e["action"] == "operation" and "planner rules" in (e["operation"] or "")
    ]


async def until(condition: Any, timeout: float = GUARD) -> None:
    """Wait until ``condition()`` holds (a hang guard, not a timing assertion)."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def stop_agent(network: Network, name: str) -> None:
    """Stop one agent the way :meth:`Network.stop` does, and forget it."""
    await network.roles[name].stop()
    await network.agents[name].stop()
    await network.roles[name].close()
    del network.agents[name], network.roles[name]


async def test_bridge_sees_what_the_instance_publishes(network: Network) -> None:
    network.agents["instance"].planner_rules.publish(INSTANCE_DOC)

    async with asyncio.timeout(GUARD):
        result = await network.agents["bridge"].planner_rules.collect()

    assert result.published == (PublishedRules(INSTANCE_PATH, INSTANCE_DOC),)
    assert result.published[0].document == INSTANCE_DOC
    assert result.silent == ()
    assert result.refused == ()
    # Each agent on the way answered the one above it, and said so in its audit log.
    for name, above in (
        ("portal", "bridge"),
        ("provider", "portal"),
        ("platform", "provider"),
        ("instance", "platform"),
    ):
        answers = [e["operation"] for e in planner_operations(network, name)]
        assert answers == [f"planner rules for {above}@default: 1 published, 0 silent"]
    # Leaves are never asked.
    for leaf in ("account", "filesystem", "scheduler"):
        assert planner_operations(network, leaf) == []


async def test_nothing_published_gives_an_empty_sweep(network: Network) -> None:
    # Withdraw anything the demo publishes by default.
    for agent in network.agents.values():
        agent.planner_rules.publish(None)
    async with asyncio.timeout(GUARD):
        result = await network.agents["bridge"].planner_rules.collect()
    assert result == SweepResult((), (), ())


async def test_bridge_sees_every_level_that_publishes(network: Network) -> None:
    network.agents["instance"].planner_rules.publish(INSTANCE_DOC)
    network.agents["platform"].planner_rules.publish(PLATFORM_DOC)

    async with asyncio.timeout(GUARD):
        result = await network.agents["bridge"].planner_rules.collect()

    assert sorted(result.published, key=lambda p: p.destination) == [
        PublishedRules(PLATFORM_PATH, PLATFORM_DOC),
        PublishedRules(INSTANCE_PATH, INSTANCE_DOC),
    ]
    assert result.silent == ()

    # Withdrawing the platform's document removes it from the next sweep.
    network.agents["platform"].planner_rules.publish(None)
    async with asyncio.timeout(GUARD):
        again = await network.agents["bridge"].planner_rules.collect()
    assert again.published == (PublishedRules(INSTANCE_PATH, INSTANCE_DOC),)


async def test_a_stopped_instance_is_listed_as_silent(network: Network) -> None:
    network.agents["platform"].planner_rules.publish(PLATFORM_DOC)
    network.agents["instance"].planner_rules.publish(INSTANCE_DOC)
    platform = network.agents["platform"]
    instance_peer = PeerId("instance", "default")
    assert instance_peer in platform.service.connected_peers()

    await stop_agent(network, "instance")
    await until(lambda: instance_peer not in platform.service.connected_peers())

    async with asyncio.timeout(GUARD):
        result = await network.agents["bridge"].planner_rules.collect()

    assert result.silent == (INSTANCE_PATH,)
    # The rest of the hierarchy still answers.
    assert result.published == (PublishedRules(PLATFORM_PATH, PLATFORM_DOC),)


async def test_an_instance_cannot_ask_the_agents_above_it(
    network: Network, monkeypatch: pytest.MonkeyPatch
) -> None:
    instance = network.agents["instance"]
    network.agents["platform"].planner_rules.publish(PLATFORM_DOC)
    instance.planner_rules.publish(INSTANCE_DOC)

    # Its own sweep asks nobody: the platform is above it, its leaves publish nothing.
    async with asyncio.timeout(GUARD):
        own = await instance.planner_rules.collect()
    assert own == SweepResult((PublishedRules("instance", INSTANCE_DOC),), (), ())

    # Asking the platform directly is refused: no answer, and an audit entry.
    responses: list[tuple[PeerId, PlannerRulesResponse]] = []
    monkeypatch.setattr(
        instance.planner_rules,
        "received_response",
        lambda peer, response: responses.append((peer, response)),
    )
    platform_peer = PeerId("platform", "default")
    await instance.send_control(platform_peer, PlannerRulesRequest(("instance",), 1000))

    def refused() -> list[dict[str, Any]]:
        return [
            e
            for e in planner_operations(network, "platform")
            if e["operation"] == "planner rules request from instance@default"
        ]

    await until(lambda: bool(refused()))
    [entry] = refused()
    assert entry["outcome"].startswith("refused")

    # A barrier: the bridge's sweep makes the platform send to the instance over the same
    # link, so an answer to the refused request would have arrived before this completes.
    async with asyncio.timeout(GUARD):
        swept = await network.agents["bridge"].planner_rules.collect()
    assert {p.destination for p in swept.published} == {PLATFORM_PATH, INSTANCE_PATH}
    assert responses == []
    # The platform answered its provider only, never the instance.
    answered = [e["operation"] for e in planner_operations(network, "platform")]
    assert not any(op.startswith("planner rules for instance") for op in answered)


async def test_a_leaf_cannot_ask_its_instance(network: Network) -> None:
    network.agents["instance"].planner_rules.publish(INSTANCE_DOC)
    account = network.agents["account"]
    await account.send_control(PeerId("instance", "default"), PlannerRulesRequest((), 1000))

    def refused() -> list[dict[str, Any]]:
        return [
            e
            for e in planner_operations(network, "instance")
            if e["operation"] == "planner rules request from account@default"
        ]

    await until(lambda: bool(refused()))
    assert refused()[0]["outcome"].startswith("refused")


async def test_entries_for_paths_a_child_does_not_lead_to_are_dropped(
    network: Network, monkeypatch: pytest.MonkeyPatch
) -> None:
    forged = {"site": {"name": "forged"}, "rules": [{"match": "*", "action": "allow"}]}

    async def lying_collect(*args: object, **kwargs: object) -> SweepResult:
        return SweepResult(
            (
                PublishedRules("elsewhere", forged),
                PublishedRules("instance", INSTANCE_DOC),
                PublishedRules("instances.x", forged),
            )
        )

    monkeypatch.setattr(network.agents["instance"].planner_rules, "collect", lying_collect)

    async with asyncio.timeout(GUARD):
        swept = await network.agents["bridge"].planner_rules.collect()
    assert swept.published == (PublishedRules(INSTANCE_PATH, INSTANCE_DOC),)
    assert swept.silent == ()

    async with asyncio.timeout(GUARD):
        at_platform = await network.agents["platform"].planner_rules.collect()
    assert at_platform.published == (PublishedRules("platform.instance", INSTANCE_DOC),)
    assert set(at_platform.refused) == {"elsewhere", "instances.x"}

    refusals = [e for e in planner_operations(network, "platform") if e["outcome"] == "refused"]
    # Once for the bridge's sweep, once for the platform's own.
    assert len(refusals) == 2
    for entry in refusals:
        assert entry["operation"].startswith("planner rules from instance@default")
        assert "elsewhere" in entry["operation"]
        assert "instances.x" in entry["operation"]


async def test_a_slow_child_is_silent_and_does_not_hold_up_the_sweep(
    network: Network, monkeypatch: pytest.MonkeyPatch
) -> None:
    network.agents["platform"].planner_rules.publish(PLATFORM_DOC)
    release = asyncio.Event()

    async def slow_collect(*args: object, **kwargs: object) -> SweepResult:
        await release.wait()  # never set: the answer never comes
        return SweepResult((PublishedRules("instance", INSTANCE_DOC),))

    monkeypatch.setattr(network.agents["instance"].planner_rules, "collect", slow_collect)

    async with asyncio.timeout(5):
        result = await network.agents["bridge"].planner_rules.collect(0.5)

    assert result.silent == (INSTANCE_PATH,)
    assert result.published == (PublishedRules(PLATFORM_PATH, PLATFORM_DOC),)


async def test_a_child_not_seen_since_its_parent_started_is_silent(network: Network) -> None:
    platform = network.agents["platform"]
    instance_peer = PeerId("instance", "default")
    await stop_agent(network, "instance")
    await until(lambda: instance_peer not in platform.service.connected_peers())
    # As if the platform had restarted while the instance was down: it never saw a Register.
    del platform.peer_types[instance_peer]

    async with asyncio.timeout(GUARD):
        result = await network.agents["bridge"].planner_rules.collect()

    assert result.silent == (INSTANCE_PATH,)


async def test_a_late_answer_is_not_taken_for_the_answer_to_a_newer_request(
    network: Network,
) -> None:
    # The instance answers too late for the first sweep; its answer carries the first
    # request's id, so the second sweep must not take it for its own.
    instance = network.agents["instance"]
    platform = network.agents["platform"]
    instance.planner_rules.publish(INSTANCE_DOC)
    real_collect = instance.planner_rules.collect
    calls = 0

    async def first_slow(*args: Any, **kwargs: Any) -> SweepResult:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.sleep(0.6)
            return SweepResult((PublishedRules("instance", {"site": {"stale": True}}),))
        # The second answer comes after the stale one, which arrives while we wait.
        await asyncio.sleep(0.6)
        return await real_collect(*args, **kwargs)

    instance.planner_rules.collect = first_slow  # type: ignore[method-assign]
    async with asyncio.timeout(GUARD):
        first = await platform.planner_rules.collect(0.3)
        assert first.silent == ("platform.instance",)
        second = await platform.planner_rules.collect(3.0)
    assert second.published == (PublishedRules("platform.instance", INSTANCE_DOC),)


async def test_an_answer_too_big_for_one_frame_sends_what_fits_and_names_the_rest(
    network: Network, monkeypatch: pytest.MonkeyPatch
) -> None:
    network.agents["instance"].planner_rules.publish(INSTANCE_DOC)
    network.agents["platform"].planner_rules.publish(PLATFORM_DOC)
    platform = network.agents["platform"]
    real_send = platform.send_control

    async def small_frames(peer: PeerId, command: Any) -> None:
        if isinstance(command, PlannerRulesResponse) and len(command.published) > 1:
            raise MessageTooLarge("frame too large for the test")
        await real_send(peer, command)

    monkeypatch.setattr(platform, "send_control", small_frames)
    async with asyncio.timeout(GUARD):
        result = await network.agents["bridge"].planner_rules.collect()
    assert [p.destination for p in result.published] == [PLATFORM_PATH]
    assert result.silent == (INSTANCE_PATH,)


async def test_one_child_cannot_pass_up_more_than_its_share(
    network: Network, monkeypatch: pytest.MonkeyPatch
) -> None:
    many = tuple(
        PublishedRules(f"instance.leaf{i}", {"rules": []}) for i in range(MAX_ENTRIES_PER_CHILD + 5)
    )

    async def flood(*args: Any, **kwargs: Any) -> SweepResult:
        return SweepResult(many)

    monkeypatch.setattr(network.agents["instance"].planner_rules, "collect", flood)
    async with asyncio.timeout(GUARD):
        result = await network.agents["platform"].planner_rules.collect()
    assert len(result.published) == MAX_ENTRIES_PER_CHILD
    assert len(result.refused) == 5
    assert any(e["outcome"] == "refused: excess" for e in planner_operations(network, "platform"))


async def test_a_bridge_answers_no_one(network: Network) -> None:
    portal = network.agents["portal"]
    answered: list[object] = []
    portal.planner_rules.received_response = lambda peer, response: answered.append(response)  # type: ignore[method-assign]
    await portal.send_control(PeerId("bridge", "default"), PlannerRulesRequest((), 1000, "x"))
    await until(
        lambda: any(
            e["outcome"] == "refused: not above" for e in planner_operations(network, "bridge")
        )
    )
    assert answered == []
