"""The soak's faults: a seeded schedule, the injector interface, and the runner.

A schedule is a list of :class:`Fault` (time offset, kind, target, duration), drawn from a
seed over a span of seconds.  Faults do not overlap: each starts after the previous one has
healed, so the time from each heal (or restart) to the first job across the healed link can
be measured.

A :class:`FaultInjector` applies faults to a running site.  The loopback site (real
processes on one interface) can kill and restart agents, stall their back ends and step
their clocks; the network-namespace harness can also kill the bridge, and cut, degrade and
slow links.  An injector says which kinds it can do
(:meth:`FaultInjector.available`); :func:`run_schedule` runs those and records the others as
unavailable, so the report says which fault types really ran.
"""

from __future__ import annotations

import asyncio
import enum
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol


class FaultKind(enum.Enum):
    """The kinds of fault the soak injects."""

    #: SIGKILL an agent at a random moment; restart it from its config and store later.
    KILL = "kill"
    #: SIGKILL an agent just after a restart, while its first links Sync their boards.
    KILL_DURING_SYNC = "kill-during-sync"
    #: SIGKILL an agent while one of its backend commands is running.
    KILL_DURING_BACKEND_CALL = "kill-during-backend-call"
    #: Drop all traffic on one link, then heal it.
    PARTITION = "partition"
    #: Drop all traffic of one agent, then heal it.
    ISOLATE = "isolate"
    #: Drop a share of the packets on every link, then stop.
    LOSS = "loss"
    #: Delay one link, with jitter, then stop.
    LATENCY = "latency"
    #: Freeze (SIGSTOP) the server behind an agent's back end, slapd behind the account
    #: agent or slurmdbd behind the scheduler, so that every call to it hangs; then let it
    #: go on (SIGCONT).
    SLOW_BACKEND = "slow-backend"
    #: Restart an agent with its clock :data:`CLOCK_AHEAD` seconds ahead (libfaketime), then
    #: restart it with the right clock.
    CLOCK_STEP = "clock-step"


#: How often :func:`run_schedule` reads its clock.
CLOCK_POLL = 0.05
#: Agents whose backend calls are separate processes the injector can see.
BACKEND_AGENTS = ("scheduler",)
#: Agents whose back end is a server the injector can freeze (slapd, slurmdbd).
SERVER_AGENTS = ("account", "scheduler")
#: How far a clock step puts an agent's clock ahead: beyond a job's lifetime, so every job
#: that reaches it arrives expired by its clock (docs/operators/agents.md, "Clocks").
CLOCK_AHEAD = 300.0
#: Seconds a partition or an isolation lasts, unless the schedule is given its own range.
CUT_SECONDS = (2.0, 8.0)


@dataclass(frozen=True)
class Fault:
    """One fault: at ``at`` seconds into the fault phase, on ``target``, for ``duration``."""

    at: float
    kind: FaultKind
    #: one agent, or the two ends of a link
    target: tuple[str, ...]
    duration: float
    #: loss percent, or (delay, jitter) seconds, where the kind needs it
    amount: tuple[float, ...] = ()

    def describe(self) -> str:
        """``kill scheduler for 1.2 s``, ``loss 10 % for 4.0 s`` and so on."""
        what = [self.kind.value, "-".join(self.target)]
        if self.kind is FaultKind.LOSS:
            what.append(f"{self.amount[0]:g} %")
        elif self.kind is FaultKind.LATENCY:
            delay, jitter = self.amount
            what.append(f"{delay * 1000:.0f} ms ± {jitter * 1000:.0f} ms")
        elif self.kind is FaultKind.CLOCK_STEP:
            what.append(f"+{self.amount[0]:g} s")
        return f"{' '.join(w for w in what if w)} for {self.duration:.1f} s"


class FaultUnavailable(Exception):
    """The injector cannot apply this kind of fault on its site."""


class FaultInjector(Protocol):
    """What the soak asks of a site to break it.  Every method returns once it is done."""

    def available(self) -> frozenset[FaultKind]:
        """The kinds this injector can apply."""
        ...

    async def kill(self, agent: str) -> None:
        """SIGKILL the agent's process (no clean-up of any kind)."""
        ...

    async def restart(self, agent: str) -> None:
        """Start the agent again from its config and durable store; return once linked."""
        ...

    async def kill_during_sync(self, agent: str) -> None:
        """Start the (dead) agent and SIGKILL it as its first link comes up and Syncs."""
        ...

    async def kill_during_backend_call(self, agent: str, wait: float) -> bool:
        """SIGKILL the agent while a backend command of its is running (True), or after
        ``wait`` seconds without one (False)."""
        ...

    async def partition(self, a: str, b: str) -> None:
        """Drop all traffic between ``a`` and ``b``."""
        ...

    async def heal(self, a: str, b: str) -> None:
        """Undo :meth:`partition`."""
        ...

    async def isolate(self, agent: str) -> None:
        """Drop all traffic to and from ``agent``."""
        ...

    async def heal_all(self) -> None:
        """Undo every partition, isolation, loss and latency; restart any dead agent."""
        ...

    async def set_loss(self, percent: float) -> None:
        """Drop ``percent`` % of packets on every link."""
        ...

    async def clear_loss(self) -> None:
        """Undo :meth:`set_loss`."""
        ...

    async def set_latency(self, a: str, b: str, delay: float, jitter: float) -> None:
        """Delay traffic between ``a`` and ``b`` by ``delay`` ± ``jitter`` seconds."""
        ...

    async def clear_latency(self, a: str, b: str) -> None:
        """Undo :meth:`set_latency`."""
        ...

    async def stall_backend(self, agent: str) -> None:
        """Freeze the server behind ``agent``'s back end: its calls hang until resumed."""
        ...

    async def resume_backend(self, agent: str) -> None:
        """Undo :meth:`stall_backend`."""
        ...

    async def step_clock(self, agent: str, ahead: float) -> None:
        """Restart ``agent`` with its clock ``ahead`` seconds ahead; return once linked."""
        ...

    async def restore_clock(self, agent: str) -> None:
        """Restart ``agent`` with the right clock; return once linked."""
        ...


def make_schedule(
    seed: int,
    span: float,
    agents: Sequence[str],
    links: Sequence[tuple[str, str]],
    kinds: Sequence[FaultKind],
    *,
    per_kind: int = 1,
    extra: int = 0,
    extra_kinds: Sequence[FaultKind] | None = None,
    kill_targets: Sequence[str] | None = None,
    cut: tuple[float, float] = CUT_SECONDS,
) -> list[Fault]:
    """``per_kind`` faults of every kind in ``kinds`` in a seeded order, then ``extra`` of
    kinds drawn from ``extra_kinds`` (default ``kinds``), spread over ``span`` seconds
    without overlapping.  The faults drawn (kinds, targets, amounts) depend on the seed
    only, not on ``span``: only their start times do.

    Kills take a random one of ``kill_targets`` (default ``agents``; backend-call kills an
    agent of :data:`BACKEND_AGENTS`) and keep it down 0.2-3 s; partitions take a random
    link, isolation a random agent, both for ``cut`` seconds (low, high: 2-8 s by default;
    give a range above the watchdog's time to make every cut close its links); loss is 1 %
    or 10 % for 3-8 s; latency 50-500 ms with up to half that as jitter; a slow back end
    freezes the server of an agent of :data:`SERVER_AGENTS` for 15-30 s; a clock step puts
    a random agent :data:`CLOCK_AHEAD` seconds ahead for 3-8 s.
    """
    rng = random.Random(seed)
    chosen = [kind for kind in kinds for _ in range(per_kind)]
    rng.shuffle(chosen)
    # The extras come last: if the load ends before the schedule does, every kind has run.
    chosen += [rng.choice(list(extra_kinds or kinds)) for _ in range(extra)]
    # Kinds, targets and amounts are drawn before any time, so they do not depend on span.
    victims = list(kill_targets or agents)
    drafts = [_draft(rng, kind, agents, victims, links, cut=cut) for kind in chosen]
    if not drafts:
        return []
    # Spread the starts: equal slots, each fault at a random point of the slack in its slot.
    slot = span / len(drafts)
    faults = []
    free_from = 0.0
    for number, (kind, target, duration, amount) in enumerate(drafts):
        earliest = max(free_from, number * slot)
        latest = max(earliest, (number + 1) * slot - duration)
        at = rng.uniform(earliest, latest)
        faults.append(Fault(round(at, 2), kind, target, round(duration, 2), amount))
        free_from = at + duration + 1.0
    return faults


def _draft(
    rng: random.Random,
    kind: FaultKind,
    agents: Sequence[str],
    victims: Sequence[str],
    links: Sequence[tuple[str, str]],
    *,
    cut: tuple[float, float],
) -> tuple[FaultKind, tuple[str, ...], float, tuple[float, ...]]:
    if kind is FaultKind.KILL_DURING_BACKEND_CALL:
        return kind, (rng.choice(BACKEND_AGENTS),), rng.uniform(0.2, 3.0), ()
    if kind in (FaultKind.KILL, FaultKind.KILL_DURING_SYNC):
        return kind, (rng.choice(list(victims)),), rng.uniform(0.2, 3.0), ()
    if kind is FaultKind.PARTITION:
        return kind, rng.choice(list(links)), rng.uniform(*cut), ()
    if kind is FaultKind.ISOLATE:
        return kind, (rng.choice(list(agents)),), rng.uniform(*cut), ()
    if kind is FaultKind.SLOW_BACKEND:
        return kind, (rng.choice(SERVER_AGENTS),), rng.uniform(15.0, 30.0), ()
    if kind is FaultKind.CLOCK_STEP:
        return kind, (rng.choice(list(agents)),), rng.uniform(3.0, 8.0), (CLOCK_AHEAD,)
    if kind is FaultKind.LOSS:
        return kind, (), rng.uniform(3.0, 8.0), (rng.choice((1.0, 10.0)),)
    delay = rng.uniform(0.05, 0.5)
    return kind, rng.choice(list(links)), rng.uniform(3.0, 8.0), (delay, rng.uniform(0, delay / 2))


@dataclass(frozen=True)
class FaultRecord:
    """What happened to one scheduled fault (times are ``time.time()``; 0 if it did not run)."""

    fault: Fault
    #: when it was applied
    applied: float
    #: when the heal began (the restart command, the rule removed)
    healed: float
    #: when the heal was done (the agent linked to every neighbour again)
    settled: float
    ran: bool
    note: str = ""

    @property
    def agents(self) -> tuple[str, ...]:
        """The agents whose links the fault cut."""
        return self.fault.target


#: What a fault takes beyond its duration, by a generous guess: the restart and relink after
#: a kill or a clock step, the wait for a backend call to kill during, and the settle time.
FAULT_OVERHEAD = 6.0


def schedule_seconds(faults: Sequence[Fault]) -> float:
    """About how long, in seconds of the soak's clock, ``faults`` take from the first start
    to the last heal when run by :func:`run_schedule`."""
    if not faults:
        return 0.0
    last = max(fault.at + fault.duration for fault in faults)
    return last + FAULT_OVERHEAD * len(faults)


async def run_schedule(
    faults: Sequence[Fault],
    injector: FaultInjector,
    *,
    clock: Callable[[], float] | None = None,
    ended: Callable[[], bool] = lambda: False,
    settle: float = 2.0,
) -> list[FaultRecord]:
    """Apply each fault once ``clock()`` reaches its offset (default: seconds from now).

    The soak's clock counts the mix's progress in seconds at the planned rate, so the
    faults land where they were planned in the load however its speed varies.  Kinds the
    injector does not offer are recorded with ``ran=False``, and so is every fault still to
    come once ``ended()`` (the load is over).  A fault is healed, and ``settle`` seconds
    pass, before the next one starts.
    """
    if clock is None:
        origin = time.monotonic()
        clock = lambda: time.monotonic() - origin  # noqa: E731
    available = injector.available()
    records = []
    for fault in faults:
        if fault.kind not in available:
            records.append(FaultRecord(fault, 0.0, 0.0, 0.0, False, "unavailable on this site"))
            continue
        while clock() < fault.at and not ended():
            await asyncio.sleep(CLOCK_POLL)
        if ended():
            records.append(FaultRecord(fault, 0.0, 0.0, 0.0, False, "the load had ended"))
            continue
        records.append(await apply(fault, injector))
        await asyncio.sleep(settle)
    return records


#: One step of a fault: breaking its target, or healing it.
Step = Callable[[], Awaitable[object]]


async def apply(fault: Fault, injector: FaultInjector) -> FaultRecord:
    """Apply one fault, wait its duration, heal it; what happened."""
    kind, target = fault.kind, fault.target
    note = ""
    applied = time.time()
    if kind is FaultKind.KILL_DURING_SYNC:
        await injector.kill(target[0])
        await asyncio.sleep(fault.duration)
        await injector.kill_during_sync(target[0])
    elif kind is FaultKind.KILL_DURING_BACKEND_CALL:
        caught = await injector.kill_during_backend_call(target[0], wait=30.0)
        applied = time.time()
        note = "killed during a backend command" if caught else "no backend command seen"
    breaking, mending = _break_and_mend(fault, injector)
    if breaking is not None:
        await breaking()
    await asyncio.sleep(fault.duration)
    healed = time.time()
    await mending()
    return FaultRecord(fault, applied, healed, time.time(), True, note)


def _break_and_mend(fault: Fault, injector: FaultInjector) -> tuple[Step | None, Step]:
    """What breaks the fault's target (None: :func:`apply` already did) and what heals it."""
    kind, target, amount = fault.kind, fault.target, fault.amount
    if kind in (FaultKind.KILL_DURING_SYNC, FaultKind.KILL_DURING_BACKEND_CALL):
        return None, lambda: injector.restart(target[0])
    if kind is FaultKind.KILL:
        return lambda: injector.kill(target[0]), lambda: injector.restart(target[0])
    if kind is FaultKind.PARTITION:
        return lambda: injector.partition(*target), lambda: injector.heal(*target)
    if kind is FaultKind.ISOLATE:
        return lambda: injector.isolate(target[0]), injector.heal_all
    if kind is FaultKind.SLOW_BACKEND:
        return (
            lambda: injector.stall_backend(target[0]),
            lambda: injector.resume_backend(target[0]),
        )
    if kind is FaultKind.CLOCK_STEP:
        return (
            lambda: injector.step_clock(target[0], amount[0]),
            lambda: injector.restore_clock(target[0]),
        )
    if kind is FaultKind.LOSS:
        return lambda: injector.set_loss(amount[0]), injector.clear_loss
    delay, jitter = amount
    a, b = target
    return (
        lambda: injector.set_latency(a, b, delay, jitter),
        lambda: injector.clear_latency(*target),
    )
