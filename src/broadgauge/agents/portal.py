"""The portal agent: the network's entry point from portal software.

``submit D I`` (from the bridge)
    ``D`` must start with this portal.  The inner job ``D I`` is parsed with the *portal
    check* (a user or project of portal ``org`` can only be managed through portal ``org``),
    sent to ``D``'s next agent, and its outcome returned unchanged: the caller sees the
    instance's result and result type.  A failure comes back as ``RuntimeError{<message>}``
    and an expiry as ``ExpirationError{{}}``, the texts OpenPortal clients recognise.
questions about projects and awards (``get_project_mapping``, ``get_award``, …)
    are answered by the portal software: the portal re-issues them to its bridge as
    ``<portal>.<bridge> <instruction>`` and returns the bridge's answer.
notifications
    from any agent below are passed to the bridge, which delivers them to the portal software;
    the portal keeps the last :data:`RECENT_NOTIFICATIONS` of them (for the demo and tests).
"""

from __future__ import annotations

import logging
from collections import deque

from broadgauge.agents._envelope import instruction_of
from broadgauge.grammar import Command
from broadgauge.grammar import instructions as ins
from broadgauge.jobs.agent_type import AgentType
from broadgauge.jobs.commands import Notify
from broadgauge.jobs.job import Job
from broadgauge.jobs.notification import Notification
from broadgauge.runtime.agent import Agent, Envelope, JobExpired, JobFailed, JobRefused, PeerInfo
from broadgauge.runtime.logs import child_job_id

log = logging.getLogger("broadgauge.agents.portal")

#: How many notifications the portal keeps: only the latest, because a list of all of them
#: grew with every user added, blocked or removed for as long as the portal ran (found by
#: the chaos soak's memory check).
RECENT_NOTIFICATIONS = 1000

#: Instructions the portal software answers, through the bridge.
ANSWERED_BY_PORTAL_SOFTWARE = (
    "create_project",
    "update_project",
    "remove_project",
    "get_project",
    "get_projects",
    "get_award",
    "get_awards",
    "get_project_mapping",
    "get_users",
    "get_usage_report",
    "get_usage_reports",
    "get_storage_report",
    "get_storage_reports",
)


class Portal:
    """The business rules of a portal agent."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        agent.add_handler("submit", self.submit)
        for keyword in ANSWERED_BY_PORTAL_SOFTWARE:
            agent.add_handler(keyword, self.ask_portal_software)
        agent.on_notification(self.notification)
        self.notifications: deque[Notification] = deque(maxlen=RECENT_NOTIFICATIONS)

    async def submit(self, envelope: Envelope) -> Job:
        """Run the wrapped instruction down its path and return its finished job."""
        if envelope.sender.agent_type is not AgentType.BRIDGE:
            raise JobRefused("Only bridge agents can submit jobs to the portal")
        submit = instruction_of(envelope, ins.Submit)
        # Refusals read as the reference's do ("Invalid instruction: <submit ...>. <why>"), so
        # portal software can recognise them whichever implementation answers.
        invalid = f"Invalid instruction: {submit}."
        if submit.destination.agents[0] != self.agent.name:
            raise JobRefused(
                f"{invalid} First agent in destination should be this portal ({self.agent.name})"
            )
        config = self.agent.service.config
        neighbours = {e.name for e in config.servers} | {e.name for e in config.clients}
        if submit.destination.agents[1] not in neighbours:
            # Refused at once: the reference waits 5 s for the agent to appear first.
            raise JobRefused(
                f"{invalid} Cannot find next agent in destination {submit.destination}"
            )
        # The portal check runs here, where the identity's portal is finally known.
        command = Command.parse(f"{submit.destination} {submit.instruction}", portal_check=True)
        inner = Job.create(command, now=self.agent.clock(), job_id=child_job_id())
        try:
            return await self.agent.submit(inner, zone=None)
        except JobExpired:
            raise JobRefused("ExpirationError{{}}") from None
        except JobFailed as exc:
            raise JobRefused(f"RuntimeError{{{exc}}}") from None

    async def ask_portal_software(self, envelope: Envelope) -> Job:
        """Re-issue the question to the bridge and return its answer."""
        bridge = await self.agent.peer_of_type(AgentType.BRIDGE, wait=5.0)
        command = Command.parse(f"{self.agent.name}.{bridge.name} {envelope.job.instruction}")
        job = Job.create(command, now=self.agent.clock(), job_id=child_job_id()).with_forwarded_for(
            envelope.job.destination
        )
        try:
            return await self.agent.submit(job, zone=bridge.zone)
        except JobFailed as exc:
            raise JobRefused(str(exc)) from None

    async def notification(self, sender: PeerInfo, notification: Notification) -> None:
        """Keep it (among the latest), and pass it to the bridge (best effort)."""
        self.notifications.append(notification)
        if sender.agent_type is AgentType.BRIDGE:
            return
        try:
            bridge = await self.agent.peer_of_type(AgentType.BRIDGE, wait=0.0)
        except JobRefused:
            log.info("%s: no bridge for notification %s", self.agent.name, notification)
            return
        await self.agent.send_control(bridge, Notify(notification))
