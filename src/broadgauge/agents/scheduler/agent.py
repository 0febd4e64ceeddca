"""The scheduler agent: each instruction it accepts, and the backend call that serves it."""

from __future__ import annotations

from broadgauge.agents._envelope import answer
from broadgauge.agents.scheduler.backend import SchedulerBackend
from broadgauge.grammar import instructions as ins
from broadgauge.runtime.agent import Agent


def serve_scheduler(agent: Agent, scheduler: SchedulerBackend) -> None:
    """Register the scheduler agent's handlers on ``agent``."""
    s = scheduler
    answer(agent, ins.AddLocalProject, lambda i: s.add_project(i.mapping))
    answer(agent, ins.RemoveLocalProject, lambda i: s.remove_project(i.mapping))
    answer(agent, ins.AddLocalUser, lambda i: s.add_user(i.mapping))
    answer(agent, ins.RemoveLocalUser, lambda i: s.remove_user(i.mapping))
    answer(agent, ins.GetLocalLimit, lambda i: s.get_limit(i.mapping))
    answer(agent, ins.SetLocalLimit, lambda i: s.set_limit(i.mapping, i.usage))
    answer(agent, ins.GetLocalUsageReport, lambda i: s.get_usage_report(i.mapping, i.date_range))
