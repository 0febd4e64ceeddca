"""The doctor against a running network: the demo, started in this process on loopback."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

from broadgauge.demo import Network
from broadgauge.doctor.checkup import Target, check_config
from broadgauge.doctor.findings import Status
from broadgauge.runtime.audit import verify
from tests.agents.network import demo_network

from .helpers import only

__all__ = ["demo_network"]


async def test_a_running_agent_has_its_port_listening_and_its_peers_reachable(
    demo_network: Network, tmp_path: Path
) -> None:
    agent = demo_network.agents["instance"]
    # The demo keeps configs in memory; its live service config has the real port and peers.
    path = tmp_path / "instance.toml"
    replace(agent.config, service=agent.service.config).save(path)
    data = demo_network.root / "instance"
    # The probes block; the agents answer them on this event loop, so they run in a thread.
    findings = await asyncio.to_thread(check_config, Target("instance", path, data), timeout=3.0)
    assert [f for f in findings if f.status is Status.FAIL] == []
    port = only(findings, "port.listen")
    assert port.status is Status.OK
    assert f"port {agent.service.config.port} (service.port)" in port.message
    assert "is listening: the agent is running" in port.message
    peer = only(findings, "peer.platform")
    assert (
        peer.status is Status.OK and "is reachable and admits this host's address" in peer.message
    )
    assert only(findings, "clock.platform").status is Status.OK
    # Named like the leaves the demo gives it: account, filesystem and scheduler.
    assert only(findings, "leaves.required").status is Status.OK
    # The probes sent no keys: the instance is still linked to all of its peers, and the
    # refusals they caused left the audit chains intact.
    names = {peer.name for peer in agent.service.connected_peers()}
    assert names == {"platform", "account", "filesystem", "scheduler"}
    assert (
        verify(data / "audit.jsonl").ok
        and verify(demo_network.root / "platform" / "audit.jsonl").ok
    )
