"""Agents on separate hosts: links over their own addresses, and allowlists checked on them.

Each test starts a whole site (the bridge and seven agents, one ``broadgauge <role> run``
process each) on hosts of its own (network namespaces joined by veth links through a switch
namespace; see :mod:`tests.netns.harness`).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from broadgauge.runtime.config import AgentConfig
from tests.cli.processes import Broadgauge
from tests.netns.checks import check_completed, check_users_once
from tests.netns.harness import AGENT_PORT, HOSTS, LINKS, Network
from tests.netns.namespaces import PREFIX, delete_leftovers, namespaces, run

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("netns")]

#: The whole case, from the first namespace made to the last one deleted.
CASE_BUDGET = 90.0
JOB_TIMEOUT = 30.0


async def test_links_come_up_across_namespaces_and_a_job_completes(tmp_path: Path) -> None:
    """Every agent listens on its own address, every link comes from the dialler's own
    address, and ``add_user`` crosses all of them to the backends and back."""
    async with asyncio.timeout(CASE_BUDGET), Network.up(tmp_path) as network:
        # The fake network exists only inside the namespaces: none of it in the root one,
        # and no way out of them (no default route).
        assert "198.18." not in run("ip", "-4", "addr"), "the root namespace has a 198.18 address"
        for host in HOSTS:
            assert "default" not in network.hosts.run_in(host, "ip", "route"), host
        for dialler, listener in LINKS:
            line = f"connected to {dialler}@default ({network.address(dialler)}:"
            assert line in network.current(listener).output, (
                f"{listener} never saw {dialler} connect from {network.address(dialler)}"
            )
            url = f"ws://{network.address(listener)}:{AGENT_PORT}/"
            assert f"connected to {listener}@default ({url})" in network.current(dialler).output

        user = "alice.physics.portal"
        job = await network.submit(f"add_user {user}", JOB_TIMEOUT)
        check_completed({user: job}, [user])
        statuses = await network.stop()
        assert all(status == 0 for status in statuses.values()), f"exit statuses: {statuses}"
        check_users_once(network, [user])


async def test_allowlist_refuses_a_peer_from_an_address_it_does_not_allow(tmp_path: Path) -> None:
    """A copy of the provider, holding the provider's own valid keys, dials the portal from
    another host: the portal refuses it for its address alone (``ip-not-allowed``, logged
    with that address) and keeps serving the real provider, from the allowed address."""
    async with (
        asyncio.timeout(CASE_BUDGET),
        Network.up(tmp_path, extra_hosts=["intruder"]) as network,
    ):
        stranger = network.address("intruder")
        provider = AgentConfig.load(network.config("provider"))
        # Only where it listens changes: its keys, name and the portal's URL are the provider's.
        config = tmp_path / "config" / "intruder.toml"
        replace(provider, service=replace(provider.service, ip=stranger)).save(config)
        intruder = Broadgauge(
            "provider", "run", "-c", str(config), "--data-dir", str(tmp_path / "data" / "intruder"),
            env=network.env, cwd=tmp_path, wrapper=network.hosts.exec_prefix("intruder"),
        )  # fmt: skip
        network.processes["intruder"] = [intruder]
        refusal = f"refused connection from {stranger}:"
        portal = network.current("portal")
        await asyncio.to_thread(portal.wait_for, refusal, 15)
        refused = [line for line in portal.output.splitlines() if refusal in line]
        assert all("ip-not-allowed" in line for line in refused), refused
        assert f"connected to provider@default ({stranger}" not in portal.output
        print(refused[0])

        # The real provider, dialling from its allowed address, still carries jobs.
        allowed = f"connected to provider@default ({network.address('provider')}:"
        assert allowed in portal.output
        user = "bob.physics.portal"
        job = await network.submit(f"add_user {user}", JOB_TIMEOUT)
        check_completed({user: job}, [user])
        assert f"connected to provider@default ({stranger}" not in portal.output
        intruder.kill()


async def test_a_failed_start_leaves_no_namespace_and_no_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When a test fails while its network starts (here: the wait for links), every agent
    process is stopped and every namespace it made is deleted, the switch's included."""
    started: list[Network] = []

    async def fail(self: Network, names: object, timeout: float = 0) -> None:
        started.append(self)
        raise RuntimeError("a test failing in the middle of the start")

    monkeypatch.setattr(Network, "wait_linked", fail)
    with pytest.raises(RuntimeError, match="in the middle of the start"):
        async with asyncio.timeout(CASE_BUDGET), Network.up(tmp_path):
            raise AssertionError("the network cannot have come up")
    [network] = started
    made = [network.hosts.namespace(host) for host in (*HOSTS, "switch")]
    assert not set(made) & set(namespaces()), "namespaces left behind"
    processes = [process for started in network.processes.values() for process in started]
    assert len(processes) == len(HOSTS)
    assert all(process.process.poll() is not None for process in processes)


def test_leftovers_of_a_dead_run_are_deleted_and_a_live_run_s_are_not() -> None:
    """Namespaces named by a test process that no longer exists are deleted; those of a
    process still running (a parallel run), and names without our pattern, are left alone."""
    finished = subprocess.Popen(["true"])
    finished.wait()  # reaped: no process has this pid now
    dead = f"{PREFIX}{finished.pid}-0a0a0a-portal"
    alive = f"{PREFIX}{os.getppid()}-0b0b0b-portal"
    foreign = f"{PREFIX}not-a-run"
    for name in (dead, alive, foreign):
        run("ip", "netns", "add", name)
    try:
        deleted = delete_leftovers()
        assert dead in deleted and dead not in namespaces()
        assert {alive, foreign} <= set(namespaces())
        assert alive not in deleted and foreign not in deleted
    finally:
        for name in (dead, alive, foreign):
            if name in namespaces():
                run("ip", "netns", "delete", name)
