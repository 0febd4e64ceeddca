"""Prometheus metrics and JSON logs: what they cost a job, and how long a scrape takes.

Two figures of issue 13 (numbers, not tests):

* 1-hop jobs/s with metrics and JSON logging on, over both off, in one run (goal >= 0.95): a
  portal and a cluster agent in this process, durable (SQLite boards), ``--jobs`` add_user
  jobs with ``--window`` in flight; "on" means both agents have metrics and every action on
  every job is logged as a JSON line (at INFO, to a file); "off" means neither.  Off and on
  alternate for ``--rounds`` rounds, after one unreported warm-up round of each.

  On a shared machine one round's rate moves by 15 % with what else runs, more than the
  difference being measured, so each round is paired with the round of the other mode run
  right after it (the order alternates, so a drift in the machine's load favours neither),
  and the figure is the median of the pairs' ratios: on/off jobs per second, and off/on CPU
  time per job.  The CPU figure (this process's CPU time, ``time.process_time``) is the
  primary one: the jobs run in this one process, so it is what the metrics and logs add to
  a job, and it is less disturbed than wall time by other processes.  Garbage left by one
  round is collected before the next starts, so that no round pays for another's.
* ``/metrics`` scrape time for an agent holding 10,000 jobs on its boards (goal <= 50 ms):
  the registry rendered on the agent's loop (server time), and a GET over loopback HTTP.

    python bench/metrics.py [--jobs 2000] [--window 50] [--rounds 11] [--board 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import generate_latest

from broadgauge.grammar import UserMapping
from broadgauge.jobs import Job
from broadgauge.jobs.agent_type import AgentType
from broadgauge.runtime.agent import Agent, Envelope
from broadgauge.runtime.config import AgentConfig
from broadgauge.runtime.logs import configure_logging
from broadgauge.runtime.metrics import AgentMetrics
from broadgauge.serving import AppServer, metrics_app
from broadgauge.wire import PeerId, ServiceConfig


def make_pair(root: Path) -> tuple[Agent, Agent]:
    """A portal and a cluster that runs add_user, the cluster dialling the portal."""
    portal = Agent(
        AgentConfig(AgentType.PORTAL, ServiceConfig.create("portal", port=0)),
        data_dir=root / "portal",
    )
    return portal, Agent(
        AgentConfig(AgentType.INSTANCE, ServiceConfig.create("cluster", port=0)),
        data_dir=root / "cluster",
    )


class HookClock:
    """This thread's CPU time spent inside the metrics hooks, the trace-log sink and the log
    handler's flush (where lines held for the loop's next turn are written).

    The direct count of what metrics and JSON logs add to a job, which no other process on
    the machine can disturb: each hook is wrapped in a pair of ``time.thread_time`` calls,
    and the cost of the pair itself (measured on an empty call) is taken off.
    """

    def __init__(self) -> None:
        self.spent = 0.0
        self.calls = 0
        self._overhead = 0.0
        empty = self.wrap(lambda *args: None)
        for _ in range(20_000):
            empty()
        self._overhead, self.spent, self.calls = self.spent / self.calls, 0.0, 0

    def wrap(self, hook: Callable[..., Any]) -> Callable[..., Any]:
        """``hook``, timed."""

        def timed(*args: Any) -> Any:
            started = time.thread_time()
            try:
                return hook(*args)
            finally:
                self.spent += time.thread_time() - started
                self.calls += 1

        return timed

    def instrument(self, agent: Agent) -> None:
        """Time ``agent``'s metrics hooks and its trace sinks (call after attaching metrics)."""
        metrics = agent.metrics
        assert isinstance(metrics, AgentMetrics)
        for name in ("recorded", "expired", "executed", "operation", "committed"):
            setattr(metrics, name, self.wrap(getattr(metrics, name)))
        if agent.store is not None:
            agent.store.on_commit = metrics.committed
        agent.tracer.sinks[:] = [self.wrap(sink) for sink in agent.tracer.sinks]

    @property
    def net(self) -> float:
        """Seconds spent in the hooks, without the timing's own cost."""
        return max(0.0, self.spent - self.calls * self._overhead)


async def jobs_per_second(
    root: Path, jobs: int, window: int, metrics: bool, clock: HookClock | None = None
) -> tuple[float, float]:
    """Run ``jobs`` one-hop add_user jobs; jobs per second, and CPU microseconds per job
    (this process's CPU time: less disturbed than wall time by whatever else runs).
    ``clock``, with ``metrics``: time the hooks (a separate run: timing them costs)."""
    root.mkdir(parents=True, exist_ok=True)
    log = (root / "log.jsonl").open("w")
    # Before the agents exist: whether they log each action is decided when they start.
    if metrics:
        configure_logging(logging.INFO, "json", log)
    else:
        configure_logging(logging.WARNING, "human", log)
    portal, cluster = make_pair(root)

    @cluster.handler("add_user")
    async def add_user(envelope: Envelope) -> UserMapping:
        user = envelope.job.instruction.user  # type: ignore[attr-defined]
        return UserMapping(user, user.username, user.project)

    await portal.start()
    invite = portal.service.add_client("cluster", "127.0.0.1")
    cluster.service.add_server(invite)
    if metrics:
        AgentMetrics.attach(portal, process=True)
        AgentMetrics.attach(cluster)
        if clock is not None:
            clock.instrument(portal)
            clock.instrument(cluster)
            # Lines may be written and flushed later, once per loop turn: time that too.
            for handler in logging.getLogger().handlers:
                handler.flush = clock.wrap(handler.flush)  # type: ignore[method-assign]
    await cluster.start(listen=False)
    try:
        await portal.service.wait_for_peer("cluster")
        await portal.peer_of_type(AgentType.INSTANCE)
        gate = asyncio.Semaphore(window)

        async def one(i: int) -> None:
            async with gate:
                await portal.run("portal.cluster", f"add_user u{i}.proj.portal", timeout=60)

        if clock is not None:
            clock.spent, clock.calls = 0.0, 0  # the jobs only, not the agents' start
        started, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(one(i) for i in range(jobs)))
        used = time.process_time() - cpu
        return jobs / (time.perf_counter() - started), used / jobs * 1e6
    finally:
        await cluster.stop()
        await portal.stop()
        configure_logging(logging.WARNING, "human")
        log.close()


async def scrape_times(root: Path, held: int) -> tuple[float, float]:
    """Median ms to render, and to GET, ``/metrics`` of an agent with ``held`` board jobs."""
    agent = Agent(
        AgentConfig(AgentType.PROVIDER, ServiceConfig.create("provider", port=0)),
        data_dir=root / "provider",
    )
    metrics = AgentMetrics.attach(agent, process=True)
    await agent.start()
    now = time.time()
    peers = [PeerId(f"peer{i}", "default") for i in range(10)]
    for i in range(held):
        job = Job.parse(f"portal.provider add_user u{i}.proj.portal", now=now).pending(now=now)
        agent.board(peers[i % len(peers)]).add(job, now)
    server = AppServer(metrics_app(metrics.registry), "127.0.0.1", 0)
    await server.start()
    try:
        rendered = []
        for _ in range(50):
            started = time.perf_counter()
            generate_latest(metrics.registry)
            rendered.append(time.perf_counter() - started)
        fetched = []
        async with httpx.AsyncClient() as client:
            for _ in range(50):
                started = time.perf_counter()
                response = await client.get(f"{server.url}metrics")
                fetched.append(time.perf_counter() - started)
                assert response.status_code == 200
        return statistics.median(rendered) * 1000, statistics.median(fetched) * 1000
    finally:
        await server.stop()
        await agent.stop()


async def one_round(root: Path, jobs: int, window: int, metrics: bool) -> tuple[float, float]:
    """One round in a fresh pair of agents, after collecting the garbage of the last."""
    gc.collect()
    return await jobs_per_second(root, jobs, window, metrics)


async def main(args: argparse.Namespace) -> None:
    """Print both figures."""
    rates: dict[bool, list[float]] = {False: [], True: []}
    cpus: dict[bool, list[float]] = {False: [], True: []}
    with tempfile.TemporaryDirectory(prefix="bench-metrics-") as tmp:
        for metrics in (False, True):
            await one_round(Path(tmp) / f"warm-{metrics}", args.jobs // 4, args.window, metrics)
        for round_ in range(args.rounds):
            order = (False, True) if round_ % 2 == 0 else (True, False)
            for metrics in order:
                root = Path(tmp) / f"{round_}-{metrics}"
                rate, cpu = await one_round(root, args.jobs, args.window, metrics)
                rates[metrics].append(rate)
                cpus[metrics].append(cpu)
                print(
                    f"round {round_ + 1}: metrics and JSON logs {'on ' if metrics else 'off'} "
                    f"{rate:8.0f} jobs/s {cpu:8.0f} CPU us/job"
                )
        off, on = statistics.median(rates[False]), statistics.median(rates[True])
        rate_pairs = [b / a for a, b in zip(rates[False], rates[True], strict=True)]
        print(
            f"1-hop jobs/s (median of {args.rounds}): off {off:.0f}, on {on:.0f}; on/off: "
            f"median of the rounds' ratios {statistics.median(rate_pairs):.3f} "
            f"(ratio of the medians {on / off:.3f}; goal >= 0.95)"
        )
        cpu_off, cpu_on = statistics.median(cpus[False]), statistics.median(cpus[True])
        cpu_pairs = [a / b for a, b in zip(cpus[False], cpus[True], strict=True)]
        print(
            f"CPU per 1-hop job (median of {args.rounds}): off {cpu_off:.0f} us, on {cpu_on:.0f} "
            f"us; off/on: median of the rounds' ratios {statistics.median(cpu_pairs):.3f} "
            f"(ratio of the medians {cpu_off / cpu_on:.3f}), the primary figure"
        )
        clock = HookClock()
        gc.collect()
        _, timed_cpu = await jobs_per_second(
            Path(tmp) / "timed", args.jobs, args.window, True, clock
        )
        hooks = clock.net / args.jobs * 1e6
        share = hooks / timed_cpu
        print(
            f"CPU inside the metrics hooks, trace-log sink and log flush, timed in one more round: "
            f"{hooks:.0f} us per job ({clock.calls / args.jobs:.1f} calls), {share:.1%} of "
            f"that round's {timed_cpu:.0f} us: without them it would take {1 - share:.3f} "
            "of the CPU"
        )
        render, fetch = await scrape_times(Path(tmp), args.board)
        print(
            f"/metrics with {args.board:,} jobs on the boards: {render:.2f} ms to render, "
            f"{fetch:.2f} ms per GET over loopback (goal <= 50 ms)"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--window", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--board", type=int, default=10_000)
    asyncio.run(main(parser.parse_args()))
