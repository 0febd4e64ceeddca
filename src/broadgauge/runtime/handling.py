"""What an agent does with each command it receives, and how it runs the jobs it owns.

This is the routing of notes §3.7, one method per command:

* **Put**: from above and downstream of us, pass the job to the next agent; addressed to us,
  run the handler for its instruction (:meth:`Inbound.execute`); from the wrong side,
  refuse it (:mod:`broadgauge.jobs.directions`).
* **Update**: store it and pass it back up towards whoever started the job.
* **Delete**: remove it and pass it on.  **Sync**: reconcile a neighbour's board with ours.
* **Notify**: deliver it here, or pass it one hop on.

An :class:`Inbound` belongs to one :class:`~broadgauge.runtime.agent.Agent` and works on its
boards and links.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

from broadgauge.grammar import GrammarError, Position
from broadgauge.jobs import commands
from broadgauge.jobs.board import AddOutcome, SyncAction
from broadgauge.jobs.directions import Link, refusal
from broadgauge.jobs.errors import ExpiredError, InvalidStateError, ProtocolError, StoreError
from broadgauge.jobs.job import Job
from broadgauge.jobs.notification import Notification
from broadgauge.runtime.audit import CURRENT_JOB
from broadgauge.runtime.commits import reading_a_link
from broadgauge.runtime.context import JobsContext
from broadgauge.runtime.control import RESTARTING_MESSAGE
from broadgauge.runtime.envelope import Envelope, JobFailed, JobRefused, PeerInfo, Typed
from broadgauge.runtime.logs import PARENT_JOB
from broadgauge.runtime.store import Execution
from broadgauge.runtime.trace import Action
from broadgauge.wire import Message, PeerId

log = logging.getLogger("broadgauge.jobs")

#: How long a Put from an unregistered neighbour waits for that neighbour's Register.
REGISTER_WAIT = 5.0
#: How soon, and at most how often, a job the store refused is offered to it again.
RECORD_RETRY_FIRST = 0.2
RECORD_RETRY_MAX = 10.0
#: Why a job was not taken on or run (after the agent's name): its audit log failed.
UNAUDITED = "could not write its audit log, so it did not take the job on"
#: Why a job that ran is reported as an error: its end could not be audited.
UNAUDITED_END = (
    "ran the job but could not write its end to its audit log; its effect may stand: "
    "send it again once the log can be written"
)
#: Why a job that ran is reported as an error: its result could not be stored.
UNRECORDED_END = (
    "ran the job but could not record its result; its effect may stand: send it again "
    "once its store can be written"
)


#: The commands whose sends wait for their commit off the link's reader.
JOB_COMMANDS = (commands.Put, commands.Update, commands.Delete)


class Inbound:
    """The receiving half of an :class:`~broadgauge.runtime.agent.Agent`."""

    def __init__(self, agent: JobsContext, max_workers: int = 64) -> None:
        self.agent = agent
        #: Handlers running now, by job id (a soft restart cancels them).
        self.executions: dict[uuid.UUID, asyncio.Task[None]] = {}
        self.running = 0
        #: How many handlers may run at once (the health-check port reports it).
        self.max_workers = max_workers
        self._workers = asyncio.Semaphore(max_workers)

    # --- incoming traffic --------------------------------------------------------------

    async def on_message(self, message: Message) -> None:
        """Handle one message, on its link's reader, which reads the next frame after this.

        A ``Put``, ``Update`` or ``Delete`` is handled with the reader marked as such
        (:func:`~.commits.reading_a_link`): what it sends on waits for the commit of its
        changes off the reader, so the reader goes on to the next frame at once.
        """
        peer = message.peer
        try:
            command = commands.decode_command(message.payload)
        except ProtocolError as exc:
            log.warning("%s: unreadable command from %s: %s", self.agent.name, peer, exc)
            return
        if isinstance(command, JOB_COMMANDS):
            with reading_a_link():
                await self._handle(peer, command)
        else:
            await self._handle(peer, command)

    async def _handle(self, peer: PeerId, command: commands.WireCommand) -> None:
        try:
            await self._dispatch(peer, command)
        except ExpiredError:
            log.debug("%s: dropped an expired job from %s", self.agent.name, peer)
        except (JobRefused, StoreError) as exc:
            # An update or notification naming a hop we do not know, or one our store would
            # not take (the board is as it was): drop it, say why.
            log.warning(
                "%s: dropped %s from %s: %s", self.agent.name, type(command).__name__, peer, exc
            )

    async def _dispatch(self, peer: PeerId, command: commands.WireCommand) -> None:
        if self.agent.control.restarting and isinstance(command, commands.Put | commands.Update):
            await self._fail_back(peer, command.job, RESTARTING_MESSAGE)
            return
        if isinstance(command, commands.Put):
            if peer not in self.agent.peer_types and self.agent.peer_info(peer).link is Link.DOWN:
                # Judging it needs the sender's Register, which may be the very next frame
                # on this link: wait for it off the in-order reader, or we would block it.
                self.agent.spawn(self._received_put(peer, command.job))
            else:
                await self._received_put(peer, command.job)
        elif isinstance(command, commands.Update):
            await self._received_update(peer, command.job)
        elif isinstance(command, commands.Delete):
            await self._received_delete(peer, command.job)
        elif isinstance(command, commands.Register):
            self.agent.peer_types[peer] = command.agent
            log.info("%s: %s registered as %s", self.agent.name, peer, command.agent.value)
            async with self.agent.registrations:
                self.agent.registrations.notify_all()
        elif isinstance(command, commands.Sync):
            await self._received_sync(peer, command.jobs)
        elif isinstance(command, commands.HealthCheck):
            self.agent.spawn(self.agent.control.received_health_check(peer, command))
        elif isinstance(command, commands.HealthResponse):
            self.agent.control.received_health_response(peer, command)
        elif isinstance(command, commands.Notify):
            await self._received_notify(peer, command.notification)
        elif isinstance(command, commands.DiagnosticsRequest):
            await self.agent.control.received_diagnostics_request(peer, command)
        elif isinstance(command, commands.DiagnosticsResponse):
            await self.agent.control.received_diagnostics_response(peer, command)
        elif isinstance(command, commands.Restart):
            self.agent.spawn(self.agent.control.received_restart(peer, command))
        elif isinstance(command, commands.PlannerRulesRequest):
            self.agent.spawn(self.agent.planner_rules.received_request(peer, command))
        elif isinstance(command, commands.PlannerRulesResponse):
            self.agent.planner_rules.received_response(peer, command)
        elif isinstance(command, commands.ErrorCommand):
            log.warning("%s: %s reported an error: %s", self.agent.name, peer, command.error)

    async def _received_put(self, peer: PeerId, job: Job) -> None:
        try:
            await self._route_put(peer, job)
        except StoreError as exc:
            log.warning("%s: refused %s from %s: %s", self.agent.name, job, peer, exc)
            await self._refuse_unrecorded(peer, job)

    async def _refuse_unrecorded(self, peer: PeerId, job: Job, reason: str = "") -> None:
        """Fail back a job our store (or audit log) would not take, so its sender is not
        left waiting."""
        reason = reason or f"{self.agent.name} could not record the job"
        self.agent.trace(Action.REFUSED, job, peer, reason)
        now = self.agent.clock()
        try:
            errored = (job.pending(now=now) if job.is_created else job).errored(reason, now=now)
        except InvalidStateError:
            return  # finished already: nothing to refuse
        try:
            await self.agent.update(peer, errored)
        except StoreError:
            # The store refuses the refusal too.  Say it unrecorded: the sender's board holds
            # the job, and its next Sync brings the error back to ours.
            await self.agent.send_control(peer, commands.Update(errored))
            if self.agent.board(peer).get(job.id) is not None:
                self.agent.spawn(self._record_later(peer, errored))

    async def _record_later(self, peer: PeerId, job: Job) -> None:
        """Record ``job``, finished and already told to ``peer`` unrecorded, on ``peer``'s
        board once the store takes it (a full disk freed, say).

        Until then our copy is still Pending, and a job sent again with the same
        instruction would only wait on it as its duplicate until it expired.
        """
        delay = RECORD_RETRY_FIRST
        while not job.is_expired(self.agent.clock()):
            await asyncio.sleep(delay)
            try:
                self.agent.record(peer, job)
            except StoreError:
                delay = min(delay * 2, RECORD_RETRY_MAX)
                continue
            except ExpiredError:
                return
            log.info("%s: recorded %s on the board of %s at last", self.agent.name, job, peer)
            return

    async def _route_put(self, peer: PeerId, job: Job) -> None:
        now = self.agent.clock()
        if job.is_expired(now):
            await self._refuse_expired(peer, job, now)
            return
        sender = self.agent.peer_info(peer)
        try:
            # Nothing is taken on that the audit log does not hold (a full disk, say).
            self.agent.trace(Action.RECEIVED, job, peer, kept=True)
        except Exception as exc:
            log.error(
                "%s: refused %s from %s: the audit log could not record it: %s",
                self.agent.name, job, peer, exc,
            )  # fmt: skip
            await self._refuse_unrecorded(peer, job, f"{self.agent.name} {UNAUDITED}")
            return
        position = job.destination.position(self.agent.name, peer.name)
        if position in (Position.DOWNSTREAM, Position.DESTINATION):
            reason = await self._refusal(sender, job)
            if reason is not None:
                self.agent.trace(Action.REFUSED, job, peer, reason)
                log.warning("%s: refused %s from %s: %s", self.agent.name, job, peer, reason)
                await self._fail_back(peer, job, reason)
                return
        if position is Position.DOWNSTREAM:
            self.agent.record(peer, job)
            next_name = job.destination.next(self.agent.name)
            assert next_name is not None
            try:
                await self.agent.put(self.agent.peer_named(next_name, peer.zone), job)
            except JobRefused as exc:
                await self._fail_back(peer, job, str(exc))
        elif position is Position.DESTINATION:
            result = self.agent.record(peer, job)
            if result.outcome is AddOutcome.DUPLICATE:
                self.agent.trace(Action.DUPLICATE, result.stored, peer, result.stored.result or "")
                await self.agent.send_job(peer, commands.Update(result.stored))
            elif result.should_send and not (
                result.stored.is_finished or result.stored.is_duplicate
            ):
                self.start_execution(sender, result.stored)
        else:
            reason = (
                "Job has got into an unknown position"
                if position is Position.UPSTREAM
                else "Job has got into an errored position"
            )
            self.agent.trace(Action.REFUSED, job, peer, reason)
            await self._fail_back(peer, job, reason)

    async def _refuse_expired(self, peer: PeerId, job: Job, now: float) -> None:
        """Answer a Put whose job had expired, by our clock, before it reached us.

        OpenPortal drops it without a word.  If the sender's clock agrees with ours, the job
        has expired there too and the sender drops this answer as it drops any expired job;
        but if our clock is ahead of the clock that stamped the job, the sender is still
        waiting for it, and this answer is how it learns why nothing will run.  The job is
        not recorded: our board refuses expired jobs, and there is nothing to run.
        """
        name = self.agent.name
        creator = job.destination.agents[0]
        age = int(now - job.created)  # job times are whole seconds
        reason = (
            f"{name} refused the job: by {name}'s clock it expired {int(now - job.expires)} s "
            f"ago, {age} s after {creator} created it to live {job.expires - job.created} s. "
            f"If it was sent just now, {name}'s clock is about {age} s ahead of {creator}'s: "
            "keep every agent's clock in step (NTP)"
        )
        log.warning("%s: refused %s from %s: %s", name, job, peer, reason)
        self.agent.trace(Action.REFUSED, job, peer, reason)
        try:
            refused = (job.pending(now=now) if job.is_created else job).errored(reason, now=now)
        except InvalidStateError:
            return  # finished already: there is nothing to answer
        await self.agent.send_control(peer, commands.Update(refused))

    async def _refusal(self, sender: PeerInfo, job: Job) -> str | None:
        if sender.agent_type is None and sender.link is Link.DOWN:
            # A Put can overtake the peer's Register; give it a moment to arrive.
            try:
                async with asyncio.timeout(REGISTER_WAIT), self.agent.registrations:
                    await self.agent.registrations.wait_for(
                        lambda: sender.peer in self.agent.peer_types
                    )
            except TimeoutError:
                pass
            sender = self.agent.peer_info(sender.peer)
        return refusal(
            self.agent.agent_type, sender.link, sender.agent_type, job.instruction.keyword
        )

    async def _fail_back(self, peer: PeerId, job: Job, reason: str) -> None:
        now = self.agent.clock()
        if job.is_created:
            job = job.pending(now=now)
        await self.agent.update(peer, job.errored(reason, now=now))

    async def _received_update(self, peer: PeerId, job: Job) -> None:
        if job.is_expired(self.agent.clock()):
            return
        if self.agent.board(peer).get(job.id) is None:
            # We never sent this job to that peer: nothing to update, nothing to pass on.
            log.warning(
                "%s: ignored an update from %s for unknown job %s", self.agent.name, peer, job.id
            )
            return
        result = self.agent.record(peer, job)
        if not result.should_send:
            return
        position = job.destination.position(self.agent.name, peer.name)
        if position is Position.UPSTREAM:
            previous = job.destination.previous(self.agent.name)
            if previous is None:
                self.agent.trace(
                    Action.FINISHED if job.is_finished else Action.RECEIVED,
                    job,
                    peer,
                    _outcome(job),
                )
                return
            await self.agent.update(self.agent.peer_named(previous, peer.zone), result.stored)
            self.agent.trace(Action.RETURNED, result.stored, peer, _outcome(result.stored))
        elif position is Position.DOWNSTREAM:
            next_name = job.destination.next(self.agent.name)
            if next_name is not None:
                await self.agent.update(self.agent.peer_named(next_name, peer.zone), result.stored)

    async def _received_delete(self, peer: PeerId, job: Job) -> None:
        removed = self.agent.remove(peer, job)
        self.agent.wake(list(removed.woken))
        position = job.destination.position(self.agent.name, peer.name)
        onward = {
            Position.DOWNSTREAM: job.destination.next(self.agent.name),
            Position.UPSTREAM: job.destination.previous(self.agent.name),
        }.get(position)
        if onward is not None:
            target = self.agent.peer_named(onward, peer.zone)
            self.agent.remove(target, job)
            await self.agent.send_job(target, commands.Delete(job))

    async def _received_sync(self, peer: PeerId, jobs: tuple[Job, ...]) -> None:
        for decision in self.agent.board(peer).sync_actions(
            jobs, self.agent.name, peer.name, self.agent.clock()
        ):
            try:
                if decision.action is SyncAction.UPDATE:
                    if self.agent.board(peer).get(decision.job.id) is None:
                        continue
                    await self._received_update(peer, decision.job)
                elif decision.action is SyncAction.PUT:
                    await self._received_put(peer, decision.job)
            except (StoreError, JobRefused, ExpiredError) as exc:
                # One job the store or the routing refuses must not cost the rest of the Sync.
                log.warning(
                    "%s: skipped %s of the Sync from %s: %s",
                    self.agent.name,
                    decision.job,
                    peer,
                    exc,
                )

    async def _received_notify(self, peer: PeerId, notification: Notification) -> None:
        position = notification.destination.position(self.agent.name, peer.name)
        if position is Position.DESTINATION:
            if self.agent.notify_handler is not None:
                await self.agent.notify_handler(self.agent.peer_info(peer), notification)
        elif position is Position.DOWNSTREAM:
            next_name = notification.destination.next(self.agent.name)
            assert next_name is not None
            await self.agent.send_control(
                self.agent.peer_named(next_name, peer.zone), commands.Notify(notification)
            )

    # --- execution ---------------------------------------------------------------------

    def start_execution(self, sender: PeerInfo, job: Job) -> None:
        """Run ``job`` in a task of its own.

        The start of its run is marked in the store at once, so that the mark joins the
        batch of the change that has just put the job on the board: one commit makes both
        durable before the handler runs.
        """
        start = self._mark_start(job)
        task: asyncio.Task[None] = asyncio.ensure_future(
            self.execute(sender, job, start, self.agent.commit_ticket())
        )
        self.executions[job.id] = task
        self.agent.track(task)
        task.add_done_callback(lambda _: self.executions.pop(job.id, None))

    def _mark_start(self, job: Job) -> Execution | Exception | None:
        """Mark in the store that ``job`` is about to run: ``None`` if it is its first start
        (or there is no store), the marker of an earlier start, or why it could not be
        marked."""
        store = self.agent.store
        if store is None:
            return None
        try:
            first = store.mark_started(job.id, self.agent.clock())
            return None if first else store.execution(job.id)
        except Exception as exc:
            return exc

    async def execute(
        self,
        sender: PeerInfo,
        job: Job,
        start: Execution | Exception | None,
        ticket: int | None,
    ) -> None:
        """Run ``job``, addressed to us, and send the finished job back to ``sender``.

        ``start`` is what :meth:`_mark_start` made of marking its start, and ``ticket`` the
        commit batch holding that mark.  The job and the start of its run are committed to
        the store, and the start is in the audit log, before its handler runs; its end is
        in the audit log before the result goes back.  A job whose start cannot be recorded
        (a full disk, say) is not run, and one whose end cannot be is reported as an error
        that says so, never as done.
        """
        peer = sender.peer
        name = self.agent.name
        if self.agent.store is not None:
            try:
                if isinstance(start, Exception):
                    raise start
                await self.agent.durable(ticket)  # the job and its start are on disk
            except Exception as exc:
                log.error("%s: did not run %s: could not record its start: %s", name, job, exc)
                await self._refuse_unrecorded(peer, job)
                return
            if start is not None and start.result is not None:
                # Finished before a crash: answer from the record, never run it twice.
                await self.agent.update(peer, start.result)
                return
        keyword = job.instruction.keyword
        ran = False
        async with self._workers:
            self.running += 1
            started = time.perf_counter()
            CURRENT_JOB.set(self.agent.job_context(job, peer))
            PARENT_JOB.set(job.id_text)
            try:
                self.agent.trace(Action.STARTED, job, peer, kept=True)
            except Exception as exc:
                log.error(
                    "%s: did not run %s: the audit log could not record it: %s", name, job, exc
                )
                finished = job.errored(f"{name} {UNAUDITED}", now=self.agent.clock())
            else:
                ran = True
                finished = await self._run_handler(sender, job)
            finally:
                self.running -= 1
        if self.agent.metrics is not None:
            self.agent.metrics.executed(keyword, finished, time.perf_counter() - started)
        await self._mark_finished(job, finished)
        try:
            self.agent.trace(Action.FINISHED, finished, peer, _outcome(finished), kept=ran)
        except Exception as exc:
            log.error("%s: ran %s, but the audit log could not record its end: %s", name, job, exc)
            finished = job.errored(f"{name} {UNAUDITED_END}", now=self.agent.clock())
            await self._mark_finished(job, finished)
            self.agent.trace(Action.FINISHED, finished, peer, _outcome(finished))
        try:
            await self.agent.update(peer, finished)
        except StoreError as exc:
            # Never "done" without the board holding it; but the sender must not wait for
            # the expiry either (a job sent again meanwhile would only be its duplicate).
            # Our board still holds the job unfinished, until the cleaner or a Sync.
            log.error("%s: could not return %s: %s", name, job, exc)
            errored = job.errored(f"{name} {UNRECORDED_END}", now=self.agent.clock())
            await self._mark_finished(job, errored)  # what we answer a copy with, too
            await self.agent.send_control(peer, commands.Update(errored))
            self.agent.spawn(self._record_later(peer, errored))

    async def _mark_finished(self, job: Job, finished: Job) -> None:
        """Store the end of ``job``'s run, committed before it is audited or sent back (a
        failure is logged: the result still goes back).

        So an audit line saying a job finished means its result is stored: after a crash
        the job is answered from the record, never run again.
        """
        if self.agent.store is None:
            return
        try:
            self.agent.store.mark_finished(job.id, self.agent.clock(), finished)
            await self.agent.durable()
        except Exception as exc:
            # Without the marker a job sent again is run again, which idempotent handlers
            # absorb; holding the result back would not undo the run.
            log.error("%s: could not record the end of %s: %s", self.agent.name, job, exc)

    async def _run_handler(self, sender: PeerInfo, job: Job) -> Job:
        """Run the handler for ``job``'s instruction; the finished job, complete or errored."""
        keyword = job.instruction.keyword
        handler = self.agent.handlers.get(keyword)
        try:
            if handler is None:
                raise JobRefused(f"No default runner for job: {job}")
            value = await handler(Envelope(self.agent.name, sender, job))
            if isinstance(value, Job) and value.is_finished:
                # A sub-job's outcome passed through unchanged (result and its type).
                return job.copy_result_from(value, now=self.agent.clock())
            if isinstance(value, Typed):
                return job.complete_with(
                    value.value, now=self.agent.clock(), result_type=value.result_type
                )
            return job.complete_with(value, now=self.agent.clock())
        except asyncio.CancelledError:
            raise
        except (JobRefused, JobFailed, GrammarError) as exc:
            return job.errored(str(exc), now=self.agent.clock())
        except Exception as exc:
            log.exception("%s: handler for %s failed", self.agent.name, keyword)
            return job.errored(f"{type(exc).__name__}: {exc}", now=self.agent.clock())

    def resume(self) -> None:
        """After a restart, finish what a crash interrupted, from the boards on disk.

        * A job addressed to us and unfinished is run again (handlers are idempotent),
          once its sender has re-registered: the direction rules need its type.
        * A job we route that never left (killed between recording it on the sender's
          board and the next one's) is passed on; a result that came back but never
          went up is passed up.  Both are idempotent for the neighbours' boards.
        """
        agent = self.agent
        now = agent.clock()
        for peer, board in agent.boards_by_peer():
            for job in board.jobs():
                if job.is_duplicate or job.is_expired(now):
                    continue
                position = job.destination.position(agent.name, peer.name)
                if position is Position.DESTINATION and not job.is_finished:
                    agent.trace(Action.RESUMED, job, peer)
                    agent.spawn(self._resume_execution(peer, job))
                elif position is Position.DOWNSTREAM and not job.is_finished:
                    agent.spawn(self._resume_forward(peer, job))
                elif position is Position.UPSTREAM and job.is_finished:
                    agent.spawn(self._resume_return(peer, job))

    async def _resume_execution(self, peer: PeerId, job: Job) -> None:
        agent = self.agent
        try:
            async with (
                asyncio.timeout(max(0.0, job.expires - agent.clock())),
                agent.registrations,
            ):
                await agent.registrations.wait_for(lambda: peer in agent.peer_types)
        except TimeoutError:
            return  # expired before its sender came back; the cleaner reports it
        self.start_execution(agent.peer_info(peer), job)

    def _neighbour(self, name: str | None, peer: PeerId, job: Job) -> PeerId | None:
        """The neighbour ``name`` in ``peer``'s zone, or None (logged) if there is none."""
        if name is None:
            return None
        try:
            return self.agent.peer_named(name, peer.zone)
        except JobRefused as exc:
            log.warning("%s: cannot resume %s: %s", self.agent.name, job, exc)
            return None

    async def _resume_forward(self, peer: PeerId, job: Job) -> None:
        onward = self._neighbour(job.destination.next(self.agent.name), peer, job)
        if onward is not None and self.agent.board(onward).get(job.id) is None:
            self.agent.trace(Action.RESUMED, job, onward, "forwarding again after a restart")
            await self.agent.put(onward, job)

    async def _resume_return(self, peer: PeerId, job: Job) -> None:
        back = self._neighbour(job.destination.previous(self.agent.name), peer, job)
        if back is None:
            return
        held = self.agent.board(back).get(job.id)
        if held is not None and not held.is_finished:
            self.agent.trace(Action.RESUMED, job, back, "returning a result after a restart")
            await self.agent.update(back, job)


def _outcome(job: Job) -> str:
    if job.is_error:
        return job.error_message or "error"
    return job.result_type or job.state.value
