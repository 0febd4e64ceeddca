"""Provisioning benchmark: end-to-end ``add_user`` latency and bulk onboarding rate.

    python bench/provision.py [--samples 200] [--warmup 20] [--users 500] [--concurrency 32]
                              [--real-samples 30] [--real-users 20] [--real-concurrency 1]
                              [--real-projects 0] [--no-real]

Prints numbers, asserts nothing.  Every ``add_user`` is sent the way portal software sends it:
from the bridge, as ``submit portal.provider.platform.instance add_user U``.  It travels
bridge → portal → provider → platform → instance; the instance runs ten sub-jobs on its
account, filesystem and scheduler agents (is_protected/is_blocked/is_existing_user,
add_project, add_user, add_local_user, get_local_home_dir, update_homedir,
add_local_project, add_local_user) and the result comes back the same way.

1. **Embedded backends**, on the in-process demo network (:func:`broadgauge.demo.start_network`):
   nine agents on one event loop, linked over loopback websockets (encrypted), each with its
   durable boards (SQLite WAL, synchronous=NORMAL) and audit log; the account agent on its
   local SQLite directory (synchronous=FULL), the filesystem on a sandbox (ids from that
   directory), the scheduler on its SQLite ledger.

   * latency: ``--samples`` users added one at a time: p50 / p99 (goal: p50 ≤ 10 ms);
   * a breakdown of one ``add_user`` from the agents' trace events (medians);
   * its floor, measured in the same run: one 4-hop job and one job of one hop for each
     sub-job at ``bench/floor.py``'s durable traced floor (one at a time; the least work that
     keeps the agents' promises of durability and audit), with back ends that take no time.
     On one core (as here) the floor is the CPU of all those jobs; with each agent on a core
     of its own, the 4-hop round trip and the five 1-hop round trips that come one after
     another.  In bulk, the most users/s those jobs' CPU allows at ``--concurrency`` in
     flight.  ``--floor-jobs 0`` leaves it out;
   * bulk: ``--users`` users with ``--concurrency`` in flight: users/s, and p50 / p99 under
     that load.

2. **slapd + slurmdbd**: the same network with ``account-backend=ldap`` on a real slapd and
   ``scheduler-backend=slurm`` on a real Slurm stack (slurmdbd, slurmctld, slurmd, MariaDB in
   a private network namespace), started with the test fixtures in ``tests/backends/slapd.py``
   and ``tests/backends/slurm.py`` and chosen with the demo's ``configure`` hook.  slapd's
   users have no NSS entries here (no SSSD), so the filesystem agent runs with
   ``chown=false``.  Skipped, with the reason, when those cannot run here.

3. **slapd + slurmrestd**: the same network and stack, with the scheduler agent on the
   slurmrestd engine (``slurm-server`` = the stack's slurmrestd on its Unix socket,
   ``token-command`` = its ``scontrol token``), measured in the same run as 2, so the two
   Slurm engines can be compared: latency one at a time, then ``--real-users`` users with
   ``--real-concurrency`` in flight (users/s).  Each bulk user has a project of its own, or,
   with ``--real-projects N``, the bulk users share N projects, as a term's intake does (the
   sacctmgr engine then adds the users of one account that wait meanwhile in one call).  The
   default is one at a time: with several new projects in flight slurmdbd loses account
   creations under the same parent, with both engines (sacctmgr exits with "No associations
   created"; slurmrestd answers success without creating it, which the engine reports).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import Any

import broadgauge
import floor
import jobs as chain
from broadgauge.demo import Network, start_network
from broadgauge.jobs.agent_type import AgentType
from broadgauge.runtime.config import AgentConfig
from broadgauge.runtime.trace import Action, TraceEvent
from broadgauge.wire import SimpleEncryption

ROOT = Path(__file__).resolve().parents[1]
#: The hot-path issue's goals for embedded back ends (see docs/operators/performance.md for
#: how far the protocol's own work already is from them).
GOAL_P50_MS = 10.0
GOAL_BULK_USERS_PER_S = 200.0
JOB_TIMEOUT = 120.0
LEAVES = ("account", "filesystem", "scheduler")
#: The breakdown's count of the sub-jobs of one ``add_user``.
SUB_JOBS = "sub-jobs sent by the instance (count)"
#: The sub-jobs of one ``add_user`` that wait for each other, at the least: the account
#: checks (at once), the project, the user, then the longer of two branches of two (see
#: docs/operators/performance.md, "Provisioning").
SEQUENTIAL_SUB_JOBS = 5


# --- measuring ---------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100)."""
    ordered = sorted(values)
    rank = max(1, round(q / 100 * len(ordered) + 0.5 - 1e-9))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass
class Trace:
    """Trace events of every agent, collected while :attr:`on` is set."""

    on: bool = False
    events: list[TraceEvent] = field(default_factory=list)

    def attach(self, network: Network) -> None:
        for agent in network.agents.values():
            agent.on_trace(self._sink)

    def _sink(self, event: TraceEvent) -> None:
        if self.on:
            self.events.append(event)


@dataclass
class Sample:
    """One ``add_user`` timed from the bridge, with its wall-clock window (for the trace)."""

    millis: float
    start: float
    end: float


async def add_users(
    network: Network, users: list[str], concurrency: int
) -> tuple[list[Sample], float]:
    """``add_user`` each of ``users``, ``concurrency`` at a time; samples and elapsed s."""
    slots = asyncio.Semaphore(concurrency)
    samples: list[Sample] = []

    async def one(user: str) -> None:
        async with slots:
            start, began = time.time(), time.perf_counter()
            await network.submit(f"add_user {user}", timeout=JOB_TIMEOUT)
            samples.append(Sample((time.perf_counter() - began) * 1000, start, time.time()))

    began = time.perf_counter()
    await asyncio.gather(*(one(user) for user in users))
    return samples, time.perf_counter() - began


def breakdown(samples: list[Sample], events: list[TraceEvent]) -> list[tuple[str, float]]:
    """Median time of each part of one ``add_user`` (samples run one at a time).

    Per sample, from the events inside its window: the instance's handler (started to
    finished), and for each sub-job the instance sent to a leaf, its round trip (forwarded
    to finished, on the instance) and the leaf's handler time (started to finished, on the
    leaf).  What is left over is routing above the instance (bridge → … → instance and back,
    including the portal's submit) and the instance's own work between sub-jobs.
    """
    parts: dict[str, list[float]] = defaultdict(list)
    ordered = sorted(events, key=lambda e: e.time)
    index = 0
    for sample in sorted(samples, key=lambda s: s.start):
        while index < len(ordered) and ordered[index].time < sample.start:
            index += 1
        inside = []
        while index < len(ordered) and ordered[index].time <= sample.end:
            inside.append(ordered[index])
            index += 1
        starts: dict[tuple[str, str], float] = {}
        spans: dict[tuple[str, str], float] = {}
        round_trips: dict[str, float] = defaultdict(float)
        in_flight: list[tuple[float, float]] = []  # each sub-job's round trip
        handlers: dict[str, float] = defaultdict(float)
        counts: dict[str, int] = defaultdict(int)
        instance = 0.0
        for event in inside:
            key = (event.agent, event.job_id)
            peer = event.peer.split("@")[0]
            if event.agent == "instance" and peer == "platform":
                if event.action is Action.STARTED:
                    starts[key] = event.time
                elif event.action is Action.FINISHED and key in starts:
                    instance = event.time - starts[key]
            elif event.agent == "instance" and peer in LEAVES:
                if event.action is Action.FORWARDED:
                    starts[key] = event.time
                elif event.action is Action.FINISHED and key in starts:
                    round_trips[peer] += event.time - starts[key]
                    in_flight.append((starts[key], event.time))
                    counts[peer] += 1
            elif event.agent in LEAVES:
                if event.action is Action.STARTED:
                    starts[key] = event.time
                elif event.action is Action.FINISHED and key in starts:
                    spans[key] = event.time - starts[key]
                    handlers[event.agent] += spans[key]
        if not instance:
            continue  # the trace missed this sample's instance events: leave it out
        parts["end to end (from the bridge)"].append(sample.millis)
        parts["routing above the instance, both ways (4 hops + portal)"].append(
            sample.millis - instance * 1000
        )
        parts["instance handler"].append(instance * 1000)
        for leaf in LEAVES:
            parts[f"  {leaf}: {counts[leaf]} sub-jobs, round trips"].append(
                round_trips[leaf] * 1000
            )
            parts[f"    {leaf} handlers (backend work)"].append(handlers[leaf] * 1000)
            parts[f"    {leaf} wire + runtime (round trips - handlers)"].append(
                (round_trips[leaf] - handlers[leaf]) * 1000
            )
        parts["  instance's own work, no sub-job in flight"].append(
            (instance - covered(in_flight)) * 1000
        )
        parts[SUB_JOBS].append(sum(counts.values()))
    return [(label, statistics.median(values)) for label, values in parts.items()]


def covered(spans: list[tuple[float, float]]) -> float:
    """The time during which at least one of ``spans`` runs (sub-jobs run at once)."""
    total, reached = 0.0, float("-inf")
    for start, end in sorted(spans):
        if end > reached:
            total += end - max(start, reached)
            reached = end
    return total


# --- reporting ---------------------------------------------------------------------------


def latency_line(label: str, samples: list[Sample], goal: bool) -> str:
    millis = [s.millis for s in samples]
    p50, p99 = percentile(millis, 50), percentile(millis, 99)
    text = f"{label:<34} p50 {p50:8.1f} ms   p99 {p99:8.1f} ms   (n={len(millis)})"
    if goal:
        verdict = "met" if p50 <= GOAL_P50_MS else "NOT met"
        text += f"   goal: p50 ≤ {GOAL_P50_MS:g} ms ({verdict})"
    return text


def print_breakdown(parts: list[tuple[str, float]]) -> None:
    print("  breakdown of one add_user (median per add_user, ms; from trace events):")
    for label, millis in parts:
        print(f"    {label:<58} {millis:8.1f}")


async def print_floor(
    parts: list[tuple[str, float]], jobs: int, warmup: int, concurrency: int
) -> None:
    """The least one ``add_user`` can take, measured now: its jobs at the durable traced floor
    (``bench/floor.py``), with back ends that take no time; one at a time, and in bulk with
    ``concurrency`` in flight."""
    sub_jobs = round(dict(parts)[SUB_JOBS])
    os.environ.setdefault(chain.EVENT_LOOP, "asyncio")
    windows = [1, concurrency]
    four = await floor.bench_chain("traced", chain.CHAIN, windows, jobs, warmup)
    one = await floor.bench_chain("traced", ("portal", "instance"), windows, jobs, warmup)
    print(
        f"  its floor: its jobs at the durable traced floor (bench/floor.py, {jobs} jobs of each"
        " chain), back ends taking no time:"
    )
    lines = (
        ("one core: CPU of 1 + all sub-jobs", cpu_ms(four[0]), cpu_ms(one[0]), sub_jobs),
        (
            "a core each: p50 of 1 + sub-jobs in turn",
            four[0].p50 * 1000,
            one[0].p50 * 1000,
            SEQUENTIAL_SUB_JOBS,
        ),
    )
    for label, four_ms, one_ms, count in lines:
        least = four_ms + count * one_ms
        print(
            f"    one at a time, {label:<42} {four_ms:5.2f} + {count:2d} x {one_ms:4.2f}"
            f" = {least:5.1f} ms (goal {GOAL_P50_MS:g} ms)"
        )
    per_user = cpu_ms(four[1]) + sub_jobs * cpu_ms(one[1])
    cores = os.cpu_count() or 1
    print(
        f"    in bulk, {concurrency} in flight: CPU per user {cpu_ms(four[1]):.2f} + {sub_jobs} x"
        f" {cpu_ms(one[1]):.2f} = {per_user:.1f} ms: at most {1000 / per_user:.0f} users/s on"
        f" one core, {cores * 1000 / per_user:.0f} on {cores}"
        f" (goal {GOAL_BULK_USERS_PER_S:g} users/s)"
    )


def cpu_ms(row: chain.Row) -> float:
    """CPU ms per job of ``row``, summed over its processes."""
    return sum(row.cpu.values()) * 1000


async def measure(
    network: Network,
    name: str,
    *,
    samples: int,
    warmup: int,
    users: int,
    concurrency: int,
    goal: bool,
    prefix: str = "",
    projects: int = 1,
    floor_jobs: int = 0,
) -> None:
    """Latency one at a time (with breakdown), then a bulk run if ``users``.

    ``prefix`` keeps the user names of two runs on one back end apart; the bulk users share
    ``projects`` projects (0: each has a project of its own).  ``floor_jobs``: jobs timed for
    each chain of the floor (0: no floor)."""
    trace = Trace()
    trace.attach(network)
    await add_users(network, [f"w{prefix}{i:03d}.warm.portal" for i in range(warmup)], 1)
    trace.on = True
    lat = [f"l{prefix}{i:03d}.lat.portal" for i in range(samples)]
    timed, _ = await add_users(network, lat, 1)
    trace.on = False
    print(latency_line(f"{name}, one at a time", timed, goal=goal))
    parts = breakdown(timed, trace.events)
    print_breakdown(parts)
    if floor_jobs:
        await print_floor(parts, floor_jobs, warmup, concurrency)
    if users:
        bulk = [
            f"b{prefix}{i:03d}.bulk{prefix}{i % projects if projects else i:03d}.portal"
            for i in range(users)
        ]
        loaded, elapsed = await add_users(network, bulk, concurrency)
        rate = users / elapsed
        target = ""
        if goal:
            verdict = "met" if rate >= GOAL_BULK_USERS_PER_S else "NOT met"
            target = f"   goal: ≥ {GOAL_BULK_USERS_PER_S:g} users/s ({verdict})"
        print(
            f"{name}, bulk {users} users, {concurrency} in flight: "
            f"{rate:7.1f} users/s ({elapsed:.2f} s){target}"
        )
        print(latency_line(f"{name}, under that load", loaded, goal=False))


async def embedded(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="bgprovision-") as root:
        network = await start_network(Path(root))
        try:
            await measure(
                network,
                "embedded backends",
                samples=args.samples,
                warmup=args.warmup,
                users=args.users,
                concurrency=args.concurrency,
                goal=True,
                floor_jobs=args.floor_jobs,
            )
        finally:
            await network.stop()


# --- slapd + slurmdbd --------------------------------------------------------------------


def real_fixtures() -> tuple[ModuleType, ModuleType] | str:
    """The slapd and Slurm fixture modules, or why they cannot be used here."""
    sys.path.insert(0, str(ROOT))
    try:
        from tests.backends import slapd, slurm
    except ImportError as exc:
        return f"tests/backends fixtures not importable: {exc}"
    missing = slapd._missing()
    if missing:
        return missing
    needs = slurm.missing_requirements()
    if needs:
        return "missing " + ", ".join(needs)
    return slapd, slurm


def real_config(
    ldap: Any, stack: Any, engine: str = "slurm"
) -> Callable[[str, AgentConfig], AgentConfig]:
    """The demo's ``configure`` hook: LDAP accounts on slapd, a Slurm scheduler on ``engine``
    (``slurm``: sacctmgr; ``slurmrestd``: the stack's slurmrestd)."""

    def configure(name: str, config: AgentConfig) -> AgentConfig:
        if config.agent is AgentType.ACCOUNT:
            service = replace(config.service, encryption=SimpleEncryption())
            settings = {
                "account-backend": "ldap",
                "ldap-url": ldap.url,
                "ldap-bind-dn": ldap.admin_dn,
                "ldap-base-dn": ldap.suffix,
            }
            config = replace(config, service=service, extras={**config.extras, **settings})
            return config.with_secret("ldap-password", ldap.password)
        if config.agent is AgentType.FILESYSTEM:
            # slapd's users are not in NSS here (no SSSD), so leave ownership alone.
            return replace(config, extras={"id-resolver": "nss", "chown": "false"})
        if config.agent is AgentType.SCHEDULER:
            node = {"cpus": stack.cpus, "mem": stack.mem_mb}
            settings = {
                "scheduler-backend": "slurm",
                "slurm-default-node": json.dumps(node),
                "slurm-cluster": stack.cluster,
                "slurm-conf": str(stack.conf),
                "command-prefix": shlex.join(stack.command_prefix),
            }
            if engine == "slurmrestd":
                settings.update(
                    {
                        "scheduler-backend": "slurmrestd",
                        "slurm-server": stack.rest_server,
                        "slurm-user": "slurm",
                        "token-command": stack.token_command,
                    }
                )
            return replace(config, extras={**config.extras, **settings})
        return config

    return configure


@contextmanager
def real_backends(slapd: ModuleType, slurm: ModuleType) -> Iterator[tuple[Any, Any]]:
    """A running slapd and Slurm stack (stopped, by their PIDs, afterwards)."""
    began = time.perf_counter()
    with slurm.running_stack() as stack, tempfile.TemporaryDirectory(prefix="bgslapd-") as tmp:
        ldap = slapd.start_slapd(Path(tmp))
        try:
            print(f"  (slapd and the Slurm stack started in {time.perf_counter() - began:.1f} s)")
            yield ldap, stack
        finally:
            slapd.stop_slapd(ldap)


async def real(args: argparse.Namespace, ldap: Any, stack: Any) -> None:
    engines = [("slurm", "slapd + slurmdbd (sacctmgr)")]
    if stack.rest_missing:
        print(f"slurmrestd: not available (missing {', '.join(stack.rest_missing)})")
    else:
        engines.append(("slurmrestd", "slapd + slurmdbd (slurmrestd)"))
    for engine, name in engines:
        with tempfile.TemporaryDirectory(prefix=f"bgprovision-{engine}-") as root:
            network = await start_network(Path(root), configure=real_config(ldap, stack, engine))
            try:
                await measure(
                    network,
                    name,
                    samples=args.real_samples,
                    warmup=min(args.warmup, 5),
                    users=args.real_users,
                    concurrency=args.real_concurrency,
                    goal=False,
                    prefix=engine[-4:],
                    projects=args.real_projects,
                )
            except Exception as exc:  # one engine failing must not hide the other's numbers
                print(f"{name}: failed ({type(exc).__name__}: {exc})")
            finally:
                await network.stop()
        print()


# --- main --------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200, help="add_user one at a time")
    parser.add_argument("--warmup", type=int, default=20, help="add_user before timing")
    parser.add_argument("--users", type=int, default=500, help="users in the bulk run")
    parser.add_argument("--concurrency", type=int, default=32, help="bulk jobs in flight")
    parser.add_argument(
        "--real-samples", type=int, default=30, help="add_user one at a time on slapd + Slurm"
    )
    parser.add_argument(
        "--real-users", type=int, default=20, help="bulk add_user on each Slurm engine"
    )
    parser.add_argument(
        "--real-concurrency", type=int, default=1, help="bulk jobs in flight on real back ends"
    )
    parser.add_argument(
        "--real-projects",
        type=int,
        default=0,
        help="projects the real bulk users share (0: one each)",
    )
    parser.add_argument("--no-real", action="store_true", help="skip slapd + slurmdbd")
    parser.add_argument(
        "--floor-jobs",
        type=int,
        default=500,
        help="jobs timed for each chain of the add_user floor (0: no floor)",
    )
    args = parser.parse_args(argv)

    print(f"command: {shlex.join([Path(sys.executable).name, *sys.argv])}")
    print(
        f"broadgauge {broadgauge.__version__}, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, {platform.platform()}"
    )
    print(
        f"goals with embedded back ends: p50 ≤ {GOAL_P50_MS:g} ms end to end,"
        f" ≥ {GOAL_BULK_USERS_PER_S:g} users/s in bulk"
    )
    print()
    asyncio.run(embedded(args))
    print()
    if args.no_real:
        print("slapd/slurmdbd: not available (skipped with --no-real)")
        return
    found = real_fixtures()
    if isinstance(found, str):
        print(f"slapd/slurmdbd: not available ({found})")
        return
    try:
        with real_backends(*found) as (ldap, stack):
            asyncio.run(real(args, ldap, stack))
    except Exception as exc:  # a stack that would not start is a missing row, not a crash
        print(f"slapd/slurmdbd: not available ({type(exc).__name__}: {exc})")


if __name__ == "__main__":
    main()
