"""The soak's invariants: pure checks over what was collected.

Each ``check_*`` function takes plain data (the plan's expected state, the attempts, what
:mod:`.readers` found in the real back ends, the audit logs and the stores) and returns a
list of violations in words; an empty list means the invariant holds.  So the checks run,
and are tested, without sockets or processes.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from broadgauge.grammar import Quota, QuotaLimit, Usage
from broadgauge.grammar.results import decode_result
from broadgauge.runtime.audit import verify

from .mix import Attempt, Model, Names, Op, Outcome, UserState, local_user, project_group

#: The groups the account agent keeps beside the project groups.
MANAGED_GROUP = "openportal"
BLOCKED_GROUP = "openportal.blocked"
#: The LDAP directory's first uid (its default range starts here).
FIRST_UID = 20000
#: The leaf agents, whose audit logs record backend changes.
LEAVES = ("account", "filesystem", "scheduler")
#: Growth of the resident set from warm-up to the end of the soak that is still "bounded".
RSS_TOLERANCE = 0.20


def trace_of(job_id: str) -> str:
    """The trace a job belongs to: the first 8 hex digits of its id (shared by its sub-jobs)."""
    return job_id[:8]


# --- what the back ends hold ----------------------------------------------------------------


@dataclass(frozen=True)
class LdapUser:
    """A ``posixAccount`` entry."""

    uid_number: int
    expired: bool
    home: str


@dataclass
class LdapSnapshot:
    """The account agent's users, groups and id counters, as slapd holds them."""

    users: dict[str, LdapUser] = field(default_factory=dict)
    #: group → (gid, members)
    groups: dict[str, tuple[int, frozenset[str]]] = field(default_factory=dict)
    #: ``uid`` / ``gid`` → the counter's next value
    counters: dict[str, int] = field(default_factory=dict)


@dataclass
class SlurmSnapshot:
    """The run's Slurm accounts, their users and limits, as ``sacctmgr`` shows them."""

    accounts: set[str] = field(default_factory=set)
    associations: set[tuple[str, str]] = field(default_factory=set)
    #: account → its own association's GrpTRESMins ("" when none is set)
    limits: dict[str, str] = field(default_factory=dict)


@dataclass
class SandboxSnapshot:
    """The filesystem agent's directories and the quotas its ledger records."""

    #: (project, local user) for every home directory present
    homes: set[tuple[str, str]] = field(default_factory=set)
    projects: set[str] = field(default_factory=set)
    #: (owner, kind) → limit in bytes (None: unlimited)
    quotas: dict[tuple[str, str], int | None] = field(default_factory=dict)


@dataclass
class Settled:
    """The limits and quotas the last completed ``set_*`` of each project or user reported.

    A job's result is what the portal was told was set, so that is what the back ends must
    hold (a quota travels between agents as text with two decimals, so the value set may
    differ slightly from the one requested: :attr:`rounded` lists those).
    """

    #: project → node-seconds
    limits: dict[str, int] = field(default_factory=dict)
    #: (owner, ``group`` or ``user``) → bytes (None: unlimited)
    quotas: dict[tuple[str, str], int | None] = field(default_factory=dict)
    rounded: list[str] = field(default_factory=list)


def settled(ops: Sequence[Op], completed: Mapping[int, Attempt]) -> Settled:
    """What the last completed setting of each limit and quota reported."""
    last: dict[tuple[str, str], Op] = {}
    for op in ops:
        if op.keyword == "set_limit":
            last[(op.project, "limit")] = op
        elif op.keyword == "set_project_quota":
            last[(project_group(op.project), "group")] = op
        elif op.keyword == "set_user_quota" and op.user is not None:
            last[(local_user(op.user), "user")] = op
    result = Settled()
    for key, op in last.items():
        attempt = completed.get(op.index)
        if attempt is None:
            continue  # check_final_states reports it
        value = decode_result(attempt.result, attempt.detail)
        if isinstance(value, Usage):
            result.limits[key[0]] = value.seconds
        elif isinstance(value, Quota):
            have = None if value.limit.size is None else value.limit.size.bytes
            result.quotas[key] = have
            requested = " ".join(op.instruction.split()[3:])
            if have != _bytes(requested):
                result.rounded.append(f"{op.instruction}: set {value.limit}")
    return result


@dataclass(frozen=True)
class Backends:
    """Everything the back ends hold at the end, and the Slurm node's CPUs (limits are
    stored as CPU-minutes)."""

    ldap: LdapSnapshot
    slurm: SlurmSnapshot
    sandbox: SandboxSnapshot
    cpus: int


def check_backends(
    expected: Model,
    names: Names,
    ldap: LdapSnapshot,
    slurm: SlurmSnapshot,
    sandbox: SandboxSnapshot,
    *,
    settings: Settled,
    cpus: int,
) -> list[str]:
    """Every difference between the final state and what the back ends hold: users and
    memberships from the model, limits and quotas from ``settings`` (the jobs' results)."""
    problems: list[str] = []
    prefix = f"c{names.tag}p"
    groups = {project_group(p) for p in expected.projects}
    _compare_users(expected, ldap, problems)
    for group in sorted(groups):
        if group not in ldap.groups:
            problems.append(f"ldap: project group {group} is missing")
    stray = {g for g in ldap.groups if g.startswith(f"portal.{prefix}")} - groups
    problems += [f"ldap: group {g} belongs to no project of the plan" for g in sorted(stray)]
    gids = Counter(gid for gid, _ in ldap.groups.values())
    problems += [f"ldap: gid {gid} is held by {n} groups" for gid, n in gids.items() if n > 1]
    uids = Counter(u.uid_number for u in ldap.users.values())
    problems += [f"ldap: uid {uid} is held by {n} users" for uid, n in uids.items() if n > 1]

    members = {u for u, s in expected.users.items() if s in (UserState.ACTIVE, UserState.BLOCKED)}
    want_assoc = {(project_group(expected.project_of[u]), local_user(u)) for u in members}
    for missing in sorted(want_assoc - slurm.associations):
        problems.append(f"slurm: association {missing} is missing")
    for extra in sorted(slurm.associations - want_assoc):
        problems.append(f"slurm: association {extra} should not exist")
    for group in sorted(groups - slurm.accounts):
        problems.append(f"slurm: account {group} is missing")
    for project in expected.projects:
        seconds = settings.limits.get(project)
        # The default node has only CPUs: GrpTRESMins is cpu=<cpus x minutes>.
        want = "" if seconds is None else f"cpu={cpus * seconds // 60}"
        have = slurm.limits.get(project_group(project), "")
        if have != want:
            problems.append(
                f"slurm: GrpTRESMins of {project_group(project)} is {have!r}, not {want!r}"
            )

    want_homes = {(expected.project_of[u], local_user(u)) for u in members}
    for home in sorted(want_homes - sandbox.homes):
        problems.append(f"sandbox: home directory {home} is missing")
    for home in sorted(sandbox.homes - want_homes):
        problems.append(f"sandbox: home directory {home} should not exist")
    for project in sorted(set(expected.projects) - sandbox.projects):
        problems.append(f"sandbox: project directory {project} is missing")
    for key in sorted(set(settings.quotas) | set(sandbox.quotas), key=str):
        have_q = sandbox.quotas.get(key, "absent")
        want_q = settings.quotas.get(key, "absent")
        if have_q != want_q:
            problems.append(f"sandbox: quota of {key} is {have_q}, not {want_q}")
    return problems


def _bytes(text: str) -> int | None:
    size = QuotaLimit.parse(text).size
    return None if size is None else size.bytes


def _compare_users(expected: Model, ldap: LdapSnapshot, problems: list[str]) -> None:
    members = {g: m for g, (_, m) in ldap.groups.items()}
    blocked = members.get(BLOCKED_GROUP, frozenset())
    managed = members.get(MANAGED_GROUP, frozenset())
    known = {local_user(u) for u in expected.users}
    for name in sorted(set(ldap.users) - known):
        problems.append(f"ldap: user {name} belongs to no user of the plan")
    for user, state in sorted(expected.users.items()):
        name = local_user(user)
        entry = ldap.users.get(name)
        if state is UserState.ABSENT:
            if entry is not None:
                problems.append(f"ldap: {name} was never added but exists")
            continue
        if entry is None:
            problems.append(f"ldap: {name} ({state.value}) has no entry")
            continue
        group = project_group(expected.project_of[user])
        want = {
            "expired": state is not UserState.ACTIVE,
            "in its project group": state is not UserState.REMOVED,
            "in openportal.blocked": state is UserState.BLOCKED,
            "in openportal": True,
        }
        have = {
            "expired": entry.expired,
            "in its project group": name in members.get(group, frozenset()),
            "in openportal.blocked": name in blocked,
            "in openportal": name in managed,
        }
        for what, value in want.items():
            if have[what] != value:
                problems.append(f"ldap: {name} ({state.value}): {what} is {have[what]}")


def uid_gaps(ldap: LdapSnapshot) -> int:
    """Uids the counter handed out that no entry holds (an allocation made and not used)."""
    return ldap.counters.get("uid", FIRST_UID) - FIRST_UID - len(ldap.users)


# --- jobs --------------------------------------------------------------------------------------


def lost(attempts: Iterable[Attempt]) -> list[Attempt]:
    """The attempts that reached no final state the portal could read."""
    return [a for a in attempts if a.outcome is Outcome.LOST]


def check_final_states(
    ops: Sequence[Op], completed: Mapping[int, Attempt], abandoned: Sequence[int]
) -> list[str]:
    """Every instruction of the plan completed (the model assumes it)."""
    problems = [f"never completed: {ops[i].instruction}" for i in sorted(abandoned)]
    missing = set(range(len(ops))) - set(completed) - set(abandoned)
    problems += [f"no outcome recorded: {ops[i].instruction}" for i in sorted(missing)]
    return problems


# --- audit logs --------------------------------------------------------------------------------

AuditEntry = dict[str, object]


def check_chains(logs: Mapping[str, Path]) -> tuple[list[str], dict[str, int]]:
    """Verify every agent's hash chain; the violations, and each log's entry count."""
    problems, counts = [], {}
    for agent, path in sorted(logs.items()):
        result = verify(path)
        counts[agent] = result.entries
        if not result.ok:
            problems.append(f"{agent}: audit line {result.first_bad_line}: {result.reason}")
    return problems, counts


def operations_by_trace(entries: Iterable[AuditEntry]) -> dict[str | None, Counter[str]]:
    """Backend operations per trace (``None``: not attributed to any job)."""
    found: dict[str | None, Counter[str]] = defaultdict(Counter)
    for entry in entries:
        if entry.get("action") != "operation" or not entry.get("operation"):
            continue
        job = entry.get("job")
        found[trace_of(job) if isinstance(job, str) else None][str(entry["operation"])] += 1
    return found


@dataclass
class RunOnce:
    """What :func:`check_run_once` found."""

    problems: list[str] = field(default_factory=list)
    #: backend changes attributed to the soak's jobs
    applied: int = 0
    #: changes made again by a job that a crash had cut off mid-run (see check_run_once)
    rerun: list[str] = field(default_factory=list)


def check_run_once(
    audits: Mapping[str, Sequence[AuditEntry]], attempts: Iterable[Attempt], ops: Sequence[Op]
) -> RunOnce:
    """No job applied one backend change twice, and no user was created twice.

    A job a crash cut off mid-run is run again from the start (the runtime's rule: handlers
    are idempotent), and the agent that resumed it records ``resumed`` in its audit log.  A
    change such a job makes again, with the same value, is listed in :attr:`RunOnce.rerun`,
    not as a violation: that re-application is the design, and the back ends' final state
    (checked separately) shows whether it was harmless.  The resumed job may be the change's
    own or one above it (an instance killed while its scheduler was setting a limit runs
    ``set_limit`` again, and asks the scheduler a second time).  A change repeated within
    one job's trace with no ``resumed`` in that trace before the repeat is a violation.
    """
    by_trace = {trace_of(a.job_id): a for a in attempts}
    resumed: dict[str, list[float]] = defaultdict(list)
    for entries in audits.values():
        for entry in entries:
            if entry.get("action") == "resumed" and isinstance(entry.get("job"), str):
                resumed[trace_of(str(entry["job"]))].append(_time(entry))
    found = RunOnce()
    created: Counter[str] = Counter()
    for agent in LEAVES:
        seen: dict[tuple[str, str], float] = {}
        for entry in audits.get(agent, ()):
            operation, job = entry.get("operation"), entry.get("job")
            if entry.get("action") != "operation" or not operation:
                continue
            operation = str(operation)
            if operation.startswith("created user "):
                created[operation.split()[2]] += 1
            if not isinstance(job, str):
                continue
            trace = trace_of(job)
            attempt = by_trace.get(trace)
            if attempt is None:
                continue
            found.applied += 1
            when = _time(entry)
            first = seen.setdefault((trace, operation), when)
            if first == when:
                continue
            what = f"{agent} applied {operation!r} again for {ops[attempt.op].instruction}"
            if any(t <= when for t in resumed.get(trace, ())):
                found.rerun.append(f"{what} after a crash cut it off")
            else:
                found.problems.append(what)
    found.problems += [f"account: user {u} created {n} times" for u, n in created.items() if n > 1]
    return found


def _time(entry: AuditEntry) -> float:
    value = entry.get("time")
    return float(value) if isinstance(value, int | float) else 0.0


def check_trails(
    attempts: Iterable[Attempt],
    bridge: Sequence[AuditEntry],
    instance: Sequence[AuditEntry],
    ops: Sequence[Op],
) -> tuple[list[str], int]:
    """Each job's audit trail matches its final state; also how many jobs were answered as
    duplicates.

    At the bridge, the job's last ``finished`` or ``expired`` entry (the cleaner records the
    outcome of every job it sweeps) names the outcome the portal read: the result type, or
    the error.  A job the bridge forwarded has exactly one ``finished`` entry; one it did not
    forward was a duplicate of an identical job in flight and took that job's result.  For
    a complete job that travelled, the instance recorded ``finished`` for the instruction in
    the job's trace, with the same result type.
    """
    entries: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for entry in bridge:
        if isinstance(entry.get("job"), str):
            entries[str(entry["job"])].append((str(entry.get("action")), str(entry.get("outcome"))))
    at_instance: dict[tuple[str, str], list[str]] = defaultdict(list)
    for entry in instance:
        path = entry.get("path")
        if (
            entry.get("action") == "finished"
            and isinstance(path, list)
            and path[-1:] == ["instance"]
        ):
            keyword = str(entry.get("instruction")).split(" ", 1)[0]
            at_instance[(trace_of(str(entry.get("job"))), keyword)].append(
                str(entry.get("outcome"))
            )
    problems = []
    duplicates = 0
    for attempt in attempts:
        if attempt.outcome is Outcome.LOST:
            continue
        op = ops[attempt.op]
        trail = entries.get(attempt.job_id, [])
        forwarded = any(action == "forwarded" for action, _ in trail)
        finished = [outcome for action, outcome in trail if action == "finished"]
        ends = [outcome for action, outcome in trail if action in ("finished", "expired")]
        where = f"{op.instruction} (attempt {attempt.number}, {attempt.job_id})"
        if not ends or ends[-1] != attempt.detail:
            problems.append(
                f"bridge audit of {where} ends {ends[-1:] or 'nowhere'}, "
                f"the portal read {attempt.outcome.value}: {attempt.detail}"
            )
        if forwarded and finished != [attempt.detail]:
            problems.append(f"bridge audit of {where} has finished {finished}")
        if not forwarded:
            duplicates += 1
            continue
        if attempt.outcome is Outcome.COMPLETE:
            outcomes = at_instance.get((trace_of(attempt.job_id), op.keyword), [])
            if attempt.detail not in outcomes:
                problems.append(
                    f"instance audit of {where} has {outcomes}, "
                    f"not the {attempt.detail} the portal read"
                )
    return problems, duplicates


# --- memory and stores -------------------------------------------------------------------------


def check_memory(warm: Mapping[str, int], end: Mapping[str, int]) -> list[str]:
    """Each agent's RSS at the end is within :data:`RSS_TOLERANCE` above its warm-up RSS."""
    problems = []
    for agent, before in sorted(warm.items()):
        after = end.get(agent)
        if after is None:
            problems.append(f"{agent}: no RSS reading at the end")
        elif after > before * (1 + RSS_TOLERANCE):
            problems.append(
                f"{agent}: RSS grew from {before} KiB to {after} KiB "
                f"(+{(after / before - 1) * 100:.0f} %, more than {RSS_TOLERANCE * 100:.0f} %)"
            )
    return problems


@dataclass(frozen=True)
class StoreFigures:
    """One agent's durable files after the soak."""

    board_bytes: int
    audit_bytes: int
    jobs: int
    outbox: int
    executions: int


def check_boards_empty(stores: Mapping[str, StoreFigures]) -> list[str]:
    """No job or queued command is left on any agent's stored boards."""
    return [
        f"{agent}: {figures.jobs} job(s) and {figures.outbox} queued command(s) left on its boards"
        for agent, figures in sorted(stores.items())
        if figures.jobs or figures.outbox
    ]


# --- recovery ------------------------------------------------------------------------------


def recovery_seconds(
    healed: float,
    agents: Sequence[str],
    audits: Mapping[str, Sequence[AuditEntry]],
    attempts: Iterable[Attempt],
) -> float | None:
    """Seconds from ``healed`` to the first job completing at the bridge that went through
    every one of ``agents`` after that moment (read from their audit logs); None if none."""
    crossed: set[str] | None = None
    for agent in agents:
        traces = {
            trace_of(str(e["job"]))
            for e in audits.get(agent, ())
            if isinstance(e.get("job"), str) and float(str(e.get("time", 0))) >= healed
        }
        crossed = traces if crossed is None else crossed & traces
    if not crossed:
        return None
    times = [
        a.finished
        for a in attempts
        if a.outcome is Outcome.COMPLETE and a.finished >= healed and trace_of(a.job_id) in crossed
    ]
    return min(times) - healed if times else None
