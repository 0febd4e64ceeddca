"""The embedded hub: the Protocol's rules on a SQLite file, with an injected clock."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from broadgauge.agents.notebook.backend import BLOCKED_GROUP, NotebookBackend, NotebookError
from broadgauge.agents.notebook.embedded import EmbeddedHub

T0 = dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.UTC)


class Clock:
    """A settable clock."""

    def __init__(self, now: dt.datetime = T0) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def audited() -> list[tuple[str, str]]:
    return []


@pytest.fixture
async def hub(
    tmp_path: Path, clock: Clock, audited: list[tuple[str, str]]
) -> AsyncIterator[EmbeddedHub]:
    hub = EmbeddedHub(
        tmp_path / "hub.sqlite",
        url="https://hub.example.org/jupyter/",
        audit=lambda operation, outcome: audited.append((operation, outcome)),
        clock=clock,
    )
    yield hub
    await hub.close()


async def test_is_a_notebook_backend(tmp_path: Path) -> None:
    backend: NotebookBackend = EmbeddedHub(tmp_path / "hub.sqlite")
    assert backend.url == "http://127.0.0.1:8000/"
    await backend.close()
    # The Protocol's URL ends in "/", whatever was configured.
    bare = EmbeddedHub(":memory:", url="http://h:1/x")
    assert bare.url == "http://h:1/x/"
    await bare.close()


async def test_groups_are_idempotent(hub: EmbeddedHub, audited: list[tuple[str, str]]) -> None:
    assert await hub.group_members("proj") is None
    assert await hub.groups() == []
    await hub.add_group("proj")
    await hub.add_group("proj")
    await hub.add_group("alpha")
    assert await hub.group_members("proj") == []
    assert await hub.groups() == ["alpha", "proj"]
    assert audited == [
        ("embedded hub: added group proj", "ok"),
        ("embedded hub: added group alpha", "ok"),
    ]

    await hub.remove_group("proj")
    await hub.remove_group("proj")
    assert await hub.group_members("proj") is None
    assert await hub.groups() == ["alpha"]
    assert len(audited) == 3


async def test_add_user_to_groups(hub: EmbeddedHub, audited: list[tuple[str, str]]) -> None:
    await hub.add_group("proj")
    await hub.add_group("other")
    await hub.add_user("zoe.proj", "proj")
    await hub.add_user("ann.proj", "proj")
    await hub.add_user("ann.proj", "proj")
    await hub.add_user("ann.proj", "other")
    assert await hub.group_members("proj") == ["ann.proj", "zoe.proj"]
    assert await hub.group_members("other") == ["ann.proj"]
    assert await hub.user_exists("ann.proj")
    operations = [operation for operation, _ in audited]
    assert operations.count("embedded hub: added user ann.proj") == 1
    assert operations.count("embedded hub: added user ann.proj to group proj") == 1


async def test_add_user_to_missing_group_fails_and_creates_nothing(
    hub: EmbeddedHub, audited: list[tuple[str, str]]
) -> None:
    with pytest.raises(NotebookError, match="no such group"):
        await hub.add_user("ann.proj", "proj")
    assert not await hub.user_exists("ann.proj")
    assert audited == []


async def test_server_groups_are_the_users_groups(hub: EmbeddedHub) -> None:
    await hub.add_group("proj")
    await hub.add_group("extra")
    await hub.add_user("ann.proj", "proj")
    await hub.start_server("ann.proj")
    await hub.add_user("ann.proj", "extra")
    # Read at each call, so a membership added later shows.
    assert [server.groups for server in await hub.servers()] == [("extra", "proj")]
    assert (await hub.start_server("ann.proj")).groups == ("extra", "proj")


async def test_remove_group_keeps_users(hub: EmbeddedHub) -> None:
    await hub.add_group("proj")
    await hub.add_user("ann.proj", "proj")
    await hub.remove_group("proj")
    assert await hub.user_exists("ann.proj")
    # A group made again later starts empty: memberships went with the old one.
    await hub.add_group("proj")
    assert await hub.group_members("proj") == []


async def test_remove_user_stops_server_and_leaves_groups(hub: EmbeddedHub) -> None:
    await hub.add_group("proj")
    await hub.add_user("ann.proj", "proj")
    await hub.start_server("ann.proj")
    await hub.remove_user("ann.proj")
    await hub.remove_user("ann.proj")
    assert not await hub.user_exists("ann.proj")
    assert await hub.servers() == []
    assert await hub.group_members("proj") == []


async def test_start_server_records_one(hub: EmbeddedHub, clock: Clock) -> None:
    await hub.add_group("proj")
    await hub.add_user("ann smith", "proj")
    server = await hub.start_server("ann smith")
    assert server.user == "ann smith"
    assert server.started == T0
    assert server.last_activity == T0
    assert server.ready
    assert server.url == "https://hub.example.org/jupyter/user/ann%20smith/"
    assert server.groups == ("proj",)

    clock.now = T0 + dt.timedelta(hours=1)
    assert await hub.start_server("ann smith") == server  # already running: as it is
    assert await hub.servers() == [server]


async def test_start_server_for_unknown_user_fails(hub: EmbeddedHub) -> None:
    with pytest.raises(NotebookError, match="no such user"):
        await hub.start_server("ghost")
    assert await hub.servers() == []


async def test_stop_server_is_idempotent(hub: EmbeddedHub, clock: Clock) -> None:
    await hub.add_group("proj")
    await hub.add_user("ann.proj", "proj")
    await hub.start_server("ann.proj")
    await hub.stop_server("ann.proj")
    await hub.stop_server("ann.proj")
    await hub.stop_server("ghost")
    assert await hub.servers() == []

    clock.now = T0 + dt.timedelta(minutes=5)
    assert (await hub.start_server("ann.proj")).started == clock.now  # a new server


async def test_blocking(hub: EmbeddedHub, audited: list[tuple[str, str]]) -> None:
    await hub.add_group("proj")
    await hub.add_user("ann.proj", "proj")
    await hub.add_user("bob.proj", "proj")
    await hub.start_server("ann.proj")
    await hub.start_server("bob.proj")

    await hub.set_blocked("ann.proj", True)
    await hub.set_blocked("ann.proj", True)
    assert await hub.is_blocked("ann.proj")
    assert not await hub.is_blocked("bob.proj")
    assert await hub.group_members(BLOCKED_GROUP) == ["ann.proj"]
    assert await hub.groups() == [BLOCKED_GROUP, "proj"]
    assert [server.user for server in await hub.servers()] == ["bob.proj"]
    assert audited.count(("embedded hub: blocked user ann.proj", "ok")) == 1
    assert ("embedded hub: stopped the server of ann.proj", "ok") in audited
    with pytest.raises(NotebookError, match="blocked"):
        await hub.start_server("ann.proj")
    assert [server.user for server in await hub.servers()] == ["bob.proj"]

    await hub.set_blocked("ann.proj", False)
    await hub.set_blocked("ann.proj", False)
    assert not await hub.is_blocked("ann.proj")
    assert await hub.group_members("proj") == ["ann.proj", "bob.proj"]
    assert (await hub.start_server("ann.proj")).user == "ann.proj"


async def test_blocking_unknown_user(hub: EmbeddedHub) -> None:
    with pytest.raises(NotebookError, match="no such user"):
        await hub.set_blocked("ghost", True)
    await hub.set_blocked("ghost", False)
    assert not await hub.is_blocked("ghost")
    assert await hub.group_members(BLOCKED_GROUP) is None


async def test_state_survives_reopening(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "hub.sqlite"
    first = EmbeddedHub(path, clock=clock)
    await first.add_group("proj")
    await first.add_user("ann.proj", "proj")
    await first.add_user("bob.proj", "proj")
    started = await first.start_server("ann.proj")
    await first.set_blocked("bob.proj", True)
    await first.close()

    clock.now = T0 + dt.timedelta(days=1)
    second = EmbeddedHub(path, clock=clock)
    try:
        assert await second.group_members("proj") == ["ann.proj", "bob.proj"]
        assert await second.is_blocked("bob.proj")
        assert await second.servers() == [started]
        assert await second.start_server("ann.proj") == started
    finally:
        await second.close()


async def test_naive_clock_is_refused(tmp_path: Path) -> None:
    hub = EmbeddedHub(tmp_path / "hub.sqlite", clock=lambda: dt.datetime(2025, 3, 1))
    try:
        with pytest.raises(ValueError, match="timezone-aware"):
            await hub.add_group("proj")
        assert await hub.group_members("proj") is None
    finally:
        await hub.close()
