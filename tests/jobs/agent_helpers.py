"""Builders for the real-socket agent tests: agents, links, networks and trace collection.

Everything runs on loopback in the test's event loop.  In OpenPortal the upper agent is the
*server* of the lower one, so :func:`link` makes ``lower`` dial ``upper``.  This module does
not import pytest, so :mod:`tests.jobs.agent_process` can share it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import TypeVar

from broadgauge.grammar import UserMapping
from broadgauge.jobs import AgentType
from broadgauge.runtime.agent import Agent, Envelope
from broadgauge.runtime.config import AgentConfig
from broadgauge.runtime.envelope import Handler
from broadgauge.runtime.trace import Action, TraceEvent
from broadgauge.wire import Invite, PeerId, ServiceConfig, Timers

T = TypeVar("T")

#: Fast reconnection so a restarted or late peer is picked up within a fraction of a second.
FAST = Timers(reconnect_initial=0.05, reconnect_max=0.2, handshake=2.0, close=1.0)
ZONE = "default"
USER = "u.p.portal"
MAPPING = UserMapping.parse("u.p.portal:u:portal.p")
#: The four-agent chain of most tests, top first, with the type of each agent.
CHAIN = (
    ("portal", AgentType.PORTAL),
    ("provider", AgentType.PROVIDER),
    ("platform", AgentType.PLATFORM),
    ("instance", AgentType.INSTANCE),
)
CHAIN_PATH = "portal.provider.platform.instance"


def mapping_for(user: str) -> UserMapping:
    """The mapping the test handlers return for ``user`` (``name.project.portal``)."""
    name, project, portal = user.split(".")
    return UserMapping.parse(f"{user}:{name}:{portal}.{project}")


def peer(name: str, zone: str = ZONE) -> PeerId:
    """A neighbour as boards key it."""
    return PeerId(name, zone)


def make_agent(
    name: str,
    agent_type: AgentType,
    *,
    data_dir: str | Path | None = None,
    clock: Callable[[], float] | None = None,
    max_workers: int = 64,
) -> Agent:
    """An agent on an ephemeral loopback port with fast reconnection timers."""
    config = AgentConfig(agent_type, ServiceConfig.create(name, port=0))
    return Agent(
        config,
        data_dir=data_dir,
        timers=FAST,
        clock=clock if clock is not None else time.time,
        max_workers=max_workers,
    )


def link(upper: Agent, lower: Agent) -> Invite:
    """Make ``upper`` serve ``lower`` (``lower`` dials it); ``upper`` must be listening."""
    invite = upper.service.add_client(lower.name, "127.0.0.1")
    lower.service.add_server(invite)
    return invite


async def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until ``predicate()`` holds, polling the event loop."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


def is_connected(agent: Agent, name: str) -> bool:
    """Whether ``agent`` has a live link to ``name``."""
    return any(p.name == name for p in agent.service.connected_peers())


async def wait_linked(a: Agent, b: Agent, timeout: float = 5.0) -> None:
    """Wait until ``a`` and ``b`` are connected and each knows the other's registered type."""

    def ready() -> bool:
        return (
            is_connected(a, b.name)
            and is_connected(b, a.name)
            and a.peer_info(peer(b.name)).agent_type is b.agent_type
            and b.peer_info(peer(a.name)).agent_type is a.agent_type
        )

    await eventually(ready, timeout)


class Traces:
    """Collects the trace events of several agents, in the order they were emitted."""

    def __init__(self, *agents: Agent) -> None:
        self.events: list[TraceEvent] = []
        for agent in agents:
            self.watch(agent)

    def watch(self, agent: Agent) -> None:
        """Start collecting ``agent``'s events."""
        agent.on_trace(self.events.append)

    def of(
        self,
        agent: str | None = None,
        action: Action | None = None,
        job_id: object | None = None,
    ) -> list[TraceEvent]:
        """The events matching every given filter."""
        return [
            e
            for e in self.events
            if (agent is None or e.agent == agent)
            and (action is None or e.action is action)
            and (job_id is None or e.job_id == str(job_id))
        ]

    def actions(self, agent: str, job_id: object) -> list[Action]:
        """What ``agent`` did with one job, in order."""
        return [e.action for e in self.of(agent, job_id=job_id)]

    async def wait_for(
        self, agent: str, action: Action, job_id: object | None = None, timeout: float = 5.0
    ) -> TraceEvent:
        """The first matching event, waiting for it if needed."""
        await eventually(lambda: bool(self.of(agent, action, job_id)), timeout)
        return self.of(agent, action, job_id)[0]


class Recorder:
    """A handler that records its envelopes, optionally waits on a gate, then returns."""

    def __init__(self, result: object = MAPPING, gate: asyncio.Event | None = None) -> None:
        self.result = result
        self.gate = gate
        self.calls: list[Envelope] = []

    async def __call__(self, envelope: Envelope) -> object:
        self.calls.append(envelope)
        if self.gate is not None:
            await self.gate.wait()
        return self.result


class Network:
    """Agents started top-down and linked as in OpenPortal; stopped bottom-up on exit.

    ``await net.start(name, type, dials=[...])`` creates the agent, lets it dial each of the
    (already running) agents named in ``dials``, starts it, and waits until every new link
    is up and both ends have registered.
    """

    def __init__(self) -> None:
        self.agents: dict[str, Agent] = {}
        self.invites: dict[tuple[str, str], Invite] = {}

    def __getitem__(self, name: str) -> Agent:
        return self.agents[name]

    async def start(
        self,
        name: str,
        agent_type: AgentType,
        *,
        dials: Iterable[str] = (),
        listen: bool = True,
        before_start: Callable[[Agent], None] | None = None,
        **options: object,
    ) -> Agent:
        """Create, link and start one agent (see the class docstring)."""
        agent = make_agent(name, agent_type, **options)  # type: ignore[arg-type]
        uppers = [self.agents[upper] for upper in dials]
        for upper in uppers:
            self.invites[(upper.name, name)] = link(upper, agent)
        if before_start is not None:
            before_start(agent)
        await agent.start(listen=listen)
        self.agents[name] = agent
        for upper in uppers:
            await wait_linked(upper, agent)
        return agent

    async def start_instance(self, handler: Handler, **options: object) -> Agent:
        """An ``instance`` that dials the running ``portal`` and runs ``add_user`` with
        ``handler`` (the two-agent network most tests need)."""
        return await self.start(
            "instance",
            AgentType.INSTANCE,
            dials=["portal"],
            listen=False,
            before_start=lambda agent: agent.add_handler("add_user", handler),
            **options,
        )

    async def chain(self, *, listen_last: bool = False) -> tuple[Agent, ...]:
        """Start portal → provider → platform → instance (each dials the one above)."""
        above: list[str] = []
        for index, (name, agent_type) in enumerate(CHAIN):
            last = index == len(CHAIN) - 1
            await self.start(name, agent_type, dials=above, listen=listen_last or not last)
            above = [name]
        return tuple(self.agents[name] for name, _ in CHAIN)

    async def stop(self) -> None:
        """Stop every agent, the last started first."""
        for agent in reversed(list(self.agents.values())):
            await agent.stop()
        self.agents.clear()

    async def __aenter__(self) -> Network:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


async def finished(awaitable: Awaitable[T], timeout: float = 5.0) -> T:
    """Await a run/submit with an outer bound, so a lost result fails fast and clearly."""
    async with asyncio.timeout(timeout):
        return await awaitable
