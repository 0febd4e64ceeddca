"""Quotas through the role and the ledger engine, and the storage report."""

from __future__ import annotations

import datetime as dt
import os
import time
from pathlib import Path

import pytest

from broadgauge.agents.filesystem.agent import UsersLookup, default_volumes, serve_filesystem
from broadgauge.agents.filesystem.layout import parse_layout
from broadgauge.agents.filesystem.ledger import LedgerQuotaEngine, measure_usage
from broadgauge.grammar import (
    ProjectIdentifier,
    ProjectStorageReport,
    Quota,
    QuotaLimit,
    StorageSize,
    UserMapping,
    Volume,
)
from broadgauge.jobs import AgentType
from broadgauge.runtime.agent import Agent, Envelope, JobFailed
from tests.jobs.agent_helpers import Network, finished, make_agent

from .conftest import OTHER, PROJECT, RESOLVER, USER, Sandbox, envelope, make_sandbox, tables

MIB = 1024 * 1024


def write_mib(path: Path, count: int = 1) -> None:
    """A file of ``count`` MiB of real (non-sparse) data."""
    path.write_bytes(os.urandom(count * MIB))


# --- per volume ----------------------------------------------------------------------------


async def test_user_quota_set_get_clear_with_real_usage(sandbox: Sandbox) -> None:
    await sandbox.run(f"add_local_user {USER}")

    quota = await sandbox.run(f"set_local_user_quota {USER} home 2GB")
    assert isinstance(quota, Quota)
    assert quota.limit == QuotaLimit.parse("2GB")
    assert quota.usage is not None and quota.usage.bytes < MIB

    write_mib(sandbox.home() / "data", 3)
    quota = await sandbox.run(f"get_local_user_quota {USER} home")
    assert isinstance(quota, Quota) and quota.usage is not None
    assert 3 * MIB <= quota.usage.bytes < 4 * MIB
    assert quota.limit == QuotaLimit.parse("2GB")

    assert await sandbox.run(f"clear_local_user_quota {USER} home") is None
    quota = await sandbox.run(f"get_local_user_quota {USER} home")
    assert isinstance(quota, Quota) and quota.limit.is_unlimited


async def test_project_quota_and_quota_maps(sandbox: Sandbox) -> None:
    await sandbox.run(f"add_local_user {USER}")
    write_mib(sandbox.root / "projects" / "proj" / "shared")

    quota = await sandbox.run(f"set_local_project_quota {PROJECT} projects 5TB")
    assert isinstance(quota, Quota) and quota.usage is not None
    assert quota.usage.bytes >= MIB

    quotas = await sandbox.run(f"get_local_project_quotas {PROJECT}")
    assert quotas == {Volume("projects"): quota}
    # Only volumes with an engine appear (scratch has none).
    user_quotas = await sandbox.run(f"get_local_user_quotas {USER}")
    assert isinstance(user_quotas, dict) and list(user_quotas) == [Volume("home")]

    env = envelope(f"get_local_project_quotas {PROJECT}")
    value = await sandbox.role.dispatch(env)
    done = env.job.pending(now=time.time()).complete_with(value, now=time.time())
    assert done.result_type == "HashMap<Volume, Quota>"


async def test_quotas_are_kept_apart_per_volume_and_owner(sandbox: Sandbox) -> None:
    await sandbox.run(f"add_local_user {USER}")
    await sandbox.run(f"add_local_user {OTHER}")
    await sandbox.run(f"set_local_user_quota {USER} home 1GB")

    other = await sandbox.run(f"get_local_user_quota {OTHER} home")
    assert isinstance(other, Quota) and other.limit.is_unlimited
    project = await sandbox.run(f"get_local_project_quota {PROJECT} projects")
    assert isinstance(project, Quota) and project.limit.is_unlimited


async def test_volume_without_engine_is_unlimited(sandbox: Sandbox) -> None:
    quota = await sandbox.run(f"set_local_user_quota {USER} scratch 1GB")
    assert quota == Quota(QuotaLimit.UNLIMITED)
    assert await sandbox.run(f"clear_local_user_quota {USER} scratch") is None


async def test_quota_above_max_is_refused(sandbox: Sandbox) -> None:
    await sandbox.assert_refused(
        f"set_local_user_quota {USER} home 11GB", r"exceeds maximum allowed quota \(10.00 GB\)"
    )
    await sandbox.assert_refused(f"set_local_user_quota {USER} home unlimited", "exceeds maximum")


async def test_unknown_volume_is_refused(sandbox: Sandbox) -> None:
    await sandbox.assert_refused(
        f"get_local_project_quota {PROJECT} nope", "Project volume 'nope' not found"
    )
    await sandbox.assert_refused(
        f"set_local_user_quota {USER} projects 1GB", "User volume 'projects' not found"
    )


async def test_default_quotas_apply_once(tmp_path: Path) -> None:
    config = tables(tmp_path / "fs")
    config["user_volumes"]["home"]["default_quota"] = "100GB"
    config["user_volumes"]["home"]["max_quota"] = "1TB"
    config["project_volumes"]["projects"]["default_quota"] = "1TB"
    box = make_sandbox(tmp_path / "fs", parse_layout(config))

    await box.run(f"add_local_user {USER}")
    home = await box.run(f"get_local_user_quota {USER} home")
    assert isinstance(home, Quota) and home.limit == QuotaLimit.parse("100GB")
    project = await box.run(f"get_local_project_quota {PROJECT} projects")
    assert isinstance(project, Quota) and project.limit == QuotaLimit.parse("1TB")

    # A quota raised on request survives the next (idempotent) add.
    await box.run(f"set_local_user_quota {USER} home 500GB")
    await box.run(f"add_local_user {USER}")
    home = await box.run(f"get_local_user_quota {USER} home")
    assert isinstance(home, Quota) and home.limit == QuotaLimit.parse("500GB")


# --- the ledger on its own ---------------------------------------------------------------


def test_ledger_measures_allocated_blocks(tmp_path: Path) -> None:
    tree = tmp_path / "t"
    (tree / "sub").mkdir(parents=True)
    write_mib(tree / "sub" / "a")
    os.link(tree / "sub" / "a", tree / "hardlink")  # counted once
    (tree / "link").symlink_to("/usr")  # never followed
    with open(tree / "sparse", "wb") as handle:  # 1 GiB apparent, nothing allocated
        handle.truncate(1024 * MIB)

    used = measure_usage(tree)

    assert MIB <= used < 2 * MIB


async def test_ledger_caps_the_walk_and_handles_missing_paths(tmp_path: Path) -> None:
    tree = tmp_path / "many"
    tree.mkdir()
    for index in range(20):
        (tree / f"f{index}").write_text("x")
    engine = LedgerQuotaEngine(tmp_path / "q.sqlite", max_entries=10)
    try:
        quota = await engine.set_quota(str(tree), "alice", False, QuotaLimit.parse("1GB"))
        assert quota == Quota(QuotaLimit.parse("1GB"), None)  # usage unknown, not too small
        missing = await engine.get_quota(str(tmp_path / "gone"), "alice", False)
        assert missing == Quota(QuotaLimit.UNLIMITED, None)
    finally:
        engine.close()


async def test_ledger_survives_reopening(tmp_path: Path) -> None:
    engine = LedgerQuotaEngine(tmp_path / "q.sqlite")
    await engine.set_quota("/x", "grp", True, QuotaLimit.parse("3 GB"))
    engine.close()
    engine = LedgerQuotaEngine(tmp_path / "q.sqlite")
    try:
        assert engine.limit("/x", "grp", True) == QuotaLimit(StorageSize(3 * 1024**3))
        assert engine.limit("/x", "grp", False).is_unlimited
    finally:
        engine.close()


# --- storage report ------------------------------------------------------------------------


def users_of(users: list[UserMapping]) -> UsersLookup:
    async def lookup(envelope: Envelope, project: ProjectIdentifier) -> list[UserMapping]:
        assert project == PROJECT.project
        return users

    return lookup


async def test_storage_report_for_today(tmp_path: Path) -> None:
    box = make_sandbox(tmp_path / "fs", users_of=users_of([USER, OTHER]))
    await box.run(f"add_local_user {USER}")
    await box.run(f"set_local_user_quota {USER} home 1GB")

    report = await box.run(f"get_local_storage_report {PROJECT}")

    assert isinstance(report, ProjectStorageReport)
    assert report.project == PROJECT.project
    assert list(report.project_quotas) == [Volume("projects")]
    assert report.user_quotas[USER.user][Volume("home")].limit == QuotaLimit.parse("1GB")
    assert report.user_quotas[OTHER.user][Volume("home")].limit.is_unlimited
    assert report.users == {USER.user: "alice.proj", OTHER.user: "bob.proj"}
    today = dt.date.today().isoformat()
    same = await box.run(f"get_local_storage_report {PROJECT} {today}:{today}")
    assert isinstance(same, ProjectStorageReport)


@pytest.mark.parametrize("dates", ["yesterday", "this_week", "2024-01-01:2024-01-02"])
async def test_storage_report_other_dates_are_refused(sandbox: Sandbox, dates: str) -> None:
    await sandbox.assert_refused(
        f"get_local_storage_report {PROJECT} {dates}", "Storage reports only support today's date"
    )


async def test_storage_report_asks_the_instance_over_the_wire(tmp_path: Path) -> None:
    """Two real agents on loopback: the filesystem calls back ``get_users`` to its sender."""
    layout = default_volumes(tmp_path / "sandbox")

    async def get_users(env: Envelope) -> object:
        return [USER]

    def serve_users(agent: Agent) -> None:
        agent.add_handler("get_users", get_users)

    def install(agent: Agent) -> None:
        serve_filesystem(agent, RESOLVER, layout=layout, data_dir=tmp_path)

    async with Network() as net:
        cluster = await net.start("cluster", AgentType.INSTANCE, before_start=serve_users)
        await net.start("filesystem", AgentType.FILESYSTEM, dials=["cluster"], before_start=install)

        added = await finished(cluster.run("cluster.filesystem", f"add_local_user {USER}"))
        assert added.result_type == "None"
        home = await finished(cluster.run("cluster.filesystem", f"get_local_home_dir {USER}"))
        assert home.result_value() == str(tmp_path / "sandbox" / "home" / "proj" / "alice.proj")
        job = await finished(
            cluster.run("cluster.filesystem", f"get_local_storage_report {PROJECT}")
        )
        report = job.result_value()
        assert isinstance(report, ProjectStorageReport)
        assert report.users == {USER.user: "alice.proj"}
        assert set(report.user_quotas[USER.user]) == {Volume("home")}
        with pytest.raises(JobFailed, match="Storage reports only support"):
            await finished(
                cluster.run("cluster.filesystem", f"get_local_storage_report {PROJECT} yesterday")
            )


HANDLED = {
    "add_local_project",
    "remove_local_project",
    "add_local_user",
    "remove_local_user",
    "get_local_home_dir",
    "get_local_user_dirs",
    "get_local_project_dirs",
    "get_local_storage_report",
    "set_local_project_quota",
    "get_local_project_quota",
    "clear_local_project_quota",
    "get_local_project_quotas",
    "set_local_user_quota",
    "get_local_user_quota",
    "clear_local_user_quota",
    "get_local_user_quotas",
}


def test_default_volumes_layout(tmp_path: Path) -> None:
    layout = default_volumes(tmp_path / "box")
    assert (tmp_path / "box" / "home").is_dir() and (tmp_path / "box" / "projects").is_dir()
    home = layout.home_volume()
    assert home.name == "home" and home.subpath == "{project}/{user}"
    assert home.quota_engine == "ledger"
    assert str(home.user_dirs(USER)[0]) == str(tmp_path / "box" / "home" / "proj" / "alice.proj")
    assert layout.project_volume("projects").roots[0].mode == 0o2770
    role = serve_filesystem(make_agent("fs", AgentType.FILESYSTEM), RESOLVER, layout=layout)
    assert isinstance(role.engines["ledger"], LedgerQuotaEngine)
    assert set(role.handlers) == HANDLED
