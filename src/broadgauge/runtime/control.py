"""The agent's control plane: health sweeps, diagnostics and restarts (notes §3.6).

These travel beside jobs, never on a board.  ``Restart`` and ``DiagnosticsRequest`` carry a
path *relative to the receiver*: empty, or this agent's own name, means "you"; otherwise the
first element names the neighbour to pass it to, with the rest of the path.  Leaf agents
(account, filesystem, scheduler) never pass them on, and a portal ignores all three from
another portal, so one portal cannot restart or inspect another's site.

A restart is fire-and-forget on the wire, and an agent that cannot pass a request on has no
way to say so (the reference logs it and drops it).  So the agent that starts a restart or a
diagnostics request checks the whole path first (:meth:`ControlPlane.check_path`): the first
hop against its own neighbours, every further hop against the health tree its sweep returns.
A path naming an agent that is not there is refused at once, the same way for both, instead
of a restart answered "sent" that goes nowhere or a diagnostics request that times out.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections import deque
from datetime import UTC, datetime

from broadgauge.jobs.agent_type import AgentType
from broadgauge.jobs.commands import (
    HARD_RESTART,
    SOFT_RESTART,
    DiagnosticsRequest,
    DiagnosticsResponse,
    HealthCheck,
    HealthResponse,
    Restart,
    Update,
)
from broadgauge.jobs.health import DiagnosticsReport, HealthInfo
from broadgauge.runtime.context import AgentContext
from broadgauge.runtime.diagnostics import build_report
from broadgauge.runtime.envelope import JobRefused
from broadgauge.runtime.system import ProcessSampler
from broadgauge.wire import PeerId

log = logging.getLogger("broadgauge.jobs")

HEALTH_WAIT = 0.5
DIAGNOSTICS_WAIT = 5.0
SOFT_RESTART_MESSAGE = "Agent soft restart - job cancelled"
RESTARTING_MESSAGE = "Agent is performing a soft restart - please retry"
#: Exit status a process uses after a hard restart, so its service manager starts it again.
HARD_RESTART_EXIT = 75

_Requester = PeerId | asyncio.Future[DiagnosticsReport]


def _final_hop(target: PeerId, rest: str) -> str:
    """The name of the agent a request sent to ``target`` with ``rest`` is for."""
    hops = [hop for hop in rest.split(".") if hop]
    return hops[-1].partition("@")[0] if hops else target.name


class ControlPlane:
    """Health, diagnostics and restart handling for one :class:`Agent`."""

    def __init__(self, agent: AgentContext) -> None:
        self.agent = agent
        self.restarting = False
        self.hard_restart = asyncio.Event()
        self.system = ProcessSampler()
        # FIFO per neighbour: concurrent sweeps may ask the same neighbour at once.
        self._health_waiters: dict[PeerId, deque[asyncio.Future[HealthInfo]]] = {}
        # Per neighbour, who asked for whose report: answers are matched by the agent that
        # wrote them, because requests for agents at different depths come back out of order.
        self._diagnostics_waiters: dict[PeerId, deque[tuple[str, _Requester]]] = {}

    # --- routing by relative path --------------------------------------------------------

    def route(self, path: str) -> tuple[PeerId | None, str]:
        """``(None, "")`` if ``path`` means this agent, else ``(neighbour, rest of path)``."""
        parts = [p for p in path.split(".") if p]
        me = self.agent.name
        if not parts or (len(parts) == 1 and parts[0].partition("@")[0] == me):
            return None, ""
        if parts[0].partition("@")[0] == me:
            parts = parts[1:]
        name, _, zone = parts[0].partition("@")
        return self.agent.peer_named(name, zone or None), ".".join(parts[1:])

    async def check_path(self, path: str, tree: HealthInfo | None = None) -> None:
        """Raise :class:`JobRefused` if a hop of ``path`` is not a connected neighbour.

        The first hop is checked against this agent's own neighbours (as :meth:`route`
        does), every further one against the peers its predecessor reported in this agent's
        health sweep (``tree``, if the caller has just taken one).  A hop naming an agent
        already passed (a path that turns back) ends the check: the sweep never lists an
        agent twice.
        """
        target, rest = self.route(path)
        if target is None or not rest:
            return
        if tree is None:
            tree = await self.health()
        passed = {self.agent.name, target.name}
        node = tree.peers.get(target.name)
        if node is None:
            raise JobRefused(f"{self.agent.name} has no connected neighbour called {target.name}")
        hops = [hop.partition("@")[0] for hop in rest.split(".") if hop]
        for name in hops:
            if name in passed:
                return
            if node.agent_type.is_leaf:
                raise JobRefused(
                    f"{node.name} is a leaf ({node.agent_type.display}) agent: "
                    f"it passes nothing on to {name}"
                )
            child = node.peers.get(name)
            if child is None:
                raise JobRefused(f"{node.name} has no connected neighbour called {name}")
            passed.add(name)
            node = child

    def _ignores(self, peer: PeerId) -> bool:
        agent = self.agent
        return (
            agent.agent_type is AgentType.PORTAL
            and agent.peer_info(peer).agent_type is AgentType.PORTAL
        )

    # --- health --------------------------------------------------------------------------

    def own_health(self) -> HealthInfo:
        """This agent's HealthInfo, without peers."""
        agent = self.agent
        now = datetime.now(UTC)
        info = HealthInfo.new(
            agent.name, agent.agent_type, connected=True, start_time=agent.started_at, now=now
        )
        stats = [board.stats(agent.name, agent.clock()) for board in agent.boards()]
        system = self.system.sample()
        return dataclasses.replace(
            info,
            memory_bytes=system.memory_bytes,
            cpu_percent=system.cpu_percent,
            system_memory_total=system.system_memory_total,
            system_cpus=system.system_cpus,
            active_jobs=sum(s.active for s in stats),
            pending_jobs=sum(s.pending for s in stats),
            running_jobs=sum(s.running for s in stats),
            completed_jobs=sum(s.completed for s in stats),
            duplicate_jobs=sum(s.duplicates for s in stats),
            successful_jobs=sum(s.successful for s in stats),
            expired_jobs=sum(s.expired for s in stats),
            errored_jobs=sum(s.errored for s in stats),
            inflight_jobs=sum(s.in_flight for s in stats),
            queued_jobs=sum(s.queued for s in stats),
            worker_count=agent.busy_workers(),
        )

    async def health(
        self, visited: tuple[str, ...] = (), exclude: PeerId | None = None
    ) -> HealthInfo:
        """HealthInfo with the answers of every neighbour not yet visited nested in it."""
        agent = self.agent
        info = self.own_health()
        if agent.agent_type.is_leaf:
            return info
        visited = (*visited, agent.name)
        asks = [
            peer
            for peer in agent.service.connected_peers()
            if peer != exclude and peer.name not in visited and not self._ignores(peer)
        ]
        answers = await asyncio.gather(*(self._ask_health(peer, visited) for peer in asks))
        for answer in answers:
            if answer is not None:
                info = info.with_peer(answer)
        return info

    async def _ask_health(self, peer: PeerId, visited: tuple[str, ...]) -> HealthInfo | None:
        future: asyncio.Future[HealthInfo] = asyncio.get_running_loop().create_future()
        waiting = self._health_waiters.setdefault(peer, deque())
        waiting.append(future)
        try:
            await self.agent.send_control(peer, HealthCheck(visited))
            async with asyncio.timeout(HEALTH_WAIT):
                return await future
        except TimeoutError:
            return None
        finally:
            if future in waiting:
                waiting.remove(future)

    async def received_health_check(self, peer: PeerId, check: HealthCheck) -> None:
        """Answer a neighbour's HealthCheck with our own sweep below us."""
        if self._ignores(peer):
            return
        info = await self.health(check.visited, exclude=peer)
        await self.agent.send_control(peer, HealthResponse(info))

    def received_health_response(self, peer: PeerId, response: HealthResponse) -> None:
        """Hand an answer to the sweep waiting for it."""
        waiting = self._health_waiters.get(peer)
        while waiting:
            waiter = waiting.popleft()
            if not waiter.done():
                waiter.set_result(response.health)
                return

    # --- diagnostics ---------------------------------------------------------------------

    def report(self) -> DiagnosticsReport:
        """This agent's diagnostics report."""
        agent = self.agent
        jobs = [job for board in agent.boards() for job in board.jobs()]
        config = agent.service.config
        connected = set(agent.service.connected_peers())
        peers = [PeerId(e.name, e.zone) for e in config.servers]
        peers += [PeerId(e.name, e.zone) for e in config.clients]
        warnings = [f"{peer} is not connected" for peer in peers if peer not in connected]
        return build_report(agent.name, jobs, agent.recent_events, warnings, agent.clock())

    async def diagnostics(
        self, path: str = "", tree: HealthInfo | None = None
    ) -> DiagnosticsReport:
        """The report of the agent at ``path`` (relative to this one).

        ``tree``, a health sweep just taken, checks the path instead of a sweep of its own:
        a caller asking every agent at once (the operator console) sweeps once, not once each.
        """
        target, rest = self.route(path)
        if target is None:
            return self.report()
        await self.check_path(path, tree)
        future: asyncio.Future[DiagnosticsReport] = asyncio.get_running_loop().create_future()
        waiting = self._diagnostics_waiters.setdefault(target, deque())
        entry: tuple[str, _Requester] = (_final_hop(target, rest), future)
        waiting.append(entry)
        try:
            await self.agent.send_control(target, DiagnosticsRequest(rest))
            async with asyncio.timeout(DIAGNOSTICS_WAIT):
                return await future
        finally:
            if entry in waiting:
                waiting.remove(entry)

    async def received_diagnostics_request(self, peer: PeerId, request: DiagnosticsRequest) -> None:
        """Answer, or pass the request on towards its target."""
        if self._ignores(peer):
            return
        target, rest = self.route(request.destination)
        if target is None:
            await self.agent.send_control(peer, DiagnosticsResponse(self.report()))
        elif self.agent.agent_type.is_leaf:
            log.warning("%s: leaf agents do not forward diagnostics requests", self.agent.name)
        else:
            waiting = self._diagnostics_waiters.setdefault(target, deque())
            waiting.append((_final_hop(target, rest), peer))
            await self.agent.send_control(target, DiagnosticsRequest(rest))

    async def received_diagnostics_response(
        self, peer: PeerId, response: DiagnosticsResponse
    ) -> None:
        """Return a report to whoever asked for it (us, or the neighbour we relayed for)."""
        waiting = self._diagnostics_waiters.get(peer)
        if not waiting:
            log.info("%s: unsolicited diagnostics from %s", self.agent.name, peer)
            return
        # The oldest request for this agent's report; else the oldest (first in, first out,
        # for an agent whose report names it differently).
        name = response.report.agent_name
        entry = next((e for e in waiting if e[0] == name), waiting[0])
        waiting.remove(entry)
        requester = entry[1]
        if isinstance(requester, asyncio.Future):
            if not requester.done():
                requester.set_result(response.report)
        else:
            await self.agent.send_control(requester, response)

    # --- restarts ------------------------------------------------------------------------

    async def restart(self, restart_type: str, path: str = "") -> None:
        """Restart the agent at ``path`` (relative to this one): ``soft`` or ``hard``."""
        if restart_type not in (SOFT_RESTART, HARD_RESTART):
            raise ValueError(f"restart type must be soft or hard, not {restart_type!r}")
        target, rest = self.route(path)
        if target is None:
            await self._restart_self(restart_type)
        else:
            await self.check_path(path)
            await self.agent.send_control(target, Restart(restart_type, rest))

    async def received_restart(self, peer: PeerId, restart: Restart) -> None:
        """Restart ourselves, or pass the order on towards its target."""
        if self._ignores(peer):
            return
        try:
            target, rest = self.route(restart.destination)
        except JobRefused as exc:
            # Fire-and-forget: there is no one to tell but the log (as the reference does).
            log.warning("%s: restart from %s not passed on: %s", self.agent.name, peer, exc)
            return
        if target is None:
            log.warning(
                "%s: %s restart requested by %s", self.agent.name, restart.restart_type, peer
            )
            await self._restart_self(restart.restart_type)
        elif self.agent.agent_type.is_leaf:
            log.warning("%s: leaf agents do not forward restarts", self.agent.name)
        else:
            await self.agent.send_control(target, Restart(restart.restart_type, rest))

    async def _restart_self(self, restart_type: str) -> None:
        if restart_type == HARD_RESTART:
            # The process owner (the CLI) exits, and its service manager starts it again.
            self.hard_restart.set()
            return
        if restart_type != SOFT_RESTART:
            log.warning("%s: unknown restart type %r ignored", self.agent.name, restart_type)
            return
        agent = self.agent
        self.restarting = True
        try:
            now = agent.clock()
            for peer, board in agent.boards_by_peer():
                for job in board.jobs():
                    if job.is_finished or job.is_created:
                        continue
                    cancelled = job.errored(SOFT_RESTART_MESSAGE, now=now)
                    await agent.send_control(peer, Update(cancelled))
            agent.clear_boards()
            for peer in agent.service.connected_peers():
                await agent.service.disconnect(peer.name, peer.zone)
        finally:
            self.restarting = False
