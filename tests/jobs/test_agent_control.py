"""Diagnostics and restarts, routed by a path relative to the asking agent."""

from __future__ import annotations

import asyncio

import pytest

from broadgauge.jobs import AgentType, DiagnosticsReport
from broadgauge.runtime.agent import JobFailed, JobRefused
from broadgauge.runtime.control import RESTARTING_MESSAGE, SOFT_RESTART_MESSAGE

from .agent_helpers import USER, Network, Recorder, eventually, finished, wait_linked


async def test_diagnostics_of_an_agent_three_hops_down_is_relayed_back() -> None:
    async with Network() as net:
        portal, _provider, _platform, instance = await net.chain()
        instance.add_handler("add_user", Recorder())
        instance.add_handler("remove_user", Recorder(result=None))

        async def refuse(envelope):  # type: ignore[no-untyped-def]
            raise JobFailed(envelope.job.errored("protected", now=instance.clock()))

        instance.add_handler("block_user", refuse)
        await finished(portal.run("portal.provider.platform.instance", f"add_user {USER}"))
        with pytest.raises(JobFailed):
            await finished(portal.run("portal.provider.platform.instance", f"block_user {USER}"))

        report = await finished(portal.diagnostics("provider.platform.instance"))
        assert isinstance(report, DiagnosticsReport)
        assert report.agent_name == "instance"
        failed = {(f.instruction, f.error_message) for f in report.failed_jobs}
        assert (f"block_user {USER}", "protected") in failed
        assert any("started" in log.message for log in report.recent_logs)
        # The report survives the wire in OpenPortal's JSON shape.
        assert DiagnosticsReport.from_json(report.to_json()) == report
        own = await finished(portal.diagnostics(""))
        assert own.agent_name == "portal"


async def test_a_leaf_agent_does_not_forward_diagnostics() -> None:
    async with Network() as net:
        await net.start("instance", AgentType.INSTANCE)
        await net.start("account", AgentType.ACCOUNT, dials=["instance"], listen=False)
        # The account agent is a leaf: it will not pass the request on to anyone, so the
        # request is refused at once rather than left to time out.
        with pytest.raises(JobRefused, match=r"account is a leaf .* passes nothing on"):
            await net["instance"].diagnostics("account.somewhere")


async def test_soft_restart_cancels_unfinished_jobs_and_reconnects() -> None:
    async with Network() as net:
        portal = await net.start("portal", AgentType.PORTAL)
        gate = asyncio.Event()
        slow = Recorder(gate=gate)
        instance = await net.start_instance(slow)
        running = asyncio.create_task(portal.run("portal.instance", f"add_user {USER}"))
        await eventually(lambda: len(slow.calls) == 1)

        await portal.restart("soft", "instance")

        with pytest.raises(JobFailed) as cancelled:
            await finished(running)
        assert str(cancelled.value) == SOFT_RESTART_MESSAGE
        assert instance.boards() == [] or all(len(b) == 0 for b in instance.boards())
        # The links come back by themselves and work again.
        await wait_linked(portal, instance)
        gate.set()
        done = await finished(portal.run("portal.instance", f"add_user {USER}"))
        assert done.is_finished and not done.is_error


async def test_jobs_arriving_during_a_soft_restart_are_answered_with_an_error() -> None:
    async with Network() as net:
        portal = await net.start("portal", AgentType.PORTAL)
        instance = await net.start_instance(Recorder())
        instance.control.restarting = True  # freeze the restart window open
        with pytest.raises(JobFailed) as refused:
            await finished(portal.run("portal.instance", f"add_user {USER}"))
        assert str(refused.value) == RESTARTING_MESSAGE
        instance.control.restarting = False


async def test_hard_restart_is_routed_and_raises_the_flag_for_the_process_owner() -> None:
    async with Network() as net:
        portal, provider, platform, instance = await net.chain()
        await portal.restart("hard", "provider.platform.instance")
        await eventually(instance.control.hard_restart.is_set)
        assert not platform.control.hard_restart.is_set()
        assert not provider.control.hard_restart.is_set()
        with pytest.raises(ValueError, match="soft or hard"):
            await portal.restart("sideways", "provider")


async def test_a_portal_ignores_restarts_from_another_portal() -> None:
    async with Network() as net:
        await net.start("portal1", AgentType.PORTAL)
        await net.start("portal2", AgentType.PORTAL, dials=["portal1"])
        await net["portal1"].restart("hard", "portal2")
        await asyncio.sleep(0.3)
        assert not net["portal2"].control.hard_restart.is_set()
