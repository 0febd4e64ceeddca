"""Durable boards: jobs, queued commands and execution markers in SQLite.

templemeads keeps boards in memory only, so a restart loses every in-flight
job (notes §3.4).  Persisting them is the first improvement suggested in notes
§7.2 and costs nothing on the wire: after a restart the agent reloads its
boards and the usual ``Sync`` on reconnection reconciles with each peer.

Three tables:

``jobs``
    The latest stored version of every job on every peer's board, as its
    wire JSON (authoritative) plus a few columns for querying.  Rows keep
    their rowid across updates, so reloading preserves insertion order.
``outbox``
    Commands queued for a peer that was not connected, in order.
``executions``
    A per-job marker written *before* an agent starts running a job and
    completed *after* it finished, with the finished job.  After a crash the
    runtime can tell a job it already ran (answer with the stored result) from
    one it never started (run it) and one that was interrupted mid-run (its
    side effects may or may not have happened - re-run only idempotent work,
    or report an error).  This is what "loses no job and runs no job twice"
    needs.  A marker is pruned once it can no longer be needed: a finished one
    :data:`EXECUTION_GRACE_SECONDS` after its job expired (an expired job is never run or
    answered again), an unfinished one :data:`STALE_START_SECONDS` after it started.

The file is opened by :func:`~.durable.open_sqlite`: a torn write-ahead log is replayed and
what SQLite dropped is logged; a damaged file stops the agent with
:class:`~.durable.DamagedFileError`, naming it and the way to recover
(``docs/operators/storage.md``).  A full disk is reported as the ``ENOSPC`` it is, naming
the file.

Only this module in the jobs layer touches ``sqlite3``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final

from broadgauge.jobs.errors import ProtocolError
from broadgauge.jobs.job import Job, whole_seconds
from broadgauge.runtime.durable import no_space, open_sqlite

__all__ = [
    "DB_FILENAME",
    "EXECUTION_GRACE_SECONDS",
    "MARK_FINISHED",
    "MARK_STARTED",
    "STALE_START_SECONDS",
    "UPSERT_JOB",
    "BoardStore",
    "Execution",
    "QueuedPayload",
]

_log = logging.getLogger(__name__)

#: File name of the database inside the data directory.
DB_FILENAME: Final = "boards.sqlite3"

_SCHEMA_VERSION: Final = 1

#: How long after its job expired a finished execution marker is kept.  Only a job that has
#: not expired can arrive again and be answered from its marker; the margin covers a clock
#: that was stepped back.
EXECUTION_GRACE_SECONDS: Final = 600
#: How long a marker of a run that never finished is kept (its job has long expired: the
#: cleaner reported it, and it will not be resumed).
STALE_START_SECONDS: Final = 86_400
#: How often, in the agent's clock, finishing a run also prunes the markers.
_PRUNE_EVERY: Final = 60

#: What an operator does about a damaged boards store (see docs/operators/storage.md).
RECOVERY: Final = (
    "stop the agent and keep a copy of its data directory, then move boards.sqlite3 and its "
    "-wal and -shm files aside and start the agent: it starts with empty boards, and each "
    "neighbour's Sync brings back the jobs it shares with this agent. What only this file "
    "held (commands queued for a neighbour that was away, the record of which jobs already "
    "ran) is lost, so a job may run again, which OpenPortal's idempotent instructions absorb"
)

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS jobs (
    peer      TEXT    NOT NULL,
    job_id    TEXT    NOT NULL,
    -- Versions are Rust u64 but SQLite integers are signed 64-bit, so the
    -- version is stored as 20 zero-padded digits: text order = numeric order.
    version   TEXT    NOT NULL,
    state     TEXT    NOT NULL,
    expires   INTEGER NOT NULL,
    job_json  TEXT    NOT NULL,
    UNIQUE (peer, job_id)
);
CREATE TABLE IF NOT EXISTS outbox (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    peer     TEXT NOT NULL,
    payload  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_by_peer ON outbox (peer, seq);
CREATE TABLE IF NOT EXISTS executions (
    job_id       TEXT PRIMARY KEY,
    started_at   INTEGER NOT NULL,
    finished_at  INTEGER,
    result_json  TEXT
);
"""


def _version_key(version: int) -> str:
    return f"{version:020d}"


#: The statement that stores one board change: an older version never overwrites a newer
#: one.  Its parameters are :func:`job_row`.
UPSERT_JOB: Final = """
    INSERT INTO jobs (peer, job_id, version, state, expires, job_json)
    VALUES (?, ?, ?, ?, ?, ?)
    ON CONFLICT (peer, job_id) DO UPDATE SET
        version = excluded.version,
        state = excluded.state,
        expires = excluded.expires,
        job_json = excluded.job_json
    WHERE excluded.version >= jobs.version
"""


#: The statement that marks the start of a job's run (none if the job has a marker already).
#: Its parameters: the job's id and the start, in whole seconds.
MARK_STARTED: Final = "INSERT OR IGNORE INTO executions (job_id, started_at) VALUES (?, ?)"

#: The statement that marks the end of a job's run.  Its parameters: the job's id, the end
#: in whole seconds (twice: the start, if the start was never marked) and the finished job's
#: JSON, if any.
MARK_FINISHED: Final = """
    INSERT INTO executions (job_id, started_at, finished_at, result_json)
    VALUES (?, ?, ?, ?)
    ON CONFLICT (job_id) DO UPDATE SET
        finished_at = excluded.finished_at,
        result_json = excluded.result_json
"""


def job_row(peer: str, job: Job) -> tuple[str, str, str, str, int, str]:
    """The parameters of :data:`UPSERT_JOB` for ``job`` on ``peer``'s board."""
    return (
        peer,
        job.id_text,
        _version_key(job.version),
        job.state.value,
        job.expires,
        job.to_json(),
    )


@dataclass(frozen=True, slots=True)
class Execution:
    """The execution marker of one job.

    ``finished_at is None`` means the job was started but never finished:
    the process died while running it.
    """

    job_id: str
    started_at: int
    finished_at: int | None
    result: Job | None

    @property
    def is_finished(self) -> bool:
        """Whether the run completed (and ``result`` may be replayed)."""
        return self.finished_at is not None


@dataclass(frozen=True, slots=True)
class QueuedPayload:
    """One queued outgoing command; ``seq`` orders and acknowledges it."""

    seq: int
    peer: str
    payload: str


class BoardStore:
    """SQLite store of boards under a data directory (file :data:`DB_FILENAME`).

    Every change is one transaction, committed before it returns, unless group commit is
    on (:meth:`group_commits`, as a running agent has it): changes then gather in a batch
    that the owner commits.  Methods are serialised by a lock, so the store may be shared
    with worker threads (e.g. ``asyncio.to_thread``).
    """

    def __init__(
        self, data_dir: str | os.PathLike[str], *, fsync_each_commit: bool = False
    ) -> None:
        """Open (creating if needed) the store in ``data_dir``.

        :class:`~.durable.DamagedFileError` if the file is damaged.
        """
        directory = Path(data_dir)
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / DB_FILENAME
        self._lock = threading.Lock()
        #: Called with each transaction's duration in seconds (metrics), if set.
        self.on_commit: Callable[[float], None] | None = None
        self._next_prune = float("-inf")
        #: Group commit (see :meth:`group_commits`): called when a change opens a batch.
        self._on_batch: Callable[[], None] | None = None
        self._batch_open = False
        self._batch_started = 0.0
        #: Why the open batch can no longer commit (SQLite rolled it back), if it cannot.
        self._lost: BaseException | None = None
        # WAL: readers never block the writer and a crash mid-write leaves the database
        # intact (the torn tail of the WAL is dropped on recovery, and logged).  Autocommit
        # mode: we issue BEGIN/COMMIT ourselves, so each public method is one transaction.
        # A damaged file raises DamagedFileError here, before any board is loaded.
        self._db: sqlite3.Connection | None = open_sqlite(
            self.path, what="the boards store", recovery=RECOVERY, timeout=10.0
        )
        db = self._db
        # NORMAL by default: in WAL mode it survives a process crash (SIGKILL) and
        # never corrupts the file; only a power loss or kernel panic can roll back
        # the last commits.  That loses nothing the protocol cannot recover: every
        # job also sits on the neighbour's mirror board and comes back in its Sync,
        # and a job whose finished-marker was rolled back is run again, which the
        # handlers' idempotency absorbs.  An fsync per commit (FULL) costs ~0.1 ms
        # each, several per job; operators who want it pass fsync_each_commit=True.
        db.execute(f"PRAGMA synchronous={'FULL' if fsync_each_commit else 'NORMAL'}")
        db.execute("PRAGMA busy_timeout=10000")
        with self._transaction() as cur:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    cur.execute(statement)
            current = cur.execute("PRAGMA user_version").fetchone()[0]
            if current > _SCHEMA_VERSION:
                raise RuntimeError(
                    f"{self.path} was written by a newer schema ({current} > {_SCHEMA_VERSION})"
                )
            cur.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")

    # ------------------------------------------------------------ transactions

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("BoardStore is closed")
        return self._db

    class _Tx:
        """One change: its own transaction, or a part of the open batch (group commit).

        In a batch a change of several statements runs inside a savepoint, so that one
        that fails takes back only its own statements; a change of one statement needs
        none (SQLite undoes a failed statement itself).  SQLite may instead roll back the
        whole transaction (a full disk, say): the batch is then lost, :meth:`commit` says
        so, and every change until then is refused.
        """

        def __init__(self, store: BoardStore, several: bool) -> None:
            self._store = store
            self._several = several
            self._savepoint = False
            self._started = 0.0

        def __enter__(self) -> sqlite3.Cursor:
            store = self._store
            store._lock.acquire()
            self._started = time.perf_counter()
            try:
                db = store._conn()
                if store._on_batch is None:
                    # IMMEDIATE takes the write lock up front: no upgrade deadlocks
                    # if another process opened the same file.
                    db.execute("BEGIN IMMEDIATE")
                else:
                    if store._lost is not None:
                        raise store._lost
                    if not store._batch_open:
                        db.execute("BEGIN IMMEDIATE")
                        store._batch_open = True
                        store._batch_started = self._started
                        store._on_batch()
                    if self._several:
                        db.execute("SAVEPOINT change")
                        self._savepoint = True
                return db.cursor()
            except BaseException:
                store._lock.release()
                raise

        def __exit__(
            self,
            exc_type: type[BaseException] | None,
            exc: BaseException | None,
            tb: TracebackType | None,
        ) -> None:
            store = self._store
            try:
                if store._on_batch is not None and store._batch_open:
                    self._end_change(exc)
                    return
                db = store._conn()
                if exc is not None:
                    store._roll_back(db, exc)
                    return
                store._commit(db, self._started)
            finally:
                store._lock.release()

        def _end_change(self, exc: BaseException | None) -> None:
            """End a change made inside the open batch: keep it, or take back only it."""
            store = self._store
            db = store._conn()
            if exc is None:
                if self._savepoint:
                    db.execute("RELEASE change")
                return
            if not db.in_transaction:
                # SQLite rolled back the whole batch: the changes before this one are gone.
                store._lost = exc
            elif self._savepoint:
                db.execute("ROLLBACK TO change")
                db.execute("RELEASE change")
            store._raise_if_full(exc)

    def _transaction(self, *, several: bool = False) -> BoardStore._Tx:
        """One change (``several``: of more than one statement)."""
        return BoardStore._Tx(self, several)

    @contextlib.contextmanager
    def _reading(self) -> Iterator[sqlite3.Cursor]:
        """A read: one SELECT needs no transaction of its own (it sees the open batch)."""
        with self._lock:
            yield self._conn().cursor()

    # ---------------------------------------------------------------- group commit

    def group_commits(self, on_batch: Callable[[], None] | None) -> None:
        """Turn group commit on, or off (``None``: the open batch is committed first).

        With it on, a change no longer commits on its own: the first change after a commit
        opens a batch (a transaction) and calls ``on_batch``; every change joins it until
        the owner calls :meth:`commit`, which it must do soon, and before anything that
        depends on those changes leaves the process.
        """
        if on_batch is None:
            self.commit()
        self._on_batch = on_batch

    @property
    def in_batch(self) -> bool:
        """Whether changes wait in a batch that :meth:`commit` has not committed yet."""
        return self._batch_open

    def commit(self) -> None:
        """Commit the open batch, if any.

        If it cannot be committed (or SQLite rolled it back already), it is rolled back and
        the error raised: none of its changes is stored, and the owner must treat each of
        them as failed.
        """
        with self._lock:
            if not self._batch_open:
                return
            self._batch_open = False
            lost, self._lost = self._lost, None
            db = self._conn()
            if lost is not None:
                self._roll_back(db, lost)
                raise lost
            self._commit(db, self._batch_started)

    def _roll_back(self, db: sqlite3.Connection, exc: BaseException) -> None:
        """End the transaction that ``exc`` interrupted (SQLite may have rolled it back
        already: a full disk, say); a full disk is raised as ``ENOSPC``."""
        if db.in_transaction:
            db.execute("ROLLBACK")
        self._raise_if_full(exc)

    def _commit(self, db: sqlite3.Connection, started: float) -> None:
        """COMMIT the open transaction, begun at ``started`` (the lock held)."""
        try:
            db.execute("COMMIT")
        except BaseException as failed:
            # A failed COMMIT (disk full, I/O error) can leave the transaction open; end
            # it so the next BEGIN works.
            self._roll_back(db, failed)
            raise
        if self.on_commit is not None:
            self.on_commit(time.perf_counter() - started)

    def _raise_if_full(self, exc: BaseException) -> None:
        """Raise ``exc`` as ``ENOSPC`` naming this store's file, if it is SQLite's full disk."""
        full = no_space(exc, self.path) if isinstance(exc, sqlite3.Error) else None
        if full is not None:
            raise full from exc

    # -------------------------------------------------------------------- jobs

    @staticmethod
    def _upsert(cur: sqlite3.Cursor, peer: str, job: Job) -> bool:
        cur.execute(UPSERT_JOB, job_row(peer, job))
        return cur.rowcount > 0

    def save(self, peer: str, job: Job) -> bool:
        """Store ``job`` on ``peer``'s board.

        An older version never overwrites a newer stored one (a guard against
        out-of-order writes; boards only move versions forward).  Returns
        whether the row was written.
        """
        with self._transaction() as cur:
            return self._upsert(cur, peer, job)

    def save_all(self, peer: str, jobs: Iterable[Job]) -> int:
        """Store several jobs in one transaction; returns how many were written."""
        jobs = tuple(jobs)
        with self._transaction(several=len(jobs) > 1) as cur:
            return sum(self._upsert(cur, peer, job) for job in jobs)

    def delete(self, peer: str, job_id: uuid.UUID | str) -> bool:
        """Remove one job from ``peer``'s board; returns whether it was there."""
        with self._transaction() as cur:
            cur.execute("DELETE FROM jobs WHERE peer = ? AND job_id = ?", (peer, str(job_id)))
            return cur.rowcount > 0

    def delete_many(self, peer: str, job_ids: Iterable[uuid.UUID | str]) -> int:
        """Remove several jobs (e.g. after a sweep) in one transaction."""
        rows = [(peer, str(job_id)) for job_id in job_ids]
        with self._transaction(several=len(rows) > 1) as cur:
            cur.executemany("DELETE FROM jobs WHERE peer = ? AND job_id = ?", rows)
            return cur.rowcount

    def forget_board(self, peer: str) -> None:
        """Remove every job and queued payload of ``peer``'s board, in one transaction."""
        with self._transaction(several=True) as cur:
            cur.execute("DELETE FROM jobs WHERE peer = ?", (peer,))
            cur.execute("DELETE FROM outbox WHERE peer = ?", (peer,))

    def load_all(self) -> dict[str, list[Job]]:
        """Every stored board: peer -> jobs in the order they were first stored.

        A row that no longer decodes (for example after a grammar change) is
        logged and skipped rather than preventing the agent from starting.
        """
        boards: dict[str, list[Job]] = {}
        with self._reading() as cur:
            rows = cur.execute("SELECT peer, job_id, job_json FROM jobs ORDER BY rowid").fetchall()
        for peer, job_id, text in rows:
            try:
                job = Job.from_json(text)
            except (ProtocolError, ValueError) as exc:
                _log.warning("skipping stored job %s on board %s: %s", job_id, peer, exc)
                continue
            boards.setdefault(peer, []).append(job)
        return boards

    # ------------------------------------------------------------------ outbox

    def enqueue(self, peer: str, payload: str) -> int:
        """Append a payload for ``peer``; returns its sequence number."""
        with self._transaction() as cur:
            cur.execute("INSERT INTO outbox (peer, payload) VALUES (?, ?)", (peer, payload))
            seq = cur.lastrowid
        assert seq is not None
        return seq

    def pending(self, peer: str) -> list[QueuedPayload]:
        """Queued payloads for ``peer``, oldest first, without removing them."""
        with self._reading() as cur:
            rows = cur.execute(
                "SELECT seq, peer, payload FROM outbox WHERE peer = ? ORDER BY seq", (peer,)
            ).fetchall()
        return [QueuedPayload(seq, p, payload) for seq, p, payload in rows]

    def ack(self, peer: str, up_to_seq: int) -> int:
        """Drop ``peer``'s payloads with ``seq <= up_to_seq`` once they were sent."""
        with self._transaction() as cur:
            cur.execute("DELETE FROM outbox WHERE peer = ? AND seq <= ?", (peer, up_to_seq))
            return cur.rowcount

    def drain(self, peer: str) -> list[str]:
        """Remove and return ``peer``'s queued payloads, oldest first (atomically).

        At-most-once: if the process dies before they are sent they are gone.
        Use :meth:`pending` + :meth:`ack` for at-least-once replay.
        """
        with self._transaction() as cur:
            rows = cur.execute(
                "SELECT payload FROM outbox WHERE peer = ? ORDER BY seq", (peer,)
            ).fetchall()
            cur.execute("DELETE FROM outbox WHERE peer = ?", (peer,))
        return [payload for (payload,) in rows]

    def queued_peers(self) -> list[str]:
        """Peers that have queued payloads."""
        with self._reading() as cur:
            rows = cur.execute("SELECT DISTINCT peer FROM outbox ORDER BY peer").fetchall()
        return [peer for (peer,) in rows]

    # -------------------------------------------------------------- executions

    def mark_started(self, job_id: uuid.UUID | str, now: float) -> bool:
        """Record that this agent is about to run ``job_id``.

        Returns ``True`` if this is the first start, ``False`` if a marker
        already exists (the job was started before - check :meth:`execution`).
        """
        with self._transaction() as cur:
            cur.execute(MARK_STARTED, (str(job_id), whole_seconds(now)))
            return cur.rowcount > 0

    def mark_finished(self, job_id: uuid.UUID | str, now: float, result: Job | None = None) -> None:
        """Record that the run of ``job_id`` ended, with the finished job if any.

        At most once a minute (of ``now``) this also forgets the markers no job can need
        any more (:meth:`prune_expired_executions`), so the table does not grow forever.
        """
        stamp = whole_seconds(now)
        text = result.to_json() if result is not None else None
        prune = now >= self._next_prune
        with self._transaction(several=prune) as cur:
            cur.execute(MARK_FINISHED, (str(job_id), stamp, stamp, text))
            if prune:
                self._next_prune = now + _PRUNE_EVERY
                self._prune_expired(cur, now)

    def execution(self, job_id: uuid.UUID | str) -> Execution | None:
        """The execution marker of ``job_id``, if any."""
        with self._reading() as cur:
            row = cur.execute(
                "SELECT job_id, started_at, finished_at, result_json FROM executions "
                "WHERE job_id = ?",
                (str(job_id),),
            ).fetchone()
        return None if row is None else self._execution(row)

    def interrupted(self) -> list[Execution]:
        """Jobs started but never finished - the process died while running them."""
        with self._reading() as cur:
            rows = cur.execute(
                "SELECT job_id, started_at, finished_at, result_json FROM executions "
                "WHERE finished_at IS NULL ORDER BY started_at, job_id"
            ).fetchall()
        return [self._execution(row) for row in rows]

    def prune_executions(self, finished_before: float) -> int:
        """Forget finished markers older than ``finished_before`` (their jobs expired)."""
        with self._transaction() as cur:
            cur.execute(
                "DELETE FROM executions WHERE finished_at IS NOT NULL AND finished_at < ?",
                (whole_seconds(finished_before),),
            )
            return cur.rowcount

    def prune_expired_executions(self, now: float) -> int:
        """Forget the markers no job can need at ``now``; returns how many.

        A finished marker goes :data:`EXECUTION_GRACE_SECONDS` after its job's expiry (read
        from the stored result; the finishing time stands in for a marker without one), an
        unfinished one :data:`STALE_START_SECONDS` after it started.
        """
        with self._transaction() as cur:
            return self._prune_expired(cur, now)

    @staticmethod
    def _prune_expired(cur: sqlite3.Cursor, now: float) -> int:
        cur.execute(
            """
            DELETE FROM executions WHERE
                (finished_at IS NOT NULL AND COALESCE(
                    CASE WHEN json_valid(result_json)
                        THEN json_extract(result_json, '$.expires') END,
                    finished_at) < ?)
                OR (finished_at IS NULL AND started_at < ?)
            """,
            (
                whole_seconds(now - EXECUTION_GRACE_SECONDS),
                whole_seconds(now - STALE_START_SECONDS),
            ),
        )
        return cur.rowcount

    @staticmethod
    def _execution(row: tuple[str, int, int | None, str | None]) -> Execution:
        job_id, started, finished, text = row
        result: Job | None = None
        if text is not None:
            try:
                result = Job.from_json(text)
            except ProtocolError as exc:
                _log.warning("stored result of job %s no longer decodes: %s", job_id, exc)
        return Execution(job_id, started, finished, result)

    # --------------------------------------------------------------- lifecycle

    def integrity_ok(self) -> bool:
        """Whether SQLite's ``quick_check`` finds the database intact."""
        with self._reading() as cur:
            rows = cur.execute("PRAGMA quick_check").fetchall()
        return rows == [("ok",)]

    def close(self) -> None:
        """Commit the open batch, checkpoint and close; further calls raise ``RuntimeError``."""
        try:
            self.commit()
        except Exception as exc:
            _log.error("%s: closing without the last changes: %s", self.path, exc)
        with self._lock:
            self._batch_open, self._on_batch = False, None
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self) -> BoardStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
