"""One behavioural suite for both scheduler backends: the SQLite ledger and real Slurm.

The Slurm runs use the session stack of :mod:`tests.backends.slurm` (munge, MariaDB,
slurmdbd, slurmctld and slurmd in a private network namespace) and read every effect back
with ``sacctmgr``/``sacct`` themselves; the ledger runs read its SQLite file directly.
Each test works on fresh project names, so tests share the stack without interfering.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import shutil
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path

import pytest

from broadgauge.agents.scheduler.backend import SchedulerBackend, SchedulerError
from broadgauge.agents.scheduler.ledger import LedgerScheduler
from broadgauge.agents.scheduler.slurm import (
    NodeFactors,
    SlurmJob,
    SlurmScheduler,
    daily_reports,
    parse_sacct_line,
    parse_tres,
)
from broadgauge.grammar import (
    Date,
    DateRange,
    ProjectIdentifier,
    ProjectMapping,
    ProjectUsageReport,
    Usage,
    UserIdentifier,
    UserMapping,
)
from tests.backends.slurm import SlurmStack
from tests.scheduler.rest_support import rest_scheduler
from tests.scheduler.test_batches import named


def utc_today() -> Date:
    """Today's UTC date, read when asked: a run of the suite may cross midnight."""
    return Date.from_python(dt.datetime.now(dt.UTC).date())


def project(tag: str = "p") -> ProjectMapping:
    """A project nobody used before (the Slurm stack lives for the whole session)."""
    name = f"{tag}{uuid.uuid4().hex[:8]}"
    return ProjectMapping(ProjectIdentifier(name, "portal"), f"portal.{name}")


def member(proj: ProjectMapping, username: str, local_user: str | None = None) -> UserMapping:
    """A user of ``proj`` (its local name defaults to ``<username>.<project>``)."""
    ident = UserIdentifier(username, proj.project.project, proj.project.portal)
    return UserMapping(ident, local_user or f"{username}.{ident.project}", proj.local_group)


# ---- the two backends behind one harness ----------------------------------------------


class Harness:
    """A backend plus independent ways to look at what it stored."""

    scheduler: SchedulerBackend
    audit: list[str]

    async def associations(self, account: str) -> dict[str, bool]:
        """User -> whether the account is that user's default."""
        raise NotImplementedError

    async def organisation(self, account: str) -> str | None:
        """The account's organisation (None when it does not exist)."""
        raise NotImplementedError

    async def add_foreign_account(self, account: str) -> None:
        """Create ``account`` in another organisation, as another tool on the site would."""
        raise NotImplementedError

    async def stored_limit(self, account: str) -> str:
        """The raw stored limit."""
        raise NotImplementedError

    def expected_limit(self, seconds: int) -> str:
        """What :meth:`stored_limit` shows after ``set_limit(seconds)``."""
        raise NotImplementedError

    async def produce_usage(self, user: UserMapping, day: Date) -> tuple[int, int]:
        """Make ``user`` consume compute on ``day`` (today); return (node-seconds, jobs)."""
        raise NotImplementedError


class LedgerHarness(Harness):
    def __init__(self, path: Path) -> None:
        self.path = path
        self.audit = []
        self.ledger = LedgerScheduler(path, audit=self.audit.append)
        self.scheduler = self.ledger

    async def associations(self, account: str) -> dict[str, bool]:
        return await self.ledger.associations(account)

    async def organisation(self, account: str) -> str | None:
        return (await self.ledger.accounts()).get(account)

    async def add_foreign_account(self, account: str) -> None:
        await self.ledger.register_site_account(account, "SomeoneElse")

    async def stored_limit(self, account: str) -> str:
        with sqlite3.connect(self.path) as db:
            row = db.execute("SELECT limit_seconds FROM accounts WHERE name = ?", (account,))
            return str(row.fetchone()[0])

    def expected_limit(self, seconds: int) -> str:
        return str(seconds)

    async def produce_usage(self, user: UserMapping, day: Date) -> tuple[int, int]:
        await self.ledger.record_usage(user, day, 2, wait_seconds=3)
        await self.ledger.record_usage(user, day, Usage(1))
        return 3, 2


class SlurmHarness(Harness):
    def __init__(self, stack: SlurmStack) -> None:
        self.stack = stack
        self.audit = []
        # The node the stack configures: a one-CPU job gets all 1000 MB, so node fraction 1.
        self.node = NodeFactors(cpus=stack.cpus, mem=stack.mem_mb, gpus=1, billing=stack.cpus)
        self.scheduler = SlurmScheduler(
            cluster=stack.cluster,
            default_node=self.node,
            command_prefix=stack.command_prefix,
            env=stack.env,
            audit=self.audit.append,
        )

    def sacctmgr(self, *args: str) -> list[list[str]]:
        out = self.stack.run("sacctmgr", "-P", "-n", *args).stdout
        return [line.split("|") for line in out.splitlines() if line]

    async def associations(self, account: str) -> dict[str, bool]:
        rows = self.sacctmgr(
            "list", "assoc", "where", f"account={account}", f"cluster={self.stack.cluster}",
            "format=User",
        )  # fmt: skip
        result = {}
        for (user,) in rows:
            if user:
                (_, default), *_ = self.sacctmgr(
                    "list", "user", "where", f"name={user}", f"cluster={self.stack.cluster}",
                    "format=User,DefaultAccount",
                )  # fmt: skip
                result[user] = default == account
        return result

    async def organisation(self, account: str) -> str | None:
        rows = self.sacctmgr("list", "account", f"name={account}", "format=Account,Organization")
        return rows[0][1] if rows else None

    async def add_foreign_account(self, account: str) -> None:
        self.stack.run(
            "sacctmgr", "-i", "add", "account", f"name={account}",
            f"cluster={self.stack.cluster}", "organization=SomeoneElse", "description=theirs",
        )  # fmt: skip

    async def stored_limit(self, account: str) -> str:
        rows = self.sacctmgr(
            "list", "assoc", "where", f"account={account}", f"cluster={self.stack.cluster}",
            "format=User,GrpTRESMins",
        )  # fmt: skip
        return next(tres for user, tres in rows if not user)

    def expected_limit(self, seconds: int) -> str:
        if seconds == 0:
            return ""
        minutes = seconds // 60
        n = self.node  # sacctmgr prints TRES sorted by name, memory with its unit
        return (
            f"billing={n.billing * minutes},cpu={n.cpus * minutes},"
            f"gres/gpu={n.gpus * minutes},mem={n.mem * minutes}M"
        )

    async def produce_usage(self, user: UserMapping, day: Date) -> tuple[int, int]:
        account = user.local_group
        ids = [
            self.stack.submit(account, f"sleep {seconds}", "-t", "1")
            for seconds in (2, 1)
        ]  # fmt: skip
        deadline = time.monotonic() + 60.0
        while True:  # sacct lags the jobs by a few seconds
            out = self.stack.run(
                "sacct", "-P", "-n", "-X", "-j", ",".join(ids), "--format=State,ElapsedRaw,End"
            ).stdout
            rows = [line.split("|") for line in out.splitlines()]
            if len(rows) == 2 and all(s == "COMPLETED" and e != "Unknown" for s, _, e in rows):
                return sum(int(elapsed) for _, elapsed, _ in rows), 2
            assert time.monotonic() < deadline, f"jobs {ids} not finished in sacct: {rows}"
            await asyncio.sleep(0.25)


@pytest.fixture(params=["ledger", "slurm", "slurmrestd"])
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    """Each backend in turn (the Slurm ones skip when the stack cannot run here)."""
    chosen: Harness
    if request.param == "ledger":
        chosen = LedgerHarness(tmp_path / "ledger.sqlite")
    elif request.param == "slurm":
        chosen = SlurmHarness(request.getfixturevalue("slurm_stack"))
    else:  # the same stack, through slurmrestd
        slurm = SlurmHarness(request.getfixturevalue("slurm_rest"))
        slurm.scheduler = rest_scheduler(slurm.stack, node=slurm.node, audit=slurm.audit.append)
        chosen = slurm
    yield chosen
    await chosen.scheduler.close()


def account_of(mapping: ProjectMapping) -> str:
    return mapping.local_group  # already a clean Slurm name in these tests


# ---- behaviour ------------------------------------------------------------------------


async def test_add_project_twice_creates_one_managed_account(harness: Harness) -> None:
    proj = project()
    await harness.scheduler.add_project(proj)
    await harness.scheduler.add_project(proj)
    assert await harness.organisation(account_of(proj)) == "openportal"
    assert sum("added account" in line for line in harness.audit) == 1


async def test_add_user_twice_gives_one_default_association(harness: Harness) -> None:
    proj = project()
    fred = member(proj, "fred")
    await harness.scheduler.add_user(fred)  # creates the account as well
    await harness.scheduler.add_user(fred)
    assert await harness.organisation(account_of(proj)) == "openportal"
    assert await harness.associations(account_of(proj)) == {fred.local_user: True}
    assert sum("added user" in line for line in harness.audit) == 1


async def test_users_added_to_one_account_at_once_are_all_associated(harness: Harness) -> None:
    proj = project()
    await harness.scheduler.add_project(proj)
    users = [member(proj, f"m{i}") for i in range(8)]
    await asyncio.gather(*(harness.scheduler.add_user(user) for user in users))
    assert await harness.associations(account_of(proj)) == {user.local_user: True for user in users}
    assert sum("added user" in line for line in harness.audit) == len(users)


async def test_remove_user_is_idempotent_and_keeps_the_account(harness: Harness) -> None:
    proj = project()
    fred, jane = member(proj, "fred"), member(proj, "jane")
    await harness.scheduler.add_user(fred)
    await harness.scheduler.add_user(jane)
    await harness.scheduler.remove_user(fred)
    await harness.scheduler.remove_user(fred)
    assert await harness.associations(account_of(proj)) == {jane.local_user: True}
    assert await harness.organisation(account_of(proj)) == "openportal"
    never = project()
    await harness.scheduler.remove_user(member(never, "ghost"))  # no account: nothing to do
    assert await harness.organisation(account_of(never)) is None


async def test_a_user_in_two_accounts_keeps_the_other(harness: Harness) -> None:
    first, second = project("a"), project("b")
    shared = f"shared{uuid.uuid4().hex[:6]}"
    in_first, in_second = member(first, "sam", shared), member(second, "sam", shared)
    await harness.scheduler.add_user(in_first)
    await harness.scheduler.add_user(in_second)  # the latest project becomes the default
    assert await harness.associations(account_of(first)) == {shared: False}
    assert await harness.associations(account_of(second)) == {shared: True}
    await harness.scheduler.remove_user(in_second)
    assert await harness.associations(account_of(second)) == {}
    assert await harness.associations(account_of(first)) == {shared: True}
    await harness.scheduler.remove_user(in_first)
    assert await harness.associations(account_of(first)) == {}


async def test_remove_project_keeps_account_and_members(harness: Harness) -> None:
    proj = project()
    fred = member(proj, "fred")
    await harness.scheduler.add_user(fred)
    await harness.scheduler.remove_project(proj)
    await harness.scheduler.remove_project(proj)
    assert await harness.organisation(account_of(proj)) == "openportal"
    assert await harness.associations(account_of(proj)) == {fred.local_user: True}
    await harness.scheduler.remove_project(project())  # unknown project: nothing to do


async def test_an_account_of_another_organisation_is_refused(harness: Harness) -> None:
    proj = project("f")
    fred = member(proj, "fred")
    await harness.add_foreign_account(account_of(proj))
    backend = harness.scheduler
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: backend.add_project(proj),
        lambda: backend.add_user(fred),
        lambda: backend.remove_user(fred),
        lambda: backend.remove_project(proj),
        lambda: backend.get_limit(proj),
        lambda: backend.set_limit(proj, Usage(3600)),
        lambda: backend.get_usage_report(proj, DateRange(utc_today(), utc_today())),
    ]
    for call in calls:
        with pytest.raises(SchedulerError, match=r"someoneelse.*refusing"):
            await call()
    assert await harness.organisation(account_of(proj)) == "someoneelse"
    assert await harness.associations(account_of(proj)) == {}


async def test_limit_round_trip(harness: Harness) -> None:
    proj = project()
    account = account_of(proj)
    with pytest.raises(SchedulerError, match="does not exist"):
        await harness.scheduler.set_limit(proj, Usage(60))
    await harness.scheduler.add_project(proj)
    assert await harness.scheduler.get_limit(proj) == Usage(0)
    assert await harness.scheduler.set_limit(proj, Usage(7200)) == Usage(7200)
    assert await harness.scheduler.set_limit(proj, Usage(7200)) == Usage(7200)
    assert await harness.scheduler.get_limit(proj) == Usage(7200)
    assert await harness.stored_limit(account) == harness.expected_limit(7200)
    assert await harness.scheduler.set_limit(proj, Usage(0)) == Usage(0)  # clears
    assert await harness.stored_limit(account) == harness.expected_limit(0)
    assert await harness.scheduler.get_limit(proj) == Usage(0)


async def test_usage_report_from_real_usage(harness: Harness) -> None:
    while True:  # usage of one UTC day: a fresh project again if midnight passed meanwhile
        day = utc_today()
        proj = project("u")
        root = member(proj, "root", "root")  # Slurm jobs here run as root
        await harness.scheduler.add_user(root)
        seconds, jobs = await harness.produce_usage(root, day)
        if utc_today() == day:
            break
    dates = DateRange(day.add_days(-1), day.add_days(1))
    report = await harness.scheduler.get_usage_report(proj, dates)

    assert report.project == proj.project
    assert set(report.reports) == {day.add_days(-1), day}  # tomorrow has not begun
    yesterday, today = report.reports[day.add_days(-1)], report.reports[day]
    assert (yesterday.reports, yesterday.num_jobs, yesterday.is_complete) == ({}, 0, True)
    assert today.reports == {"root": Usage(seconds)}
    assert today.user_job_counts == {"root": jobs}
    assert today.num_jobs == jobs
    assert today.total_wait_seconds == sum(today.user_wait_seconds.values()) >= 0
    assert not today.is_complete
    assert ProjectUsageReport.from_json_value(report.to_json_value()) == report

    # Removing the user (or the project) keeps the history.
    await harness.scheduler.remove_user(root)
    await harness.scheduler.remove_project(proj)
    after = await harness.scheduler.get_usage_report(proj, DateRange(day, day))
    assert after.reports[day].reports == {"root": Usage(seconds)}


async def test_usage_report_of_an_unknown_account_is_empty(harness: Harness) -> None:
    today = utc_today()
    report = await harness.scheduler.get_usage_report(project(), DateRange(today, today))
    assert report.reports == {}


# ---- Slurm-specific -------------------------------------------------------------------


def make_slurm(
    stack: SlurmStack,
    *,
    cluster: str | None = "",
    node: NodeFactors | None = None,
    commands: Mapping[str, Sequence[str]] | None = None,
    audit: Callable[[str], None] | None = None,
) -> SlurmScheduler:
    """A backend on the stack (``cluster=""`` means the stack's own cluster)."""
    return SlurmScheduler(
        cluster=stack.cluster if cluster == "" else cluster,
        default_node=node or NodeFactors(cpus=stack.cpus, mem=stack.mem_mb),
        command_prefix=stack.command_prefix,
        env=stack.env,
        commands=commands,
        audit=audit,
    )


async def test_slurm_users_added_to_one_account_together_share_sacctmgr_calls(
    slurm_stack: SlurmStack, tmp_path: Path
) -> None:
    calls = tmp_path / "sacctmgr-calls"
    wrapper = tmp_path / "sacctmgr"
    sacctmgr = shutil.which("sacctmgr")
    assert sacctmgr is not None
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> {calls}\nexec {sacctmgr} "$@"\n')
    wrapper.chmod(0o755)
    audit: list[str] = []
    slurm = make_slurm(slurm_stack, commands={"sacctmgr": [str(wrapper)]}, audit=audit.append)
    proj = project("t")
    await slurm.add_project(proj)
    users = [member(proj, f"u{i}") for i in range(8)]
    await asyncio.gather(*(slurm.add_user(user) for user in users))
    assert await SlurmHarness(slurm_stack).associations(proj.local_group) == {
        user.local_user: True for user in users
    }
    adds = [line for line in calls.read_text().splitlines() if " add user " in line]
    added = sorted(name for line in adds for name in named(line.split()))
    assert added == sorted(user.local_user for user in users)  # each user named once
    assert len(adds) < len(users)
    assert sorted(line for line in audit if "added user" in line) == sorted(
        f"slurm {slurm_stack.cluster}: added user {user.local_user} to account {proj.local_group}"
        for user in users
    )


async def test_slurm_limit_is_whole_tres_minutes(slurm_stack: SlurmStack) -> None:
    slurm = make_slurm(slurm_stack, node=NodeFactors(cpus=1))
    proj = project()
    await slurm.add_project(proj)
    assert await slurm.set_limit(proj, Usage(119)) == Usage(60)  # cpu=1 minute is stored


async def test_slurm_remove_user_cancels_pending_jobs(slurm_stack: SlurmStack) -> None:
    slurm = make_slurm(slurm_stack)
    proj = project()
    root = member(proj, "root", "root")
    await slurm.add_user(root)
    job = slurm_stack.submit(proj.local_group, "sleep 1", "--begin=now+1hour")
    await slurm.remove_user(root)
    state = slurm_stack.run("sacct", "-P", "-n", "-X", "-j", job, "--format=State").stdout
    assert state.startswith("CANCELLED")
    assert await SlurmHarness(slurm_stack).associations(proj.local_group) == {}


async def test_slurm_remove_user_with_running_jobs_asks_for_a_retry(
    slurm_stack: SlurmStack,
) -> None:
    slurm = make_slurm(slurm_stack)
    proj = project()
    root = member(proj, "root", "root")
    await slurm.add_user(root)
    job = slurm_stack.submit(proj.local_group, "sleep 30")
    deadline = time.monotonic() + 20.0
    while slurm_stack.run("squeue", "-h", "-j", job, "-o", "%T").stdout.strip() != "RUNNING":
        assert time.monotonic() < deadline, "the job never started"
        await asyncio.sleep(0.2)
    with pytest.raises(SchedulerError, match="still has running jobs"):
        await slurm.remove_user(root)
    assert await SlurmHarness(slurm_stack).associations(proj.local_group) == {"root": True}
    slurm_stack.run("scancel", job)
    deadline = time.monotonic() + 20.0
    while True:  # the retry succeeds once slurmdbd has seen the job end
        try:
            await slurm.remove_user(root)
            break
        except SchedulerError:
            assert time.monotonic() < deadline, "the association stayed blocked"
            await asyncio.sleep(0.5)
    assert await SlurmHarness(slurm_stack).associations(proj.local_group) == {}


async def test_slurm_without_scancel_still_removes(
    slurm_stack: SlurmStack, caplog: pytest.LogCaptureFixture
) -> None:
    slurm = make_slurm(slurm_stack, commands={"scancel": ["/nonexistent/scancel"]})
    proj = project()
    fred = member(proj, "fred")
    await slurm.add_user(fred)
    with caplog.at_level(logging.WARNING):
        await slurm.remove_user(fred)
    assert "could not cancel pending jobs" in caplog.text
    assert await SlurmHarness(slurm_stack).associations(proj.local_group) == {}


async def test_slurm_finds_its_cluster(slurm_stack: SlurmStack) -> None:
    assert await make_slurm(slurm_stack, cluster=None).cluster() == slurm_stack.cluster


async def test_slurm_commands_are_bounded_by_the_timeout() -> None:
    slow = SlurmScheduler(
        cluster="c",
        default_node=NodeFactors(cpus=1),
        command_prefix=["sh", "-c", 'sleep 5; exec "$0" "$@"'],
        timeout=0.5,
    )
    began = time.monotonic()
    with pytest.raises(SchedulerError, match=r"`sacctmgr .*` timed out after 0.5 s"):
        await slow.add_project(project())
    assert time.monotonic() - began < 2.0


async def test_slurm_reports_a_missing_command() -> None:
    broken = SlurmScheduler(
        cluster="c", default_node=NodeFactors(cpus=1), commands={"sacctmgr": ["/nonexistent/x"]}
    )
    with pytest.raises(SchedulerError, match="cannot run `/nonexistent/x"):
        await broken.add_project(project())


# ---- pure helpers ---------------------------------------------------------------------


def test_node_factors_convert_limits_both_ways() -> None:
    node = NodeFactors.from_json('{"cpus": 128, "mem": 256000, "gpus": 4}')
    assert node.grp_tres_mins(Usage(3600)) == "cpu=7680,gres/gpu=240,mem=15360000"
    assert node.grp_tres_mins(Usage(0)) == "cpu=-1,gres/gpu=-1,mem=-1"
    assert node.limit_from_tres({"cpu": 7680, "mem": 1}) == Usage(3600)  # cpu wins
    assert node.limit_from_tres({"gres/gpu": 240}) == Usage(3600)
    assert node.limit_from_tres({"billing": 5}) == Usage(0)  # not a node component
    with pytest.raises(ValueError, match="must define"):
        NodeFactors()
    with pytest.raises(ValueError, match="whole numbers"):
        NodeFactors.from_json({"cpus": -1})


def test_parse_tres_reads_sacctmgr_and_sacct_forms() -> None:
    assert parse_tres("billing=240,cpu=240,gres/gpu=60,mem=480000M") == {
        "billing": 240,
        "cpu": 240,
        "gres/gpu": 60,
        "mem": 480000,
    }
    assert parse_tres("mem=5G,node=1") == {"mem": 5120, "node": 1}
    assert parse_tres("") == {}


def test_parse_sacct_line() -> None:
    at = Date(2026, 11, 23).days * 86400 + 11 * 3600  # 11:00:00 UTC
    done = (
        "4|root|acct|2026-11-23T11:00:30|2026-11-23T11:00:32|2|"
        "billing=1,cpu=1,mem=1000M,node=1|COMPLETED|2026-11-23T11:00:20|2026-11-23T11:00:25"
    )
    alloc = {"billing": 1, "cpu": 1, "mem": 1000, "node": 1}
    assert parse_sacct_line(done) == SlurmJob("4", "root", at + 30, at + 32, 2, alloc, at + 25)
    running = "6|bob|acct|2026-11-23T11:00:30|Unknown|5|cpu=2|RUNNING|2026-11-23T11:00:10|Unknown"
    assert parse_sacct_line(running) == SlurmJob("6", "bob", at + 30, None, 5, {"cpu": 2}, at + 10)
    pending = "5|root|acct|Unknown|Unknown|0||PENDING|2026-11-23T11:00:30|Unknown"
    assert parse_sacct_line(pending) is None


def test_daily_reports_clip_jobs_to_days() -> None:
    day = Date(2026, 11, 23)
    midnight = day.add_days(1).days * 86400
    node = NodeFactors(cpus=4, mem=4000)
    jobs = [
        # two CPUs for an hour across midnight: half a node
        SlurmJob("1", "ann", midnight - 1800, midnight + 1800, 3600, {"cpu": 2}, midnight - 1860),
        # a quarter node for 2 s rounds up; it started (and waited) on the first day
        SlurmJob("2", "bob", midnight - 10, midnight - 8, 2, {"cpu": 1, "mem": 10}, None),
        # still running on the second day
        SlurmJob("3", "bob", midnight + 100, None, 50, {"mem": 4000}, midnight + 40),
        SlurmJob("4", "bob", midnight - 5, midnight - 5, 0, {"cpu": 4}, None),  # ran for 0 s
    ]
    now = midnight + 3600
    reports = daily_reports(jobs, [day, day.add_days(1), day.add_days(2)], node, now)
    first, second = reports[day], reports[day.add_days(1)]
    assert day.add_days(2) not in reports
    assert first.reports == {"ann": Usage(900), "bob": Usage(1)}
    assert first.user_job_counts == {"ann": 1, "bob": 1}
    assert first.user_wait_seconds == {"ann": 60, "bob": 0}
    assert first.components["cpu"] == {"ann": Usage(3600), "bob": Usage(2)}
    assert first.is_complete
    assert second.reports == {"ann": Usage(900), "bob": Usage(3500)}
    assert second.user_job_counts == {"bob": 1}
    assert (second.num_jobs, second.total_wait_seconds, second.is_complete) == (1, 60, False)
