"""The soak runner: the job mix through a real site while the fault schedule runs.

:func:`run_soak` does, in order:

1. plan the mix (:func:`.mix.make_plan`) and print its seed;
2. configure and start the site (:class:`.loopback.RealBackendSite`);
3. send the mix through the bridge (:class:`.mix.MixRunner`), and once the warm-up share
   of it is final and the boards have had a job's lifetime and a cleaner pass to fill up,
   read every agent's RSS;
4. with faults on, draw the schedule (:func:`.schedule.make_schedule`) over a share of the
   time the rest of the mix should take at the warm-up rate, and run it beside the mix on
   a clock that counts the mix's progress (so each fault lands under load, at the share of
   the mix it was planned for, however the mix's speed varies);
5. heal everything, wait until every board has emptied (jobs expire 120 s after they were
   made and the cleaner runs once a minute), read the RSS again, stop the site;
6. read the back ends, the audit logs and the stores, and check the invariants
   (:mod:`.invariants`).

It returns a :class:`SoakReport`; :func:`figures` prints it and :func:`violations` lists
what broke.  The site and its injector come from one factory (:data:`SiteFactory`): the
soak asks the site only for what :class:`SoakSite` names and breaks it only through
:class:`.schedule.FaultInjector`, so the network-namespace harness can run the same soak
with every kind of fault once it is wrapped in those two interfaces.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import io
import random
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from broadgauge.jobs.job import DEFAULT_LIFETIME_SECONDS, Job
from broadgauge.runtime.agent import CLEANER_INTERVAL, JobExpired, JobFailed
from tests.agents_crash.site import AGENTS
from tests.backends.slurm import SlurmStack

from . import invariants as inv
from . import readers
from .loopback import LINKS, LdapTarget, LoopbackInjector, RealBackendSite
from .mix import Attempt, MixRunner, Names, Op, Outcome, Plan, make_plan
from .schedule import (
    FaultInjector,
    FaultKind,
    FaultRecord,
    make_schedule,
    run_schedule,
    schedule_seconds,
)

#: How often the agents' RSS is sampled for its peak.
RSS_EVERY = 2.0
#: Extra time, beyond a job's lifetime and one cleaner pass, for the boards to empty.
DRAIN_SLACK = 30.0


@dataclass(frozen=True)
class SoakSettings:
    """What to run."""

    seed: int
    jobs: int
    users: int
    projects: int
    faults: bool = True
    concurrency: int = 24
    #: share of the plan that must be final before the warm-up RSS is read and faults start
    #: (and at least a job's lifetime plus a cleaner pass, unless half the mix is done)
    warmup: float = 0.15
    #: faults of each kind, and extra faults of random kinds
    per_kind: int = 1
    extra_faults: int = 0
    #: the faults are spread over this share of the expected rest of the mix
    fault_share: float = 0.7
    #: kinds to schedule (the injector runs those it can)
    kinds: tuple[FaultKind, ...] = tuple(FaultKind)


@dataclass
class SoakReport:
    """Everything the soak saw."""

    settings: SoakSettings
    plan: Plan
    attempts: list[Attempt]
    completed: dict[int, Attempt]
    abandoned: list[int]
    mix_seconds: float
    faults: list[FaultRecord] = field(default_factory=list)
    rss_warm: dict[str, int] = field(default_factory=dict)
    rss_end: dict[str, int] = field(default_factory=dict)
    rss_peak: dict[str, int] = field(default_factory=dict)
    #: (time, RSS of each agent) every :data:`RSS_EVERY` seconds from the start of the mix
    rss_samples: list[tuple[float, dict[str, int]]] = field(default_factory=list)
    stores: dict[str, inv.StoreFigures] = field(default_factory=dict)
    drain_seconds: float = 0.0
    exit_statuses: dict[str, int] = field(default_factory=dict)
    #: invariant → its violations
    checks: dict[str, list[str]] = field(default_factory=dict)
    uid_gaps: int = 0
    changes_applied: int = 0
    audit_entries: dict[str, int] = field(default_factory=dict)
    #: per fault that ran: seconds from its heal to the first job across it (None: none)
    recovery: list[float | None] = field(default_factory=list)
    total_seconds: float = 0.0
    #: quota requests whose value changed on the way (see :class:`.invariants.Settled`)
    rounded: list[str] = field(default_factory=list)
    #: changes a job cut off by a crash made again when it was resumed
    rerun: list[str] = field(default_factory=list)
    #: jobs the bridge answered from an identical job in flight
    duplicates: int = 0


class SoakSite(Protocol):
    """What the soak needs of a running site (:class:`.loopback.RealBackendSite` is one; the
    network-namespace harness can be another, with an adapter)."""

    @property
    def job_lifetime(self) -> float:
        """How long the jobs the bridge makes live (seconds): the boards hold them until then."""
        ...

    @property
    def kill_targets(self) -> tuple[str, ...]:
        """The processes a kill may hit (the agents, and the bridge if it is a process)."""
        ...

    @property
    def cut_seconds(self) -> tuple[float, float]:
        """How long partitions and isolations last (longer than the site's watchdog)."""
        ...

    def configure(self) -> None:
        """Write every agent's config."""
        ...

    async def start_all(self) -> None:
        """Start every agent and the bridge; return once every link is up."""
        ...

    async def send(self, instruction: str, job_id: uuid.UUID) -> Job:
        """Send ``instruction`` to the instance through the bridge; the finished job, or
        :class:`JobFailed` (an error, with its message) / :class:`JobExpired` (none in time).
        A site that cannot choose the job's id returns the job with the id it used."""
        ...

    async def board_counts(self) -> dict[str, int]:
        """Jobs and queued commands on each agent's boards (-1: unknown)."""
        ...

    def rss(self) -> dict[str, int]:
        """Each running agent's resident set size, KiB."""
        ...

    def data_dirs(self) -> dict[str, Path]:
        """Each agent's data directory (``audit.jsonl``, ``boards.sqlite3``)."""
        ...

    def read_backends(self, names: Names) -> inv.Backends:
        """What the real back ends hold now."""
        ...

    async def stop(self) -> dict[str, int]:
        """Stop everything cleanly; each agent's exit status."""
        ...

    def kill_leftovers(self) -> None:
        """Make sure no process of the site is left (after a failure)."""
        ...

    def diagnostics(self) -> str:
        """What to print when the soak fails."""
        ...


#: Builds the site under a directory, with the injector that breaks it.
SiteFactory = Callable[[Path], tuple[SoakSite, FaultInjector]]


class JobIds:
    """Job ids whose trace (first 32 bits) is unique in the run, so every backend change a
    leaf agent audits can be traced back to the one attempt that caused it."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed ^ 0x5EED)
        self._used: set[int] = set()

    def next(self) -> uuid.UUID:
        """A fresh version-4 id with an unused trace prefix."""
        while True:
            prefix = self._rng.getrandbits(32)
            if prefix not in self._used:
                self._used.add(prefix)
                break
        return uuid.UUID(int=(prefix << 96) | (uuid.uuid4().int & ((1 << 96) - 1)))


def real_site(ldap: LdapTarget, stack: SlurmStack, slapd_pid: int) -> SiteFactory:
    """The loopback site on these back ends (``slapd_pid``: the slapd ``ldap`` is on, for the
    slow-backend fault), and its injector."""

    def build(root: Path) -> tuple[SoakSite, FaultInjector]:
        site = RealBackendSite(root, ldap, stack, slapd_pid)
        return site, LoopbackInjector(site)

    return build


async def run_soak(
    root: Path,
    settings: SoakSettings,
    factory: SiteFactory,
    *,
    say: Callable[[str], None] = print,
) -> SoakReport:
    """Run the soak under ``root`` (see the module docstring); the report, with its checks."""
    began = time.time()
    tag = f"{settings.seed % 0xFFFF:04x}{uuid.uuid4().hex[:3]}"
    plan = make_plan(
        settings.seed, settings.jobs, settings.users, settings.projects,
        tag=tag, today=_dt.date.today(),
    )  # fmt: skip
    say(
        f"soak seed {settings.seed}: {len(plan.ops)} jobs, {settings.users} users, "
        f"{settings.projects} projects (tag {tag}), faults {'on' if settings.faults else 'off'}; "
        f"mix {dict(plan.counts())}"
    )
    site, injector = factory(root)
    chatter = io.StringIO()  # what each CLI command says: shown only if configuring fails
    try:
        with contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
            site.configure()
    except BaseException:
        print(chatter.getvalue())
        raise
    ids = JobIds(settings.seed)
    runner: MixRunner | None = None
    tasks: list[asyncio.Task[None]] = []
    try:
        await site.start_all()

        async def submit(op: Op, number: int) -> Attempt:
            job_id = ids.next()
            sent = time.time()

            def attempt(job: str, outcome: Outcome, detail: str, result: str | None) -> Attempt:
                return Attempt(op.index, number, job, sent, time.time(), outcome, detail, result)

            try:
                done = await site.send(op.instruction, job_id)
            except JobExpired as exc:  # no final state within the job's lifetime
                return attempt(str(exc.job.id), Outcome.LOST, exc.job.error_message or "", None)
            except JobFailed as exc:
                return attempt(str(exc.job.id), Outcome.ERROR, exc.job.error_message or "", None)
            return attempt(str(done.id), Outcome.COMPLETE, done.result_type or "None", done.result)

        runner = MixRunner(plan, submit, concurrency=settings.concurrency)
        rss_samples: list[tuple[float, dict[str, int]]] = []
        sampling = asyncio.create_task(_sample_rss(site, rss_samples))
        mixing = asyncio.create_task(runner.run())
        tasks += [sampling, mixing]
        warm_count = max(1, int(len(plan.ops) * settings.warmup))
        await _until(runner.finished(warm_count), mixing)
        # The boards fill for a job's lifetime plus one cleaner pass before they level off;
        # read the warm-up RSS then (or half-way through a mix too short for that).
        await _until(_steady(runner, len(plan.ops)), mixing)
        warm_at = time.time()
        rss_warm = site.rss()
        warm_seconds = warm_at - runner.started_at
        say(f"warm-up: {runner.final_count} jobs final in {warm_seconds:.1f} s; RSS {rss_warm}")
        records: list[FaultRecord] = []
        if settings.faults:
            # The faults are planned in seconds at the warm-up rate, and land at the share of
            # the mix those seconds stand for (see run_schedule).
            total, warmed = len(plan.ops), runner.final_count
            rate = warmed / max(0.001, warm_seconds)
            expected = (total - warmed) / rate
            schedule = make_schedule(
                settings.seed, settings.fault_share * expected, AGENTS, LINKS, settings.kinds,
                per_kind=settings.per_kind, extra=settings.extra_faults,
                extra_kinds=[k for k in settings.kinds if k in injector.available()],
                kill_targets=site.kill_targets, cut=site.cut_seconds,
            )  # fmt: skip
            planned = "; ".join(f"{f.at:.0f} s {f.describe()}" for f in schedule)
            say(f"faults over {settings.fault_share * expected:.0f} s of {expected:.0f}: {planned}")
            # A fault starts only after the one before has healed, so a mix quicker than
            # its faults would end before the last of them: then the rest of the load is
            # paced to last as long as the schedule needs.
            length = max(expected, schedule_seconds(schedule) / settings.fault_share)
            if length > expected:
                runner.pace(length / max(1, total - warmed))
                say(
                    f"the rest of the mix is paced to {(total - warmed) / length:.1f} jobs/s "
                    f"({length:.0f} s), so that every fault lands in it"
                )

            def progress() -> float:
                return length * (runner.final_count - warmed) / max(1, total - warmed)

            records = await run_schedule(schedule, injector, clock=progress, ended=mixing.done)
        await mixing
        await injector.heal_all()
        mix_seconds = runner.ended_at - runner.started_at
        say(f"mix done in {mix_seconds:.1f} s: {runner.summary()}")
        drain_began = time.time()
        stepped = [r for r in records if r.ran and r.fault.kind is FaultKind.CLOCK_STEP]
        ahead = max((r.fault.amount[0] for r in stepped), default=0.0)
        await _drain(site, runner, say, ahead=ahead)
        drain_seconds = time.time() - drain_began
        rss_end = site.rss()
        sampling.cancel()
        statuses = await site.stop()
    except BaseException:
        site.kill_leftovers()
        print(runner.summary() if runner is not None else "the mix never started")
        print(site.diagnostics())
        raise
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        site.kill_leftovers()
    report = SoakReport(
        settings, plan, runner.attempts, runner.completed, runner.abandoned, mix_seconds,
        records, rss_warm, rss_end, drain_seconds=drain_seconds, exit_statuses=statuses,
        rss_samples=rss_samples, rss_peak=_peaks(rss_samples),
    )  # fmt: skip
    _check(site, report)
    report.total_seconds = time.time() - began
    return report


async def _until(waiting: Awaitable[None], mixing: asyncio.Task[None]) -> None:
    """Await ``waiting``, but fail at once if the mix itself fails first."""
    task = asyncio.ensure_future(waiting)
    done, _ = await asyncio.wait({task, mixing}, return_when=asyncio.FIRST_COMPLETED)
    if task not in done:
        task.cancel()
        mixing.result()  # raises what the mix raised
        raise AssertionError("the mix ended before the warm-up share was final")


async def _steady(runner: MixRunner, total: int) -> None:
    """Return once the boards have had time to level off, or half the mix is final."""
    steady_at = runner.started_at + DEFAULT_LIFETIME_SECONDS + CLEANER_INTERVAL
    while time.time() < steady_at and runner.final_count < total // 2:
        await asyncio.sleep(1.0)


def _peaks(samples: list[tuple[float, dict[str, int]]]) -> dict[str, int]:
    """Each agent's highest sampled RSS."""
    peaks: dict[str, int] = {}
    for _, rss in samples:
        for name, kib in rss.items():
            peaks[name] = max(kib, peaks.get(name, 0))
    return peaks


async def _sample_rss(site: SoakSite, samples: list[tuple[float, dict[str, int]]]) -> None:
    """Append every agent's RSS to ``samples`` every :data:`RSS_EVERY` seconds."""
    while True:
        samples.append((time.time(), site.rss()))
        await asyncio.sleep(RSS_EVERY)


async def _drain(
    site: SoakSite, runner: MixRunner, say: Callable[[str], None], *, ahead: float = 0.0
) -> None:
    """Wait until no agent's boards hold a job or a queued command: at most the bridge's
    job lifetime after the last job was sent, plus a cleaner pass, plus ``ahead`` (how far
    a clock ran ahead: the jobs a skewed agent made expire that much later)."""
    last = max((a.submitted for a in runner.attempts), default=time.time())
    deadline = last + site.job_lifetime + ahead + CLEANER_INTERVAL + DRAIN_SLACK
    while True:
        held = await site.board_counts()
        if not any(held.values()):
            return
        if time.time() > deadline:
            say(f"boards still hold jobs after the drain: {held}")
            return
        await asyncio.sleep(5.0)


def _check(site: SoakSite, report: SoakReport) -> None:
    """Read the back ends, audit logs and stores; run every invariant into ``report``."""
    plan, checks = report.plan, report.checks
    ops = plan.ops
    backends = site.read_backends(plan.names)
    report.uid_gaps = inv.uid_gaps(backends.ldap)
    dirs = site.data_dirs()
    logs = {name: folder / "audit.jsonl" for name, folder in dirs.items()}
    audits = {name: readers.read_audit(path) for name, path in logs.items()}
    checks["0 jobs lost"] = [
        f"{ops[a.op].instruction} (attempt {a.number}, {a.job_id}): {a.detail}"
        for a in inv.lost(report.attempts)
    ]
    checks["every instruction completed"] = inv.check_final_states(
        ops, report.completed, report.abandoned
    )
    settings = inv.settled(ops, report.completed)
    report.rounded = settings.rounded
    checks["back ends match the final job states"] = inv.check_backends(
        plan.expected,
        plan.names,
        backends.ldap,
        backends.slurm,
        backends.sandbox,
        settings=settings,
        cpus=backends.cpus,
    )
    once = inv.check_run_once(audits, report.attempts, ops)
    checks["0 run twice"] = once.problems
    report.changes_applied, report.rerun = once.applied, once.rerun
    chains, report.audit_entries = inv.check_chains(logs)
    checks["every audit chain verifies"] = chains
    checks["audit trails match final states"], report.duplicates = inv.check_trails(
        report.attempts, audits["bridge"], audits["instance"], ops
    )
    checks["memory bounded"] = inv.check_memory(report.rss_warm, report.rss_end)
    report.stores = {name: readers.read_store(folder) for name, folder in dirs.items()}
    checks["boards empty"] = inv.check_boards_empty(report.stores)
    checks["agents stopped cleanly"] = [
        f"{name} exited with {status}" for name, status in report.exit_statuses.items() if status
    ]
    for record in report.faults:
        if record.ran:
            report.recovery.append(
                inv.recovery_seconds(record.healed, record.agents, audits, report.attempts)
            )


def violations(report: SoakReport) -> list[str]:
    """Every violated invariant, with its first few violations."""
    lines = []
    for name, problems in report.checks.items():
        if problems:
            lines.append(f"{name}: {len(problems)} violation(s)")
            lines += [f"  {p}" for p in problems[:15]]
    return lines


def figures(report: SoakReport) -> str:
    """The soak's numbers, as lines of text."""
    s = report.settings
    done = [a for a in report.attempts if a.outcome is Outcome.COMPLETE]
    latencies = sorted(a.latency for a in done)
    ran = [r for r in report.faults if r.ran]
    kinds = sorted({r.fault.kind.value for r in ran})
    skipped = sorted({r.fault.kind.value for r in report.faults if not r.ran})
    lines = [
        f"seed {s.seed}; {len(report.plan.ops)} jobs, {s.users} users, {s.projects} projects; "
        f"faults {'on' if s.faults else 'off'}",
        f"mix: {report.mix_seconds:.1f} s, {len(report.plan.ops) / report.mix_seconds:.2f} jobs/s "
        f"({len(report.attempts)} attempts, {len(report.attempts) - len(done)} not complete)",
    ]
    if latencies:
        lines.append(
            f"latency of completed attempts: p50 {_pct(latencies, 50):.2f} s, "
            f"p99 {_pct(latencies, 99):.2f} s, max {latencies[-1]:.2f} s"
        )
    lost = len(report.checks.get("0 jobs lost", []))
    twice = len(report.checks.get("0 run twice", []))
    lines.append(
        f"jobs lost: {lost}; run twice: {twice}; backend changes attributed: "
        f"{report.changes_applied}; uids allocated but unused: {report.uid_gaps}"
    )
    lines.append(f"changes re-applied by a job resumed after a crash: {len(report.rerun)}")
    lines += [f"  {line}" for line in report.rerun[:10]]
    lines.append(
        f"answered as duplicates of a job in flight: {report.duplicates}; quotas set other "
        f"than requested: {len(report.rounded)}"
        + (f" (e.g. {report.rounded[0]})" if report.rounded else "")
    )
    lines.append(f"fault types run: {kinds or 'none'}; unavailable here: {skipped or 'none'}")
    for record, seconds in zip(ran, report.recovery, strict=True):
        heal = record.settled - record.healed
        after = "no job crossed it" if seconds is None else f"first job across it {seconds:.2f} s"
        note = f" ({record.note})" if record.note else ""
        if record.fault.kind is FaultKind.SLOW_BACKEND:
            meanwhile = sum(1 for a in done if record.applied <= a.finished <= record.healed)
            note += f" ({meanwhile} jobs completed while it was frozen)"
        lines.append(
            f"  {record.fault.describe()}{note}: relinked {heal:.2f} s after the restart, {after}"
        )
    measured = [x for x in report.recovery if x is not None]
    if measured:
        lines.append(
            f"heal/restart to first job across it: median {statistics.median(measured):.2f} s, "
            f"max {max(measured):.2f} s"
        )
    for agent, warm in report.rss_warm.items():
        end, peak = report.rss_end.get(agent, 0), report.rss_peak.get(agent, 0)
        curve = " ".join(f"{kib / 1024:.0f}" for kib in _rss_curve(report, agent))
        lines.append(
            f"RSS {agent}: {warm / 1024:.1f} MiB after warm-up, peak {peak / 1024:.1f} MiB, "
            f"{end / 1024:.1f} MiB after ({(end / warm - 1) * 100:+.0f} %); "
            f"at each tenth of the mix: {curve} MiB"
        )
    lines.append(f"boards drained {report.drain_seconds:.0f} s after the mix")
    for agent, store in report.stores.items():
        lines.append(
            f"store {agent}: boards {store.board_bytes / 1024:.0f} KiB ({store.jobs} jobs, "
            f"{store.outbox} queued, {store.executions} execution records), "
            f"audit {store.audit_bytes / 1024:.0f} KiB "
            f"({report.audit_entries.get(agent, 0)} entries)"
        )
    lines.append(f"total {report.total_seconds:.0f} s")
    return "\n".join(lines)


def _rss_curve(report: SoakReport, agent: str) -> list[int]:
    """The agent's RSS at the end of each tenth of the mix (the first sample after it)."""
    if not report.rss_samples:
        return []
    start = report.rss_samples[0][0]
    curve = []
    for tenth in range(1, 11):
        moment = start + report.mix_seconds * tenth / 10
        later = [rss.get(agent) for when, rss in report.rss_samples if when >= moment]
        found = next((kib for kib in later if kib is not None), None)
        if found is not None:
            curve.append(found)
    return curve


def _pct(ordered: list[float], percent: float) -> float:
    index = min(len(ordered) - 1, max(0, round(percent / 100 * len(ordered)) - 1))
    return ordered[index]
