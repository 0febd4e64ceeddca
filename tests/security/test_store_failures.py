"""Recording is atomic: a store that fails, however it fails, leaves every board as it was.

A lone surrogate used to reach a board and then fail to save (``UnicodeEncodeError``), leaving
a job on the board that the store never held and that broke the next ``Sync``.  The store now
accepts each change before the board makes it, so any exception, from whichever part of the
store (a method, a statement inside the transaction, the ``COMMIT``), leaves the board and
the store as they were, and the same operation succeeds once the store works again.

Most tests drive one agent that is never started (no sockets): the board logic is pure.
The last ones run two agents over loopback to show a job arriving by frame is refused, not
lost, and that the agent keeps serving.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import sqlite3
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from broadgauge.grammar import Command
from broadgauge.jobs import (
    AgentType,
    Board,
    Job,
    Put,
    Status,
    StoreError,
    Sync,
    encode_command,
)
from broadgauge.runtime.agent import Agent, JobFailed
from broadgauge.runtime.config import AgentConfig
from broadgauge.runtime.store import BoardStore
from broadgauge.wire import PeerId, ServiceConfig
from tests.jobs.agent_helpers import USER, Network, Recorder, finished

T0 = 1_717_400_000.0
PEER = PeerId("instance", "default")
COMMAND = f"portal.instance add_user {USER}"

# --------------------------------------------------------------------------- the faults

#: Every kind of failure a store can raise, built fresh for each raise.
FAILURES: list[Any] = [
    pytest.param(
        lambda: UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"),
        id="unencodable-text",
    ),
    pytest.param(lambda: sqlite3.OperationalError("database is locked"), id="locked"),
    pytest.param(lambda: sqlite3.OperationalError("database or disk is full"), id="disk-full"),
    pytest.param(lambda: sqlite3.OperationalError("disk I/O error"), id="io-error"),
    pytest.param(
        lambda: sqlite3.IntegrityError("UNIQUE constraint failed: jobs.peer, jobs.job_id"),
        id="integrity",
    ),
    pytest.param(lambda: sqlite3.DatabaseError("database disk image is malformed"), id="corrupt"),
    pytest.param(lambda: OSError(errno.ENOSPC, "No space left on device"), id="os-error"),
    pytest.param(lambda: RuntimeError("BoardStore is closed"), id="closed"),
    pytest.param(MemoryError, id="memory"),
    pytest.param(lambda: ValueError("anything else"), id="value-error"),
]

#: Where the store fails: before its transaction, on a write inside it, or at its COMMIT.
WHERE = ["method", "statement", "commit"]

_WRITES = ("INSERT", "DELETE", "UPDATE")
_STORE_METHODS = ("save", "save_all", "delete", "delete_many", "enqueue", "forget_board")


class Faults:
    """Makes one store's writes fail in one place until switched off (or ``times`` ran out)."""

    def __init__(self, make: Callable[[], BaseException], times: int | None = None) -> None:
        self.make = make
        self.times = times
        self.active = True
        self.raised = 0

    def trip(self) -> None:
        """Raise the failure, if still failing."""
        if self.active and (self.times is None or self.raised < self.times):
            self.raised += 1
            raise self.make()

    def install(self, monkeypatch: pytest.MonkeyPatch, store: BoardStore, where: str) -> None:
        """Fail ``store``'s writes at ``where`` (one of :data:`WHERE`)."""
        faults = self
        if where == "method":
            for name in _STORE_METHODS:
                real = getattr(BoardStore, name)

                def failing(self: BoardStore, *args: Any, _real: Any = real) -> Any:
                    if self is store:
                        faults.trip()
                    return _real(self, *args)

                monkeypatch.setattr(BoardStore, name, failing)
        else:
            monkeypatch.setattr(store, "_db", _FaultyConnection(store._conn(), self, where))


def fail_writes(
    monkeypatch: pytest.MonkeyPatch,
    agent: Agent,
    where: str,
    make: Callable[[], BaseException],
    times: int | None = None,
) -> Faults:
    """Make ``agent``'s store fail at ``where``; the :class:`Faults` returned switches it off."""
    assert agent.store is not None
    faults = Faults(make, times)
    faults.install(monkeypatch, agent.store, where)
    return faults


class _FaultyConnection:
    """A SQLite connection whose writes (or the COMMITs after writes) fail on demand."""

    def __init__(self, real: sqlite3.Connection, faults: Faults, where: str) -> None:
        self._real = real
        self._faults = faults
        self._where = where
        self.wrote = False

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql in ("COMMIT", "ROLLBACK"):
            wrote, self.wrote = self.wrote, False
            if sql == "COMMIT" and wrote and self._where == "commit":
                self._faults.trip()
        return self._real.execute(sql, *args)

    def cursor(self) -> _FaultyCursor:
        return _FaultyCursor(self._real.cursor(), self)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class _FaultyCursor:
    def __init__(self, real: sqlite3.Cursor, connection: _FaultyConnection) -> None:
        self._real = real
        self._connection = connection

    def _check(self, sql: str) -> None:
        if sql.lstrip().upper().startswith(_WRITES):
            self._connection.wrote = True
            if self._connection._where == "statement":
                self._connection._faults.trip()

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        self._check(sql)
        return self._real.execute(sql, *args)

    def executemany(self, sql: str, *args: Any) -> sqlite3.Cursor:
        self._check(sql)
        return self._real.executemany(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


# --------------------------------------------------------------------------- one agent


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def agent(tmp_path: Path, clock: Clock) -> AsyncIterator[Agent]:
    """A portal agent with a store, never started: its boards are driven directly."""
    config = AgentConfig(AgentType.PORTAL, ServiceConfig.create("portal", port=0))
    made = Agent(config, data_dir=tmp_path / "portal", clock=clock)
    yield made
    assert made.store is not None
    made.store.close()


def pending(command: str = COMMAND, job_id: uuid.UUID | None = None) -> Job:
    """A new Pending job created at the test clock's start."""
    return Job.parse(command, now=T0, job_id=job_id).pending(now=T0)


def snapshot(agent: Agent) -> dict[PeerId, tuple[object, ...]]:
    """Everything a board holds: its jobs, its queue and its duplicate links."""
    state: dict[PeerId, tuple[object, ...]] = {}
    for who, board in agent.boards_by_peer():
        jobs = tuple(board.jobs())
        links = {job.id: board.duplicates_of(job.id) for job in jobs}
        state[who] = (jobs, board.queued(), links, board.stats(agent.name, agent.clock()))
    return {who: held for who, held in state.items() if held[0] or held[1]}


def stored(agent: Agent) -> tuple[dict[str, list[Job]], dict[str, list[str]]]:
    """Everything the store holds: each board's jobs and queued payloads."""
    assert agent.store is not None
    store = agent.store
    outbox = {p: [q.payload for q in store.pending(p)] for p in store.queued_peers()}
    return store.load_all(), outbox


def assert_in_step(agent: Agent) -> None:
    """The store holds each board's jobs (plus those queued), and its queue, in order."""
    jobs, outbox = stored(agent)
    for who, board in agent.boards_by_peer():
        on_disk = {job.id: job for job in jobs.get(str(who), [])}
        on_board = {job.id: job for job in board.jobs()}
        queued = {command.job.id for command in board.queued()}
        assert on_board.items() <= on_disk.items()
        # A queued job leaves the board but keeps its row, for the replay after a restart.
        assert set(on_disk) - set(on_board) <= queued
        assert outbox.get(str(who), []) == [encode_command(c) for c in board.queued()]


# The operations that change a board, each with what it needs on the board first.  Each
# returns the board operation to attempt (run once failing, then again once healed).

Operation = Callable[[], Awaitable[object]]


def recording(agent: Agent, job: Job) -> Operation:
    """The operation that records ``job`` on the board shared with :data:`PEER`."""

    async def op() -> object:
        return agent.record(PEER, job)

    return op


def fresh_job(agent: Agent, clock: Clock) -> Operation:
    return recording(agent, pending())


def update_of_a_job(agent: Agent, clock: Clock) -> Operation:
    job = pending()
    agent.record(PEER, job)
    return recording(agent, job.running("half way", now=T0 + 1))


def a_duplicate(agent: Agent, clock: Clock) -> Operation:
    agent.record(PEER, pending())
    return recording(agent, pending())  # the same instruction again: a duplicate


def result_copied_to_duplicates(agent: Agent, clock: Clock) -> Operation:
    original = pending()
    agent.record(PEER, original)
    agent.record(PEER, pending())  # becomes its duplicate
    return recording(agent, original.complete_with("done", now=T0 + 2))


def a_delete(agent: Agent, clock: Clock) -> Operation:
    original = pending()
    agent.record(PEER, original)
    agent.record(PEER, pending())

    async def op() -> object:
        return agent.remove(PEER, original)

    return op


def a_job_queued_for_an_absent_peer(agent: Agent, clock: Clock) -> Operation:
    job = pending()
    agent.record(PEER, job)

    async def op() -> object:
        await agent.send_job(PEER, Put(job))  # never started: the peer is not connected
        return None

    return op


def clearing_every_board(agent: Agent, clock: Clock) -> Operation:
    agent.record(PEER, pending())
    agent.record(PeerId("bridge", "default"), pending("portal.bridge get_offerings"))

    async def op() -> object:
        agent.clear_boards()
        return None

    return op


OPERATIONS = [
    fresh_job,
    update_of_a_job,
    a_duplicate,
    result_copied_to_duplicates,
    a_delete,
    a_job_queued_for_an_absent_peer,
    clearing_every_board,
]


@pytest.mark.parametrize("make", FAILURES)
@pytest.mark.parametrize("where", WHERE)
@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda f: f.__name__)
async def test_a_failing_store_leaves_the_board_unchanged_and_recording_resumes(
    agent: Agent,
    clock: Clock,
    *,
    monkeypatch: pytest.MonkeyPatch,
    operation: Callable[[Agent, Clock], Operation],
    where: str,
    make: Callable[[], BaseException],
) -> None:
    op = operation(agent, clock)
    board_before, store_before = snapshot(agent), stored(agent)
    faults = fail_writes(monkeypatch, agent, where, make)

    with pytest.raises(StoreError) as refused:
        await op()

    assert faults.raised >= 1
    assert isinstance(refused.value.__cause__, type(make()))
    assert snapshot(agent) == board_before
    assert stored(agent) == store_before  # the transaction was rolled back, if it began
    assert_in_step(agent)

    faults.active = False
    await op()
    assert snapshot(agent) != board_before
    assert_in_step(agent)


@pytest.mark.parametrize("make", FAILURES)
@pytest.mark.parametrize("where", WHERE)
async def test_a_sweep_the_store_refuses_leaves_the_board_for_the_next_sweep(
    agent: Agent,
    clock: Clock,
    *,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    where: str,
    make: Callable[[], BaseException],
) -> None:
    agent.record(PEER, pending())
    clock.now = T0 + 1000
    board_before, store_before = snapshot(agent), stored(agent)
    faults = fail_writes(monkeypatch, agent, where, make)

    with caplog.at_level(logging.WARNING, "broadgauge.jobs"):
        assert agent.sweep() == []  # logged, not raised: the cleaner must keep running

    assert "until the next sweep" in caplog.text
    assert snapshot(agent) == board_before
    assert stored(agent) == store_before
    faults.active = False
    [expired] = agent.sweep()
    assert expired.error_message == "Job expired"
    assert snapshot(agent) == {}
    assert_in_step(agent)


async def test_clearing_stops_at_the_board_the_store_refuses(
    agent: Agent, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent.record(PEER, pending())
    bridge = PeerId("bridge", "default")
    agent.record(bridge, pending("portal.bridge get_offerings"))
    real = BoardStore.forget_board
    calls: list[str] = []

    def second_fails(self: BoardStore, who: str) -> None:
        calls.append(who)
        if len(calls) == 2:
            raise sqlite3.OperationalError("database is locked")
        real(self, who)

    monkeypatch.setattr(BoardStore, "forget_board", second_fails)
    with pytest.raises(StoreError):
        agent.clear_boards()
    # The first board is gone from both; the second is still on both.
    assert list(snapshot(agent)) == [PeerId(*calls[1].split("@"))]
    assert_in_step(agent)


def test_a_plan_is_never_applied_to_a_board_that_moved_on() -> None:
    board = Board(str(PEER))
    plan = board.plan_add(pending(), T0)
    assert board.jobs() == []  # planning changes nothing
    board.add(pending("portal.instance add_user v.p.portal"), T0)
    with pytest.raises(RuntimeError, match="changed since"):
        board.apply(plan)


# ----------------------------------------------------------------- real failures, no mocks


def _unencodable(job: Job) -> Job:
    """``job`` with a lone surrogate in its command (only possible by building the Command)."""
    command = Command.parse(str(job.command).replace(USER, "\ud800" + USER))
    return dataclasses.replace(job, command=command)


async def test_a_job_sqlite_cannot_encode_never_reaches_the_board(agent: Agent) -> None:
    with pytest.raises(StoreError) as refused:
        agent.record(PEER, _unencodable(pending()))
    assert isinstance(refused.value.__cause__, UnicodeEncodeError)
    assert snapshot(agent) == {}
    # The board can still be sent whole: this is what broke the next Sync.
    encode_command(Sync(agent.board(PEER).sync_state())).encode("utf-8")


async def test_an_unencodable_update_leaves_the_stored_version(agent: Agent) -> None:
    job = pending()
    agent.record(PEER, job)
    newer = _unencodable(job.running(now=T0 + 1))
    with pytest.raises(StoreError):
        agent.record(PEER, newer)
    assert agent.board(PEER).get(job.id) == job
    assert_in_step(agent)
    encode_command(Sync(agent.board(PEER).sync_state())).encode("utf-8")


async def test_a_read_only_database_refuses_and_then_recovers(agent: Agent) -> None:
    assert agent.store is not None
    db = agent.store._conn()
    db.execute("PRAGMA query_only=ON")
    with pytest.raises(StoreError) as refused:
        agent.record(PEER, pending())
    assert isinstance(refused.value.__cause__, sqlite3.OperationalError)
    assert snapshot(agent) == {}
    db.execute("PRAGMA query_only=OFF")
    agent.record(PEER, pending())
    assert_in_step(agent)


async def test_a_closed_store_refuses_without_touching_the_board(agent: Agent) -> None:
    job = pending()
    agent.record(PEER, job)
    assert agent.store is not None
    agent.store.close()
    with pytest.raises(StoreError):
        agent.record(PEER, job.running(now=T0 + 1))
    assert agent.board(PEER).jobs() == [job]


async def test_a_base_exception_from_the_store_also_leaves_the_board(
    agent: Agent, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Not wrapped (it is not an error of the store), but the board is still untouched.
    assert agent.store is not None
    Faults(KeyboardInterrupt).install(monkeypatch, agent.store, "statement")
    with pytest.raises(KeyboardInterrupt):
        agent.record(PEER, pending())
    assert snapshot(agent) == {}


async def test_one_job_of_a_sync_the_store_refuses_does_not_cost_the_others(
    agent: Agent, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = pending(), pending("portal.instance add_user v.p.portal")
    agent.record(PEER, first)
    agent.record(PEER, second)
    faults = fail_writes(
        monkeypatch,
        agent,
        "commit",
        lambda: sqlite3.OperationalError("database is locked"),
        times=1,
    )
    done = [job.complete_with("done", now=T0 + 5) for job in (first, second)]

    await agent.inbound._received_sync(PEER, tuple(done))

    assert faults.raised == 1
    assert agent.board(PEER).get(first.id) == first  # refused: as it was
    assert agent.board(PEER).get(second.id) == done[1]
    assert_in_step(agent)


# ------------------------------------------------------------------- over real sockets


async def portal_and_durable_instance(net: Network, tmp_path: Path) -> tuple[Agent, Agent]:
    """A portal, and an instance with a store that records add_user jobs, linked."""
    portal = await net.start("portal", AgentType.PORTAL)
    instance = await net.start_instance(Recorder(), data_dir=tmp_path / "instance")
    return portal, instance


async def test_a_put_the_store_refuses_is_failed_back_and_the_agent_keeps_serving(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with Network() as net:
        portal, instance = await portal_and_durable_instance(net, tmp_path)
        # The first write fails: the Put is refused; the refusal itself is recorded.
        fail_writes(
            monkeypatch,
            instance,
            "commit",
            lambda: sqlite3.OperationalError("database is locked"),
            times=1,
        )

        with pytest.raises(JobFailed) as failed:
            await finished(portal.run("portal.instance", f"add_user {USER}", timeout=5))
        assert failed.value.job.error_message == "instance could not record the job"
        assert_in_step(instance)

        job = await finished(portal.run("portal.instance", f"add_user {USER}", timeout=5))
        assert job.state is Status.COMPLETE
        assert_in_step(instance)


async def test_while_the_store_is_down_puts_are_refused_and_nothing_is_half_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with Network() as net:
        portal, instance = await portal_and_durable_instance(net, tmp_path)
        faults = fail_writes(
            monkeypatch,
            instance,
            "statement",
            lambda: sqlite3.OperationalError("database or disk is full"),
        )

        # The store refuses the Put and then the refusal: the sender is told all the same.
        with pytest.raises(JobFailed) as failed:
            await finished(portal.run("portal.instance", f"add_user {USER}", timeout=5))
        assert failed.value.job.error_message == "instance could not record the job"
        assert faults.raised == 2
        assert snapshot(instance) == {}
        assert_in_step(instance)

        faults.active = False
        job = await finished(portal.run("portal.instance", f"add_user {USER}", timeout=5))
        assert job.state is Status.COMPLETE
        assert_in_step(instance)
