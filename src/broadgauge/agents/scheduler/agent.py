"""The scheduler agent: each instruction it accepts, and the backend call that serves it."""

from __future__ import annotations

from broadgauge.agents._envelope import instruction_of
from broadgauge.agents.scheduler.backend import SchedulerBackend
from broadgauge.grammar import instructions as ins
from broadgauge.jobs.agent import Agent, Envelope


def serve_scheduler(agent: Agent, scheduler: SchedulerBackend) -> None:
    """Register the scheduler agent's handlers on ``agent``."""

    @agent.handler("add_local_project")
    async def add_local_project(envelope: Envelope) -> object:
        await scheduler.add_project(instruction_of(envelope, ins.AddLocalProject).mapping)
        return None

    @agent.handler("remove_local_project")
    async def remove_local_project(envelope: Envelope) -> object:
        await scheduler.remove_project(instruction_of(envelope, ins.RemoveLocalProject).mapping)
        return None

    @agent.handler("add_local_user")
    async def add_local_user(envelope: Envelope) -> object:
        await scheduler.add_user(instruction_of(envelope, ins.AddLocalUser).mapping)
        return None

    @agent.handler("remove_local_user")
    async def remove_local_user(envelope: Envelope) -> object:
        await scheduler.remove_user(instruction_of(envelope, ins.RemoveLocalUser).mapping)
        return None

    @agent.handler("get_local_limit")
    async def get_local_limit(envelope: Envelope) -> object:
        return await scheduler.get_limit(instruction_of(envelope, ins.GetLocalLimit).mapping)

    @agent.handler("set_local_limit")
    async def set_local_limit(envelope: Envelope) -> object:
        instruction = instruction_of(envelope, ins.SetLocalLimit)
        return await scheduler.set_limit(instruction.mapping, instruction.usage)

    @agent.handler("get_local_usage_report")
    async def get_local_usage_report(envelope: Envelope) -> object:
        instruction = instruction_of(envelope, ins.GetLocalUsageReport)
        return await scheduler.get_usage_report(instruction.mapping, instruction.date_range)
