"""The soak's parts on their own, without processes or sockets: each check must catch what
it is there to catch, the plan must be valid, the runner must respect the plan's order, and
the schedule must be reproducible and run only what the injector offers."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import time
from collections import Counter
from dataclasses import replace

import pytest

from . import invariants as inv
from .mix import (
    Attempt,
    MixRunner,
    Model,
    Op,
    Outcome,
    Plan,
    UserState,
    local_user,
    make_plan,
    project_group,
)
from .schedule import (
    FAULT_OVERHEAD,
    Fault,
    FaultKind,
    FaultUnavailable,
    apply,
    make_schedule,
    run_schedule,
    schedule_seconds,
)

TODAY = dt.date(2026, 1, 2)


def small_plan(seed: int = 7, jobs: int = 400, users: int = 60, projects: int = 6) -> Plan:
    return make_plan(seed, jobs, users, projects, tag="t1", today=TODAY)


# --- the plan -------------------------------------------------------------------------------


def test_plan_is_reproducible_and_every_instruction_is_valid_where_it_stands() -> None:
    plan = small_plan()
    assert plan == small_plan()
    assert plan.ops != small_plan(seed=8).ops
    states: dict[str, UserState] = dict.fromkeys(plan.expected.users, UserState.ABSENT)
    valid_from = {
        "add_user": {UserState.ABSENT, UserState.REMOVED},
        "remove_user": {UserState.ACTIVE},
        "block_user": {UserState.ACTIVE},
        "unblock_user": {UserState.BLOCKED},
        "set_user_quota": {UserState.ACTIVE},
    }
    replay = Model(project_of=plan.expected.project_of, users=dict(states))
    last_on_user: dict[str, int] = {}
    for op in plan.ops:
        if op.user is not None:
            assert replay.users[op.user] in valid_from[op.keyword], op
            if op.user in last_on_user:
                assert last_on_user[op.user] in op.after, f"{op} does not wait for its user"
            last_on_user[op.user] = op.index
        if op.keyword == "unblock_project":
            assert any(replay.users[u] is UserState.BLOCKED for u in replay.members(op.project))
        assert all(before < op.index for before in op.after)
        replay.apply(op)
    assert replay.users == plan.expected.users
    # every user was added at least once; every kind of instruction appears
    assert all(n >= 1 for (_, change), n in replay.changes.items() if change == "added")
    assert sum(1 for (_, c) in replay.changes if c == "added") == len(plan.expected.users)
    assert set(plan.counts()) >= {
        "add_project", "add_user", "remove_user", "block_user", "unblock_user",
        "set_limit", "set_project_quota", "set_user_quota", "get_usage_report",
    }  # fmt: skip


def test_a_project_wide_block_waits_for_every_earlier_instruction_on_its_users() -> None:
    plan = small_plan(seed=3, jobs=2000, users=100)
    wide = [op for op in plan.ops if op.keyword in ("block_project", "unblock_project")]
    assert wide, "the seed should draw a project-wide block"
    op = wide[0]
    earlier = [
        o.index
        for o in plan.ops[: op.index]
        if o.user is not None and plan.expected.project_of[o.user] == op.project
    ]
    assert set(earlier) <= set(op.after)


def test_too_few_jobs_for_the_users_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot add"):
        make_plan(1, 10, 20, 2, tag="x", today=TODAY)


# --- the runner -----------------------------------------------------------------------------


async def test_runner_keeps_the_plans_order_bounds_concurrency_and_retries_errors() -> None:
    plan = small_plan(jobs=150, users=30, projects=3)
    final: set[int] = set()
    running: set[int] = set()
    most = 0
    tries: Counter[int] = Counter()

    async def submit(op: Op, number: int) -> Attempt:
        nonlocal most
        assert set(op.after) <= final, f"{op} sent before {set(op.after) - final}"
        running.add(op.index)
        most = max(most, len(running))
        await asyncio.sleep(0.001 * (op.index % 5))
        running.discard(op.index)
        tries[op.index] += 1
        now = time.time()
        if op.index % 7 == 0 and number == 1:  # every seventh fails once, then completes
            return Attempt(op.index, number, f"{op.index:08x}-e", now, now, Outcome.ERROR, "no")
        final.add(op.index)
        return Attempt(op.index, number, f"{op.index:08x}-c", now, now, Outcome.COMPLETE, "None")

    runner = MixRunner(plan, submit, concurrency=4, retry_pause=0.001)
    await runner.run()
    assert len(runner.completed) == len(plan.ops) and not runner.abandoned
    assert most <= 4
    assert all(tries[i] == (2 if i % 7 == 0 else 1) for i in range(len(plan.ops)))


async def test_a_paced_runner_starts_instructions_no_faster_than_its_rate() -> None:
    plan = small_plan(jobs=30, users=10, projects=2)
    starts: list[float] = []

    async def submit(op: Op, number: int) -> Attempt:
        starts.append(time.monotonic())
        now = time.time()
        return Attempt(op.index, number, f"{op.index:08x}-c", now, now, Outcome.COMPLETE, "None")

    runner = MixRunner(plan, submit, concurrency=8)
    runner.pace(0.01)
    await runner.run()
    assert len(runner.completed) == len(plan.ops)
    # The k-th start comes no sooner than k intervals after the first (a sleep never ends
    # early, give or take the clock's resolution; a late one only shortens the next gap).
    first, *rest = sorted(starts)
    assert all(start - first >= 0.01 * k - 1e-4 for k, start in enumerate(rest, 1))


def test_schedule_seconds_covers_the_last_heal_and_each_faults_restart() -> None:
    faults = make_schedule(11, 200.0, AGENTS, LINKS, tuple(FaultKind))
    last = max(f.at + f.duration for f in faults)
    assert schedule_seconds(faults) == last + FAULT_OVERHEAD * len(faults)
    assert schedule_seconds([]) == 0.0


# --- back ends --------------------------------------------------------------------------------


Snapshots = tuple[inv.LdapSnapshot, inv.SlurmSnapshot, inv.SandboxSnapshot, inv.Settled]


def faithful(plan: Plan, cpus: int = 2) -> Snapshots:
    """Snapshots of back ends that hold exactly what ``plan`` must leave."""
    model = plan.expected
    ldap = inv.LdapSnapshot()
    members: dict[str, set[str]] = {project_group(p): set() for p in model.projects}
    members |= {inv.MANAGED_GROUP: set(), inv.BLOCKED_GROUP: set()}
    slurm = inv.SlurmSnapshot(accounts={project_group(p) for p in model.projects})
    sandbox = inv.SandboxSnapshot(projects=set(model.projects))
    settled = inv.Settled()
    for number, (user, state) in enumerate(sorted(model.users.items())):
        if state is UserState.ABSENT:
            continue
        name, group = local_user(user), project_group(model.project_of[user])
        ldap.users[name] = inv.LdapUser(20000 + number, state is not UserState.ACTIVE, "/h")
        members[inv.MANAGED_GROUP].add(name)
        if state is not UserState.REMOVED:
            members[group].add(name)
            slurm.associations.add((group, name))
            sandbox.homes.add((model.project_of[user], name))
        if state is UserState.BLOCKED:
            members[inv.BLOCKED_GROUP].add(name)
    for gid, (group, names) in enumerate(members.items(), start=20000):
        ldap.groups[group] = (gid, frozenset(names))
    for project, hours in model.limits.items():
        settled.limits[project] = hours * 3600
        slurm.limits[project_group(project)] = f"cpu={cpus * hours * 60}"
    for project, text in model.project_quotas.items():
        key = (project_group(project), "group")
        settled.quotas[key] = sandbox.quotas[key] = inv._bytes(text)
    for user, text in model.user_quotas.items():
        key = (local_user(user), "user")
        settled.quotas[key] = sandbox.quotas[key] = inv._bytes(text)
    return ldap, slurm, sandbox, settled


def test_backends_that_match_the_model_pass_and_each_difference_is_named() -> None:
    plan = small_plan()
    ldap, slurm, sandbox, settled = faithful(plan)

    def check() -> list[str]:
        return inv.check_backends(
            plan.expected, plan.names, ldap, slurm, sandbox, settings=settled, cpus=2
        )

    assert check() == []
    active = next(u for u, s in sorted(plan.expected.users.items()) if s is UserState.ACTIVE)
    group, name = project_group(plan.expected.project_of[active]), local_user(active)
    slurm.associations.discard((group, name))
    sandbox.homes.add(("t1nowhere", "ghost.t1nowhere"))
    ldap.users[name] = replace(ldap.users[name], expired=True)
    first = sorted(settled.quotas)[0]
    sandbox.quotas[first] = 1
    problems = "\n".join(check())
    assert f"association ('{group}', '{name}') is missing" in problems
    assert "('t1nowhere', 'ghost.t1nowhere') should not exist" in problems
    assert f"{name} (active): expired is True" in problems
    assert f"quota of {first} is 1" in problems


def test_settled_takes_limits_and_quotas_from_the_last_completed_result() -> None:
    ops = (
        Op(0, "set_limit", "set_limit p.portal 2 hours", "p"),
        Op(1, "set_project_quota", "set_project_quota p.portal projects 1644 GB", "p"),
        Op(2, "set_limit", "set_limit p.portal 3 hours", "p", after=(0,)),
    )

    def done(op: int, kind: str, value: object) -> Attempt:
        return Attempt(op, 1, f"{op:08x}", 0, 1, Outcome.COMPLETE, kind, json.dumps(value))

    completed = {
        0: done(0, "Usage", {"seconds": 7200}),
        1: done(1, "Quota", {"limit": "1.61 TB"}),
        2: done(2, "Usage", {"seconds": 10800}),
    }
    result = inv.settled(ops, completed)
    assert result.limits == {"p": 10800}
    assert result.quotas == {("portal.p", "group"): inv._bytes("1.61 TB")}
    assert result.rounded == ["set_project_quota p.portal projects 1644 GB: set 1.61 TB"]


# --- audit logs -------------------------------------------------------------------------------


def entry(agent: str, job: str, action: str, at: float, **more: object) -> dict[str, object]:
    return {"agent": agent, "job": job, "action": action, "time": at, **more}


def test_a_change_made_twice_in_one_job_is_a_violation_unless_a_crash_resumed_it() -> None:
    ops = (Op(0, "set_limit", "set_limit p.portal 2 hours", "p"),)
    attempts = [Attempt(0, 1, "aaaaaaaa-1111", 0, 9, Outcome.COMPLETE, "Usage")]
    change = {"operation": "slurm c: set GrpTRESMins=cpu=240 on account portal.p"}
    audits = {
        "scheduler": [
            entry("scheduler", "aaaaaaaa-2222", "operation", 1.0, **change),
            entry("scheduler", "aaaaaaaa-3333", "operation", 5.0, **change),
        ]
    }
    found = inv.check_run_once(audits, attempts, ops)
    assert found.problems and "again for set_limit p.portal 2 hours" in found.problems[0]
    assert found.applied == 2
    audits["instance"] = [entry("instance", "aaaaaaaa-4444", "resumed", 3.0)]
    found = inv.check_run_once(audits, attempts, ops)
    assert found.problems == [] and len(found.rerun) == 1


def test_a_user_created_twice_is_a_violation_whatever_the_jobs() -> None:
    made = {"operation": "created user u1.p (uid 20001) for u1.p.portal"}
    audits = {
        "account": [
            entry("account", "aaaaaaaa-1", "operation", 1.0, **made),
            entry("account", "bbbbbbbb-1", "operation", 2.0, **made),
        ]
    }
    assert inv.check_run_once(audits, [], ()).problems == ["account: user u1.p created 2 times"]


def test_trails_must_end_with_the_outcome_the_portal_read() -> None:
    ops = (Op(0, "add_user", "add_user u.p.portal", "p", "u.p.portal"),)
    good = Attempt(0, 1, "aaaaaaaa-1", 0, 1, Outcome.COMPLETE, "UserMapping")
    bridge = [
        entry("bridge", good.job_id, "forwarded", 0.1, outcome="Pending"),
        entry("bridge", good.job_id, "finished", 0.9, outcome="UserMapping"),
    ]
    instance = [
        entry("instance", "aaaaaaaa-2", "finished", 0.8, outcome="UserMapping",
              path=["portal", "provider", "platform", "instance"],
              instruction="add_user u.p.portal"),
    ]  # fmt: skip
    assert inv.check_trails([good], bridge, instance, ops) == ([], 0)
    wrong = replace(good, detail="SomethingElse")
    problems, _ = inv.check_trails([wrong], bridge, instance, ops)
    assert len(problems) == 3  # the bridge's end, its finished entry, the instance's
    # a duplicate: never forwarded, its outcome recorded when the cleaner swept it
    dup = Attempt(0, 2, "cccccccc-1", 0, 1, Outcome.COMPLETE, "UserMapping")
    swept = [entry("bridge", dup.job_id, "expired", 200.0, outcome="UserMapping")]
    assert inv.check_trails([dup], swept, [], ops) == ([], 1)


def test_memory_may_grow_by_a_fifth_and_no_more() -> None:
    assert inv.check_memory({"a": 100_000}, {"a": 120_000}) == []
    assert inv.check_memory({"a": 100_000}, {"a": 120_001})[0].startswith("a: RSS grew")
    assert inv.check_memory({"a": 1}, {}) == ["a: no RSS reading at the end"]


def test_recovery_counts_only_jobs_that_crossed_the_healed_agent_afterwards() -> None:
    audits = {"account": [entry("account", "aaaaaaaa-9", "finished", 10.5)]}
    attempts = [
        Attempt(0, 1, "bbbbbbbb-1", 9.0, 10.2, Outcome.COMPLETE, "x"),  # did not cross it
        Attempt(1, 1, "aaaaaaaa-1", 9.0, 11.0, Outcome.COMPLETE, "x"),
    ]
    assert inv.recovery_seconds(10.0, ("account",), audits, attempts) == pytest.approx(1.0)
    assert inv.recovery_seconds(12.0, ("account",), audits, attempts) is None


# --- the schedule -------------------------------------------------------------------------------


LINKS = (("provider", "portal"), ("instance", "platform"))
AGENTS = ("portal", "provider", "platform", "instance", "scheduler")


def test_schedule_is_seeded_covers_every_kind_and_never_overlaps() -> None:
    kinds = tuple(FaultKind)
    faults = make_schedule(11, 200.0, AGENTS, LINKS, kinds, extra=5)
    assert faults == make_schedule(11, 200.0, AGENTS, LINKS, kinds, extra=5)
    assert {f.kind for f in faults} == set(kinds) and len(faults) == len(kinds) + 5
    for before, after in itertools.pairwise(faults):
        assert before.at + before.duration <= after.at
    backend = [f for f in faults if f.kind is FaultKind.KILL_DURING_BACKEND_CALL]
    assert all(f.target == ("scheduler",) for f in backend)
    # one of each kind first, the extras after them
    assert {f.kind for f in faults[: len(kinds)]} == set(kinds)
    # what is drawn depends on the seed only; the span moves the start times
    stretched = make_schedule(11, 900.0, AGENTS, LINKS, kinds, extra=5)
    assert [replace(f, at=0.0) for f in stretched] == [replace(f, at=0.0) for f in faults]
    assert stretched != faults


def test_schedule_draws_cuts_in_the_range_given_and_kills_among_the_targets() -> None:
    kinds = (FaultKind.PARTITION, FaultKind.ISOLATE, FaultKind.KILL)
    faults = make_schedule(
        5, 500.0, AGENTS, LINKS, kinds, extra=30, kill_targets=("bridge",), cut=(7.0, 9.0)
    )
    cuts = [f for f in faults if f.kind in (FaultKind.PARTITION, FaultKind.ISOLATE)]
    assert cuts and all(7.0 <= f.duration <= 9.0 for f in cuts)
    assert {f.target for f in faults if f.kind is FaultKind.KILL} == {("bridge",)}
    # isolation still takes an agent, never a kill-only target
    assert all(f.target[0] in AGENTS for f in faults if f.kind is FaultKind.ISOLATE)


def test_schedule_stalls_only_servers_it_can_freeze_and_steps_clocks_past_a_lifetime() -> None:
    kinds = (FaultKind.SLOW_BACKEND, FaultKind.CLOCK_STEP)
    faults = make_schedule(3, 900.0, (*AGENTS, "account"), LINKS, kinds, extra=20)
    stalls = [f for f in faults if f.kind is FaultKind.SLOW_BACKEND]
    steps = [f for f in faults if f.kind is FaultKind.CLOCK_STEP]
    assert {f.target[0] for f in stalls} <= {"account", "scheduler"}
    assert all(f.amount == (300.0,) for f in steps)
    assert steps[0].describe().startswith(f"clock-step {steps[0].target[0]} +300 s for ")


class KillsOnly:
    """An injector offering kills only, recording what it was asked (a test double for
    the schedule runner; the real ones are ``loopback.LoopbackInjector`` and the
    namespace harness)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def available(self) -> frozenset[FaultKind]:
        return frozenset({FaultKind.KILL})

    async def kill(self, agent: str) -> None:
        self.calls.append(f"kill {agent}")

    async def restart(self, agent: str) -> None:
        self.calls.append(f"restart {agent}")

    async def kill_during_sync(self, agent: str) -> None:
        raise FaultUnavailable("not here")

    async def kill_during_backend_call(self, agent: str, wait: float) -> bool:
        raise FaultUnavailable("not here")

    async def partition(self, a: str, b: str) -> None:
        raise FaultUnavailable("not here")

    async def heal(self, a: str, b: str) -> None:
        raise FaultUnavailable("not here")

    async def isolate(self, agent: str) -> None:
        raise FaultUnavailable("not here")

    async def heal_all(self) -> None:
        self.calls.append("heal all")

    async def set_loss(self, percent: float) -> None:
        raise FaultUnavailable("not here")

    async def clear_loss(self) -> None:
        raise FaultUnavailable("not here")

    async def set_latency(self, a: str, b: str, delay: float, jitter: float) -> None:
        raise FaultUnavailable("not here")

    async def clear_latency(self, a: str, b: str) -> None:
        raise FaultUnavailable("not here")

    async def stall_backend(self, agent: str) -> None:
        raise FaultUnavailable("not here")

    async def resume_backend(self, agent: str) -> None:
        raise FaultUnavailable("not here")

    async def step_clock(self, agent: str, ahead: float) -> None:
        raise FaultUnavailable("not here")

    async def restore_clock(self, agent: str) -> None:
        raise FaultUnavailable("not here")


async def test_run_schedule_applies_what_the_injector_offers_and_records_the_rest() -> None:
    faults = [
        Fault(0.0, FaultKind.KILL, ("account",), 0.01),
        Fault(0.0, FaultKind.PARTITION, ("provider", "portal"), 0.01),
        Fault(0.0, FaultKind.KILL, ("portal",), 0.01),
    ]
    injector = KillsOnly()
    records = await run_schedule(faults, injector, settle=0.0)
    assert injector.calls == ["kill account", "restart account", "kill portal", "restart portal"]
    assert [r.ran for r in records] == [True, False, True]
    assert records[1].note == "unavailable on this site"
    assert all(r.applied <= r.healed <= r.settled for r in records if r.ran)


async def test_run_schedule_follows_its_clock_and_skips_what_comes_after_the_load() -> None:
    faults = [
        Fault(5.0, FaultKind.KILL, ("account",), 0.0),
        Fault(9.0, FaultKind.KILL, ("portal",), 0.0),
    ]
    now = 0.0

    def clock() -> float:
        return now

    injector = KillsOnly()
    running = asyncio.ensure_future(
        run_schedule(faults, injector, clock=clock, ended=lambda: now > 8.0, settle=0.0)
    )
    await asyncio.sleep(0.2)
    assert injector.calls == []  # the clock has not reached the first fault
    now = 6.0
    await asyncio.sleep(0.2)
    assert injector.calls == ["kill account", "restart account"]
    now = 8.5  # the load ends before the second fault's time
    records = await running
    assert [r.ran for r in records] == [True, False]
    assert records[1].note == "the load had ended"


class Recorder(KillsOnly):
    """Every kind offered; each call recorded with its arguments."""

    def available(self) -> frozenset[FaultKind]:
        return frozenset(FaultKind)

    async def kill_during_sync(self, agent: str) -> None:
        self.calls.append(f"kill during sync {agent}")

    async def kill_during_backend_call(self, agent: str, wait: float) -> bool:
        self.calls.append(f"kill during backend call {agent}")
        return True

    async def partition(self, a: str, b: str) -> None:
        self.calls.append(f"partition {a} {b}")

    async def heal(self, a: str, b: str) -> None:
        self.calls.append(f"heal {a} {b}")

    async def isolate(self, agent: str) -> None:
        self.calls.append(f"isolate {agent}")

    async def set_loss(self, percent: float) -> None:
        self.calls.append(f"loss {percent:g}")

    async def clear_loss(self) -> None:
        self.calls.append("clear loss")

    async def set_latency(self, a: str, b: str, delay: float, jitter: float) -> None:
        self.calls.append(f"latency {a} {b} {delay:g} {jitter:g}")

    async def clear_latency(self, a: str, b: str) -> None:
        self.calls.append(f"clear latency {a} {b}")

    async def stall_backend(self, agent: str) -> None:
        self.calls.append(f"stall {agent}")

    async def resume_backend(self, agent: str) -> None:
        self.calls.append(f"resume {agent}")

    async def step_clock(self, agent: str, ahead: float) -> None:
        self.calls.append(f"step {agent} {ahead:g}")

    async def restore_clock(self, agent: str) -> None:
        self.calls.append(f"restore {agent}")


@pytest.mark.parametrize(
    ("fault", "calls"),
    [
        (Fault(0, FaultKind.KILL, ("portal",), 0), ["kill portal", "restart portal"]),
        (
            Fault(0, FaultKind.KILL_DURING_SYNC, ("portal",), 0),
            ["kill portal", "kill during sync portal", "restart portal"],
        ),
        (
            Fault(0, FaultKind.KILL_DURING_BACKEND_CALL, ("scheduler",), 0),
            ["kill during backend call scheduler", "restart scheduler"],
        ),
        (Fault(0, FaultKind.PARTITION, ("a", "b"), 0), ["partition a b", "heal a b"]),
        (Fault(0, FaultKind.ISOLATE, ("account",), 0), ["isolate account", "heal all"]),
        (Fault(0, FaultKind.LOSS, (), 0, (10.0,)), ["loss 10", "clear loss"]),
        (
            Fault(0, FaultKind.LATENCY, ("a", "b"), 0, (0.2, 0.05)),
            ["latency a b 0.2 0.05", "clear latency a b"],
        ),
        (Fault(0, FaultKind.SLOW_BACKEND, ("account",), 0), ["stall account", "resume account"]),
        (
            Fault(0, FaultKind.CLOCK_STEP, ("portal",), 0, (300.0,)),
            ["step portal 300", "restore portal"],
        ),
    ],
)
async def test_each_fault_breaks_then_heals_its_target(fault: Fault, calls: list[str]) -> None:
    injector = Recorder()
    record = await apply(fault, injector)
    assert injector.calls == calls
    assert record.ran and record.applied <= record.healed <= record.settled
    assert FaultKind.KILL_DURING_BACKEND_CALL is not fault.kind or record.note.startswith("killed")
