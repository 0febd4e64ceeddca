"""``/status`` answers only versions of a job that the bridge's store has committed."""

from __future__ import annotations

import json
import sqlite3

from broadgauge.bridge.server import BridgeServer
from broadgauge.jobs import AgentType


def committed_version(bridge: BridgeServer, job_id: str) -> int:
    """The newest version of the job that the store holds, as another connection sees it."""
    store = bridge.runtime.agent.store
    assert store is not None
    db = sqlite3.connect(store.path)
    try:
        rows = db.execute("SELECT version FROM jobs WHERE job_id = ?", (job_id,)).fetchall()
    finally:
        db.close()
    return max((int(version) for (version,) in rows), default=0)


async def test_status_waits_for_the_version_recorded_in_this_turn_to_be_committed(
    bridge: BridgeServer,
) -> None:
    agent = bridge.runtime.agent
    job = await bridge.runtime.run("portal.provider.platform.instance get_users p.portal")
    portal = next(peer for peer, kind in agent.peer_types.items() if kind is AgentType.PORTAL)

    # A newer version arrives and is recorded, as the portal's Update would be; its batch
    # is committed at the end of this turn of the loop.
    current = agent.board(portal).get(job.id)
    assert current is not None
    newer = current.running("half way", now=current.changed + 1)
    agent.record(portal, newer)
    assert agent.store is not None and agent.store.in_batch

    answer = json.loads(await bridge.api.status(json.dumps({"job": str(job.id)}).encode()))

    assert answer["version"] >= newer.version
    assert committed_version(bridge, str(job.id)) >= answer["version"]
