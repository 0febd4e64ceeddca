"""Name to number resolution: the system's NSS, the embedded directory, fixed tables."""

from __future__ import annotations

import concurrent.futures
import os
import sqlite3
from pathlib import Path

import pytest

from broadgauge.agents.accounts.local import LocalDirectory
from broadgauge.agents.filesystem.agent import FilesystemRole
from broadgauge.agents.filesystem.ids import (
    DirectoryResolver,
    IdResolver,
    NssResolver,
    StaticResolver,
    UnknownName,
)
from broadgauge.agents.filesystem.layout import parse_layout
from broadgauge.grammar import UserIdentifier
from broadgauge.jobs import AgentType
from tests.jobs.agent_helpers import make_agent

from .conftest import envelope, needs_root


def test_nss_resolves_root_and_refuses_unknown_names() -> None:
    resolver: IdResolver = NssResolver()
    assert resolver.uid("root") == 0
    assert resolver.gid("root") == 0
    with pytest.raises(UnknownName, match=r"Could not find a user called no-such-user\.x"):
        resolver.uid("no-such-user.x")
    with pytest.raises(UnknownName, match=r"Could not find a group called no-such-group\.x"):
        resolver.gid("no-such-group.x")


def test_static_tables() -> None:
    resolver = StaticResolver({"a": 5}, {"g": 6})
    assert (resolver.uid("a"), resolver.gid("g"), resolver.uid("root")) == (5, 6, 0)
    with pytest.raises(UnknownName, match="user called b"):
        resolver.uid("b")


async def test_directory_reads_the_local_account_file(tmp_path: Path) -> None:
    db = tmp_path / "accounts.sqlite"
    directory = LocalDirectory(db, uid_range=(23456, 23999), gid_range=(34567, 34999))
    try:
        mapping = await directory.add_user(UserIdentifier.parse("alice.proj.portal"))
        resolver = DirectoryResolver(db)
        # While the account agent keeps its connection open (WAL), reads still work.
        assert resolver.uid(mapping.local_user) == 23456
        assert resolver.gid(mapping.local_group) == 34567
        assert resolver.uid("root") == 0
        with pytest.raises(UnknownName, match=r"user called bob\.proj in .*accounts\.sqlite"):
            resolver.uid("bob.proj")
        # Disabled users keep their uid, so their directories keep their owner.
        await directory.remove_user(mapping.user)
        assert resolver.uid(mapping.local_user) == 23456
    finally:
        await directory.close()


def test_directory_is_read_only(tmp_path: Path) -> None:
    db = tmp_path / "accounts.sqlite"
    with sqlite3.connect(db) as connection:
        connection.execute("CREATE TABLE users (name TEXT PRIMARY KEY, uid INTEGER)")
        connection.execute("CREATE TABLE groups (name TEXT PRIMARY KEY, gid INTEGER)")
        connection.execute("INSERT INTO users VALUES ('u', 7)")
    connection.close()
    db.chmod(0o444)
    resolver = DirectoryResolver(db)
    assert resolver.uid("u") == 7
    with pytest.raises(UnknownName, match="group called g"):
        resolver.gid("g")


def _directory_file(path: Path, users: dict[str, int]) -> None:
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("CREATE TABLE users (name TEXT PRIMARY KEY, uid INTEGER)")
        connection.execute("CREATE TABLE groups (name TEXT PRIMARY KEY, gid INTEGER)")
        connection.executemany("INSERT INTO users VALUES (?, ?)", users.items())
    connection.close()


def test_directory_sees_later_commits_and_a_replaced_file(tmp_path: Path) -> None:
    # A look-up sees what the account agent committed after the one before, and the file a
    # restore put in its place (with its -wal and -shm removed, as docs/operators/storage.md
    # says).
    db = tmp_path / "accounts.sqlite"
    _directory_file(db, {"u": 7})
    resolver = DirectoryResolver(db)
    assert resolver.uid("u") == 7
    with sqlite3.connect(db) as writer:
        writer.execute("INSERT INTO users VALUES ('v', 8)")
    writer.close()
    assert resolver.uid("v") == 8

    restored = tmp_path / "restored.sqlite"
    _directory_file(restored, {"u": 70})
    os.replace(restored, db)
    assert resolver.uid("u") == 70
    with pytest.raises(UnknownName, match="user called v"):
        resolver.uid("v")


def test_directory_resolves_from_several_threads(tmp_path: Path) -> None:
    db = tmp_path / "accounts.sqlite"
    _directory_file(db, {f"u{i}": 1000 + i for i in range(50)})
    resolver = DirectoryResolver(db)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        found = list(pool.map(lambda i: resolver.uid(f"u{i % 50}"), range(400)))
    assert found == [1000 + i % 50 for i in range(400)]


def test_directory_missing_or_broken(tmp_path: Path) -> None:
    with pytest.raises(UnknownName, match="does not exist"):
        DirectoryResolver(tmp_path / "none.sqlite").uid("u")
    broken = tmp_path / "broken.sqlite"
    sqlite3.connect(broken).close()  # an empty database: no tables
    with pytest.raises(UnknownName, match="cannot read the account directory"):
        DirectoryResolver(broken).uid("u")


@needs_root
async def test_role_with_the_directory_resolver(tmp_path: Path) -> None:
    db = tmp_path / "accounts.sqlite"
    directory = LocalDirectory(db, uid_range=(23456, 23999), gid_range=(34567, 34999))
    mapping = await directory.add_user(UserIdentifier.parse("alice.proj.portal"))
    await directory.close()
    (tmp_path / "home").mkdir()
    layout = parse_layout({"user_volumes": {"home": {"roots": [str(tmp_path / "home")]}}})
    agent = make_agent("filesystem", AgentType.FILESYSTEM)
    role = FilesystemRole(agent, layout, DirectoryResolver(db), {})

    await role.dispatch(envelope(f"add_local_user {mapping}"))

    info = (tmp_path / "home" / "proj" / "alice.proj").stat()
    assert (info.st_uid, info.st_gid) == (23456, 34567)
