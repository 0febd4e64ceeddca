"""The Linux quota engine, against fake ``setquota``/``repquota`` scripts.

Real quotas need root, a filesystem mounted with ``usrquota,grpquota`` and ``quotaon``;
the scripts here record their arguments and print canned reports instead.
"""

from __future__ import annotations

import shlex
import stat
from pathlib import Path

import pytest

from broadgauge.agents.filesystem.agent import build_engines
from broadgauge.agents.filesystem.layout import parse_layout
from broadgauge.agents.filesystem.linux import LinuxQuotaEngine, limit_to_kib, parse_repquota
from broadgauge.agents.filesystem.quota import QuotaError
from broadgauge.grammar import Quota, QuotaLimit, StorageSize

from .conftest import PROJECT, USER, make_sandbox, needs_root, tables

CSV_USERS = """\
User,BlockStatus,FileStatus,BlockUsed,BlockSoftLimit,BlockHardLimit,BlockGrace,FileUsed,FileSoftLimit,FileHardLimit,FileGrace
root,ok,ok,24,0,0,0,3,0,0,0
alice.proj,ok,ok,12345,2097152,2097152,0,12,0,0,0
bob.proj,over,ok,2100000,2097152,2097152,604800,5,0,0,0
"""

CSV_GROUPS = """\
Group,BlockStatus,FileStatus,BlockUsed,BlockSoftLimit,BlockHardLimit,BlockGrace,FileUsed,FileSoftLimit,FileHardLimit,FileGrace
portal.proj,ok,ok,2048,0,0,0,1,0,0,0
"""

TABLE = """\
*** Report for user quotas on device /dev/sda1
Block grace time: 7days; Inode grace time: 7days
                        Block limits                File limits
User            used    soft    hard  grace    used  soft  hard  grace
----------------------------------------------------------------------
root      --      24       0       0              3     0     0
alice.proj --   12345 2097152 2097152             12     0     0
"""


def script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


class FakeTools:
    """``setquota`` and ``repquota`` scripts that log their argv, one call per line."""

    def __init__(self, tmp_path: Path, users: str = CSV_USERS, groups: str = CSV_GROUPS) -> None:
        self.log = tmp_path / "calls.log"
        (tmp_path / "users.csv").write_text(users)
        (tmp_path / "groups.csv").write_text(groups)
        log = shlex.quote(str(self.log))
        self.setquota = script(tmp_path / "setquota", f'echo "setquota $*" >> {log}\n')
        self.repquota = script(
            tmp_path / "repquota",
            f'echo "repquota $*" >> {log}\n'
            f'if [ "$1" = "-g" ]; then cat {tmp_path / "groups.csv"}; '
            f"else cat {tmp_path / 'users.csv'}; fi\n",
        )

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def engine(self, **options: object) -> LinuxQuotaEngine:
        return LinuxQuotaEngine(
            "/dev/fake",
            str(self.setquota),
            str(self.repquota),
            **options,  # type: ignore[arg-type]
        )


async def test_set_user_quota_runs_setquota_in_kib(tmp_path: Path) -> None:
    tools = FakeTools(tmp_path)
    quota = await tools.engine().set_quota("/ignored", "alice.proj", False, QuotaLimit.parse("2GB"))

    assert tools.calls() == [
        "setquota -u alice.proj 2097152 2097152 0 0 /dev/fake",
        "repquota -u -p -O csv /dev/fake",
    ]
    assert quota == Quota(QuotaLimit.parse("2GB"), StorageSize(12345 * 1024))


async def test_group_quota_get_and_clear(tmp_path: Path) -> None:
    tools = FakeTools(tmp_path)
    engine = tools.engine()

    quota = await engine.get_quota("/p", "portal.proj", True)
    await engine.clear_quota("/p", "portal.proj", True)

    assert quota == Quota(QuotaLimit.UNLIMITED, StorageSize(2 * 1024 * 1024))
    assert tools.calls() == [
        "repquota -g -p -O csv /dev/fake",
        "setquota -g portal.proj 0 0 0 0 /dev/fake",
    ]


async def test_unlimited_and_rounding(tmp_path: Path) -> None:
    tools = FakeTools(tmp_path)
    await tools.engine(inode_limit=1000).set_quota("/p", "bob.proj", False, QuotaLimit.UNLIMITED)
    assert tools.calls()[0] == "setquota -u bob.proj 0 0 1000 1000 /dev/fake"
    assert limit_to_kib(QuotaLimit.of_bytes(1025)) == 2
    with pytest.raises(QuotaError, match="0 means no limit"):
        limit_to_kib(QuotaLimit.of_bytes(0))


def test_parse_repquota_forms() -> None:
    assert parse_repquota(CSV_USERS, "bob.proj") == Quota(
        QuotaLimit.of_bytes(2097152 * 1024), StorageSize(2100000 * 1024)
    )
    # A name absent from the report has no quota and no usage.
    assert parse_repquota(CSV_USERS, "carol.proj") == Quota(QuotaLimit.UNLIMITED, StorageSize(0))
    # The plain table (what OpenPortal parses) works too.
    assert parse_repquota(TABLE, "alice.proj") == Quota(
        QuotaLimit.of_bytes(2097152 * 1024), StorageSize(12345 * 1024)
    )
    with pytest.raises(QuotaError, match="unreadable row"):
        parse_repquota(CSV_USERS.replace("12345", "lots"), "alice.proj")


async def test_failures_and_timeouts_are_clear(tmp_path: Path) -> None:
    failing = script(tmp_path / "bad", 'echo "setquota: Cannot find mountpoint" >&2; exit 3\n')
    engine = LinuxQuotaEngine("/dev/fake", str(failing), str(failing))
    with pytest.raises(QuotaError, match=r"failed \(exit 3\): setquota: Cannot find mountpoint"):
        await engine.set_quota("/p", "alice.proj", False, QuotaLimit.parse("1GB"))

    slow = script(tmp_path / "slow", "exec sleep 30\n")
    engine = LinuxQuotaEngine("/dev/fake", str(slow), str(slow), timeout=0.2)
    with pytest.raises(QuotaError, match=r"did not finish within 0\.2 s"):
        await engine.get_quota("/p", "alice.proj", False)

    engine = LinuxQuotaEngine("/dev/fake", str(tmp_path / "missing"), "repquota")
    with pytest.raises(QuotaError, match="cannot run"):
        await engine.clear_quota("/p", "alice.proj", False)


async def test_command_prefixes_are_split_like_a_shell(tmp_path: Path) -> None:
    tools = FakeTools(tmp_path)
    engine = LinuxQuotaEngine("/dev/fake", f"/bin/sh {tools.setquota}", f"/bin/sh {tools.repquota}")
    await engine.clear_quota("/p", "alice.proj", False)
    assert tools.calls() == ["setquota -u alice.proj 0 0 0 0 /dev/fake"]
    with pytest.raises(QuotaError, match="needs a filesystem"):
        LinuxQuotaEngine(" ")
    with pytest.raises(QuotaError, match="command is empty"):
        LinuxQuotaEngine("/dev/x", setquota="")


@needs_root
async def test_role_with_a_linux_engine_from_config(tmp_path: Path) -> None:
    tools = FakeTools(tmp_path)
    config = tables(tmp_path / "fs")
    config["quota_engines"]["linux"] = {
        "type": "linux",
        "filesystem": "/dev/fake",
        "setquota": str(tools.setquota),
        "repquota": str(tools.repquota),
    }
    config["user_volumes"]["home"]["quota_engine"] = "linux"
    config["user_volumes"]["home"]["default_quota"] = "1GB"
    config["project_volumes"]["projects"]["quota_engine"] = "linux"
    layout = parse_layout(config)
    assert isinstance(build_engines(layout)["linux"], LinuxQuotaEngine)
    box = make_sandbox(tmp_path / "fs", layout)

    await box.run(f"add_local_user {USER}")
    # alice.proj already has a 2 GB limit in the report: the default does not override it.
    assert not any(c.startswith("setquota -u") for c in tools.calls())
    quota = await box.run(f"set_local_project_quota {PROJECT} projects 1TB")

    assert "setquota -g portal.proj 1073741824 1073741824 0 0 /dev/fake" in tools.calls()
    assert quota == Quota(QuotaLimit.UNLIMITED, StorageSize(2048 * 1024))  # canned report
