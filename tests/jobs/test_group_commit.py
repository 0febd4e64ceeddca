"""Group commit: a running agent commits its board changes in batches, and nothing that
depends on a change leaves the agent before that change is committed.

The store's side is driven directly (a real SQLite file, read back through a second
connection, which sees only what was committed).  The agent's side runs a portal and a
durable instance over loopback.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from broadgauge.grammar import Command
from broadgauge.jobs import (
    AgentType,
    Job,
    Put,
    Status,
    StoreError,
    Update,
    decode_command,
    encode_command,
)
from broadgauge.runtime.agent import Agent, JobFailed
from broadgauge.runtime.store import DB_FILENAME, BoardStore
from broadgauge.wire import Message

from . import helpers as h
from .agent_helpers import USER, Network, Recorder, eventually, finished

PEER = "instance@default"


def committed(store: BoardStore) -> dict[str, list[str]]:
    """The job ids each board holds, as another connection sees the file: committed only."""
    db = sqlite3.connect(store.path)
    try:
        rows = db.execute("SELECT peer, job_id FROM jobs ORDER BY rowid").fetchall()
    finally:
        db.close()
    boards: dict[str, list[str]] = {}
    for peer, job_id in rows:
        boards.setdefault(peer, []).append(job_id)
    return boards


def jobs(count: int) -> list[Job]:
    return [h.job(f"portal.instance add_user u{i}.p.portal") for i in range(count)]


def unencodable(job: Job) -> Job:
    """``job`` with a lone surrogate in its command: SQLite refuses to bind it."""
    return dataclasses.replace(job, command=Command.parse(str(job.command) + "\ud800"))


@pytest.fixture
def batched(tmp_path: Path) -> Iterator[tuple[BoardStore, list[int]]]:
    """A store with group commit on; the list counts the batches it opened."""
    opened: list[int] = []
    store = BoardStore(tmp_path)
    store.group_commits(lambda: opened.append(1))
    yield store, opened
    store.close()


def test_changes_wait_in_one_batch_until_it_is_committed(
    batched: tuple[BoardStore, list[int]],
) -> None:
    store, opened = batched
    first, second, third = jobs(3)
    store.save(PEER, first)
    store.save_all(PEER, [second, third])
    store.mark_started(first.id, h.T0)

    assert opened == [1]  # one batch for all three changes
    assert store.in_batch
    assert committed(store) == {}  # nothing is on disk yet ...
    assert store.execution(first.id) is not None  # ... but the store reads its own batch

    store.commit()
    assert not store.in_batch
    assert committed(store) == {PEER: [str(j.id) for j in (first, second, third)]}

    store.save(PEER, first.running(now=h.T0 + 1))
    assert opened == [1, 1]  # the next change opens the next batch


def test_a_change_that_fails_in_a_batch_takes_back_only_itself(
    batched: tuple[BoardStore, list[int]],
) -> None:
    store, _ = batched
    kept, refused, also_refused = jobs(3)
    store.save(PEER, kept)
    with pytest.raises(UnicodeEncodeError):
        store.save(PEER, unencodable(refused))
    # A change of several statements fails after its first one: the savepoint takes it back.
    with pytest.raises(UnicodeEncodeError):
        store.save_all(PEER, [also_refused, unencodable(also_refused)])

    store.commit()
    assert committed(store) == {PEER: [str(kept.id)]}


class _FailingCommit:
    """The store's connection, whose next COMMIT fails (``rolled_back``: as a full disk
    does, after SQLite already rolled the transaction back)."""

    def __init__(
        self, real: sqlite3.Connection, rolled_back: bool = False, times: int | None = None
    ) -> None:
        self._real = real
        self._rolled_back = rolled_back
        self.times = times

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql == "COMMIT" and self.times != 0:
            if self.times is not None:
                self.times -= 1
            if self._rolled_back:
                self._real.execute("ROLLBACK")
            raise sqlite3.OperationalError("database or disk is full")
        return self._real.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


@pytest.mark.parametrize("rolled_back", [False, True], ids=["open", "rolled-back"])
def test_a_batch_that_cannot_be_committed_stores_none_of_its_changes(
    batched: tuple[BoardStore, list[int]], *, rolled_back: bool
) -> None:
    """Whether SQLite rolled the batch back itself or the COMMIT just failed."""
    store, _ = batched
    before, lost = jobs(2)
    store.save(PEER, before)
    store.commit()
    store.save(PEER, lost)
    store.delete(PEER, before.id)
    real = store._conn()
    store._db = _FailingCommit(real, rolled_back)  # type: ignore[assignment]

    with pytest.raises(sqlite3.OperationalError, match="full"):
        store.commit()

    store._db = real
    assert not store.in_batch and not real.in_transaction
    assert committed(store) == {PEER: [str(before.id)]}
    store.save(PEER, lost)  # the store takes changes again
    store.commit()
    assert committed(store) == {PEER: [str(before.id), str(lost.id)]}


def test_closing_commits_the_open_batch(tmp_path: Path) -> None:
    job = jobs(1)[0]
    store = BoardStore(tmp_path)
    store.group_commits(lambda: None)
    store.save(PEER, job)
    store.close()
    assert committed_file(tmp_path) == [str(job.id)]


def committed_file(directory: Path) -> list[str]:
    db = sqlite3.connect(directory / DB_FILENAME)
    try:
        return [job_id for (job_id,) in db.execute("SELECT job_id FROM jobs")]
    finally:
        db.close()


def test_turning_group_commit_off_commits_and_each_change_commits_again(
    batched: tuple[BoardStore, list[int]],
) -> None:
    store, _ = batched
    first, second = jobs(2)
    store.save(PEER, first)
    store.group_commits(None)
    assert committed(store) == {PEER: [str(first.id)]}
    store.save(PEER, second)
    assert not store.in_batch
    assert committed(store) == {PEER: [str(first.id), str(second.id)]}


# ------------------------------------------------------------------------------ agents


def watch_job_frames(monkeypatch: pytest.MonkeyPatch, agent: Agent, uncommitted: list[str]) -> None:
    """Note in ``uncommitted`` each frame carrying a job that ``agent`` sends before that
    version of the job is committed to its store (read through a connection of its own,
    which sees only what was committed)."""
    real_send = agent.service.send
    assert agent.store is not None
    path = agent.store.path

    async def send(peer: str, payload: str, zone: str | None = None) -> None:
        command = decode_command(payload)
        if isinstance(command, Put | Update):
            job = command.job
            reader = sqlite3.connect(path)
            try:
                row = reader.execute(
                    "SELECT version FROM jobs WHERE peer = ? AND job_id = ?",
                    (f"{peer}@{zone}", str(job.id)),
                ).fetchone()
            finally:
                reader.close()
            if row is None or int(row[0]) < job.version:
                uncommitted.append(f"{agent.name}: {command.TAG} {job}")
        await real_send(peer, payload, zone)

    monkeypatch.setattr(agent.service, "send", send)


async def test_jobs_in_flight_share_commits_and_no_job_frame_overtakes_its_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with Network() as net:
        portal = await net.start("portal", AgentType.PORTAL, data_dir=tmp_path / "portal")
        instance = await net.start_instance(Recorder(), data_dir=tmp_path / "instance")
        stores = {agent.name: agent.store for agent in (portal, instance)}
        commits = {name: 0 for name in stores}
        uncommitted_sends: list[str] = []

        for name, store in stores.items():
            assert store is not None

            def counted(_seconds: float, name: str = name) -> None:
                commits[name] += 1

            store.on_commit = counted

        for agent in (portal, instance):
            watch_job_frames(monkeypatch, agent, uncommitted_sends)

        count = 64
        results = await finished(
            asyncio.gather(
                *(portal.run("portal.instance", f"add_user u{i}.p.portal") for i in range(count))
            ),
            timeout=30,
        )

        assert {job.state for job in results} == {Status.COMPLETE}
        assert uncommitted_sends == []
        # Without group commit the instance commits 4 times per job (its Put, the start and
        # the end of the run, the result) and the portal twice (the Put and the result).
        assert 0 < commits["instance"] < 4 * count
        assert 0 < commits["portal"] < 2 * count
        assert instance.store is not None
        stored = {job.id for job in instance.store.load_all()["portal@default"]}
        assert stored >= {job.id for job in results}


async def test_a_put_whose_batch_is_lost_is_never_run_and_is_failed_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with Network() as net:
        portal = await net.start("portal", AgentType.PORTAL)
        recorder = Recorder()
        instance = await net.start_instance(recorder, data_dir=tmp_path / "instance")
        store = instance.store
        assert store is not None
        monkeypatch.setattr(store, "_db", _FailingCommit(store._conn(), times=1))

        with pytest.raises(JobFailed) as failed:
            await finished(portal.run("portal.instance", f"add_user {USER}", timeout=5))
        assert failed.value.job.error_message == "instance could not record the job"
        assert recorder.calls == []  # the Put never got on disk, so it never ran

        job = await finished(portal.run("portal.instance", f"add_user {USER}", timeout=5))
        assert job.state is Status.COMPLETE
        assert len(recorder.calls) == 1


async def test_a_lost_batch_fails_the_send_that_waited_for_it(tmp_path: Path) -> None:
    async with Network() as net:
        portal = await net.start("portal", AgentType.PORTAL, data_dir=tmp_path / "portal")
        await net.start_instance(Recorder())
        store = portal.store
        assert store is not None and portal.commits is not None
        real = store._conn()
        store._db = _FailingCommit(real, rolled_back=True)  # type: ignore[assignment]
        try:
            with pytest.raises(StoreError, match="could not commit"):
                await portal.run("portal.instance", f"add_user {USER}", timeout=5)
        finally:
            store._db = real
        # The boards went back to what the store holds: the job is on none of them.
        assert all(not board.jobs() for board in portal.boards())
        job = await finished(portal.run("portal.instance", f"add_user {USER}", timeout=5))
        assert job.state is Status.COMPLETE


async def durable_relay(net: Network, tmp_path: Path) -> tuple[Agent, Recorder]:
    """portal → provider (SQLite boards) → instance: the provider, and the instance's
    ``add_user`` handler."""
    await net.start("portal", AgentType.PORTAL)
    provider = await net.start(
        "provider", AgentType.PROVIDER, dials=["portal"], data_dir=tmp_path / "provider"
    )
    recorder = Recorder()
    await net.start(
        "instance",
        AgentType.INSTANCE,
        dials=["provider"],
        listen=False,
        before_start=lambda agent: agent.add_handler("add_user", recorder),
    )
    return provider, recorder


async def test_a_relay_reads_on_while_a_job_it_passes_on_waits_for_its_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A durable relay handles a Put on its link's reader and returns to the reader before
    the change is committed; the Put goes on only after the commit.  So the Puts that arrive
    together share one commit, instead of the reader waiting for a commit per frame."""
    async with Network() as net:
        provider, recorder = await durable_relay(net, tmp_path)
        store = provider.store
        assert store is not None
        uncommitted: list[str] = []
        watch_job_frames(monkeypatch, provider, uncommitted)
        sent: list[str] = []
        counted_send = provider.service.send

        async def send(peer: str, payload: str, zone: str | None = None) -> None:
            sent.append(f"{type(decode_command(payload)).__name__} to {peer}")
            await counted_send(peer, payload, zone)

        monkeypatch.setattr(provider.service, "send", send)
        now = time.time()
        puts = [
            Job.parse(f"portal.provider.instance add_user u{i}.p.portal", now=now).pending(now=now)
            for i in range(3)
        ]
        portal = provider.peer_named("portal", None)
        for job in puts:
            await provider.inbound.on_message(Message(portal, encode_command(Put(job))))
            # Back to the reader at once: the change waits in the open batch, unsent.
            assert store.in_batch
            assert sent == []

        await eventually(lambda: len(recorder.calls) == len(puts))
        assert sent[: len(puts)] == ["Put to instance"] * len(puts)
        assert uncommitted == []
        assert [call.job.id for call in recorder.calls] == [job.id for job in puts]


async def test_a_relay_never_passes_on_a_job_whose_batch_is_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with Network() as net:
        provider, recorder = await durable_relay(net, tmp_path)
        store = provider.store
        assert store is not None
        monkeypatch.setattr(store, "_db", _FailingCommit(store._conn(), times=1))
        now = time.time()
        lost = Job.parse("portal.provider.instance add_user u1.p.portal", now=now).pending(now=now)
        portal = provider.peer_named("portal", None)
        await provider.inbound.on_message(Message(portal, encode_command(Put(lost))))
        await eventually(lambda: not store.in_batch)
        for _ in range(5):
            await asyncio.sleep(0.01)
        assert recorder.calls == []  # never sent on: a crash could have taken it back
        assert provider.board(portal).get(lost.id) is None  # the boards are as stored

        kept = Job.parse("portal.provider.instance add_user u2.p.portal", now=now).pending(now=now)
        await provider.inbound.on_message(Message(portal, encode_command(Put(kept))))
        await eventually(lambda: [call.job.id for call in recorder.calls] == [kept.id])
