"""Gathering published planner rules down the hierarchy (a Broadgauge extension).

The bridge asks its portal, the portal its providers, each provider its platforms, each
platform its instances: ``PlannerRulesRequest`` goes down, ``PlannerRulesResponse`` comes
back up with every document published at or below the answerer (see
:mod:`broadgauge.jobs.published`).  The directions are the job directions of
:mod:`broadgauge.jobs.directions`: an agent answers only a neighbour above it and asks only
neighbours below it, so a compromised instance cannot learn what its siblings publish, and one
portal cannot read another's site.  Leaf agents (account, filesystem, scheduler) publish
nothing and are not asked.

Each level waits a little less than its asker does (``budget_ms``), so a slow branch is
reported as *silent* instead of silencing the whole sweep.  A Rust agent does not know the
command: it logs it as unreadable and never answers, and shows up as silent too.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from broadgauge.jobs.agent_type import AgentType
from broadgauge.jobs.commands import PlannerRulesRequest, PlannerRulesResponse
from broadgauge.jobs.directions import Link, is_above
from broadgauge.jobs.published import PublishedRules, accept_from_child, check_document
from broadgauge.runtime.context import AgentContext
from broadgauge.wire import MessageTooLarge, PeerId

if TYPE_CHECKING:
    from collections.abc import Mapping

log = logging.getLogger("broadgauge.jobs.rules")

#: How long the agent that starts a sweep waits, unless told otherwise.
DEFAULT_BUDGET = 2.0
#: Each level keeps this share of its own budget for itself, to answer in time.
_CHILD_SHARE = 0.8
_MIN_CHILD_BUDGET = 0.05
#: Published entries one neighbour may pass up in one answer (the rest are refused).
MAX_ENTRIES_PER_CHILD = 1000


@dataclass(frozen=True)
class SweepResult:
    """Every published document reachable below an agent, and who did not answer."""

    published: tuple[PublishedRules, ...] = ()
    silent: tuple[str, ...] = ()
    #: Paths a neighbour tried to publish for but does not lead to (dropped, and logged).
    refused: tuple[str, ...] = field(default=())


def is_below(me: AgentType, link: Link, peer_type: AgentType | None) -> bool:
    """Whether a neighbour is one we ask for rules: below us, and able to publish."""
    if peer_type is None or peer_type.is_leaf or me.is_leaf:
        return False
    if me is AgentType.BRIDGE:
        return peer_type is AgentType.PORTAL
    if peer_type in (AgentType.BRIDGE, AgentType.PORTAL):
        return False
    return not is_above(me, link, peer_type)


class RulesSweep:
    """Publishing this agent's planner document, and collecting those below it."""

    def __init__(self, agent: AgentContext) -> None:
        self.agent = agent
        self.document: dict[str, Any] | None = None
        self._waiters: dict[tuple[PeerId, str], asyncio.Future[PlannerRulesResponse]] = {}

    def publish(self, document: Mapping[str, Any] | None) -> None:
        """Publish ``document`` (``[site]`` and ``[[rules]]``) from now on; None withdraws it.

        Raises :class:`~broadgauge.jobs.errors.ProtocolError` if it could not travel.
        """
        self.document = None if document is None else check_document(dict(document))

    def _prefix(self) -> str | None:
        # Destinations start at the portal; the bridge is not on them.
        return None if self.agent.agent_type is AgentType.BRIDGE else self.agent.name

    async def collect(
        self,
        budget: float = DEFAULT_BUDGET,
        visited: tuple[str, ...] = (),
        exclude: PeerId | None = None,
    ) -> SweepResult:
        """What is published here and below, within ``budget`` seconds."""
        agent = self.agent
        me = self._prefix()
        published: list[PublishedRules] = []
        if self.document is not None and me is not None:
            published.append(PublishedRules(me, self.document))
        visited = (*visited, agent.name)
        connected = set(agent.service.connected_peers())
        config = agent.service.config
        configured = [PeerId(e.name, e.zone) for e in config.clients]
        configured += [PeerId(e.name, e.zone) for e in config.servers]
        asks: list[PeerId] = []
        silent: list[str] = []
        for peer in configured:
            info = agent.peer_info(peer)
            if peer == exclude or peer.name in visited:
                continue
            if is_below(agent.agent_type, info.link, info.agent_type):
                if peer in connected:
                    asks.append(peer)
                else:
                    silent.append(peer.name)
            elif (
                info.agent_type is None
                and (info.link is Link.DOWN or agent.agent_type is AgentType.BRIDGE)
                and peer not in connected
                and self._may_have_below()
            ):
                # Not seen since we started, so its type is unknown: it could be a child
                # (for a bridge, its portal, which it dials).
                silent.append(peer.name)
        child_budget = max(_MIN_CHILD_BUDGET, budget * _CHILD_SHARE - 0.02)
        answers = await asyncio.gather(
            *(self._ask(peer, visited, child_budget, budget) for peer in asks)
        )
        refused: list[str] = []
        for peer, answer in zip(asks, answers, strict=True):
            if answer is None:
                silent.append(peer.name)
                continue
            kept, wrong = accept_from_child(peer.name, answer.published)
            if len(kept) > MAX_ENTRIES_PER_CHILD:
                # One child may not crowd out its siblings in the answer we pass up.
                extra = [p.destination for p in kept[MAX_ENTRIES_PER_CHILD:]]
                del kept[MAX_ENTRIES_PER_CHILD:]
                log.warning("%s: %s published %d entries too many", agent.name, peer, len(extra))
                agent.audit_operation(f"{len(extra)} planner rules from {peer}", "refused: excess")
                refused.extend(extra)
            if wrong:
                log.warning(
                    "%s: %s published for paths it does not lead to: %s",
                    agent.name,
                    peer,
                    wrong[:5],
                )
                agent.audit_operation(f"planner rules from {peer} for {wrong[:5]}", "refused")
                refused.extend(wrong)
            published.extend(kept)
            silent.extend(s for s in answer.silent if s.split(".")[0] == peer.name)
        if me is not None:
            published = [p if p.destination == me else p.below(me) for p in published]
            silent = [f"{me}.{s}" for s in silent]
        return SweepResult(tuple(published), tuple(silent), tuple(refused))

    def _may_have_below(self) -> bool:
        kind = self.agent.agent_type
        return not kind.is_leaf and kind is not AgentType.INSTANCE

    async def _ask(
        self, peer: PeerId, visited: tuple[str, ...], child_budget: float, budget: float
    ) -> PlannerRulesResponse | None:
        future: asyncio.Future[PlannerRulesResponse] = asyncio.get_running_loop().create_future()
        request_id = uuid.uuid4().hex
        self._waiters[(peer, request_id)] = future
        try:
            request = PlannerRulesRequest(visited, int(child_budget * 1000), request_id)
            await self.agent.send_control(peer, request)
            async with asyncio.timeout(budget * _CHILD_SHARE):
                return await future
        except TimeoutError:
            log.info("%s: %s did not publish planner rules in time", self.agent.name, peer)
            return None
        finally:
            self._waiters.pop((peer, request_id), None)

    async def received_request(self, peer: PeerId, request: PlannerRulesRequest) -> None:
        """Answer a neighbour above us with what is published here and below."""
        agent = self.agent
        info = agent.peer_info(peer)
        if (
            not is_above(agent.agent_type, info.link, info.agent_type)
            # A bridge is on no destination: it only asks (and may serve several portals).
            or agent.agent_type is AgentType.BRIDGE
            or (agent.agent_type is AgentType.PORTAL and info.agent_type is AgentType.PORTAL)
        ):
            log.warning(
                "%s: refused a planner rules request from %s (not above us)", agent.name, peer
            )
            agent.audit_operation(f"planner rules request from {peer}", "refused: not above")
            return
        result = await self.collect(request.budget_ms / 1000, request.visited, exclude=peer)
        published, silent = list(result.published), list(result.silent)
        while True:
            response = PlannerRulesResponse(tuple(published), tuple(silent), request.request_id)
            try:
                await agent.send_control(peer, response)
                break
            except MessageTooLarge:
                if not published:
                    raise
                # Too much for one frame: send what fits, and name the rest as not carried.
                keep = len(published) // 2
                silent.extend(p.destination for p in published[keep:])
                log.warning(
                    "%s: planner rules for %s exceed a frame; %d entries left out",
                    agent.name,
                    peer,
                    len(published) - keep,
                )
                del published[keep:]
        agent.audit_operation(
            f"planner rules for {peer}: {len(published)} published, {len(silent)} silent"
        )

    def received_response(self, peer: PeerId, response: PlannerRulesResponse) -> None:
        """Hand an answer to the sweep waiting for it; drop a late or unsolicited one."""
        waiter = self._waiters.pop((peer, response.request_id), None)
        if waiter is None or waiter.done():
            log.info("%s: late or unsolicited planner rules from %s dropped", self.agent.name, peer)
            return
        waiter.set_result(response)
