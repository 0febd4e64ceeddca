"""The agent runtime: boards, routing, execution and recovery over a wire :class:`Service`.

An :class:`Agent` owns one board per neighbour.  A job travels hop by hop along its
destination path; each hop records it on the board of the neighbour it came from and of the
neighbour it went to, so that a result coming back can retrace the route (notes §3.7):

* **Put** received: downstream of us → pass it on to the next agent; we are the destination →
  run the handler registered for its instruction, then send the finished job back.
* **Update** received: store it; if it came from below, pass it up to the previous agent; if
  we started the job, wake whoever is waiting in :meth:`Agent.run`.
* On every (re)connection both sides send ``Register``, then ``Sync`` with the board they
  share, then anything queued while the link was down.

With a data directory the boards, the outbox and execution markers live in SQLite, so an
agent killed at any point resumes: a job it had finished is answered from its record, never
run again; a job cut off mid-run is run again (handlers must be idempotent, as in OpenPortal).

Every action is reported as a :class:`~broadgauge.runtime.trace.TraceEvent`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from broadgauge.grammar import Position
from broadgauge.jobs.agent_type import AgentType
from broadgauge.jobs.board import AddResult, Board, RemoveResult
from broadgauge.jobs.commands import (
    Delete,
    JobCommand,
    Notify,
    Put,
    Register,
    Sync,
    Update,
    WireCommand,
    decode_command,
    encode_command,
)
from broadgauge.jobs.directions import Link
from broadgauge.jobs.errors import ExpiredError, ProtocolError, StoreError
from broadgauge.jobs.health import DiagnosticsReport, HealthInfo
from broadgauge.jobs.job import Job
from broadgauge.jobs.notification import Notification
from broadgauge.runtime.audit import CURRENT_JOB, AuditLog
from broadgauge.runtime.commits import GroupCommit, sends_after_commit
from broadgauge.runtime.config import AgentConfig
from broadgauge.runtime.context import JobMetrics
from broadgauge.runtime.control import ControlPlane
from broadgauge.runtime.envelope import (
    Envelope,
    Handler,
    JobExpired,
    JobFailed,
    JobRefused,
    NotifyHandler,
    PeerInfo,
    TraceSink,
    Typed,
)
from broadgauge.runtime.handling import Inbound, _outcome
from broadgauge.runtime.logs import child_job_id, log_trace_event, trace_id, trace_log
from broadgauge.runtime.rules_sweep import RulesSweep
from broadgauge.runtime.store import BoardStore
from broadgauge.runtime.trace import Action, TraceEvent, Tracer
from broadgauge.wire import (
    ClientEntry,
    Limits,
    PeerId,
    PeerNotConnected,
    ServerEntry,
    Service,
    Timers,
)

__all__ = [
    "Agent",
    "Envelope",
    "Handler",
    "JobExpired",
    "JobFailed",
    "JobRefused",
    "NotifyHandler",
    "PeerInfo",
    "TraceSink",
    "Typed",
]

log = logging.getLogger("broadgauge.jobs")

CLEANER_INTERVAL = 60.0
RECENT_EVENTS = 500


class Agent:
    """One agent: a wire service plus boards, handlers and the routing rules."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        data_dir: str | Path | None = None,
        timers: Timers | None = None,
        limits: Limits | None = None,
        clock: Callable[[], float] = time.time,
        max_workers: int = 64,
    ) -> None:
        self.config = config
        self.agent_type = config.agent
        self.service = Service(config.service, timers=timers, limits=limits)
        self.inbound = Inbound(self, max_workers)
        self.service.on_message(self.inbound.on_message)
        self.service.on_connected(self._on_connected)
        self.service.on_disconnected(self._on_disconnected)
        self.clock = clock
        #: where the agent keeps its boards and audit log (None: in memory only)
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self.store = BoardStore(data_dir) if data_dir is not None else None
        self.audit_log = (
            AuditLog(Path(data_dir) / "audit.jsonl", config.service.name)
            if data_dir is not None
            else None
        )
        self._boards: dict[PeerId, Board] = {}
        #: Commits the store's changes in batches while the agent runs.
        self.commits = (
            GroupCommit(config.service.name, self.store, self._reload_boards)
            if self.store is not None
            else None
        )
        #: Prometheus series, once :meth:`AgentMetrics.attach <.metrics.AgentMetrics.attach>`
        self.metrics: JobMetrics | None = None
        self.peer_types: dict[PeerId, AgentType] = {}
        self.handlers: dict[str, Handler] = {}
        self.notify_handler: NotifyHandler | None = None
        self._waiters: dict[uuid.UUID, list[asyncio.Future[Job]]] = {}
        self.tracer = Tracer(self.service.name, RECENT_EVENTS)
        if trace_log.isEnabledFor(logging.INFO):
            # Decided once: rendering every action for a log nobody reads would cost.
            self.tracer.sinks.append(log_trace_event)
        self._tasks: set[asyncio.Task[object]] = set()
        self._before_close: list[Callable[[], Awaitable[None]]] = []
        self.registrations = asyncio.Condition()
        self.started_at = datetime.now(UTC)
        self.control = ControlPlane(self)
        self.planner_rules = RulesSweep(self)
        if self.audit_log is not None:
            self.tracer.keeper = self.audit_log.record_event
        self.service.on_refused(self._on_refused)
        self._load_boards()

    @property
    def name(self) -> str:
        """This agent's name."""
        return self.service.name

    # --- registration of behaviour -----------------------------------------------------

    def handler(self, *keywords: str) -> Callable[[Handler], Handler]:
        """Decorator: run ``handler`` for jobs whose instruction is one of ``keywords``."""

        def register(handler: Handler) -> Handler:
            for keyword in keywords:
                self.handlers[keyword] = handler
            return handler

        return register

    def add_handler(self, keyword: str, handler: Handler) -> None:
        """Run ``handler`` for jobs whose instruction keyword is ``keyword``."""
        self.handlers[keyword] = handler

    def on_notification(self, handler: NotifyHandler) -> NotifyHandler:
        """Register the coroutine that receives notifications addressed to this agent."""
        self.notify_handler = handler
        return handler

    def audit_operation(self, operation: str, outcome: str = "ok") -> None:
        """Record a backend operation (``useradd fred.proj``) against the job being run."""
        current = CURRENT_JOB.get()
        fields: dict[str, object] = {"agent": self.name, "event": "operation", "outcome": outcome}
        if current is not None:
            fields.update(
                job=current.job_id,
                trace=trace_id(current.job_id),
                keyword=current.instruction.split(" ", 1)[0],
                peer=current.peer,
            )
        log.info("%s: %s (%s)", self.name, operation, outcome, extra=fields)
        if self.metrics is not None:
            self.metrics.operation(operation, outcome)
        if self.audit_log is not None:
            self.audit_log.record_operation(operation, outcome, time=self.clock())

    def _on_refused(self, address: str, reason: str) -> None:
        if self.audit_log is not None:
            self.audit_log.append(
                time=self.clock(),
                job=None,
                instruction=None,
                path=[],
                peer=address,
                action="connection-refused",
                operation=None,
                outcome=reason,
            )

    def on_trace(self, sink: TraceSink) -> TraceSink:
        """Call ``sink`` with every :class:`TraceEvent` (several sinks may be added)."""
        self.tracer.sinks.append(sink)
        return sink

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self, *, listen: bool = True) -> None:
        """Start the wire service, the cleaner, and resume interrupted work."""
        if self.commits is not None:
            self.commits.start()
        await self.service.start(listen=listen)
        self.spawn(self._cleaner())
        self.inbound.resume()

    async def stop(self) -> None:
        """Stop serving; boards stay in the store for the next start."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.service.stop()
        for hook in self._before_close:
            try:
                await hook()
            except Exception:
                log.exception("%s: a step before closing the store failed", self.name)
        if self.commits is not None:
            self.commits.stop()
        if self.store is not None:
            self.store.close()
        if self.audit_log is not None:
            self.audit_log.close()

    def before_close(self, hook: Callable[[], Awaitable[None]]) -> None:
        """Await ``hook`` in :meth:`stop`, after the tasks are cancelled and before the store
        and the audit log close: for work that cannot be cancelled (a back-end change in a
        worker thread) to finish and be audited."""
        self._before_close.append(hook)

    async def __aenter__(self) -> Agent:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def spawn(self, coro: Awaitable[object]) -> None:
        """Run ``coro`` as a task the agent cancels when it stops."""
        self.track(asyncio.ensure_future(coro))

    def track(self, task: asyncio.Task[Any]) -> None:
        """Cancel ``task`` when the agent stops."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- peers -------------------------------------------------------------------------

    def peer_info(self, peer: PeerId) -> PeerInfo:
        """How ``peer`` is linked to us and what it registered as."""
        config = self.service.config
        link = Link.UP if config.server(peer.name, peer.zone) is not None else Link.DOWN
        return PeerInfo(peer, link, self.peer_types.get(peer))

    def peer_named(self, name: str, zone: str | None) -> PeerId:
        """The neighbour called ``name`` (in ``zone``); :class:`JobRefused` if there is none."""
        config = self.service.config
        entries: list[ClientEntry | ServerEntry] = [e for e in config.servers if e.name == name]
        entries += [e for e in config.clients if e.name == name]
        if zone is not None:
            entries = [e for e in entries if e.zone == zone]
        if not entries:
            where = f" in zone {zone}" if zone else ""
            raise JobRefused(f"{self.name} has no neighbour called {name}{where}")
        if len({e.zone for e in entries}) > 1:
            raise JobRefused(f"{name} is a neighbour in several zones; the job must name one")
        return PeerId(entries[0].name, entries[0].zone)

    def boards(self) -> list[Board]:
        """Every board this agent holds."""
        return list(self._boards.values())

    def boards_by_peer(self) -> list[tuple[PeerId, Board]]:
        """Every board, with the neighbour it is shared with."""
        return list(self._boards.items())

    def clear_boards(self) -> None:
        """Forget every job and queued command (a soft restart), in memory and on disk.

        Handlers still running are cancelled: their jobs have been answered with an error.
        """
        for task in list(self.inbound.executions.values()):
            task.cancel()
        for peer in list(self._boards):
            # One board at a time, the store first: a failure leaves the rest on both.
            if self.store is not None:
                self._stored(f"clear the board of {peer}", self.store.forget_board, str(peer))
            del self._boards[peer]

    def busy_workers(self) -> int:
        """Handlers running now."""
        return self.inbound.running

    async def health(self) -> HealthInfo:
        """This agent's health with every reachable agent's nested in it (no cycles)."""
        return await self.control.health()

    async def diagnostics(self, path: str = "") -> DiagnosticsReport:
        """The diagnostics report of the agent at ``path``, relative to this one."""
        return await self.control.diagnostics(path)

    async def restart(self, restart_type: str, path: str = "") -> None:
        """Order a ``soft`` or ``hard`` restart of the agent at ``path``."""
        await self.control.restart(restart_type, path)

    async def peer_of_type(self, agent_type: AgentType, wait: float = 10.0) -> PeerId:
        """The first connected neighbour registered as ``agent_type`` (waiting ``wait`` s)."""

        def find() -> PeerId | None:
            connected = set(self.service.connected_peers())
            for peer, kind in self.peer_types.items():
                if kind is agent_type and peer in connected:
                    return peer
            return None

        try:
            async with asyncio.timeout(wait), self.registrations:
                await self.registrations.wait_for(lambda: find() is not None)
        except TimeoutError:
            raise JobRefused(f"{self.name} has no connected {agent_type.display} agent") from None
        found = find()
        assert found is not None
        return found

    def board(self, peer: PeerId) -> Board:
        """The board shared with ``peer`` (created on first use)."""
        board = self._boards.get(peer)
        if board is None:
            board = self._boards[peer] = Board(str(peer))
        return board

    # --- the public way to start work --------------------------------------------------

    async def run(self, destination: str, instruction: str, timeout: float | None = None) -> Job:
        """Send ``instruction`` along ``destination`` and wait for the finished job.

        ``destination`` starts with this agent's name.  Returns the ``Complete`` job;
        raises :class:`JobFailed` if it ends in error, :class:`JobExpired` if it expires or
        ``timeout`` seconds pass first, :class:`JobRefused` if the first hop is not a
        neighbour, and :class:`~broadgauge.grammar.GrammarError` for text that does not parse.
        """
        # In the trace of the job being handled here, if any (see runtime/logs.py).
        job = Job.parse(f"{destination} {instruction}", now=self.clock(), job_id=child_job_id())
        return await self.submit(job, timeout=timeout)

    async def submit(
        self, job: Job, *, zone: str | None = None, timeout: float | None = None
    ) -> Job:
        """Start ``job`` (whose path begins here) and wait for it to finish."""
        path = job.destination
        if path.agents[0] != self.name:
            raise JobRefused(f"a job started by {self.name} must begin at {self.name}, not {path}")
        next_name = path.next(self.name)
        assert next_name is not None  # a destination has at least two agents
        peer = self.peer_named(next_name, zone)
        waiter = self._wait_for(job.id)
        try:
            await self.put(peer, job)
        except BaseException:
            self._forget_waiter(job.id, waiter)  # refused (a StoreError, say): nobody waits
            raise
        budget = max(0.0, job.expires - self.clock() + 1.0)
        if timeout is not None:
            budget = min(budget, timeout)
        try:
            async with asyncio.timeout(budget):
                finished = await waiter
        except TimeoutError:
            now = self.clock()
            latest = self.board(peer).get(job.id) or job.pending(now=now)
            message = f"no result for {job.id} within {budget:g} s"
            raise JobExpired(
                latest if latest.is_finished else latest.errored(message, now=now)
            ) from None
        finally:
            self._forget_waiter(job.id, waiter)
        if finished.is_error:
            if finished.error_message == "Job expired":
                raise JobExpired(finished)
            raise JobFailed(finished)
        return finished

    def _wait_for(self, job_id: uuid.UUID) -> asyncio.Future[Job]:
        future: asyncio.Future[Job] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(job_id, []).append(future)
        return future

    def _forget_waiter(self, job_id: uuid.UUID, future: asyncio.Future[Job]) -> None:
        waiting = self._waiters.get(job_id, [])
        if future in waiting:
            waiting.remove(future)
        if not waiting:
            self._waiters.pop(job_id, None)

    def wake(self, jobs: tuple[Job, ...] | list[Job]) -> None:
        for job in jobs:
            for future in self._waiters.pop(job.id, []):
                if not future.done():
                    future.set_result(job)

    # --- board operations (each persisted: the store first, then the board) -------------

    def record(self, peer: PeerId, job: Job) -> AddResult:
        """Add ``job`` to ``peer``'s board, and to the store before the board.

        The change is worked out first, saved in one transaction, and made on the board
        only once the store accepted it: any failure raises :class:`StoreError` with the
        board as it was, so the two never disagree (a job the store cannot hold is never
        left on a board to break the next ``Sync``).  :class:`ExpiredError` for an
        expired job.
        """
        board = self.board(peer)
        result = board.plan_add(job, self.clock())
        if self.store is not None and result.change.jobs:
            self._stored(
                lambda: f"record {job.id} on the board of {peer}",
                self.store.save_all, str(peer), result.change.jobs,
            )  # fmt: skip
        board.apply(result)
        if self.metrics is not None:
            self.metrics.recorded(result)
        if result.finished:
            if self.commits is not None:
                self.commits.then(lambda: self.wake(result.finished))
            else:
                self.wake(result.finished)
        for duplicate in result.finished:
            if duplicate.id != result.stored.id:
                self.spawn(self._answer_duplicate(peer, duplicate))
        return result

    async def _answer_duplicate(self, peer: PeerId, duplicate: Job) -> None:
        """Send a duplicate's settled result to whoever handed it to us.

        A duplicate takes on its original's command (as in OpenPortal), so its path no
        longer says where it came from.  The boards do: a job we passed on is also on the
        board of the neighbour that gave it to us.
        """
        origin = next(
            (p for p, board in self._boards.items() if p != peer and board.get(duplicate.id)),
            None,
        )
        if origin is not None:
            await self.update(origin, duplicate)
        elif duplicate.destination.position(self.name, peer.name) is not Position.UPSTREAM:
            await self.send_job(peer, Update(duplicate))
        # Otherwise we started it ourselves: its waiter has been woken already.

    def _stored(
        self, what: str | Callable[[], str], change: Callable[..., object], *args: object
    ) -> None:
        """Make one change in the store; whatever it raises becomes :class:`StoreError`
        saying ``what`` could not be done (a callable: worked out only then).

        Callers change their boards only after this returns.
        """
        try:
            change(*args)
        except Exception as exc:
            what = what if isinstance(what, str) else what()
            raise StoreError(f"{self.name} could not {what}: {type(exc).__name__}: {exc}") from exc

    def remove(self, peer: PeerId, job: Job) -> RemoveResult:
        """Remove ``job`` and its duplicates from ``peer``'s board: the store first.

        :class:`StoreError` leaves the board as it was; :class:`ExpiredError` for an
        expired job.
        """
        now = self.clock()
        if job.is_expired(now):
            raise ExpiredError(f"Job {job.id} has expired")
        board = self.board(peer)
        if self.store is not None:
            ids = [job.id, *board.duplicates_of(job.id)]
            what = f"remove {job.id} from the board of {peer}"
            self._stored(what, self.store.delete_many, str(peer), ids)
        return board.remove(job, now)

    async def put(self, peer: PeerId, job: Job) -> None:
        if job.is_created:
            job = job.pending(now=self.clock())
        result = self.record(peer, job)
        if result.should_send:
            stored = result.stored
            await self.send_job(
                peer, Put(stored), then=lambda: self.trace(Action.FORWARDED, stored, peer)
            )

    async def update(self, peer: PeerId, job: Job) -> None:
        result = self.record(peer, job)
        if result.should_send:
            await self.send_job(peer, Update(result.stored))

    def commit_ticket(self) -> int | None:
        """The batch the board changes made now join (``None`` without a store), for a later
        :meth:`durable` across an ``await`` (the batch may be flushed meanwhile)."""
        return self.commits.ticket() if self.commits is not None else None

    async def durable(self, ticket: int | None = None) -> None:
        """Return once every board change made so far (or those of ``ticket``'s batch) is
        committed to the store.

        :class:`StoreError` if it could not be (the boards are then as the store holds
        them).  A frame that carries a job, and a handler about to run, wait for this.
        """
        if self.commits is not None:
            await self.commits.durable(ticket)

    async def send_job(
        self, peer: PeerId, command: JobCommand, then: Callable[[], None] | None = None
    ) -> None:
        """Send ``command`` to ``peer`` once the changes made so far are committed, or queue
        it for the peer's next connection; then call ``then``.

        From a link's reader (:func:`~.commits.sends_after_commit`) this returns at once and
        the send follows the commit in a task of its own, in the order of the calls; it is
        never made if the batch is lost (the boards are then reloaded, and the reader's
        frame is dropped, as a :class:`StoreError` here would have it).
        """
        payload = encode_command(command)
        if self.commits is not None and sends_after_commit():
            self.commits.then(
                lambda: self.spawn(self._send_committed(peer, command, payload, then))
            )
            return
        await self.durable()
        await self._send_or_queue(peer, command, payload, then)

    async def _send_or_queue(
        self, peer: PeerId, command: JobCommand, payload: str, then: Callable[[], None] | None
    ) -> None:
        try:
            await self.service.send(peer.name, payload, peer.zone)
        except PeerNotConnected:
            # Keep it for the next connection (durably, when we have a store, and on disk
            # before the board moves the job to its queue).
            if self.store is not None:
                what = f"queue {command.job.id} for {peer}"
                self._stored(what, self.store.enqueue, str(peer), payload)
            self.board(peer).queue(command)
            self.trace(Action.QUEUED, command.job, peer, f"{peer} is not connected")
        if then is not None:
            then()

    async def _send_committed(
        self, peer: PeerId, command: JobCommand, payload: str, then: Callable[[], None] | None
    ) -> None:
        """:meth:`_send_or_queue` after a commit, off the reader: what fails is logged here, as
        the reader's handler would have logged it."""
        try:
            await self._send_or_queue(peer, command, payload, then)
        except Exception as exc:
            log.warning(
                "%s: could not send %s of %s to %s: %s",
                self.name, type(command).__name__, command.job.id, peer, exc,
            )  # fmt: skip

    async def send_control(self, peer: PeerId, command: WireCommand) -> None:
        """Send a command that never goes on a board; a missing link just drops it.

        It still waits for the changes made before it to be committed, so that it never
        overtakes them; but it is sent even if they could not be (a refusal says so).
        """
        payload = encode_command(command)
        with contextlib.suppress(StoreError):
            await self.durable()
        try:
            await self.service.send(peer.name, payload, peer.zone)
        except PeerNotConnected:
            log.info("%s: could not send %s to %s", self.name, type(command).__name__, peer)

    async def notify(self, notification: Notification) -> None:
        """Send a fire-and-forget notification along its destination (first hop = us)."""
        next_name = notification.destination.next(self.name)
        if notification.destination.agents[0] != self.name or next_name is None:
            raise JobRefused(f"a notification sent by {self.name} must start at {self.name}")
        await self.send_control(self.peer_named(next_name, None), Notify(notification))

    def _load_boards(self) -> None:
        if self.store is None:
            return
        for peer_text, jobs in self.store.load_all().items():
            name, _, zone = peer_text.partition("@")
            self._boards[PeerId(name, zone)] = Board(peer_text, jobs)

    def _reload_boards(self) -> None:
        """Put every board back as the store holds it (after a batch could not be committed:
        the boards had moved on with changes that are not stored)."""
        self._boards = {}
        self._load_boards()

    # --- connections ---------------------------------------------------------------------

    async def _on_connected(self, peer: PeerId) -> None:
        await self.send_control(peer, Register(self.agent_type))
        sync = Sync(self.board(peer).sync_state())
        try:
            await self.durable()
        except StoreError:
            sync = Sync(self.board(peer).sync_state())  # the board as stored: reloaded
        await self.send_control(peer, sync)
        await self._replay_queue(peer)

    async def _replay_queue(self, peer: PeerId) -> None:
        """Send what was queued while ``peer`` was away, oldest first.

        With a store the outbox on disk is the queue: an entry is acknowledged (deleted) only
        after it was handed to the link, so a crash at any point loses nothing (the peer may
        see a command twice, which boards absorb: versions never go back).
        """
        in_memory = self.board(peer).take_queued()
        if self.store is None:
            queued: list[tuple[int | None, JobCommand]] = [(None, c) for c in in_memory]
        else:
            queued = []
            for item in self.store.pending(str(peer)):
                try:
                    command = decode_command(item.payload)
                except ProtocolError:
                    self.store.ack(str(peer), item.seq)
                    continue
                if isinstance(command, Put | Update | Delete):
                    queued.append((item.seq, command))
        for index, (seq, command) in enumerate(queued):
            if not command.job.is_expired(self.clock()):
                if isinstance(command, Put | Update):
                    self.record(peer, command.job)
                try:
                    await self.durable()
                    await self.service.send(peer.name, encode_command(command), peer.zone)
                except PeerNotConnected:
                    if self.store is None:  # keep the rest for the next connection
                        for _, rest in queued[index:]:
                            self.board(peer).queue(rest)
                    return
            if seq is not None and self.store is not None:
                self.store.ack(str(peer), seq)

    async def _on_disconnected(self, peer: PeerId) -> None:
        log.info("%s: %s disconnected", self.name, peer)

    # --- the cleaner -------------------------------------------------------------------

    async def _cleaner(self) -> None:
        while True:
            await asyncio.sleep(CLEANER_INTERVAL)
            try:
                self.sweep()
            except Exception:
                # The cleaner must outlive one bad sweep, or nothing would expire again.
                log.exception("%s: the cleaner failed", self.name)

    def sweep(self) -> list[Job]:
        """Remove expired jobs from every board now, waking their waiters.

        Each board's expired jobs leave the store first; a board whose store refuses is
        left as it was (and logged), to be swept again next time.
        """
        swept: list[Job] = []
        now = self.clock()
        for peer, board in list(self._boards.items()):
            gone = board.plan_sweep(now)
            if not gone:
                continue
            if self.store is not None:
                ids = [job.id for job in gone]
                try:
                    self._stored(
                        f"sweep the board of {peer}", self.store.delete_many, str(peer), ids
                    )
                except StoreError as exc:
                    log.warning("%s: %s (it stays until the next sweep)", self.name, exc)
                    continue
            board.remove_swept(gone, now)
            for job in gone:
                self.trace(Action.EXPIRED, job, peer, _outcome(job))
                if self.metrics is not None:
                    self.metrics.expired(job)
                if not job.is_expired(now):
                    # A live duplicate of an expired original: its sender awaits an answer.
                    self.spawn(self._answer_duplicate(peer, job))
            swept.extend(gone)
        self.wake(swept)
        return swept

    # --- tracing -------------------------------------------------------------------------

    def trace(
        self, action: Action, job: Job, peer: PeerId, detail: str = "", *, kept: bool = False
    ) -> None:
        """Record an action on ``job``: kept for diagnostics, and given to every sink.

        ``kept``: the action must be in the audit log before it happens; the log's error
        (a full disk, say) is raised if it could not be written.
        """
        self.tracer.record(self.clock(), action, job, peer, detail, kept=kept)

    @property
    def recent_events(self) -> list[TraceEvent]:
        """The last few hundred actions, oldest first (for diagnostics reports)."""
        return self.tracer.recent()

    def job_context(self, job: Job, peer: PeerId) -> TraceEvent | None:
        """What backend operations run for ``job`` are attributed to (with an audit log)."""
        if self.audit_log is None:
            return None
        return self.tracer.event(self.clock(), Action.STARTED, job, peer, "")
