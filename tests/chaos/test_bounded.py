"""What an agent keeps in memory per job must not grow for as long as it runs.

The 10,000-job soak found the portal's RSS 23 % above its warm-up reading after the boards
had emptied: the portal kept every notification it was ever sent (one per user added,
removed, blocked, unblocked ...).  It now keeps the latest :data:`RECENT_NOTIFICATIONS`.
"""

from __future__ import annotations

from broadgauge.agents.portal import RECENT_NOTIFICATIONS, Portal
from broadgauge.jobs.agent_type import AgentType
from broadgauge.jobs.directions import Link
from broadgauge.jobs.notification import Notification
from broadgauge.runtime.agent import Agent, PeerInfo
from broadgauge.runtime.config import AgentConfig
from broadgauge.wire import PeerId, ServiceConfig


async def test_the_portal_keeps_only_its_latest_notifications() -> None:
    agent = Agent(AgentConfig(AgentType.PORTAL, ServiceConfig.create("portal", port=0)))
    portal = Portal(agent)
    # From the bridge, so the portal keeps it and passes nothing on (no link is needed).
    bridge = PeerInfo(PeerId("bridge", "default"), Link.DOWN, AgentType.BRIDGE)
    sent = [
        Notification.parse(f"cluster.portal user_added u{n}.p.portal")
        for n in range(RECENT_NOTIFICATIONS + 500)
    ]
    for notification in sent:
        await portal.notification(bridge, notification)
    assert list(portal.notifications) == sent[-RECENT_NOTIFICATIONS:]
