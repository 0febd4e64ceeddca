"""A view of a running demo network that reads what the backends really hold.

Every instruction goes in the way portal software sends it (``submit`` through the bridge);
every check reads the backends directly: the local account directory's SQLite file, the
filesystem sandbox (``os.stat``), the quota ledger, the scheduler ledger and each agent's
audit log.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import stat
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from broadgauge.agents.accounts.local import LocalDirectory
from broadgauge.agents.filesystem.ledger import LedgerQuotaEngine
from broadgauge.agents.portal import Portal
from broadgauge.agents.scheduler.ledger import LedgerScheduler
from broadgauge.demo import FAST_RECONNECT, Network
from broadgauge.grammar import ProjectMapping, UserIdentifier, UserMapping
from broadgauge.jobs.agent_type import AgentType
from broadgauge.jobs.job import Job
from broadgauge.runtime.agent import Agent, JobFailed
from broadgauge.runtime.config import AgentConfig
from broadgauge.wire import ServiceConfig

#: Ownership is only changed when the filesystem agent runs as root (as it does here).
AS_ROOT = os.geteuid() == 0
#: The reverse of the job path: where the instance's notifications travel.
NOTIFY_PATH = "instance.platform.provider.portal"
#: Modes of the default sandbox volumes.
HOME_MODE = 0o755
PROJECT_MODE = 0o2770

T = TypeVar("T")


def of_type(value: object, kind: type[T]) -> T:
    """``value``, which must be a ``kind``."""
    assert isinstance(value, kind), f"{value!r} is not a {kind.__name__}"
    return value


def mapping(user: str) -> UserMapping:
    """The mapping the naming rules give ``name.project.portal``."""
    name, project, portal = user.split(".")
    return UserMapping.parse(f"{user}:{name}.{project}:{portal}.{project}")


def project_mapping(project: str) -> ProjectMapping:
    """The mapping the naming rules give ``project.portal``."""
    name, portal = project.split(".")
    return ProjectMapping.parse(f"{project}:{portal}.{name}")


def local_name(user: str) -> str:
    """``alice.physics.portal`` → ``alice.physics``."""
    return mapping(user).local_user


async def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until ``predicate()`` holds, polling the event loop."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


@dataclass(frozen=True)
class Tree:
    """Owner and mode of one directory."""

    uid: int
    gid: int
    mode: int


def tree(path: Path) -> Tree:
    """``os.stat`` of ``path`` as owner and permission bits."""
    info = os.stat(path, follow_symlinks=False)
    assert stat.S_ISDIR(info.st_mode), f"{path} is not a directory"
    return Tree(info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode))


def assert_dir(path: Path, uid: int, gid: int, mode: int) -> None:
    """``path`` is a directory with ``mode``, owned ``uid:gid`` (when we could chown)."""
    found = tree(path)
    assert found.mode == mode, f"{path}: mode {found.mode:04o}, expected {mode:04o}"
    if AS_ROOT:
        assert (found.uid, found.gid) == (uid, gid), f"{path} owned {found.uid}:{found.gid}"


class Site:
    """A started demo network plus read access to every backend it drives."""

    def __init__(self, network: Network) -> None:
        self.network = network
        self.root = network.root
        self.sandbox = network.root / "filesystem" / "sandbox"
        self._extras: list[Agent] = []

    # --- sending instructions ----------------------------------------------------------

    async def run(self, instruction: str, timeout: float = 30.0) -> Job:
        """Submit ``instruction`` to the instance through the bridge; the finished job."""
        return await self.network.submit(instruction, timeout=timeout)

    async def value(self, instruction: str) -> object:
        """The decoded result of ``instruction``."""
        return (await self.run(instruction)).result_value()

    async def result(self, instruction: str, kind: type[T]) -> T:
        """The result of ``instruction``, which must be a ``kind`` and say so: its result
        type is the class's name (as for every report, and for ``Quota``)."""
        job = await self.run(instruction)
        assert job.result_type == kind.__name__
        return of_type(job.result_value(), kind)

    async def refused(self, instruction: str) -> str:
        """Submit ``instruction``, which must fail; the error message."""
        with pytest.raises(JobFailed) as failed:
            await self.run(instruction)
        return str(failed.value)

    # --- the backends ------------------------------------------------------------------

    @property
    def accounts(self) -> LocalDirectory:
        """The account agent's directory object."""
        return of_type(self.network.roles["account"].accounts, LocalDirectory)

    @property
    def ledger(self) -> LedgerScheduler:
        """The scheduler agent's ledger."""
        return of_type(self.network.roles["scheduler"].scheduler, LedgerScheduler)

    @property
    def quota_engine(self) -> LedgerQuotaEngine:
        """The filesystem agent's quota ledger."""
        role = self.network.roles["filesystem"].filesystem
        assert role is not None
        return of_type(role.engines["ledger"], LedgerQuotaEngine)

    @property
    def portal(self) -> Portal:
        """The portal's business rules (it keeps the notifications it received)."""
        return of_type(self.network.roles["portal"].portal, Portal)

    def agent(self, name: str) -> Agent:
        """One of the network's agents."""
        return self.network.agents[name]

    @contextmanager
    def _read(self, path: Path) -> Iterator[sqlite3.Connection]:
        with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db:
            yield db

    def directory_rows(self, query: str, *args: object) -> list[tuple[Any, ...]]:
        """Rows of the account directory's SQLite file (read-only)."""
        with self._read(self.root / "account" / "directory.sqlite3") as db:
            return db.execute(query, args).fetchall()

    def ledger_rows(self, query: str, *args: object) -> list[tuple[Any, ...]]:
        """Rows of the scheduler ledger's SQLite file (read-only)."""
        with self._read(self.root / "scheduler" / "scheduler.sqlite3") as db:
            return db.execute(query, args).fetchall()

    def quota_rows(self) -> list[tuple[Any, ...]]:
        """Every row of the quota ledger: (path, owner, kind, limit_bytes)."""
        with self._read(self.sandbox / "quotas.sqlite") as db:
            return db.execute(
                "SELECT path, owner, kind, limit_bytes FROM quotas ORDER BY path, owner"
            ).fetchall()

    def user_row(self, name: str) -> dict[str, Any] | None:
        """The directory's record of Unix user ``name``."""
        rows = self.directory_rows(
            "SELECT name, uid, gid, identity, home, shell, enabled, locked FROM users"
            " WHERE name = ?",
            name,
        )
        if not rows:
            return None
        keys = ("name", "uid", "gid", "identity", "home", "shell", "enabled", "locked")
        return dict(zip(keys, rows[0], strict=True))

    def account(self, name: str) -> dict[str, Any]:
        """The directory's record of Unix user ``name``, which must exist."""
        row = self.user_row(name)
        assert row is not None, f"no user {name} in the directory"
        return row

    def gid(self, group: str) -> int:
        """The gid of ``group`` in the directory."""
        rows = self.directory_rows("SELECT gid FROM groups WHERE name = ?", group)
        assert rows, f"no group {group}"
        return int(rows[0][0])

    def groups_of(self, name: str) -> set[str]:
        """The groups Unix user ``name`` is a member of."""
        rows = self.directory_rows("SELECT group_name FROM members WHERE user_name = ?", name)
        return {row[0] for row in rows}

    def next_uid(self) -> int:
        """The directory's uid counter (the next number it would hand out)."""
        rows = self.directory_rows("SELECT next FROM counters WHERE name = 'uid'")
        return int(rows[0][0]) if rows else 0

    # --- the sandbox ---------------------------------------------------------------------

    def home(self, user: str) -> Path:
        """Where ``name.project.portal``'s home directory lives in the sandbox."""
        name, project, _ = user.split(".")
        return self.sandbox / "home" / project / f"{name}.{project}"

    def recycled_home(self, user: str) -> Path:
        """Where a removed user's home directory is kept."""
        home = self.home(user)
        return home.parent / ".recycle" / home.name

    def project_dir(self, project: str) -> Path:
        """The project volume's directory of ``project.portal``."""
        return self.sandbox / "projects" / project.partition(".")[0]

    def user_volume_project_dir(self, project: str) -> Path:
        """The home volume's directory that holds the project's homes."""
        return self.sandbox / "home" / project.partition(".")[0]

    def sandbox_dirs(self) -> dict[str, Tree]:
        """Every directory under the sandbox with its owner and mode."""
        found = {}
        for path in sorted(self.sandbox.rglob("*")):
            if path.is_dir() and not path.is_symlink():
                found[str(path.relative_to(self.sandbox))] = tree(path)
        return found

    # --- audit and notifications ---------------------------------------------------------

    def audit(self, agent: str) -> list[dict[str, Any]]:
        """Every entry of ``agent``'s audit log."""
        path = self.root / agent / "audit.jsonl"
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]

    def operations(self, agent: str) -> list[str]:
        """The backend operations ``agent`` recorded, in order."""
        return [e["operation"] for e in self.audit(agent) if e["action"] == "operation"]

    def notifications(self) -> list[str]:
        """The events the portal received (``user_added alice.physics.portal``)."""
        for note in self.portal.notifications:
            assert str(note.destination) == NOTIFY_PATH
        return [str(note.event) for note in self.portal.notifications]

    async def notified(self, count: int) -> list[str]:
        """Wait until the portal holds ``count`` notifications; return them."""
        await eventually(lambda: len(self.portal.notifications) >= count)
        return self.notifications()

    # --- extra agents ------------------------------------------------------------------

    async def make_listen(self, name: str) -> Agent:
        """Restart ``name``'s wire service so it also listens (leaf agents dial only).

        The agent keeps its boards and handlers; only its links are re-made.
        """
        agent = self.agent(name)
        await agent.service.stop()
        await agent.service.start(listen=True)
        instance = self.agent("instance")
        await eventually(lambda: "instance" in {p.name for p in agent.service.connected_peers()})
        await eventually(lambda: name in {p.name for p in instance.service.connected_peers()})
        return agent

    def extra_agent(self, name: str, kind: AgentType) -> Agent:
        """A new agent outside the network (stopped by :meth:`close`); not yet started."""
        agent = Agent(AgentConfig(kind, ServiceConfig.create(name, port=0)), timers=FAST_RECONNECT)
        self._extras.append(agent)
        return agent

    async def close(self) -> None:
        """Stop the extra agents (the network fixture stops the network)."""
        for agent in self._extras:
            await agent.stop()


def identity(user: str) -> UserIdentifier:
    """``UserIdentifier.parse`` shorthand."""
    return UserIdentifier.parse(user)
