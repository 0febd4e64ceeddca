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

Every action is reported as a :class:`~broadgauge.jobs.trace.TraceEvent`.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from broadgauge.grammar import GrammarError, Position
from broadgauge.jobs.agent_config import AgentConfig
from broadgauge.jobs.agent_type import AgentType
from broadgauge.jobs.audit import CURRENT_JOB, AuditLog
from broadgauge.jobs.board import AddOutcome, AddResult, Board, SyncAction
from broadgauge.jobs.commands import (
    Delete,
    DiagnosticsRequest,
    DiagnosticsResponse,
    ErrorCommand,
    HealthCheck,
    HealthResponse,
    JobCommand,
    Notify,
    Put,
    Register,
    Restart,
    Sync,
    Update,
    WireCommand,
    decode_command,
    encode_command,
)
from broadgauge.jobs.control import RESTARTING_MESSAGE, ControlPlane
from broadgauge.jobs.directions import Link, refusal
from broadgauge.jobs.errors import ExpiredError, ProtocolError
from broadgauge.jobs.health import DiagnosticsReport, HealthInfo
from broadgauge.jobs.job import Job
from broadgauge.jobs.notification import Notification
from broadgauge.jobs.store import BoardStore
from broadgauge.jobs.trace import Action, TraceEvent
from broadgauge.wire import (
    ClientEntry,
    Limits,
    Message,
    PeerId,
    PeerNotConnected,
    ServerEntry,
    Service,
    Timers,
)

log = logging.getLogger("broadgauge.jobs")

CLEANER_INTERVAL = 60.0
RECENT_EVENTS = 500
REGISTER_WAIT = 5.0


class JobFailed(Exception):
    """A job finished in the ``Error`` state; :attr:`job` holds it (message in ``result``)."""

    def __init__(self, job: Job) -> None:
        super().__init__(job.error_message or "job failed")
        self.job = job


class JobExpired(JobFailed, TimeoutError):
    """A job expired (or the caller's timeout passed) before it finished."""


class JobRefused(Exception):
    """Raised by a handler, or the runtime, to refuse a job with a reason."""


@dataclass(frozen=True)
class PeerInfo:
    """A neighbour as the runtime sees it: identity, how it is linked, what it registered as."""

    peer: PeerId
    link: Link
    agent_type: AgentType | None


@dataclass(frozen=True)
class Envelope:
    """A job handed to a handler: the job, who handed it over, and on which link."""

    recipient: str
    sender: PeerInfo
    job: Job

    @property
    def zone(self) -> str:
        """The zone of the link the job arrived on; sub-jobs reuse it."""
        return self.sender.peer.zone


Handler = Callable[[Envelope], Awaitable[object]]
NotifyHandler = Callable[[PeerInfo, Notification], Awaitable[None]]
TraceSink = Callable[[TraceEvent], None]


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
        self.service.on_message(self._on_message)
        self.service.on_connected(self._on_connected)
        self.service.on_disconnected(self._on_disconnected)
        self.clock = clock
        self.store = BoardStore(data_dir) if data_dir is not None else None
        self.audit_log = (
            AuditLog(Path(data_dir) / "audit.jsonl", config.service.name)
            if data_dir is not None
            else None
        )
        self._boards: dict[PeerId, Board] = {}
        self._peer_types: dict[PeerId, AgentType] = {}
        self._handlers: dict[str, Handler] = {}
        self._notify_handler: NotifyHandler | None = None
        self._trace_sinks: list[TraceSink] = []
        self._waiters: dict[uuid.UUID, list[asyncio.Future[Job]]] = {}
        self.recent_events: deque[TraceEvent] = deque(maxlen=RECENT_EVENTS)
        self._workers = asyncio.Semaphore(max_workers)
        self._executions: dict[uuid.UUID, asyncio.Task[None]] = {}
        self._running = 0
        self._tasks: set[asyncio.Task[object]] = set()
        self._registrations = asyncio.Condition()
        self.started_at = datetime.now(UTC)
        self.control = ControlPlane(self)
        if self.audit_log is not None:
            self._trace_sinks.append(self.audit_log.record_event)
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
                self._handlers[keyword] = handler
            return handler

        return register

    def add_handler(self, keyword: str, handler: Handler) -> None:
        """Run ``handler`` for jobs whose instruction keyword is ``keyword``."""
        self._handlers[keyword] = handler

    def on_notification(self, handler: NotifyHandler) -> NotifyHandler:
        """Register the coroutine that receives notifications addressed to this agent."""
        self._notify_handler = handler
        return handler

    def audit_operation(self, operation: str, outcome: str = "ok") -> None:
        """Record a backend operation (``useradd fred.proj``) against the job being run."""
        log.info("%s: %s (%s)", self.name, operation, outcome)
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
        self._trace_sinks.append(sink)
        return sink

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self, *, listen: bool = True) -> None:
        """Start the wire service, the cleaner, and resume interrupted work."""
        await self.service.start(listen=listen)
        self._spawn(self._cleaner())
        self._resume()

    async def stop(self) -> None:
        """Stop serving; boards stay in the store for the next start."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.service.stop()
        if self.store is not None:
            self.store.close()
        if self.audit_log is not None:
            self.audit_log.close()

    async def __aenter__(self) -> Agent:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _spawn(self, coro: Awaitable[object]) -> None:
        task: asyncio.Task[object] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- peers -------------------------------------------------------------------------

    def peer_info(self, peer: PeerId) -> PeerInfo:
        """How ``peer`` is linked to us and what it registered as."""
        config = self.service.config
        link = Link.UP if config.server(peer.name, peer.zone) is not None else Link.DOWN
        return PeerInfo(peer, link, self._peer_types.get(peer))

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
        for task in list(self._executions.values()):
            task.cancel()
        for peer, board in self._boards.items():
            if self.store is not None:
                self.store.delete_many(str(peer), [job.id for job in board.jobs()])
                self.store.drain(str(peer))
        self._boards.clear()

    def busy_workers(self) -> int:
        """Handlers running now."""
        return self._running

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
            for peer, kind in self._peer_types.items():
                if kind is agent_type and peer in connected:
                    return peer
            return None

        try:
            async with asyncio.timeout(wait), self._registrations:
                await self._registrations.wait_for(lambda: find() is not None)
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
        job = Job.parse(f"{destination} {instruction}", now=self.clock())
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
        await self._put(peer, job)
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

    def _wake(self, jobs: tuple[Job, ...] | list[Job]) -> None:
        for job in jobs:
            for future in self._waiters.pop(job.id, []):
                if not future.done():
                    future.set_result(job)

    # --- board operations (each persisted) ---------------------------------------------

    def _record(self, peer: PeerId, job: Job) -> AddResult:
        result = self.board(peer).add(job, self.clock())
        if result.should_send or result.finished:
            self._save(peer, result.stored)
            for extra in result.finished:
                self._save(peer, extra)
        self._wake(result.finished)
        for duplicate in result.finished:
            if duplicate.id != result.stored.id:
                self._spawn(self._answer_duplicate(peer, duplicate))
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
            await self._update(origin, duplicate)
        elif duplicate.destination.position(self.name, peer.name) is not Position.UPSTREAM:
            await self._send_job(peer, Update(duplicate))
        # Otherwise we started it ourselves: its waiter has been woken already.

    def _save(self, peer: PeerId, job: Job) -> None:
        if self.store is not None:
            self.store.save(str(peer), job)

    async def _put(self, peer: PeerId, job: Job) -> None:
        if job.is_created:
            job = job.pending(now=self.clock())
        result = self._record(peer, job)
        if result.should_send:
            await self._send_job(peer, Put(result.stored))
            self._trace(Action.FORWARDED, result.stored, peer)

    async def _update(self, peer: PeerId, job: Job) -> None:
        result = self._record(peer, job)
        if result.should_send:
            await self._send_job(peer, Update(result.stored))

    async def _send_job(self, peer: PeerId, command: JobCommand) -> None:
        payload = encode_command(command)
        try:
            await self.service.send(peer.name, payload, peer.zone)
        except PeerNotConnected:
            # Keep it for the next connection (durably, when we have a store).
            self.board(peer).queue(command)
            if self.store is not None:
                self.store.enqueue(str(peer), payload)
            self._trace(Action.QUEUED, command.job, peer, f"{peer} is not connected")

    async def send_control(self, peer: PeerId, command: WireCommand) -> None:
        """Send a command that never goes on a board; a missing link just drops it."""
        try:
            await self.service.send(peer.name, encode_command(command), peer.zone)
        except PeerNotConnected:
            log.info("%s: could not send %s to %s", self.name, type(command).__name__, peer)

    # --- incoming traffic --------------------------------------------------------------

    async def _on_message(self, message: Message) -> None:
        peer = message.peer
        try:
            command = decode_command(message.payload)
        except ProtocolError as exc:
            log.warning("%s: unreadable command from %s: %s", self.name, peer, exc)
            return
        try:
            await self._dispatch(peer, command)
        except ExpiredError:
            log.debug("%s: dropped an expired job from %s", self.name, peer)
        except JobRefused as exc:
            # An update or notification naming a hop we do not know: drop it, say why.
            log.warning("%s: dropped %s from %s: %s", self.name, type(command).__name__, peer, exc)

    async def _dispatch(self, peer: PeerId, command: WireCommand) -> None:
        if self.control.restarting and isinstance(command, Put | Update):
            await self._fail_back(peer, command.job, RESTARTING_MESSAGE)
            return
        if isinstance(command, Put):
            if peer not in self._peer_types and self.peer_info(peer).link is Link.DOWN:
                # Judging it needs the sender's Register, which may be the very next frame
                # on this link: wait for it off the in-order reader, or we would block it.
                self._spawn(self._received_put(peer, command.job))
            else:
                await self._received_put(peer, command.job)
        elif isinstance(command, Update):
            await self._received_update(peer, command.job)
        elif isinstance(command, Delete):
            await self._received_delete(peer, command.job)
        elif isinstance(command, Register):
            self._peer_types[peer] = command.agent
            log.info("%s: %s registered as %s", self.name, peer, command.agent.value)
            async with self._registrations:
                self._registrations.notify_all()
        elif isinstance(command, Sync):
            await self._received_sync(peer, command.jobs)
        elif isinstance(command, HealthCheck):
            self._spawn(self.control.received_health_check(peer, command))
        elif isinstance(command, HealthResponse):
            self.control.received_health_response(peer, command)
        elif isinstance(command, Notify):
            await self._received_notify(peer, command.notification)
        elif isinstance(command, DiagnosticsRequest):
            await self.control.received_diagnostics_request(peer, command)
        elif isinstance(command, DiagnosticsResponse):
            await self.control.received_diagnostics_response(peer, command)
        elif isinstance(command, Restart):
            self._spawn(self.control.received_restart(peer, command))
        elif isinstance(command, ErrorCommand):
            log.warning("%s: %s reported an error: %s", self.name, peer, command.error)

    async def _received_put(self, peer: PeerId, job: Job) -> None:
        if job.is_expired(self.clock()):
            return
        sender = self.peer_info(peer)
        self._trace(Action.RECEIVED, job, peer)
        position = job.destination.position(self.name, peer.name)
        if position in (Position.DOWNSTREAM, Position.DESTINATION):
            reason = await self._refusal(sender, job)
            if reason is not None:
                self._trace(Action.REFUSED, job, peer, reason)
                log.warning("%s: refused %s from %s: %s", self.name, job, peer, reason)
                await self._fail_back(peer, job, reason)
                return
        if position is Position.DOWNSTREAM:
            self._record(peer, job)
            next_name = job.destination.next(self.name)
            assert next_name is not None
            try:
                await self._put(self.peer_named(next_name, peer.zone), job)
            except JobRefused as exc:
                await self._fail_back(peer, job, str(exc))
        elif position is Position.DESTINATION:
            result = self._record(peer, job)
            if result.outcome is AddOutcome.DUPLICATE:
                self._trace(Action.DUPLICATE, result.stored, peer, result.stored.result or "")
                await self._send_job(peer, Update(result.stored))
            elif result.should_send and not (
                result.stored.is_finished or result.stored.is_duplicate
            ):
                self._start_execution(sender, result.stored)
        else:
            reason = (
                "Job has got into an unknown position"
                if position is Position.UPSTREAM
                else "Job has got into an errored position"
            )
            self._trace(Action.REFUSED, job, peer, reason)
            await self._fail_back(peer, job, reason)

    async def _refusal(self, sender: PeerInfo, job: Job) -> str | None:
        if sender.agent_type is None and sender.link is Link.DOWN:
            # A Put can overtake the peer's Register; give it a moment to arrive.
            try:
                async with asyncio.timeout(REGISTER_WAIT), self._registrations:
                    await self._registrations.wait_for(lambda: sender.peer in self._peer_types)
            except TimeoutError:
                pass
            sender = self.peer_info(sender.peer)
        return refusal(self.agent_type, sender.link, sender.agent_type, job.instruction.keyword)

    async def _fail_back(self, peer: PeerId, job: Job, reason: str) -> None:
        now = self.clock()
        if job.is_created:
            job = job.pending(now=now)
        await self._update(peer, job.errored(reason, now=now))

    async def _received_update(self, peer: PeerId, job: Job) -> None:
        if job.is_expired(self.clock()):
            return
        if self.board(peer).get(job.id) is None:
            # We never sent this job to that peer: nothing to update, nothing to pass on.
            log.warning("%s: ignored an update from %s for unknown job %s", self.name, peer, job.id)
            return
        result = self._record(peer, job)
        if not result.should_send:
            return
        position = job.destination.position(self.name, peer.name)
        if position is Position.UPSTREAM:
            previous = job.destination.previous(self.name)
            if previous is None:
                self._trace(
                    Action.FINISHED if job.is_finished else Action.RECEIVED,
                    job,
                    peer,
                    _outcome(job),
                )
                return
            await self._update(self.peer_named(previous, peer.zone), result.stored)
            self._trace(Action.RETURNED, result.stored, peer, _outcome(result.stored))
        elif position is Position.DOWNSTREAM:
            next_name = job.destination.next(self.name)
            if next_name is not None:
                await self._update(self.peer_named(next_name, peer.zone), result.stored)

    async def _received_delete(self, peer: PeerId, job: Job) -> None:
        removed = self.board(peer).remove(job, self.clock())
        if self.store is not None:
            self.store.delete(str(peer), job.id)
        self._wake(list(removed.woken))
        position = job.destination.position(self.name, peer.name)
        onward = {
            Position.DOWNSTREAM: job.destination.next(self.name),
            Position.UPSTREAM: job.destination.previous(self.name),
        }.get(position)
        if onward is not None:
            target = self.peer_named(onward, peer.zone)
            self.board(target).remove(job, self.clock())
            await self._send_job(target, Delete(job))

    async def _received_sync(self, peer: PeerId, jobs: tuple[Job, ...]) -> None:
        for decision in self.board(peer).sync_actions(jobs, self.name, peer.name, self.clock()):
            if decision.action is SyncAction.UPDATE:
                if self.board(peer).get(decision.job.id) is None:
                    continue
                await self._received_update(peer, decision.job)
            elif decision.action is SyncAction.PUT:
                await self._received_put(peer, decision.job)

    async def _received_notify(self, peer: PeerId, notification: Notification) -> None:
        position = notification.destination.position(self.name, peer.name)
        if position is Position.DESTINATION:
            if self._notify_handler is not None:
                await self._notify_handler(self.peer_info(peer), notification)
        elif position is Position.DOWNSTREAM:
            next_name = notification.destination.next(self.name)
            assert next_name is not None
            await self.send_control(self.peer_named(next_name, peer.zone), Notify(notification))

    async def notify(self, notification: Notification) -> None:
        """Send a fire-and-forget notification along its destination (first hop = us)."""
        next_name = notification.destination.next(self.name)
        if notification.destination.agents[0] != self.name or next_name is None:
            raise JobRefused(f"a notification sent by {self.name} must start at {self.name}")
        await self.send_control(self.peer_named(next_name, None), Notify(notification))

    # --- execution ---------------------------------------------------------------------

    def _start_execution(self, sender: PeerInfo, job: Job) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(self._execute(sender, job))
        self._executions[job.id] = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda _: self._executions.pop(job.id, None))

    async def _execute(self, sender: PeerInfo, job: Job) -> None:
        peer = sender.peer
        if self.store is not None:
            execution = self.store.execution(job.id)
            if execution is not None and execution.result is not None:
                # Finished before a crash: answer from the record, never run it twice.
                await self._update(peer, execution.result)
                return
            self.store.mark_started(job.id, self.clock())
        keyword = job.instruction.keyword
        handler = self._handlers.get(keyword)
        async with self._workers:
            self._running += 1
            CURRENT_JOB.set(self._trace(Action.STARTED, job, peer))
            try:
                if handler is None:
                    raise JobRefused(f"No default runner for job: {job}")
                value = await handler(Envelope(self.name, sender, job))
                if isinstance(value, Job) and value.is_finished:
                    # A sub-job's outcome passed through unchanged (result and its type).
                    finished = job.copy_result_from(value, now=self.clock())
                else:
                    finished = job.complete_with(value, now=self.clock())
            except asyncio.CancelledError:
                raise
            except (JobRefused, JobFailed, GrammarError) as exc:
                finished = job.errored(str(exc), now=self.clock())
            except Exception as exc:
                log.exception("%s: handler for %s failed", self.name, keyword)
                finished = job.errored(f"{type(exc).__name__}: {exc}", now=self.clock())
            finally:
                self._running -= 1
        if self.store is not None:
            self.store.mark_finished(job.id, self.clock(), finished)
        self._trace(Action.FINISHED, finished, peer, _outcome(finished))
        await self._update(peer, finished)

    def _resume(self) -> None:
        """After a restart, run again every job that was ours to run and is unfinished."""
        for peer, board in self._boards.items():
            for job in board.jobs():
                if job.is_finished or job.is_duplicate or job.is_expired(self.clock()):
                    continue
                if job.destination.position(self.name, peer.name) is not Position.DESTINATION:
                    continue
                self._trace(Action.RESUMED, job, peer)
                self._start_execution(self.peer_info(peer), job)

    def _load_boards(self) -> None:
        if self.store is None:
            return
        for peer_text, jobs in self.store.load_all().items():
            name, _, zone = peer_text.partition("@")
            self._boards[PeerId(name, zone)] = Board(peer_text, jobs)

    # --- connections ---------------------------------------------------------------------

    async def _on_connected(self, peer: PeerId) -> None:
        await self.send_control(peer, Register(self.agent_type))
        await self.send_control(peer, Sync(self.board(peer).sync_state()))
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
                    self._record(peer, command.job)
                try:
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
            self.sweep()

    def sweep(self) -> list[Job]:
        """Remove expired jobs from every board now, waking their waiters."""
        swept: list[Job] = []
        now = self.clock()
        for peer, board in self._boards.items():
            gone = board.sweep_expired(now)
            for job in gone:
                self._trace(Action.EXPIRED, job, peer, _outcome(job))
                if self.store is not None:
                    self.store.delete(str(peer), job.id)
                if not job.is_expired(now):
                    # A live duplicate of an expired original: its sender awaits an answer.
                    self._spawn(self._answer_duplicate(peer, job))
            swept.extend(gone)
        self._wake(swept)
        return swept

    # --- tracing -------------------------------------------------------------------------

    def _trace(self, action: Action, job: Job, peer: PeerId, detail: str = "") -> TraceEvent:
        event = TraceEvent(
            time=self.clock(),
            agent=self.name,
            action=action,
            job_id=str(job.id),
            instruction=str(job.instruction),
            path=str(job.destination),
            peer=str(peer),
            state=job.state.value,
            detail=detail,
        )
        log.debug("%s", event)
        self.recent_events.append(event)
        for sink in self._trace_sinks:
            try:
                sink(event)
            except Exception:
                log.exception("%s: trace sink failed", self.name)
        return event


def _outcome(job: Job) -> str:
    if job.is_error:
        return job.error_message or "error"
    return job.result_type or job.state.value
