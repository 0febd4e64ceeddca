"""Health over real loopback sockets: the cascade, its limits, and the JSON (notes §3.6)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

from broadgauge.jobs import AgentType, HealthInfo
from broadgauge.runtime.agent import Agent

from .agent_helpers import (
    CHAIN_PATH,
    USER,
    Network,
    Recorder,
    eventually,
    finished,
    is_connected,
)


def paths(info: HealthInfo, above: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every root-to-leaf chain of names in a health tree."""
    here = (*above, info.name)
    if not info.peers:
        yield here
    for name, nested in info.peers.items():
        assert name == nested.name
        yield from paths(nested, here)


def names(info: HealthInfo) -> list[str]:
    """Every name in a health tree, depth first."""
    return [info.name, *(n for nested in info.peers.values() for n in names(nested))]


async def test_health_of_a_chain_nests_every_agent_once() -> None:
    async with Network() as net:
        portal, _provider, _platform, instance = await net.chain()
        instance.add_handler("add_user", Recorder())
        await finished(portal.run(CHAIN_PATH, f"add_user {USER}", timeout=5))

        started = time.monotonic()
        health = await portal.health()
        assert time.monotonic() - started < 0.5  # every peer answered; no one timed out

        assert list(paths(health)) == [("portal", "provider", "platform", "instance")]
        provider = health.peers["provider"]
        platform = provider.peers["platform"]
        leaf = platform.peers["instance"]
        kinds = [(h.name, h.agent_type, h.connected) for h in (health, provider, platform, leaf)]
        assert kinds == [
            ("portal", AgentType.PORTAL, True),
            ("provider", AgentType.PROVIDER, True),
            ("platform", AgentType.PLATFORM, True),
            ("instance", AgentType.INSTANCE, True),
        ]
        assert leaf.peers == {}
        # The job counters come from each agent's boards: the ends see a completed job,
        # the agents in between see it in flight on both of their boards.
        assert (health.completed_jobs, health.successful_jobs, health.inflight_jobs) == (1, 1, 0)
        assert (leaf.completed_jobs, leaf.successful_jobs, leaf.inflight_jobs) == (1, 1, 0)
        assert (provider.active_jobs, provider.inflight_jobs, provider.completed_jobs) == (2, 2, 0)
        assert platform.inflight_jobs == 2
        for info in (health, provider, platform, leaf):
            assert info.engine == "templemeads"
            assert info.version == "0.32.2"
            assert info.uptime_seconds >= 0

        text = health.to_json()
        assert HealthInfo.from_json(text) == health
        assert HealthInfo.from_json(text).to_json() == text


async def test_an_agent_in_the_middle_reports_both_directions() -> None:
    async with Network() as net:
        _portal, _provider, platform, _instance = await net.chain()
        health = await platform.health()
        assert sorted(paths(health)) == [
            ("platform", "instance"),
            ("platform", "provider", "portal"),
        ]


async def test_leaf_agents_do_not_cascade() -> None:
    async with Network() as net:
        portal, _provider, _platform, instance = await net.chain(listen_last=True)
        account = await net.start("account", AgentType.ACCOUNT, dials=["instance"])
        # A second neighbour of the account, which a cascade would reach.
        await net.start("spare", AgentType.FILESYSTEM, dials=["account"], listen=False)
        assert is_connected(account, "spare")

        health = await portal.health()
        assert list(paths(health)) == [("portal", "provider", "platform", "instance", "account")]
        nested = health.peers["provider"].peers["platform"].peers["instance"].peers["account"]
        assert (nested.agent_type, nested.peers) == (AgentType.ACCOUNT, {})

        own = await account.health()
        assert (own.name, own.peers) == ("account", {})
        assert "account" in (await instance.health()).peers


async def test_a_disconnected_peer_is_simply_absent() -> None:
    async with Network() as net:
        portal, _provider, platform, instance = await net.chain()
        await instance.stop()
        await eventually(lambda: not is_connected(platform, "instance"))

        started = time.monotonic()
        health = await portal.health()
        assert time.monotonic() - started < 0.5
        assert list(paths(health)) == [("portal", "provider", "platform")]
        assert health.peers["provider"].peers["platform"].peers == {}


async def test_health_in_a_cycle_never_revisits_an_agent_on_a_path() -> None:
    async with Network() as net:
        portal, provider, platform, instance = await net.chain(listen_last=True)
        # Close the ring: the portal also dials the instance directly.
        extra = instance.service.add_client("portal", "127.0.0.1")
        portal.service.add_server(extra)
        await eventually(lambda: is_connected(portal, "instance"))
        await eventually(lambda: is_connected(instance, "portal"))

        async with asyncio.timeout(3):
            health = await portal.health()
        chains = list(paths(health))
        for chain in chains:
            assert len(chain) == len(set(chain)), chain
            assert chain[0] == "portal"
        # Both ways round the ring are explored, each to its end.
        assert ("portal", "provider", "platform", "instance") in chains
        assert ("portal", "instance", "platform", "provider") in chains
        assert set(names(health)) == {"portal", "provider", "platform", "instance"}
        for agent in (provider, platform):
            for chain in paths(await agent.health()):
                assert len(chain) == len(set(chain)), chain


async def test_portals_do_not_query_portals() -> None:
    async with Network() as net:
        upper = await net.start("portal", AgentType.PORTAL)
        await net.start("other", AgentType.PORTAL, dials=["portal"], listen=False)
        await net.start("provider", AgentType.PROVIDER, dials=["portal"], listen=False)
        health = await upper.health()
        assert sorted(health.peers) == ["provider"]


async def test_concurrent_health_queries_each_get_the_answer() -> None:
    """Regression: one waiter per neighbour, so one of two concurrent sweeps lost the answer."""
    async with Network() as net:
        portal = await net.start("portal", AgentType.PORTAL)
        await net.start("provider", AgentType.PROVIDER, dials=["portal"], listen=False)

        async def ask(agent: Agent) -> HealthInfo:
            return await agent.health()

        first, second = await asyncio.gather(ask(portal), ask(portal))
        assert sorted(first.peers) == sorted(second.peers) == ["provider"]
