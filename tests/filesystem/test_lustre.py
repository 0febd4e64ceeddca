"""The Lustre quota engine against the stand-in ``lfs``: quotas, ids, modes, runners, timeouts.

The stand-in (``tests/backends/lfs_standin.py``) answers in ``lfs``'s formats and records
what was set; Lustre itself cannot run here.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from broadgauge.agents.filesystem.agent import build_engines, serve_filesystem
from broadgauge.agents.filesystem.layout import LayoutError, parse_layout
from broadgauge.agents.filesystem.lustre import (
    DRY_RUN_ENV,
    ID_ONLY_ENV,
    IdStrategy,
    parse_lfs_quota,
)
from broadgauge.agents.filesystem.quota import QuotaError
from broadgauge.grammar import Quota, QuotaLimit, StorageSize
from broadgauge.jobs import AgentType
from broadgauge.runtime.agent import Agent, Envelope, JobFailed
from tests.jobs.agent_helpers import Network, finished

from .conftest import GID, OTHER, PROJECT, RESOLVER, USER
from .lustre_helpers import ALICE_HOME_ID, PROJECT_ID, Lfs, lustre_engine, lustre_tables, make_lfs

GB = QuotaLimit.parse("2GB")  # binary units: 2 GiB = 2097152 KiB


@pytest.fixture
def lfs(tmp_path: Path) -> Lfs:
    return make_lfs(tmp_path)


def home_of(lfs: Lfs, user: str = "alice.proj") -> str:
    path = lfs.mount / "home" / "proj" / user
    path.mkdir(parents=True, exist_ok=True)
    (path / "sub").mkdir(exist_ok=True)
    return str(path)


# --- project quotas (id strategies) ----------------------------------------------------------


async def test_user_project_quota_set_get_clear(lfs: Lfs) -> None:
    engine, _ = lustre_engine(lfs)
    home = home_of(lfs)

    quota = await engine.set_quota(home, "alice.proj", False, GB)

    assert quota == Quota(GB, StorageSize(0))
    # The id strategy "{UID-23000}01" turned uid 23456 into project id 45601, set
    # recursively with the inherit flag, then the hard limits in KiB and exact inodes.
    assert lfs.project_of(Path(home)) == (ALICE_HOME_ID, True)
    assert lfs.project_of(Path(home) / "sub") == (ALICE_HOME_ID, True)
    assert lfs.limits("prj", ALICE_HOME_ID) == {"b": 0, "B": 2097152, "i": 0, "I": 5000}
    assert ["project", "-p", "45601", "-s", "-r", home] in [c[:] for c in lfs.calls()]

    lfs.use("alice.proj", kbytes=2_000_000)  # over the limit: lfs marks it with '*'
    quota = await engine.get_quota(home, "alice.proj", False)
    assert quota == Quota(GB, StorageSize(2_000_000 * 1024))

    await engine.clear_quota(home, "alice.proj", False)
    assert lfs.project_of(Path(home)) == (0, False)
    assert lfs.limits("prj", ALICE_HOME_ID) == {"b": 0, "B": 0, "i": 0, "I": 0, "default": True}
    # Cleared directories carry no project id: nothing limits them.
    assert await engine.get_quota(home, "alice.proj", False) == Quota(QuotaLimit.UNLIMITED)


async def test_id_is_assigned_once(lfs: Lfs) -> None:
    engine, _ = lustre_engine(lfs)
    home = home_of(lfs)
    await engine.set_quota(home, "alice.proj", False, GB)
    before = len([c for c in lfs.calls() if c[:2] == ["project", "-p"]])

    await engine.set_quota(home, "alice.proj", False, QuotaLimit.parse("3GB"))

    assert len([c for c in lfs.calls() if c[:2] == ["project", "-p"]]) == before == 1
    assert lfs.limits("prj", ALICE_HOME_ID)["B"] == 3145728  # 3 GiB in KiB


async def test_project_quota_uses_the_group_id(lfs: Lfs) -> None:
    engine, layout = lustre_engine(lfs)
    place = str(layout.project_volume("projects").quota_dir(PROJECT))
    os.makedirs(place)

    quota = await engine.set_quota(place, "portal.proj", True, GB)

    assert quota.limit == GB
    assert lfs.project_of(Path(place)) == (PROJECT_ID, True)
    assert lfs.limits("prj", PROJECT_ID) is not None
    assert (await engine.get_quota(place, "portal.proj", True)).limit == GB


async def test_a_directory_with_another_id_is_an_error(lfs: Lfs) -> None:
    engine, _ = lustre_engine(lfs)
    home = home_of(lfs)
    await engine.set_quota(home, "alice.proj", False, GB)
    state = lfs.read("state.json")
    state["projects"][home]["projid"] = 777
    lfs.write("state.json", state)

    with pytest.raises(QuotaError, match="has Lustre project id 777, expected 45601"):
        await engine.get_quota(home, "alice.proj", False)
    await engine.clear_quota(home, "alice.proj", False)
    assert lfs.project_of(Path(home)) == (777, True)  # another id's tree is left alone


# --- user and group quotas by name -------------------------------------------------------------


async def test_user_and_group_quotas_by_name(lfs: Lfs) -> None:
    engine, layout = lustre_engine(lfs)
    scratch = str(layout.user_volume("scratch").quota_dir(USER))
    group_dir = str(layout.project_volume("groups").quota_dir(PROJECT))

    assert (await engine.set_quota(scratch, "alice.proj", False, GB)).limit == GB
    assert (await engine.set_quota(group_dir, "portal.proj", True, GB)).limit == GB

    assert lfs.limits("usr", 23456) == {"b": 0, "B": 2097152, "i": 0, "I": 1_000_000}
    assert lfs.limits("grp", GID) == {"b": 0, "B": 2097152, "i": 0, "I": 1_000_000}
    assert not any(c[0] == "project" for c in lfs.calls())  # no ids for named quotas
    lfs.use("alice.proj", 100, kind="usr", ident=23456)
    assert (await engine.get_quota(scratch, "alice.proj", False)).usage == StorageSize(102400)

    await engine.clear_quota(scratch, "alice.proj", False)
    assert (await engine.get_quota(scratch, "alice.proj", False)).limit.is_unlimited
    assert ["setquota", "-u", "alice.proj", "-D", str(lfs.mount)] in lfs.calls()


async def test_bad_owner_and_unknown_names(lfs: Lfs) -> None:
    engine, layout = lustre_engine(lfs)
    home = home_of(lfs)
    with pytest.raises(QuotaError, match="quota user"):
        await engine.set_quota(home, "-rf", False, GB)
    with pytest.raises(QuotaError, match="Could not find a user called carol"):
        await engine.set_quota(home, "carol", False, GB)
    with pytest.raises(QuotaError, match="lies in no user volume"):
        await engine.get_quota("/elsewhere/x/y", "alice.proj", False)
    # A name lfs does not know: the stand-in fails as lfs does, and the error says so.
    scratch = str(layout.user_volume("scratch").quota_dir(OTHER))
    state = lfs.read("names.json")
    del state["users"]["bob.proj"]
    lfs.write("names.json", state)
    with pytest.raises(QuotaError, match=r"failed \(exit 1\): lfs setquota: invalid id 'bob.proj'"):
        await engine.set_quota(scratch, "bob.proj", False, GB)
    assert not any("-rf" in c or "carol" in c for c in lfs.calls())


# --- modes --------------------------------------------------------------------------------------


async def test_dry_run_runs_no_lfs(
    lfs: Lfs, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    engine, _ = lustre_engine(lfs)
    home = home_of(lfs)
    monkeypatch.setenv(DRY_RUN_ENV, "true")
    caplog.set_level(logging.INFO, "broadgauge.agents.filesystem")

    assert await engine.set_quota(home, "alice.proj", False, GB) == Quota(QuotaLimit.UNLIMITED)
    assert await engine.get_quota(home, "alice.proj", False) == Quota(QuotaLimit.UNLIMITED)
    await engine.clear_quota(home, "alice.proj", False)

    assert lfs.calls() == []
    logged = [r.getMessage() for r in caplog.records if "DRY RUN" in r.getMessage()]
    assert any(f"project -p 45601 -s -r {home}" in line for line in logged)
    assert any(f"setquota -p 45601 -b 0 -B 2097152 -i 0 -I 5000 {lfs.mount}" in m for m in logged)


async def test_id_only_sets_ids_but_no_limits(lfs: Lfs, monkeypatch: pytest.MonkeyPatch) -> None:
    engine, _ = lustre_engine(lfs)
    home = home_of(lfs)
    monkeypatch.setenv(ID_ONLY_ENV, "1")  # the stand-in fails any setquota/quota now

    assert await engine.set_quota(home, "alice.proj", False, GB) == Quota(QuotaLimit.UNLIMITED)
    assert await engine.get_quota(home, "alice.proj", False) == Quota(QuotaLimit.UNLIMITED)

    assert lfs.project_of(Path(home)) == (ALICE_HOME_ID, True)
    assert lfs.limits("prj", ALICE_HOME_ID) is None
    assert {c[0] for c in lfs.calls()} == {"project"}
    await engine.clear_quota(home, "alice.proj", False)
    assert lfs.project_of(Path(home)) == (0, False)


# --- runners and timeouts -------------------------------------------------------------------


async def until(predicate: Callable[[], bool], what: str) -> None:
    """Wait for an event the test causes (a generous bound only against a hang)."""
    for _ in range(2000):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


async def test_at_most_max_runners_lfs_at_once(lfs: Lfs) -> None:
    engine, layout = lustre_engine(lfs, max_runners=2, command_timeout_secs=60)
    volume = layout.user_volume("scratch")
    lfs.write("hang.json", ["alice.proj", "bob.proj"])  # the first two hold their runners
    tasks = [
        asyncio.create_task(engine.get_quota(str(volume.quota_dir(m)), m.local_user, False))
        for m in (USER, OTHER, USER, OTHER, USER)
    ]
    pids = lfs.state / "hung.pids"
    await until(lambda: pids.exists() and len(pids.read_text().split()) == 2, "two lfs running")
    await until(lambda: engine.waiting == 3, "three waiting for a runner")

    assert len(lfs.calls()) == 2
    assert lfs.read("running.json")["now"] == 2
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for pid in pids.read_text().split():  # cancelled: their processes were killed
        await until(lambda p=int(pid): not alive(p), f"lfs {pid} killed")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_hung_lfs_times_out_and_others_go_on(lfs: Lfs) -> None:
    engine, layout = lustre_engine(lfs, command_timeout_secs=3)
    home = home_of(lfs)
    group_dir = str(layout.project_volume("groups").quota_dir(PROJECT))
    await engine.set_quota(home, "alice.proj", False, GB)
    lfs.write("hang.json", [str(ALICE_HOME_ID)])  # every lfs naming alice's id hangs
    order: list[str] = []

    async def hung() -> None:
        try:
            await engine.get_quota(home, "alice.proj", False)
        finally:
            order.append("hung")

    async def other() -> None:
        await engine.set_quota(group_dir, "portal.proj", True, GB)
        order.append("other")

    hung_task = asyncio.create_task(hung())
    await until((lfs.state / "hung.pids").exists, "the hung lfs started")
    await other()
    with pytest.raises(
        QuotaError, match=r"lfs_standin.py quota -p 45601 .* did not finish within 3 s"
    ):
        await hung_task

    assert order == ["other", "hung"]
    assert lfs.limits("grp", GID) is not None
    (pid,) = (lfs.state / "hung.pids").read_text().split()
    assert not alive(int(pid))


async def test_failing_lfs_names_the_command(lfs: Lfs) -> None:
    engine, layout = lustre_engine(lfs)
    missing = layout.user_volume("home").quota_dir(USER)  # never created
    with pytest.raises(QuotaError, match=f"lfs_standin.py project -d {missing}.*failed to stat"):
        await engine.set_quota(str(missing), "alice.proj", False, GB)


# --- start-up ---------------------------------------------------------------------------------


BASE = {"home": "{UID-23000}01", "scratch": "user", "projects": "{GID}"}


def home_strategy(text: str) -> dict[str, object]:
    return {"id_strategies": {**BASE, "home": text}}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"lfs_command": "/no/such/lfs"}, r"\[quota_engines.q\] lfs_command: '/no/such/lfs' was"),
        ({"lfs_command": ""}, r"lfs_command must be a non-empty"),
        ({"max_runners": 0}, r"\[quota_engines.q\] max_runners must be a positive"),
        ({"command_timeout_secs": "30"}, r"command_timeout_secs must be a positive"),
        ({"recursive_timeout_secs": -1}, r"recursive_timeout_secs must be a positive"),
        (
            {"id_strategies": {"home": "{UID}", "projects": "{GID}"}},
            r"no entry for volume 'scratch'",
        ),
        (home_strategy("{uid}"), r"id_strategies.home: \{uid\} in"),
        (home_strategy("{ UID}"), r"id_strategies.home: \{ UID\} in"),
        (home_strategy("$UID"), r"unexpected '\$UID'"),
        (home_strategy("{GID}"), r"user volume's strategy cannot use GID"),
        (home_strategy("group"), r"'group' does not fit a user volume"),
        ({"max_runner": 4}, r"id_strategies.max_runner must be a string"),
    ],
)
def test_bad_engine_config_is_refused_with_the_key(
    lfs: Lfs, change: dict[str, object], message: str
) -> None:
    tables = lustre_tables(lfs)
    tables["quota_engines"]["q"].update(change)
    with pytest.raises(LayoutError, match=message):
        build_engines(parse_layout(tables), resolver=RESOLVER)


def test_mount_point_is_required(lfs: Lfs) -> None:
    tables = lustre_tables(lfs)
    del tables["project_volumes"]["groups"]["mount_point"]
    with pytest.raises(LayoutError, match=r"\[project_volumes.groups\] mount_point must be set"):
        build_engines(parse_layout(tables), resolver=RESOLVER)


def test_unknown_engine_type_is_refused_with_the_key() -> None:
    with pytest.raises(LayoutError, match=r"\[quota_engines.q\] type must be one of"):
        parse_layout({"quota_engines": {"q": {"type": "gpfs"}}})


def test_id_strategies() -> None:
    assert IdStrategy.parse("{UID-100000}01", "x").compute(uid=100125) == 12501
    assert IdStrategy.parse("{GID+1000}", "x").compute(gid=5000) == 6000
    assert IdStrategy.parse("{GID}", "x").compute(gid=7) == 7
    assert IdStrategy.parse("9{UID - 10 + 2}", "x").compute(uid=20) == 912
    with pytest.raises(QuotaError, match="goes below 0"):
        IdStrategy.parse("{UID-100000}01", "x").compute(uid=5)
    with pytest.raises(QuotaError, match="outside 1"):
        IdStrategy.parse("{UID}99999999999", "x").compute(uid=1)
    with pytest.raises(LayoutError, match="not NUMBER, UID or GID"):
        IdStrategy.parse("{UID*2}", "x")


def test_parse_lfs_quota_long_mount_and_refusals() -> None:
    mount = "/a/very/long/lustre/mount"
    output = (
        "Disk quotas for prj 12 (pid 12):\n"
        "     Filesystem  kbytes   quota   limit   grace   files   quota   limit   grace\n"
        f"{mount}\n                   300*      0     200       -       2       0       0       -\n"
    )
    assert parse_lfs_quota(output, "prj", "12", mount) == Quota(
        QuotaLimit(StorageSize(200 * 1024)), StorageSize(300 * 1024)
    )
    with pytest.raises(QuotaError, match="answered for prj 12, not prj 13"):
        parse_lfs_quota(output, "prj", "13", mount)
    with pytest.raises(QuotaError, match="unreadable kbytes"):
        parse_lfs_quota(output.replace("300*", "[300]"), "prj", "12", mount)


# --- end to end through the filesystem agent ----------------------------------------------


async def test_lustre_volumes_through_the_agent(lfs: Lfs) -> None:
    tables = lustre_tables(lfs, command_timeout_secs=3)
    tables["user_volumes"]["home"]["default_quota"] = "1GB"
    layout = parse_layout(tables)

    def install(agent: Agent) -> None:
        serve_filesystem(agent, RESOLVER, layout=layout, chown=False)

    async def get_users(env: Envelope) -> object:
        return [USER]

    async with Network() as net:
        cluster = await net.start(
            "cluster",
            AgentType.INSTANCE,
            before_start=lambda a: a.add_handler("get_users", get_users),
        )
        await net.start("filesystem", AgentType.FILESYSTEM, dials=["cluster"], before_start=install)

        def run(text: str) -> asyncio.Task[object]:
            return asyncio.ensure_future(finished(cluster.run("cluster.filesystem", text), 30))

        await run(f"add_local_user {USER}")
        # The home volume's default quota went through lfs on the new directory.
        home = lfs.mount / "home" / "proj" / "alice.proj"
        assert lfs.project_of(home) == (ALICE_HOME_ID, True)
        assert lfs.limits("prj", ALICE_HOME_ID)["B"] == 1048576  # 1 GiB in KiB

        job = await run(f"set_local_project_quota {PROJECT} projects 2GB")
        assert job.result_value() == Quota(GB, StorageSize(0))  # type: ignore[attr-defined]
        job = await run(f"get_local_user_quota {USER} home")
        assert job.result_value().limit == QuotaLimit.parse("1GB")  # type: ignore[attr-defined]

        # A hung lfs: the job fails after the timeout, and another job finishes meanwhile.
        lfs.write("hang.json", [str(ALICE_HOME_ID)])
        hung = run(f"get_local_user_quota {USER} home")
        await until((lfs.state / "hung.pids").exists, "the hung lfs started")
        other = await run(f"get_local_project_quota {PROJECT} projects")
        assert not hung.done()
        assert other.result_value().limit == GB  # type: ignore[attr-defined]
        with pytest.raises(JobFailed, match="did not finish within 3 s and was killed"):
            await hung


def test_the_standin_runs_alone(lfs: Lfs) -> None:
    """The stand-in's own refusals: an unknown command, a bad option, and its exit codes."""
    import subprocess

    from .lustre_helpers import STANDIN

    env = {**os.environ, "LFS_STANDIN_STATE": str(lfs.state)}

    def lfs_run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(STANDIN), *args], env=env, capture_output=True, text=True
        )

    unknown = lfs_run("frobnicate")
    assert unknown.returncode == 1 and "use one of:" in unknown.stdout
    bad = lfs_run("setquota", "-x", "1", str(lfs.mount))
    assert bad.returncode == 4 and "unrecognized option '-x'" in bad.stderr
    assert "usage: setquota" in bad.stderr
    root = lfs_run("setquota", "-u", "0", "-B", "1G", str(lfs.mount))
    assert root.returncode == 1 and "can't set quota for root" in root.stderr
    assert lfs_run("setquota", "-p", "5", "-B", "1G", "-I", "2k", str(lfs.mount)).returncode == 0
    assert lfs.limits("prj", 5) == {"b": 0, "B": 1024 * 1024, "i": 0, "I": 2048}
    shown = lfs_run("quota", "-q", "-p", "5", str(lfs.mount))
    assert shown.stdout.split() == [str(lfs.mount), "0", "0", "1048576", "-", "0", "0", "2048", "-"]
