"""The soak's job mix: a seeded plan, the backend state it must leave, and its runner.

The plan is made by playing instructions one after another against a model of the site
(:class:`Model`).  Each instruction is drawn, with the seeded generator, among those valid
in the model's state at that point: a user is removed only while active, unblocked only
while blocked, re-added only once removed, and so on.  So every instruction of the plan
must complete, and the model's final state is what the backends must hold at the end.

The runner (:class:`MixRunner`) keeps many jobs in flight but never two that depend on each
other (:attr:`Op.after`): an instruction on a user waits until the previous one on that user
is final; a project-wide block or unblock waits for every earlier instruction on the
project's users, and they for it; limits and quotas of one project or user are set in plan
order.  Instructions on different users commute, so whatever order the runner happens to
use leaves the plan's final state.

An attempt that ends in an error is sent again after a pause, as portal software does: the
portal knows only what the bridge told it, and the instructions are idempotent.  Every
attempt is recorded with its outcome, so the invariants can count what was lost (no final
state within the job's lifetime) apart from what failed and said why.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import enum
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

#: The portal every identity belongs to (the site's portal agent is called that).
PORTAL = "portal"
#: The sandbox's volumes (the filesystem agent's default layout).
HOME_VOLUME = "home"
PROJECT_VOLUME = "projects"

#: Relative weights of the instructions drawn after the projects exist (adding users that
#: were never added is paced separately, see :func:`make_plan`).  Every change a scheduler
#: makes is a ``sacctmgr`` call of about half a second, one at a time, so the mix leans on
#: blocks and quotas rather than on removals and limits.
WEIGHTS: dict[str, float] = {
    "add_user": 6.0,  # re-adding a removed user
    "remove_user": 7.0,
    "block_user": 14.0,
    "unblock_user": 14.0,
    "block_project": 0.5,
    "unblock_project": 0.5,
    "set_limit": 5.0,
    "set_project_quota": 9.0,
    "set_user_quota": 9.0,
    "get_usage_report": 6.0,
}
#: Instructions that change a back end (the rest only read).
CHANGING = frozenset(WEIGHTS) - {"get_usage_report"} | {"add_project"}
#: By this fraction of the plan every user has been added at least once.
ALL_ADDED_BY = 0.5


class UserState(enum.Enum):
    """Where a user stands in the model."""

    ABSENT = "absent"  # never added
    ACTIVE = "active"
    BLOCKED = "blocked"
    REMOVED = "removed"


@dataclass(frozen=True)
class Names:
    """How one run names its projects and users (``tag`` keeps runs apart in shared backends)."""

    tag: str

    def project(self, number: int) -> str:
        """The project part of project ``number`` (``c<tag>p07``)."""
        return f"c{self.tag}p{number:02d}"

    def user(self, number: int, project: str) -> str:
        """The identifier of user ``number`` in ``project`` (``u0123.c<tag>p07.portal``)."""
        return f"u{number:04d}.{project}.{PORTAL}"


def local_user(user: str) -> str:
    """``u0123.cab12p07.portal`` → ``u0123.cab12p07`` (the Unix and Slurm user)."""
    return user.rsplit(".", 1)[0]


def project_group(project: str) -> str:
    """``cab12p07`` → ``portal.cab12p07`` (the Unix group and Slurm account)."""
    return f"{PORTAL}.{project}"


@dataclass(frozen=True)
class Op:
    """One instruction of the plan: sent to the instance as ``instruction``."""

    index: int
    keyword: str
    instruction: str
    project: str
    user: str | None = None
    #: Indices of the instructions that must be final before this one is sent.
    after: tuple[int, ...] = ()

    @property
    def changes_backends(self) -> bool:
        """Whether the instruction changes a back end (the others only read)."""
        return self.keyword in CHANGING


@dataclass
class Model:
    """The state the site must be in after the instructions applied so far."""

    projects: list[str] = field(default_factory=list)
    users: dict[str, UserState] = field(default_factory=dict)
    project_of: dict[str, str] = field(default_factory=dict)
    #: project → hours of the last ``set_limit``
    limits: dict[str, int] = field(default_factory=dict)
    #: project (or user identifier) → the last quota set on the project (or home) volume
    project_quotas: dict[str, str] = field(default_factory=dict)
    user_quotas: dict[str, str] = field(default_factory=dict)
    #: (user, change) → how many times the plan makes that change: ``added`` (first add),
    #: ``readded``, ``removed``, ``blocked``, ``unblocked``
    changes: Counter[tuple[str, str]] = field(default_factory=Counter)

    def with_state(self, state: UserState) -> list[str]:
        """The users in ``state``, in name order."""
        return sorted(user for user, now in self.users.items() if now is state)

    def members(self, project: str) -> list[str]:
        """The project's current members: its active and blocked users."""
        return sorted(
            user
            for user, state in self.users.items()
            if self.project_of[user] == project and state in (UserState.ACTIVE, UserState.BLOCKED)
        )

    def apply(self, op: Op) -> None:
        """Change the model as ``op`` changes the site once it completes."""
        user, keyword = op.user, op.keyword
        if keyword == "add_project":
            self.projects.append(op.project)
        elif keyword == "add_user" and user is not None:
            first = self.users[user] is UserState.ABSENT
            self.changes[(user, "added" if first else "readded")] += 1
            self.users[user] = UserState.ACTIVE
        elif keyword == "remove_user" and user is not None:
            self.changes[(user, "removed")] += 1
            self.users[user] = UserState.REMOVED
        elif keyword in ("block_user", "unblock_user") and user is not None:
            self._set_blocked([user], keyword == "block_user")
        elif keyword in ("block_project", "unblock_project"):
            self._set_blocked(self.members(op.project), keyword == "block_project")
        elif keyword == "set_limit":
            self.limits[op.project] = int(op.instruction.split()[2])
        elif keyword == "set_project_quota":
            self.project_quotas[op.project] = " ".join(op.instruction.split()[3:])
        elif keyword == "set_user_quota" and user is not None:
            self.user_quotas[user] = " ".join(op.instruction.split()[3:])

    def _set_blocked(self, users: list[str], block: bool) -> None:
        target = UserState.BLOCKED if block else UserState.ACTIVE
        for user in users:
            if self.users[user] is not target:
                self.changes[(user, "blocked" if block else "unblocked")] += 1
                self.users[user] = target


@dataclass(frozen=True)
class Plan:
    """The seeded instructions and the state they must leave."""

    seed: int
    names: Names
    ops: tuple[Op, ...]
    expected: Model

    def counts(self) -> Counter[str]:
        """How many instructions of each kind."""
        return Counter(op.keyword for op in self.ops)


class _Dependencies:
    """Which earlier instructions each new one must wait for (see the module docstring)."""

    def __init__(self) -> None:
        self.last_on_user: dict[str, int] = {}
        self.project_wide: dict[str, int] = {}  # the last add_project or (un)block_project
        self.since_project_wide: dict[str, list[int]] = {}
        self.last_setting: dict[tuple[str, str], int] = {}

    def of(self, index: int, keyword: str, project: str, user: str | None) -> tuple[int, ...]:
        after: set[int] = set()
        if keyword == "add_project":
            self.project_wide[project] = index
            self.since_project_wide[project] = []
            return ()
        after.add(self.project_wide[project])
        if keyword in ("block_project", "unblock_project"):
            after.update(self.since_project_wide[project])
            self.project_wide[project] = index
            self.since_project_wide[project] = []
        elif keyword in ("set_limit", "set_project_quota"):
            key = (keyword, project)
            if key in self.last_setting:
                after.add(self.last_setting[key])
            self.last_setting[key] = index
        elif user is not None:
            if user in self.last_on_user:
                after.add(self.last_on_user[user])
            self.last_on_user[user] = index
            self.since_project_wide[project].append(index)
        return tuple(sorted(after))


def make_plan(
    seed: int, jobs: int, users: int, projects: int, *, tag: str, today: _dt.date
) -> Plan:
    """``jobs`` instructions: ``add_project`` for each project, then a seeded mix.

    Every one of ``users`` users (spread over the projects at random) is added at least once
    by :data:`ALL_ADDED_BY` of the plan; the rest is drawn by :data:`WEIGHTS` among the
    instructions valid at that point.  ``today`` dates the usage reports.
    """
    if jobs < projects + users:
        raise ValueError(f"{jobs} jobs cannot add {projects} projects and {users} users")
    rng = random.Random(seed)
    names = Names(tag)
    model = Model()
    deps = _Dependencies()
    ops: list[Op] = []

    def emit(keyword: str, rest: str, project: str, user: str | None = None) -> None:
        index = len(ops)
        after = deps.of(index, keyword, project, user)
        op = Op(index, keyword, f"{keyword} {rest}", project, user, after)
        ops.append(op)
        model.apply(op)

    project_names = [names.project(n) for n in range(projects)]
    for project in project_names:
        emit("add_project", f"{project}.{PORTAL}", project)
    never_added: list[str] = []
    for number in range(users):
        project = rng.choice(project_names)
        user = names.user(number, project)
        model.users[user] = UserState.ABSENT
        model.project_of[user] = project
        never_added.append(user)
    rng.shuffle(never_added)
    stream = jobs - projects
    for step in range(stream):
        # Pace the first adds so that every user is in by ALL_ADDED_BY of the stream.
        left = max(1.0, ALL_ADDED_BY * stream - step)
        if never_added and rng.random() < min(1.0, len(never_added) / left):
            user = never_added.pop()
            emit("add_user", user, model.project_of[user], user)
            continue
        keyword = _draw(rng, model)
        _emit_drawn(rng, model, keyword, emit, today)
    return Plan(seed, names, tuple(ops), model)


def _draw(rng: random.Random, model: Model) -> str:
    """A keyword by :data:`WEIGHTS`, among those valid in ``model`` now."""
    active = any(s is UserState.ACTIVE for s in model.users.values())
    blocked = any(s is UserState.BLOCKED for s in model.users.values())
    removed = any(s is UserState.REMOVED for s in model.users.values())
    valid = {
        "add_user": removed,
        "remove_user": active,
        "block_user": active,
        "unblock_user": blocked,
        "block_project": active,
        "unblock_project": blocked,
        "set_limit": True,
        "set_project_quota": True,
        "set_user_quota": active,
        "get_usage_report": True,
    }
    keywords = [k for k in WEIGHTS if valid[k]]
    return rng.choices(keywords, weights=[WEIGHTS[k] for k in keywords])[0]


def _emit_drawn(
    rng: random.Random,
    model: Model,
    keyword: str,
    emit: Callable[..., None],
    today: _dt.date,
) -> None:
    if keyword in ("add_user", "remove_user", "block_user", "unblock_user", "set_user_quota"):
        state = {
            "add_user": UserState.REMOVED,
            "unblock_user": UserState.BLOCKED,
        }.get(keyword, UserState.ACTIVE)
        user = rng.choice(model.with_state(state))
        rest = user
        if keyword == "set_user_quota":
            rest = f"{user} {HOME_VOLUME} {rng.randint(1, 500)} GB"
        emit(keyword, rest, model.project_of[user], user)
        return
    if keyword in ("block_project", "unblock_project"):
        wanted = UserState.ACTIVE if keyword == "block_project" else UserState.BLOCKED
        candidates = sorted({model.project_of[u] for u in model.with_state(wanted)})
        project = rng.choice(candidates)
        emit(keyword, f"{project}.{PORTAL}", project)
        return
    project = rng.choice(model.projects)
    identifier = f"{project}.{PORTAL}"
    if keyword == "set_limit":
        emit(keyword, f"{identifier} {rng.randint(1, 5000)} hours", project)
    elif keyword == "set_project_quota":
        emit(keyword, f"{identifier} {PROJECT_VOLUME} {rng.randint(1, 2000)} GB", project)
    else:
        emit(keyword, f"{identifier} {today.isoformat()}:{today.isoformat()}", project)


# --- running ------------------------------------------------------------------------------


class Outcome(enum.Enum):
    """How one attempt ended, as the portal sees it."""

    COMPLETE = "complete"
    ERROR = "error"  # a final Error state, with its reason
    LOST = "lost"  # no final state within the job's lifetime (or it expired on the way)


@dataclass(frozen=True)
class Attempt:
    """One job sent to the bridge for an instruction of the plan."""

    op: int
    number: int
    job_id: str
    submitted: float
    finished: float
    outcome: Outcome
    #: the result type when complete, the error message otherwise
    detail: str
    result: str | None = None

    @property
    def latency(self) -> float:
        """Seconds from submission to the final state."""
        return self.finished - self.submitted


#: Sends the ``number``-th attempt of an instruction; returns how it ended.
Submit = Callable[[Op, int], Awaitable[Attempt]]


class MixRunner:
    """Runs a :class:`Plan` through ``submit``, ``concurrency`` jobs at a time."""

    def __init__(
        self,
        plan: Plan,
        submit: Submit,
        *,
        concurrency: int,
        max_attempts: int = 8,
        retry_pause: float = 0.5,
    ) -> None:
        self.plan = plan
        self.submit = submit
        self.max_attempts = max_attempts
        self.retry_pause = retry_pause
        self._slots = asyncio.Semaphore(concurrency)
        self._final = {op.index: asyncio.Event() for op in plan.ops}
        self.attempts: list[Attempt] = []
        #: instruction index → its completing attempt
        self.completed: dict[int, Attempt] = {}
        #: instructions that never completed in ``max_attempts``
        self.abandoned: list[int] = []
        self._progress = asyncio.Condition()
        self._interval = 0.0
        self._next_start = 0.0
        self.started_at = 0.0
        self.ended_at = 0.0

    async def run(self) -> None:
        """Send every instruction; return once each is complete or abandoned."""
        self.started_at = time.time()
        try:
            await asyncio.gather(*(self._one(op) for op in self.plan.ops))
        finally:
            self.ended_at = time.time()

    def pace(self, interval: float) -> None:
        """From now on, start a new instruction at most every ``interval`` seconds (a
        portal sending at a steady rate); retries are not held back."""
        self._interval = interval
        self._next_start = time.monotonic()

    async def finished(self, count: int) -> None:
        """Return once at least ``count`` instructions are final (complete or abandoned)."""
        async with self._progress:
            await self._progress.wait_for(lambda: self.final_count >= count)

    @property
    def final_count(self) -> int:
        """Instructions that are complete or abandoned."""
        return len(self.completed) + len(self.abandoned)

    async def _one(self, op: Op) -> None:
        for before in op.after:
            await self._final[before].wait()
        async with self._slots:
            if self._interval:
                now = time.monotonic()
                start = max(now, self._next_start)
                self._next_start = start + self._interval
                await asyncio.sleep(start - now)
            completed = None
            for number in range(1, self.max_attempts + 1):
                attempt = await self.submit(op, number)
                self.attempts.append(attempt)
                if attempt.outcome is Outcome.COMPLETE:
                    completed = attempt
                    break
                await asyncio.sleep(self.retry_pause * number)
        async with self._progress:
            if completed is not None:
                self.completed[op.index] = completed
            else:
                self.abandoned.append(op.index)
            self._final[op.index].set()
            self._progress.notify_all()

    def summary(self) -> str:
        """Attempts by outcome, and the reasons of the errors."""
        outcomes = Counter(a.outcome.value for a in self.attempts)
        reasons = Counter(a.detail for a in self.attempts if a.outcome is not Outcome.COMPLETE)
        lines = [
            f"{len(self.completed)}/{len(self.plan.ops)} instructions complete, "
            f"{len(self.abandoned)} abandoned; attempts: {dict(outcomes)}"
        ]
        lines += [f"  {n} x {reason}" for reason, n in reasons.most_common(12)]
        return "\n".join(lines)
