"""Hostile names: the grammar accepts them (as OpenPortal's parser does); no back end sees them.

``x,root`` would be two users to ``sacctmgr``, ``-rf`` an option to ``setquota``, ``x y`` a
half-made account to undo.  The naming rule (:mod:`broadgauge.agents.naming`) refuses them
where an identifier becomes a local name, the instance refuses them before asking any back
end, and every engine refuses them again by itself.  These tests check the rule, the whole
network (one start), and then every engine directly, each against its real back end, reading
that back end's own records to show that nothing changed.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import functools
import re
import sqlite3
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broadgauge.agents.accounts.backend import AccountBackend
from broadgauge.agents.accounts.local import LocalDirectory
from broadgauge.agents.filesystem.agent import FilesystemRole
from broadgauge.agents.filesystem.ids import (
    DirectoryResolver,
    IdResolver,
    NssResolver,
    UnknownName,
)
from broadgauge.agents.filesystem.layout import LayoutError
from broadgauge.agents.filesystem.ledger import LedgerQuotaEngine
from broadgauge.agents.filesystem.quota import QuotaError
from broadgauge.agents.naming import (
    NAME_MAX,
    PORTABLE,
    UnportableName,
    check_name,
    name_problem,
    slurm_name,
    user_mapping,
)
from broadgauge.agents.scheduler.backend import SchedulerBackend, SchedulerError
from broadgauge.agents.scheduler.ledger import LedgerScheduler
from broadgauge.agents.scheduler.slurm import NodeFactors, SlurmScheduler
from broadgauge.demo import PROJECT, Network
from broadgauge.grammar import (
    Date,
    DateRange,
    Destination,
    GrammarError,
    PortalIdentifier,
    ProjectIdentifier,
    ProjectMapping,
    QuotaLimit,
    Usage,
    UserIdentifier,
    UserMapping,
    Volume,
)
from broadgauge.grammar import instructions as ins
from broadgauge.grammar.command import Command
from broadgauge.jobs import AgentType
from broadgauge.jobs.directions import Link
from broadgauge.jobs.job import Job
from broadgauge.runtime.agent import Envelope, JobFailed, JobRefused, PeerInfo
from broadgauge.wire import PeerId
from tests.accounts.test_backends import FreeIpaHarness, Harness, LdapHarness, LocalHarness
from tests.filesystem.conftest import make_sandbox
from tests.filesystem.test_linux import FakeTools
from tests.security.conftest import still_provisions

HOSTILE = [
    "a)(uid=*",
    "-rf",
    "x,root",
    "x y",
    "a\x00b",
    "x" * 100_000,
    "a=b",
    "a'b",
    'a"b',
    "a;b",
    "a|b",
    "$(id)",
    "a\nb",
    "a/b",
    "..",
    ".",
    "ü",
    "",
]
#: Every refusal says this, then the rule.
REFUSED = "is not a portable POSIX name"
TODAY = Date.from_python(dt.date.today())


def _short(name: str) -> str:
    return repr(name if len(name) < 20 else name[:8] + "...")


def build(factory: Callable[[], Any]) -> Any | None:
    """``factory()``, or None when the grammar itself refuses the name (so it cannot reach)."""
    try:
        return factory()
    except GrammarError:
        return None


def assert_refused(message: str) -> None:
    """A refusal that names the rule, and that does not echo a huge name back whole."""
    assert REFUSED in message, message
    assert "allowed: A-Z a-z 0-9 . _ -, not starting with '-'" in message, message
    assert len(message) < 500, message[:200]


# --- the rule ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [*HOSTILE, "12345", "a" * (NAME_MAX + 1)], ids=_short)
def test_the_rule_refuses_each_hostile_name_and_says_why(name: str) -> None:
    with pytest.raises(UnportableName) as refused:
        check_name(name, "user name")
    assert_refused(str(refused.value))
    assert str(refused.value).startswith("user name ")


def test_the_message_names_the_failed_rule() -> None:
    cases = {
        "x,root": "',' is not allowed",
        "-rf": "starts with '-'",
        "x" * 100_000: "it is 100000 characters long",
        "": "it is empty",
        "..": "'..' names a directory",
        "12345": "all digits",
        "ü": "'ü' is not allowed",
        "a\x00b": "'\\x00' is not allowed",
    }
    for name, reason in cases.items():
        with pytest.raises(UnportableName, match=re.escape(reason)):
            check_name(name, "name")
    message = "user name 'x,root' is not a portable POSIX name: ',' is not allowed"
    with pytest.raises(UnportableName, match=message):
        user_mapping(UserIdentifier("x,root", "physics", "portal"))


def test_realistic_names_pass() -> None:
    for name in ("alice.physics", "portal.physics", "o_neil-2.Proj", "x" * NAME_MAX, "root"):
        assert check_name(name, "name") == name
    assert user_mapping(UserIdentifier("12345", "physics", "portal")).local_user == "12345.physics"
    assert slurm_name("group.Portal.Physics") == "portal.physics"
    with pytest.raises(UnportableName, match="all digits"):
        user_mapping(UserIdentifier("alice", "12345", "system"))  # the bare group "12345"
    with pytest.raises(UnportableName, match=r"Unix user name .* 41 characters long"):
        user_mapping(UserIdentifier("a" * 20, "b" * 20, "portal"))


@given(st.text(max_size=2 * NAME_MAX))
def test_an_accepted_name_holds_only_portable_characters(name: str) -> None:
    if name_problem(name) is None:
        assert set(name) <= PORTABLE and 1 <= len(name) <= NAME_MAX
        assert not name.startswith("-") and name not in (".", "..") and not name.isdigit()


@given(
    st.text(max_size=NAME_MAX),
    st.characters().filter(lambda ch: ch not in PORTABLE),
    st.text(max_size=NAME_MAX),
)
def test_a_name_with_a_non_portable_character_is_refused(before: str, bad: str, after: str) -> None:
    name = before + bad + after
    assert name_problem(name) is not None
    assert name_problem(name, numeric_ok=True) is not None
    with pytest.raises(SchedulerError, match=REFUSED):
        slurm_name(name, error=SchedulerError)


@given(st.text(alphabet=sorted(PORTABLE), min_size=1, max_size=NAME_MAX))
def test_portable_text_is_refused_only_for_a_stated_reason(name: str) -> None:
    special = name.startswith("-") or name in (".", "..") or name.isdigit()
    assert (name_problem(name) is not None) == special


# --- through the network -------------------------------------------------------------------


def sqlite_rows(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table of a SQLite file (read only)."""
    with contextlib.closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as db:
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {t: sorted(db.execute(f'SELECT * FROM "{t}"').fetchall(), key=repr) for t in tables}


def tree(roots: Sequence[Path]) -> list[str]:
    """Every path under ``roots``."""
    return sorted(str(path) for root in roots for path in root.rglob("*"))


def network_state(network: Network) -> dict[str, object]:
    """What the demo's three back ends hold: the account directory, the ledger, the disks."""
    assert isinstance(network.roles["account"].accounts, LocalDirectory)
    assert isinstance(network.roles["scheduler"].scheduler, LedgerScheduler)
    filesystem = network.roles["filesystem"].filesystem
    assert isinstance(filesystem, FilesystemRole)
    quotas = filesystem.engines["ledger"]
    assert isinstance(quotas, LedgerQuotaEngine)
    roots = [Path(r.root) for volume in filesystem.layout.volumes() for r in volume.roots]
    return {
        "accounts": sqlite_rows(network.root / "account" / "directory.sqlite3"),
        "scheduler": sqlite_rows(network.root / "scheduler" / "scheduler.sqlite3"),
        "directories": tree(roots),
        "quotas": sqlite_rows(quotas.db_path),
    }


async def test_hostile_names_through_the_network_touch_no_back_end(network: Network) -> None:
    before = network_state(network)
    assert before["directories"], "the demo project should have made its directories"
    instructions = [
        f"{verb} {form}"
        for hostile in HOSTILE
        for verb, form in (
            ("add_user", f"{hostile}.{PROJECT}"),
            ("add_user", f"alice.{hostile}.portal"),
            ("add_project", f"{hostile}.portal"),
            ("remove_user", f"{hostile}.{PROJECT}"),
        )
    ]
    # Each part is fine, but the Unix user name would be 41 characters long.
    instructions.append(f"add_user {'a' * 20}.{'b' * 20}.portal")
    for instruction in instructions:
        with pytest.raises((JobFailed, GrammarError)) as refused:
            await network.submit(instruction)
        message = str(refused.value)
        if isinstance(refused.value, GrammarError):
            assert "failed to parse" in message  # the grammar refused it: it never left
        else:
            assert_refused(message)
        assert network_state(network) == before, f"{instruction[:60]!r} changed a back end"
    await still_provisions(network)


# --- account engines, directly -------------------------------------------------------------


def account_calls(
    backend: AccountBackend, hostile: str
) -> Iterator[tuple[str, Callable[[], Awaitable[object]]]]:
    """Every account entry point, with ``hostile`` in each part of an identifier it can take."""
    users = [
        build(lambda: UserIdentifier(hostile, "physics", "portal")),
        build(lambda: UserIdentifier("alice", hostile, "portal")),
        build(lambda: UserIdentifier("alice", "physics", hostile)),
    ]
    projects = [
        build(lambda: ProjectIdentifier(hostile, "portal")),
        build(lambda: ProjectIdentifier("physics", hostile)),
    ]
    for user in filter(None, users):
        for name in ("add_user", "remove_user", "get_user_mapping", "is_existing_user"):
            yield name, functools.partial(getattr(backend, name), user)
        for name in ("is_protected_user", "block_user", "unblock_user", "is_blocked_user"):
            yield name, functools.partial(getattr(backend, name), user)
        yield "update_homedir", functools.partial(backend.update_homedir, user, "/home/x")
    for project in filter(None, projects):
        for name in ("add_project", "remove_project", "get_project_mapping", "get_users"):
            yield name, functools.partial(getattr(backend, name), project)
        yield "is_existing_project", functools.partial(backend.is_existing_project, project)
    portal = build(lambda: PortalIdentifier(hostile))
    if portal is not None:
        yield "get_projects", functools.partial(backend.get_projects, portal)


def account_store(harness: Harness) -> object:
    """Everything the directory holds, read from the directory itself."""
    if isinstance(harness, LocalHarness):
        return sqlite_rows(harness.path)
    if isinstance(harness, LdapHarness):
        entries = harness.entries("(objectClass=*)")
        return sorted(repr(sorted(entry.items())) for entry in entries)
    assert isinstance(harness, FreeIpaHarness)
    return copy.deepcopy((harness.standin.users, harness.standin.groups))


Calls = Iterator[tuple[str, Callable[[], Awaitable[object]]]]


async def each_refused(
    calls: Callable[[str], Calls],
    error: type[Exception],
    snapshot: Callable[[], object] = lambda: None,
) -> None:
    """Each call with each hostile name is refused with ``error``; ``snapshot`` sees no change."""
    before = snapshot()
    for hostile in HOSTILE:
        for name, call in calls(hostile):
            with pytest.raises(error) as refused:
                await call()
            assert_refused(str(refused.value))
            assert snapshot() == before, f"{name} {_short(hostile)}"


@pytest.fixture(params=["local", "ldap", "freeipa"])
def account_harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    """Each account back end: SQLite, a real slapd, the FreeIPA stand-in."""
    harness: Harness
    if request.param == "local":
        harness = LocalHarness(tmp_path / "accounts.sqlite")
    elif request.param == "ldap":
        harness = LdapHarness(request.getfixturevalue("slapd"))
    else:
        harness = FreeIpaHarness()
    yield harness
    harness.cleanup()


async def test_every_account_engine_refuses_every_hostile_name(account_harness: Harness) -> None:
    backend = account_harness.make()
    try:
        await backend.add_user(UserIdentifier("alice", "physics", "portal"))
        requests = (
            len(account_harness.standin.calls) if isinstance(account_harness, FreeIpaHarness) else 0
        )
        await each_refused(
            lambda hostile: account_calls(backend, hostile),
            JobRefused,
            lambda: account_store(account_harness),
        )
        if isinstance(account_harness, FreeIpaHarness):
            assert len(account_harness.standin.calls) == requests  # not even a read was sent
    finally:
        await backend.close()


# --- scheduler engines, directly -----------------------------------------------------------


def scheduler_calls(
    scheduler: SchedulerBackend, hostile: str
) -> Iterator[tuple[str, Callable[[], Awaitable[object]]]]:
    """Every scheduler entry point, with ``hostile`` as each name a mapping carries."""
    tag = f"n{uuid.uuid4().hex[:8]}"  # a project no test has used
    good = ProjectMapping(ProjectIdentifier(tag, "portal"), f"portal.{tag}")
    identity = UserIdentifier("alice", tag, "portal")
    projects = [
        build(lambda: ProjectMapping(good.project, hostile)),
        build(lambda: ProjectMapping(ProjectIdentifier(hostile, "portal"), good.local_group)),
    ]
    users = [
        build(lambda: UserMapping(identity, hostile, good.local_group)),
        build(lambda: UserMapping(identity, f"alice.{tag}", hostile)),
        build(lambda: UserMapping(UserIdentifier(hostile, tag, "portal"), "a.b", "portal.b")),
    ]
    week = DateRange(TODAY.add_days(-7), TODAY)
    for project in filter(None, projects):
        yield "add_project", functools.partial(scheduler.add_project, project)
        yield "remove_project", functools.partial(scheduler.remove_project, project)
        yield "get_limit", functools.partial(scheduler.get_limit, project)
        yield "set_limit", functools.partial(scheduler.set_limit, project, Usage(3600))
        yield "get_usage_report", functools.partial(scheduler.get_usage_report, project, week)
    for user in filter(None, users):
        yield "add_user", functools.partial(scheduler.add_user, user)
        yield "remove_user", functools.partial(scheduler.remove_user, user)
        if isinstance(scheduler, LedgerScheduler):
            yield "record_usage", functools.partial(scheduler.record_usage, user, TODAY, 60)


def sacctmgr_state(stack: Any) -> list[str]:
    """Every account, user and association slurmdbd holds."""
    listings = (
        ("account", "Account,Organization,Description"),
        ("user", "User,DefaultAccount"),
        ("assoc", "Cluster,Account,User,Partition,GrpTRESMins"),
    )
    lines: list[str] = []
    for kind, columns in listings:
        out = stack.run("sacctmgr", "-P", "-n", "list", kind, f"format={columns}").stdout
        lines += sorted(f"{kind}|{line}" for line in out.splitlines())
    return lines


async def test_the_ledger_scheduler_refuses_every_hostile_name(tmp_path: Path) -> None:
    audit: list[str] = []
    path = tmp_path / "ledger.sqlite"
    ledger = LedgerScheduler(path, audit=audit.append)
    try:
        await ledger.add_user(UserMapping.parse("alice.p.portal:alice.p:portal.p"))
        done = len(audit)
        calls = functools.partial(scheduler_calls, ledger)
        await each_refused(calls, SchedulerError, lambda: sqlite_rows(path))
        assert len(audit) == done
    finally:
        await ledger.close()


async def test_slurm_refuses_every_hostile_name_before_sacctmgr(slurm_stack: Any) -> None:
    audit: list[str] = []
    slurm = SlurmScheduler(
        cluster=slurm_stack.cluster,
        default_node=NodeFactors(cpus=slurm_stack.cpus, mem=slurm_stack.mem_mb),
        command_prefix=slurm_stack.command_prefix,
        env=slurm_stack.env,
        audit=audit.append,
    )
    root_before = slurm_stack.run(
        "sacctmgr", "-P", "-n", "list", "assoc", "where", "user=root", "format=Account"
    ).stdout
    before = sacctmgr_state(slurm_stack)
    # sacctmgr's state is read once at the end: a listing per call would take minutes.
    await each_refused(functools.partial(scheduler_calls, slurm), SchedulerError)
    assert audit == []  # no sacctmgr change ran
    assert sacctmgr_state(slurm_stack) == before
    root_after = slurm_stack.run(
        "sacctmgr", "-P", "-n", "list", "assoc", "where", "user=root", "format=Account"
    ).stdout
    assert root_after == root_before  # `name=x,root` made no association for root


# --- filesystem engines, directly ----------------------------------------------------------


def filesystem_envelope(instruction: ins.Instruction) -> Envelope:
    """The instruction as the instance would send it, built without the text grammar."""
    command = Command(Destination.parse("cluster.filesystem"), instruction)
    job = Job.create(command, now=time.time())
    sender = PeerInfo(PeerId("cluster", "default"), Link.UP, AgentType.INSTANCE)
    return Envelope("filesystem", sender, job)


def filesystem_instructions(hostile: str) -> Iterator[ins.Instruction]:
    """Every kind of filesystem instruction, with ``hostile`` in each name of its mapping."""
    identity = UserIdentifier("alice", "proj", "portal")
    project = ProjectMapping(ProjectIdentifier("proj", "portal"), "portal.proj")
    users = [
        build(lambda: UserMapping(identity, hostile, "portal.proj")),
        build(lambda: UserMapping(identity, "alice.proj", hostile)),
        build(lambda: UserMapping(UserIdentifier("alice", hostile, "portal"), "a.b", "p.b")),
    ]
    projects = [
        build(lambda: ProjectMapping(project.project, hostile)),
        build(lambda: ProjectMapping(ProjectIdentifier(hostile, "portal"), "portal.proj")),
    ]
    limit = QuotaLimit.parse("1 GB")
    for user in filter(None, users):
        yield ins.AddLocalUser(user)
        yield ins.RemoveLocalUser(user)
        yield ins.GetLocalHomeDir(user)
        yield ins.SetLocalUserQuota(user, Volume("home"), limit)
        yield ins.ClearLocalUserQuota(user, Volume("home"))
    for mapping in filter(None, projects):
        yield ins.AddLocalProject(mapping)
        yield ins.RemoveLocalProject(mapping)
        yield ins.SetLocalProjectQuota(mapping, Volume("projects"), limit)


async def test_the_filesystem_role_refuses_every_hostile_name(tmp_path: Path) -> None:
    box = make_sandbox(tmp_path / "fs")
    roots = [tmp_path / "fs" / name for name in ("home", "scratch1", "scratch2", "projects")]
    quota_db = tmp_path / "fs" / "q.sqlite"
    await box.run("add_local_user alice.proj.portal:alice.proj:portal.proj")
    before = (tree(roots), sqlite_rows(quota_db), list(box.audit))
    for hostile in HOSTILE:
        for instruction in filesystem_instructions(hostile):
            with pytest.raises(JobRefused) as refused:
                await box.role.dispatch(filesystem_envelope(instruction))
            assert_refused(str(refused.value))
            after = (tree(roots), sqlite_rows(quota_db), list(box.audit))
            assert after == before, f"{instruction.keyword} {_short(hostile)}"


async def test_each_quota_engine_and_resolver_refuses_every_hostile_name(tmp_path: Path) -> None:
    tools = FakeTools(tmp_path)
    linux = tools.engine()
    ledger = LedgerQuotaEngine(tmp_path / "quotas.sqlite")
    directory = LocalDirectory(tmp_path / "accounts.sqlite")
    await directory.close()  # the resolver reads the file the account agent writes
    resolvers: list[IdResolver] = [NssResolver(), DirectoryResolver(tmp_path / "accounts.sqlite")]
    limit = QuotaLimit.parse("1 GB")
    try:
        for hostile in HOSTILE:
            for engine in (linux, ledger):
                for is_group in (False, True):
                    calls = (
                        engine.set_quota(str(tmp_path), hostile, is_group, limit),
                        engine.get_quota(str(tmp_path), hostile, is_group),
                        engine.clear_quota(str(tmp_path), hostile, is_group),
                    )
                    for call in calls:
                        with pytest.raises(QuotaError) as refused:
                            await call
                        assert_refused(str(refused.value))
            for resolver in resolvers:
                for lookup in (resolver.uid, resolver.gid):
                    with pytest.raises(UnknownName) as unknown:
                        lookup(hostile)  # never ValueError: getpwnam is not even asked
                    assert_refused(str(unknown.value))
        for digits in ("0", "12345"):  # setquota and chown would read a uid or gid
            with pytest.raises(QuotaError, match="all digits"):
                await linux.set_quota("/p", digits, True, limit)
        assert tools.calls() == []  # setquota and repquota never ran
        assert sqlite_rows(tmp_path / "quotas.sqlite") == {"quotas": []}
    finally:
        ledger.close()


def test_the_layout_places_no_hostile_name_in_a_path(tmp_path: Path) -> None:
    box = make_sandbox(tmp_path / "fs")
    home = box.role.layout.home_volume()
    projects = box.role.layout.project_volume("projects")
    identity = UserIdentifier("alice", "proj", "portal")
    for hostile in HOSTILE:
        user = build(functools.partial(UserMapping, identity, hostile, "portal.proj"))
        project = build(functools.partial(ProjectIdentifier, hostile, "portal"))
        if user is not None:
            with pytest.raises(LayoutError) as refused:
                home.user_dirs(user)
            assert_refused(str(refused.value))
        if project is not None:
            with pytest.raises(LayoutError) as refused:
                projects.project_dirs(ProjectMapping(project, "portal.proj"))
            assert_refused(str(refused.value))
