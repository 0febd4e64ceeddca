"""A pure, per-peer job board (templemeads ``board.rs``, notes §3.4-3.5).

Each agent keeps one board per peer link; both ends of a link hold mirror
copies of the jobs that crossed it.  This class holds the jobs, the
duplicate bookkeeping and the queue of commands that could not be sent, and
*decides*; it never sends, sleeps or wakes anyone.  Every mutating call returns
the jobs whose waiters the async runtime must wake, and :meth:`Board.sync_actions`
returns what to do with a received ``Sync``.  Adding and sweeping also come in two halves,
a pure plan and its application (:meth:`Board.plan_add` / :meth:`Board.apply`,
:meth:`Board.plan_sweep` / :meth:`Board.remove_swept`), so a runtime with a durable store
changes a board only once the store has accepted the change.

Deliberate differences from Rust, none visible on the wire:

* Iteration is in insertion order, so the "original" picked for a duplicate,
  and the order of swept jobs, are deterministic (Rust iterates a ``HashMap``).
* Versions saturate at ``u64::MAX`` instead of wrapping.
* A duplicate of an expired original that is itself expired is reported once,
  as ``Job expired`` (Rust may wake its waiters twice, once unchanged).
"""

from __future__ import annotations

import dataclasses
import enum
import math
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from broadgauge.grammar import Position

from .commands import JobCommand
from .errors import ExpiredError, InvalidStateError
from .job import VERSION_MAX, Job, whole_seconds

__all__ = [
    "MAX_DUPLICATES",
    "MAX_ORIGINAL_AGE_MINUTES",
    "AddOutcome",
    "AddResult",
    "Board",
    "BoardChange",
    "BoardStats",
    "RemoveResult",
    "SyncAction",
    "SyncDecision",
]

#: A new job is not made a duplicate of an original older than this many whole
#: minutes (Rust: ``age.num_minutes() > 10``) ...
MAX_ORIGINAL_AGE_MINUTES: Final = 10
#: ... nor of an original that already has this many duplicates (``>= 100``).
MAX_DUPLICATES: Final = 100

#: A board that held at least this many jobs is compacted once a sweep leaves a quarter.
COMPACT_FROM: Final = 1024

EXPIRED_MESSAGE: Final = "Job expired"
ORIGINAL_EXPIRED_MESSAGE: Final = "Original job expired"
REMOVED_MESSAGE: Final = "Job removed from board"
COPY_FAILED_MESSAGE: Final = "Failed to copy result from original job"


class AddOutcome(enum.Enum):
    """What :meth:`Board.add` did (Rust ``JobAddState``)."""

    ADDED = "Added"
    UPDATED = "Updated"
    UNCHANGED = "Unchanged"
    DUPLICATE = "Duplicated"


@dataclass(frozen=True, slots=True)
class BoardChange:
    """What one :meth:`Board.add` does to a board, worked out before it is done.

    ``jobs`` are written (replacing any copy with the same id), in order; ``link`` records
    ``(original, duplicate)``; ``settled`` is an original whose duplicates have copied its
    result, so its duplicate list is dropped.  ``generation`` is the board's change count
    when this was worked out: applying it to a board changed since is refused.
    """

    jobs: tuple[Job, ...] = ()
    link: tuple[uuid.UUID, uuid.UUID] | None = None
    settled: uuid.UUID | None = None
    generation: int = -1


_NO_CHANGE: Final = BoardChange()


@dataclass(frozen=True, slots=True)
class AddResult:
    """Result of :meth:`Board.add` (or of :meth:`Board.plan_add`, not yet applied).

    ``job`` is what Rust's ``add`` returns: the stored job, except for
    UNCHANGED where it is the *incoming* job (``stored`` then holds the board's
    copy).  ``finished`` lists jobs that became finished on this board by this
    call (the job itself and any duplicates that copied its result): wake
    their waiters.  ``change`` is what the call does to the board: its ``jobs``
    are exactly what a durable store must hold for the board to match it.
    """

    outcome: AddOutcome
    job: Job
    stored: Job
    finished: tuple[Job, ...] = ()
    change: BoardChange = dataclasses.field(default=_NO_CHANGE, repr=False, compare=False)

    @property
    def should_send(self) -> bool:
        """Whether ``put``/``update`` forward the job (Rust skips Unchanged/Duplicated)."""
        return self.outcome in (AddOutcome.ADDED, AddOutcome.UPDATED)


@dataclass(frozen=True, slots=True)
class RemoveResult:
    """Result of :meth:`Board.remove`: whether it was on the board, and whom to wake."""

    removed: bool
    woken: tuple[Job, ...] = ()


class SyncAction(enum.Enum):
    """How to treat one job of a received ``Sync``."""

    UPDATE = "Update"  #: process as an ``Update`` received from the peer
    PUT = "Put"  #: process as a ``Put`` received from the peer (may re-run it)
    IGNORE = "Ignore"


@dataclass(frozen=True, slots=True)
class SyncDecision:
    """One decision of :meth:`Board.sync_actions`; ``reason`` explains ignores."""

    action: SyncAction
    job: Job
    reason: str = ""


@dataclass(frozen=True, slots=True)
class BoardStats:
    """Job counts for ``HealthInfo`` (Rust ``BoardJobStats``)."""

    active: int = 0
    pending: int = 0
    running: int = 0
    completed: int = 0
    duplicates: int = 0
    successful: int = 0
    expired: int = 0
    errored: int = 0
    in_flight: int = 0
    queued: int = 0


def _copy_result(duplicate: Job, original: Job, now: float) -> Job:
    """``duplicate`` finished with ``original``'s result (errored if it cannot be copied)."""
    if duplicate.is_finished:
        return duplicate
    try:
        return duplicate.copy_result_from(original, now=now)
    except InvalidStateError:
        return _settle(duplicate, COPY_FAILED_MESSAGE, now)


def _settle(job: Job, message: str, now: float) -> Job:
    """``job.errored(message)`` if the state allows it, else the job unchanged.

    Rust logs the failed transition and carries on with the unchanged job.
    """
    try:
        return job.errored(message, now=now)
    except InvalidStateError:
        return job


class Board:
    """The jobs exchanged with one peer, plus commands queued for it.

    Mutable container of immutable :class:`Job` values.  Not thread-safe: the
    runtime owns one board per peer and serialises access to it.
    """

    def __init__(
        self,
        peer: str,
        jobs: Iterable[Job] = (),
        queued: Iterable[JobCommand] = (),
    ) -> None:
        """A board for ``peer``, optionally restored from stored jobs and queue.

        Restoring performs no duplicate detection; the duplicate links are
        rebuilt from Duplicate jobs whose original is on the board.
        """
        self.peer = peer
        # Counts changes to the jobs, so a change worked out earlier is never applied to a
        # board that has moved on since (see plan_add).
        self._generation = 0
        # The most jobs seen at a sweep since the dicts were last sized (remove_swept).
        self._most = 0
        self._jobs: dict[uuid.UUID, Job] = {}
        # Pending jobs by (last hop, canonical instruction): the only possible originals
        # of a duplicate, so finding one costs a lookup, not a scan of the whole board
        # (which holds every finished job until it expires).  Dicts keep insertion order.
        self._pending: dict[tuple[str, str], dict[uuid.UUID, None]] = {}
        for job in jobs:
            self._put_job(job)
        self._queued: list[JobCommand] = list(queued)
        self._duplicates: dict[uuid.UUID, list[uuid.UUID]] = {}
        restored = sorted(
            (j for j in self._jobs.values() if j.is_duplicate),
            key=lambda j: (j.changed, str(j.id)),
        )
        for job in restored:
            original = job.original_id
            if original is not None and original in self._jobs:
                self._duplicates.setdefault(original, []).append(job.id)

    # ----------------------------------------------------------------- queries

    def __len__(self) -> int:
        return len(self._jobs)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._jobs

    def jobs(self) -> list[Job]:
        """The jobs on the board (not the queued ones), in insertion order."""
        return list(self._jobs.values())

    def get(self, job_id: uuid.UUID) -> Job | None:
        """A job on the board, else the job of a queued command, else ``None``."""
        job = self._jobs.get(job_id)
        if job is not None:
            return job
        for command in self._queued:
            if command.job.id == job_id:
                return command.job
        return None

    def duplicates_of(self, original_id: uuid.UUID) -> tuple[uuid.UUID, ...]:
        """Ids recorded as duplicates of ``original_id`` (removed ones included)."""
        return tuple(self._duplicates.get(original_id, ()))

    def sync_state(self) -> tuple[Job, ...]:
        """The jobs to send in ``Sync`` on (re)connection (board jobs only, as Rust)."""
        return tuple(self._jobs.values())

    def would_be_changed_by(self, job: Job, now: float) -> bool:
        """Not expired, and unknown here or strictly newer than our copy."""
        if job.is_expired(now):
            return False
        stored = self._jobs.get(job.id)
        return stored is None or job.version > stored.version

    def stats(self, me: str, now: float) -> BoardStats:
        """Counts as Rust ``job_stats``: jobs passing through count as in flight."""
        counts = dict.fromkeys(
            ("pending", "running", "completed", "duplicates", "successful", "expired"), 0
        )
        errored = in_flight = 0
        for job in self._jobs.values():
            if me not in (job.destination.first, job.destination.last):
                in_flight += 1
            elif job.is_pending:
                counts["pending"] += 1
            elif job.is_running:
                counts["running"] += 1
            elif job.is_finished:
                counts["completed"] += 1
                if job.is_expired(now):
                    counts["expired"] += 1
                elif job.is_error:
                    errored += 1
                else:
                    counts["successful"] += 1
            elif job.is_duplicate:
                counts["duplicates"] += 1
        return BoardStats(
            active=len(self._jobs),
            errored=errored,
            in_flight=in_flight,
            queued=len(self._queued),
            **counts,
        )

    # ---------------------------------------------------------------- mutation

    def add(self, job: Job, now: float) -> AddResult:
        """Add or replace ``job`` (Rust ``Board::add``): :meth:`plan_add`, then :meth:`apply`.

        Unknown id -> ADDED.  Known id: a greater version replaces (UPDATED);
        otherwise a later ``changed`` replaces and the version is bumped to one
        above the stored version (UPDATED); otherwise UNCHANGED.  So the stored
        version never decreases.  A newly ADDED Pending job may instead become a
        DUPLICATE of a matching Pending job (notes §3.5), or be errored with
        ``TooManyDuplicatesError{...}``.  When a job becomes finished its
        duplicates copy its result.

        Raises :class:`ExpiredError` for an expired job, as Rust refuses them.
        """
        result = self.plan_add(job, now)
        self.apply(result)
        return result

    def plan_add(self, job: Job, now: float) -> AddResult:
        """What :meth:`add` would do, without changing the board.

        A runtime with a durable store saves ``result.change.jobs`` first and applies the
        result only once the store accepted them, so a store that fails leaves the board
        as it was.  Nothing may change the board between this call and :meth:`apply`.
        """
        if job.is_expired(now):
            raise ExpiredError(f"Job {job.id} has expired")
        stored = self._jobs.get(job.id)
        if stored is None:
            outcome = AddOutcome.ADDED
            current = job
        elif job.version > stored.version:
            outcome = AddOutcome.UPDATED
            current = job
        elif job.changed > stored.changed and stored.version < VERSION_MAX:
            # Rust calls increment_version() until the version exceeds the
            # stored one: that lands on stored + 1 with changed = now.
            outcome = AddOutcome.UPDATED
            current = dataclasses.replace(
                job, version=stored.version + 1, changed=whole_seconds(now)
            )
        else:
            return AddResult(AddOutcome.UNCHANGED, job, stored)

        if outcome is AddOutcome.ADDED and current.is_pending:
            # An ADDED job is not on the board yet, so it cannot be its own original.
            duplicated = self._detect_duplicate(current, now)
            if duplicated is not None:
                return duplicated

        if current.is_finished:
            finished = (current, *self._resolve_duplicates(current, now))
            change = BoardChange(finished, settled=current.id, generation=self._generation)
            return AddResult(outcome, current, current, finished, change)
        change = BoardChange((current,), generation=self._generation)
        return AddResult(outcome, current, current, (), change)

    def apply(self, result: AddResult) -> None:
        """Make the change worked out by :meth:`plan_add` on this board.

        Raises ``RuntimeError`` if the board changed since: the plan would be stale.
        """
        change = result.change
        if change is _NO_CHANGE:
            return
        if change.generation != self._generation:
            raise RuntimeError(f"board of {self.peer} changed since this add was planned")
        for job in change.jobs:
            self._put_job(job)
        if change.link is not None:
            original, duplicate = change.link
            self._duplicates.setdefault(original, []).append(duplicate)
        if change.settled is not None:
            self._duplicates.pop(change.settled, None)

    @staticmethod
    def _pending_key(job: Job) -> tuple[str, str]:
        # The command renders its instruction once; str() would render it on every call.
        return (job.destination.last, job.command.instruction_text)

    def _put_job(self, job: Job) -> None:
        self._generation += 1
        key = self._pending_key(job)
        self._jobs[job.id] = job
        if job.is_pending:
            self._pending.setdefault(key, {})[job.id] = None
        else:
            self._unindex(key, job.id)

    def _pop_job(self, job_id: uuid.UUID) -> Job | None:
        job = self._jobs.pop(job_id, None)
        if job is not None:
            self._generation += 1
            self._unindex(self._pending_key(job), job_id)
        return job

    def _unindex(self, key: tuple[str, str], job_id: uuid.UUID) -> None:
        same = self._pending.get(key)
        if same is not None:
            same.pop(job_id, None)
            if not same:
                del self._pending[key]

    def _detect_duplicate(self, job: Job, now: float) -> AddResult | None:
        candidates = list(self._pending.get(self._pending_key(job), ()))
        for original_id in candidates:
            original = self._jobs[original_id]
            if original.id == job.id or not job.is_duplicate_of(original, now):
                continue
            # chrono's num_minutes() truncates towards zero.
            minutes = math.trunc((now - original.created) / 60)
            if minutes > MAX_ORIGINAL_AGE_MINUTES:
                return self._refuse_duplicate(
                    job,
                    f"TooManyDuplicatesError{{Original job is too old ({minutes} minutes). "
                    f"Please retry.}}",
                    now,
                )
            count = len(self._duplicates.get(original.id, ()))
            if count >= MAX_DUPLICATES:
                return self._refuse_duplicate(
                    job,
                    f"TooManyDuplicatesError{{Maximum duplicates ({count}) reached. "
                    f"Please retry later.}}",
                    now,
                )
            duplicate = job.duplicate(original, now=now)
            change = BoardChange(
                (duplicate,), link=(original.id, duplicate.id), generation=self._generation
            )
            return AddResult(AddOutcome.DUPLICATE, duplicate, duplicate, (), change)
        return None

    def _refuse_duplicate(self, job: Job, message: str, now: float) -> AddResult:
        errored = job.errored(message, now=now)
        # Rust reports the errored job as Added (so put() still sends it).
        change = BoardChange((errored,), generation=self._generation)
        return AddResult(AddOutcome.ADDED, errored, errored, (errored,), change)

    def _resolve_duplicates(self, original: Job, now: float) -> list[Job]:
        """The duplicates of ``original`` as they become when it finishes (not stored)."""
        woken: list[Job] = []
        for dup_id in self._duplicates.get(original.id, ()):
            dup = self._jobs.get(dup_id)
            if dup is None:
                continue
            woken.append(_copy_result(dup, original, now))
        return woken

    def remove(self, job: Job, now: float) -> RemoveResult:
        """Remove ``job`` (Rust ``Board::remove``, used for ``Delete``).

        Waiters of the job get it errored ``Job removed from board`` unless it
        is finished; its duplicates are removed too, copying ``job``'s result
        when it is finished and erroring otherwise.  Raises
        :class:`ExpiredError` for an expired job.
        """
        if job.is_expired(now):
            raise ExpiredError(f"Job {job.id} has expired")
        removed = self._pop_job(job.id) is not None
        woken = [job if job.is_finished else _settle(job, REMOVED_MESSAGE, now)]
        for dup_id in self._duplicates.pop(job.id, []):
            dup = self._pop_job(dup_id)
            if dup is None:
                continue
            woken.append(_copy_result(dup, job, now))
        return RemoveResult(removed, tuple(woken))

    def queue(self, command: JobCommand) -> None:
        """Queue a command the peer could not receive; its job leaves the board.

        Rust removes the job from the board when queueing, so the replay after
        reconnection re-adds it on the far side as new.
        """
        self._pop_job(command.job.id)
        self._queued.append(command)

    def queued(self) -> tuple[JobCommand, ...]:
        """Commands waiting for the peer, oldest first."""
        return tuple(self._queued)

    def take_queued(self) -> list[JobCommand]:
        """Remove and return the queued commands (replayed after Register and Sync)."""
        taken, self._queued = self._queued, []
        return taken

    def sweep_expired(self, now: float) -> list[Job]:
        """The cleaner (Rust ``remove_expired_jobs``, run every 60 s).

        Removes every expired job from the board and from the queue; each
        unfinished one is errored ``Job expired``.  Unexpired, unfinished
        duplicates of an expired original are errored ``Original job expired``
        and removed as well.  Returns every removed job in its final form, in a
        deterministic order (each expired job followed by its duplicates): wake
        their waiters.  Rust also sends the expired ones upstream as ``Update``,
        which the (expired-dropping) recipient ignores; the duplicates are live
        and their waiting handlers report them.
        """
        swept = self.plan_sweep(now)
        self.remove_swept(swept, now)
        return swept

    def plan_sweep(self, now: float) -> list[Job]:
        """What :meth:`sweep_expired` would remove and return, without changing the board.

        A runtime with a durable store deletes these first and then calls
        :meth:`remove_swept`, so a store that fails leaves the board as it was.
        """
        expired: list[Job] = [job for job in self._jobs.values() if job.is_expired(now)]
        expired += [c.job for c in self._queued if c.job.is_expired(now)]
        swept: list[Job] = []
        seen: set[uuid.UUID] = set()
        for job in expired:
            if job.id in seen:
                continue
            seen.add(job.id)
            swept.append(job if job.is_finished else _settle(job, EXPIRED_MESSAGE, now))
            for dup_id in self._duplicates.get(job.id, ()):
                dup = self._jobs.get(dup_id)
                if dup is None or dup.is_expired(now) or dup_id in seen:
                    continue  # gone already, or swept in its own right
                seen.add(dup_id)
                swept.append(
                    dup if dup.is_finished else _settle(dup, ORIGINAL_EXPIRED_MESSAGE, now)
                )
        return swept

    def remove_swept(self, swept: Iterable[Job], now: float) -> None:
        """Remove what :meth:`plan_sweep` returned (``now`` the same), and expired commands."""
        self._most = max(self._most, len(self._jobs))
        for job in swept:
            self._pop_job(job.id)
            self._duplicates.pop(job.id, None)
        self._queued = [c for c in self._queued if not c.job.is_expired(now)]
        if self._most >= COMPACT_FROM and len(self._jobs) * 4 <= self._most:
            # A dict never shrinks: after a backlog drains, its table would stay as large
            # as the most jobs the board ever held.  A copy is sized for what is left.
            self._jobs = dict(self._jobs)
            self._duplicates = dict(self._duplicates)
            self._most = len(self._jobs)

    # -------------------------------------------------------------------- sync

    def sync_actions(
        self, incoming: Sequence[Job], me: str, sender: str, now: float
    ) -> list[SyncDecision]:
        """Decide what to do with each job of a ``Sync`` from ``sender`` (notes §3.4).

        A job that is expired, or not newer (by version) than our copy, is
        ignored.  Otherwise a finished job is processed as an ``Update`` from
        the peer; an unfinished one by ``me``'s position on its path: upstream
        -> ``Update``, downstream or destination -> ``Put`` (so the destination
        may run it again).  Jobs in an errored position, or in state Created
        (which a receiver refuses), are ignored.  As in Rust all updates come
        first, then all puts; ignored jobs are listed last.
        """
        updates: list[SyncDecision] = []
        puts: list[SyncDecision] = []
        ignored: list[SyncDecision] = []
        for job in incoming:
            if job.is_expired(now):
                ignored.append(SyncDecision(SyncAction.IGNORE, job, "expired"))
            elif not self.would_be_changed_by(job, now):
                ignored.append(SyncDecision(SyncAction.IGNORE, job, "not newer than our copy"))
            elif job.is_created:
                ignored.append(SyncDecision(SyncAction.IGNORE, job, "state Created"))
            elif job.is_duplicate:
                # A duplicate was never sent on: the peer holds its original, whose result
                # the duplicate will copy.  Re-putting it would run the work twice.
                ignored.append(SyncDecision(SyncAction.IGNORE, job, "duplicate"))
            elif job.is_finished:
                updates.append(SyncDecision(SyncAction.UPDATE, job))
            else:
                position = job.destination.position(me, sender)
                if position is Position.UPSTREAM:
                    updates.append(SyncDecision(SyncAction.UPDATE, job))
                elif position in (Position.DOWNSTREAM, Position.DESTINATION):
                    puts.append(SyncDecision(SyncAction.PUT, job))
                else:
                    ignored.append(SyncDecision(SyncAction.IGNORE, job, "errored position"))
        return updates + puts + ignored
