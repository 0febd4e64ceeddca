"""What each process of ``bench/floor.py``'s chains does to a frame: the floors, hop by hop.

Each class adds to the one before it, so a row's cost over the row before is exactly what
the class adds:

* :class:`WireHop`: the encrypted wire alone;
* :class:`FloorHop`: what the protocol demands of a hop, with Broadgauge's pure cores;
* :class:`DurableHop`: each board change committed before the frame that carries it leaves;
* :class:`TracedHop`: and what the agents must keep besides: an audit line for each action
  and, at the job's destination, the markers of its run.

``bench/floor.py``'s docstring says what each leaves out.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.server import ServerConnection

import jobs as chain
from broadgauge.grammar import UserMapping, encode_result
from broadgauge.grammar.destination import Position
from broadgauge.jobs import Board, Job, Put, Update, encode_command
from broadgauge.jobs.commands import decode_command
from broadgauge.jobs.job import whole_seconds
from broadgauge.runtime.audit import AuditLog
from broadgauge.runtime.store import (
    DB_FILENAME,
    MARK_FINISHED,
    MARK_STARTED,
    UPSERT_JOB,
    BoardStore,
    job_row,
)
from broadgauge.wire.handshake import Channel

Socket = ClientConnection | ServerConnection

# --- the work of one frame ----------------------------------------------------------------


def opened(channel: Channel, frame: str | bytes) -> str:
    """The payload of a frame (never a standby poll, which no chain here sends)."""
    payload = channel.open(str(frame))
    if payload is None:
        raise ValueError("a standby poll where a command was expected")
    return payload


def opened_job(channel: Channel, frame: str | bytes, kind: type[Put] | type[Update]) -> Job:
    """Open a frame and decode the command it carries; its Job."""
    command = decode_command(opened(channel, frame))
    if not isinstance(command, kind):
        raise ValueError(f"{type(command).__name__} where {kind.__name__} was expected")
    return command.job


def checked(job: Job, me: str, sender: str, where: Position, now: float) -> Job:
    """The checks a hop makes before it takes a job on: not expired, and where it should be."""
    if job.is_expired(now):
        raise ValueError(f"{job.id} has expired")
    if job.destination.position(me, sender) is not where:
        raise ValueError(f"{job.id} is not {where.name} of {me}")
    return job


def answer(job: Job, now: float) -> Job:
    """The leaf's handler: ``add_user`` answered with the user's mapping."""
    user = job.instruction.user  # type: ignore[attr-defined]
    text, result_type = encode_result(UserMapping(user, user.username, user.project))
    return job.completed(text, result_type, now=now)


def audit_action(audit: AuditLog, action: str, job: Job, peer: str, now: float) -> None:
    """Append the audit line of one action on ``job``, with the fields the agents write."""
    audit.append(
        time=now,
        job=job.id_text,
        instruction=job.command.instruction_text,
        path=job.command.destination_text.split("."),
        peer=peer,
        action=action,
        operation=None,
        outcome=job.result_type or job.state.value,
    )


# --- what each process does to a frame -----------------------------------------------------


class WireHop:
    """The encrypted wire alone: each frame is opened and its payload sealed for the next link
    (the leaf answers as the bare relay's does).  What no implementation of the protocol can
    leave out, whatever its language: the cryptography is libsodium's and OpenSSL's."""

    def __init__(
        self, name: str, upper: str, lower: str, up: Channel, down: Channel | None, *, workdir: Path
    ):
        self.name, self.upper, self.lower = name, upper, lower
        self.up, self.down = up, down

    def downward(self, frame: str | bytes) -> str:
        """A Put from above, passed on below."""
        assert self.down is not None
        return self.down.seal(opened(self.up, frame))

    def upward(self, frame: str | bytes) -> str:
        """An Update from below, passed on above."""
        assert self.down is not None
        return self.up.seal(opened(self.down, frame))

    def leaf(self, frame: str | bytes) -> str:
        """A Put answered by its destination."""
        return self.up.seal(chain.bare_reply(opened(self.up, frame)))

    async def pass_on(self, ws: Socket, frame: str) -> None:
        """Send ``frame`` on (a durable hop: once the changes it carries are committed)."""
        await ws.send(frame)

    async def serve_leaf(self, ws: Socket, frame: str | bytes) -> None:
        """Answer a Put at its destination, on ``ws``."""
        await self.pass_on(ws, self.leaf(frame))


class FloorHop(WireHop):
    """Everything the protocol demands of a hop, with Broadgauge's pure cores: the wire, and
    the command decoded and checked, the job recorded on both links' boards, and encoded."""

    def __init__(
        self, name: str, upper: str, lower: str, up: Channel, down: Channel | None, *, workdir: Path
    ):
        super().__init__(name, upper, lower, up, down, workdir=workdir)
        self.up_board = Board(upper)
        self.down_board = Board(lower)

    def keep(self, board: Board, job: Job, now: float) -> None:
        """Record ``job`` on ``board``."""
        board.add(job, now)

    def note(self, action: str, job: Job, peer: str, now: float) -> None:
        """An action on ``job`` (the floor keeps no record of it)."""

    def downward(self, frame: str | bytes) -> str:
        assert self.down is not None
        now = time.time()
        job = opened_job(self.up, frame, Put)
        checked(job, self.name, self.upper, Position.DOWNSTREAM, now)
        self.note("received", job, self.upper, now)
        self.keep(self.up_board, job, now)
        self.keep(self.down_board, job, now)
        self.note("forwarded", job, self.lower, now)
        return self.down.seal(encode_command(Put(job)))

    def upward(self, frame: str | bytes) -> str:
        assert self.down is not None
        now = time.time()
        job = opened_job(self.down, frame, Update)
        checked(job, self.name, self.lower, Position.UPSTREAM, now)
        self.keep(self.down_board, job, now)
        self.keep(self.up_board, job, now)
        self.note("returned", job, self.lower, now)
        return self.up.seal(encode_command(Update(job)))

    def leaf(self, frame: str | bytes) -> str:
        now = time.time()
        job = opened_job(self.up, frame, Put)
        checked(job, self.name, self.upper, Position.DESTINATION, now)
        self.keep(self.up_board, job, now)
        done = answer(job, now)
        self.keep(self.up_board, done, now)
        return self.up.seal(encode_command(Update(done)))


class DurableBoards:
    """Boards whose changes are stored as they are made, and committed together once per turn
    of the event loop (group commit).  The file, its table and the statement are the agents'
    board store's; only its transactions, error handling and bookkeeping are left out."""

    def __init__(self, data_dir: Path) -> None:
        BoardStore(data_dir).close()  # makes the file and its tables, in WAL mode
        self.db = sqlite3.connect(data_dir / DB_FILENAME, isolation_level=None)
        self.db.execute("PRAGMA synchronous=NORMAL")
        self._open = False
        self._batch: asyncio.Future[None] | None = None

    def store(self, statement: str, parameters: tuple[object, ...]) -> None:
        """Run ``statement`` in the open batch (see :meth:`committed`)."""
        if not self._open:
            self.db.execute("BEGIN IMMEDIATE")
            self._open = True
        self.db.execute(statement, parameters)

    def keep(self, board: Board, job: Job, now: float) -> None:
        """Record ``job`` on ``board`` and store the change."""
        board.add(job, now)
        self.store(UPSERT_JOB, job_row(board.peer, job))

    def committed(self) -> asyncio.Future[None]:
        """Done once every change stored so far is committed."""
        if self._batch is None:
            loop = asyncio.get_running_loop()
            self._batch = loop.create_future()
            loop.call_soon(self._commit)
        return self._batch

    def _commit(self) -> None:
        batch, self._batch = self._batch, None
        if self._open:
            self.db.execute("COMMIT")
            self._open = False
        assert batch is not None
        batch.set_result(None)


class DurableHop(FloorHop):
    """The protocol floor, with each board change committed before its frame leaves."""

    def __init__(
        self, name: str, upper: str, lower: str, up: Channel, down: Channel | None, *, workdir: Path
    ):
        super().__init__(name, upper, lower, up, down, workdir=workdir)
        self.boards = DurableBoards(workdir / f"{name}.data")
        self._sending: asyncio.Task[None] | None = None

    def keep(self, board: Board, job: Job, now: float) -> None:
        self.boards.keep(board, job, now)

    async def pass_on(self, ws: Socket, frame: str) -> None:
        """Send ``frame`` once the changes it carries are committed, after every frame before
        it; the hop reads the next frame meanwhile, so the changes of one turn commit together."""
        self._sending = asyncio.ensure_future(
            _send_after(ws, frame, self.boards.committed(), self._sending)
        )


async def _send_after(
    ws: Socket, frame: str, committed: asyncio.Future[None], before: asyncio.Task[None] | None
) -> None:
    await committed
    if before is not None:
        await before
    await ws.send(frame)


class TracedHop(DurableHop):
    """The durable floor, and the rest of what the agents keep of each job: a hash-chained
    line in an audit log (the agents' own :class:`AuditLog`, with the fields they write) for
    each action, and, where the job runs, the markers of its run, with the board store's own
    statements.  Three commits where the job runs, the fewest that keep the agents' promises:
    the job and the start of its run, before the handler runs (never run a job no record
    holds); the end of the run, before its audit line (a line saying a job finished means
    its result is stored, so a crash never makes it run twice), which comes before the
    result is recorded (an end that cannot be audited is answered as an error, never as
    done); and the finished job, before the result leaves (never send what a crash could
    take back)."""

    def __init__(
        self, name: str, upper: str, lower: str, up: Channel, down: Channel | None, *, workdir: Path
    ):
        super().__init__(name, upper, lower, up, down, workdir=workdir)
        self.audit = AuditLog(workdir / f"{name}.audit.jsonl", name)

    def note(self, action: str, job: Job, peer: str, now: float) -> None:
        audit_action(self.audit, action, job, peer, now)

    async def serve_leaf(self, ws: Socket, frame: str | bytes) -> None:
        now = time.time()
        job = opened_job(self.up, frame, Put)
        checked(job, self.name, self.upper, Position.DESTINATION, now)
        self.note("received", job, self.upper, now)
        self.keep(self.up_board, job, now)
        self.boards.store(MARK_STARTED, (job.id_text, whole_seconds(now)))
        self._sending = asyncio.ensure_future(
            self._run(ws, job, self.boards.committed(), self._sending)
        )

    async def _run(
        self,
        ws: Socket,
        job: Job,
        started: asyncio.Future[None],
        before: asyncio.Task[None] | None,
    ) -> None:
        """Run ``job`` once its start is committed; audit its end once that is committed,
        and send its result once that is."""
        await started
        now = time.time()
        self.note("started", job, self.upper, now)
        done = answer(job, now)
        stamp = whole_seconds(now)
        self.boards.store(MARK_FINISHED, (job.id_text, stamp, stamp, done.to_json()))
        await self.boards.committed()
        self.note("finished", done, self.upper, now)
        self.keep(self.up_board, done, now)
        await self.boards.committed()
        if before is not None:
            await before
        await ws.send(self.up.seal(encode_command(Update(done))))


HOPS: dict[str, type[WireHop]] = {
    "wire": WireHop,
    "floor": FloorHop,
    "durable": DurableHop,
    "traced": TracedHop,
}
