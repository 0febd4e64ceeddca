"""The agent's parts against a small fake of their context: no sockets, no agent.

The control plane takes an :class:`~broadgauge.runtime.context.AgentContext`, not the whole
agent, so a health sweep can be driven and watched here with a fake that records what the
control plane sends.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from broadgauge.jobs import AgentType, Board, HealthCheck, HealthResponse, Job, WireCommand
from broadgauge.jobs.directions import Link
from broadgauge.runtime.context import AgentContext
from broadgauge.runtime.control import ControlPlane
from broadgauge.runtime.envelope import PeerInfo
from broadgauge.runtime.trace import TraceEvent
from broadgauge.wire import PeerId, ServiceConfig

T0 = 1_717_400_000.0
PORTAL = PeerId("portal", "default")
PLATFORM = PeerId("platform", "default")


@dataclass
class FakeLinks:
    peers: list[PeerId]
    config: ServiceConfig = field(default_factory=lambda: ServiceConfig.create("provider"))

    def connected_peers(self) -> list[PeerId]:
        return list(self.peers)

    async def disconnect(self, name: str, zone: str) -> None:
        self.peers = [p for p in self.peers if (p.name, p.zone) != (name, zone)]


@dataclass
class FakeAgent:
    """Just enough of an agent for its control plane; records what is sent."""

    name: str = "provider"
    agent_type: AgentType = AgentType.PROVIDER
    service: FakeLinks = field(default_factory=lambda: FakeLinks([PORTAL, PLATFORM]))
    started_at: datetime = datetime(2024, 6, 3, tzinfo=UTC)
    sent: list[tuple[PeerId, WireCommand]] = field(default_factory=list)
    on_send: Callable[[PeerId, WireCommand], Awaitable[None]] | None = None
    board_list: list[Board] = field(default_factory=list)
    audit: list[tuple[str, str]] = field(default_factory=list)

    @property
    def recent_events(self) -> list[TraceEvent]:
        return []

    def clock(self) -> float:
        return T0

    def peer_info(self, peer: PeerId) -> PeerInfo:
        link = Link.UP if peer == PORTAL else Link.DOWN
        kind = AgentType.PORTAL if peer == PORTAL else AgentType.PLATFORM
        return PeerInfo(peer, link, kind)

    def peer_named(self, name: str, zone: str | None) -> PeerId:
        return PeerId(name, zone or "default")

    async def send_control(self, peer: PeerId, command: WireCommand) -> None:
        self.sent.append((peer, command))
        if self.on_send is not None:
            await self.on_send(peer, command)

    def boards(self) -> list[Board]:
        return self.board_list

    def boards_by_peer(self) -> list[tuple[PeerId, Board]]:
        return []

    def clear_boards(self) -> None:
        self.board_list = []

    def busy_workers(self) -> int:
        return 3

    def audit_operation(self, operation: str, outcome: str = "ok") -> None:
        self.audit.append((operation, outcome))


def context(agent: FakeAgent) -> AgentContext:
    return agent  # mypy checks here that the fake meets the protocol


async def test_a_health_check_from_above_sweeps_below_and_answers() -> None:
    agent = FakeAgent()
    control = ControlPlane(context(agent))
    platform_health = ControlPlane(context(FakeAgent(name="platform"))).own_health()

    async def platform_answers(peer: PeerId, command: WireCommand) -> None:
        if peer == PLATFORM and isinstance(command, HealthCheck):
            await asyncio.sleep(0)
            control.received_health_response(PLATFORM, HealthResponse(platform_health))

    agent.on_send = platform_answers
    await control.received_health_check(PORTAL, HealthCheck(("portal",)))

    # Asked below (not back up to the portal that asked), then answered the portal.
    assert [peer for peer, _ in agent.sent] == [PLATFORM, PORTAL]
    asked = agent.sent[0][1]
    assert isinstance(asked, HealthCheck) and asked.visited == ("portal", "provider")
    answer = agent.sent[1][1]
    assert isinstance(answer, HealthResponse)
    assert answer.health.name == "provider" and answer.health.worker_count == 3
    assert [p.name for p in answer.health.peers.values()] == ["platform"]


async def test_own_health_counts_the_boards_jobs() -> None:
    board = Board("portal@default")
    job = Job.parse("portal.provider get_projects portal", now=T0)
    board.add(job, T0)
    agent = FakeAgent(board_list=[board])
    info = ControlPlane(context(agent)).own_health()
    assert info.active_jobs + info.pending_jobs >= 1
    assert info.worker_count == 3
    # Real process and host figures, as the reference reports (never the zeros of a stub).
    assert info.memory_bytes > 0 and info.system_memory_total > info.memory_bytes
    assert info.system_cpus == os.cpu_count()
