"""The SQLite board store, with a real file, reopening and SIGKILL mid-write."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import broadgauge
from broadgauge.jobs import Board, Put, Status, encode_command
from broadgauge.runtime.store import DB_FILENAME, BoardStore

from . import helpers as h
from .helpers import T0


@pytest.fixture
def store(tmp_path: Path) -> Iterator[BoardStore]:
    s = BoardStore(tmp_path / "data")
    yield s
    s.close()


def test_creates_the_database_in_wal_mode_with_normal_sync(tmp_path: Path) -> None:
    with BoardStore(tmp_path / "nested" / "dir") as s:
        assert s.path == tmp_path / "nested" / "dir" / DB_FILENAME
        assert s.path.exists()
        db = sqlite3.connect(s.path)
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        db.close()
        assert s._conn().execute("PRAGMA synchronous").fetchone() == (1,)  # NORMAL


def test_an_fsync_on_every_commit_is_opt_in(tmp_path: Path) -> None:
    with BoardStore(tmp_path, fsync_each_commit=True) as s:
        assert s._conn().execute("PRAGMA synchronous").fetchone() == (2,)  # FULL


def test_save_load_and_reopen(tmp_path: Path) -> None:
    a = h.job("a.b add_user u.p.a")
    b = h.job("a.b add_user v.p.a")
    c = h.job("x.y add_user w.p.x", state=Status.COMPLETE, result='"m"', result_type="String")
    with BoardStore(tmp_path) as s:
        assert s.save("b@default", a)
        assert s.save_all("b@default", [b]) == 1
        assert s.save("y@default", c)
    with BoardStore(tmp_path) as s:
        assert s.load_all() == {"b@default": [a, b], "y@default": [c]}
        assert s.integrity_ok()


def test_older_versions_never_overwrite_newer(store: BoardStore) -> None:
    job = h.job(version=2)
    newer = job.errored("x", now=T0)
    assert store.save("p", newer)
    assert not store.save("p", job)
    assert store.save("p", newer)  # same version: idempotent rewrite
    assert store.load_all() == {"p": [newer]}


def test_huge_versions_order_correctly(store: BoardStore) -> None:
    job = h.job(version=2**64 - 2)
    assert store.save("p", job)
    assert not store.save("p", h.job(version=9, job_id=job.id))
    top = h.job(version=2**64 - 1, job_id=job.id)
    assert store.save("p", top)
    assert store.load_all()["p"] == [top]


def test_delete(store: BoardStore) -> None:
    a, b, c = (h.job(f"a.b add_user u{i}.p.a") for i in range(3))
    store.save_all("p", [a, b, c])
    assert store.delete("p", a.id)
    assert not store.delete("p", a.id)
    assert store.delete_many("p", [b.id, str(c.id), uuid.uuid4()]) == 2
    assert store.load_all() == {}


def test_update_keeps_insertion_order(store: BoardStore) -> None:
    a, b = h.job("a.b add_user u.p.a"), h.job("a.b add_user v.p.a")
    store.save_all("p", [a, b])
    a2 = a.running(now=T0 + 1)
    store.save("p", a2)
    assert store.load_all()["p"] == [a2, b]


def test_undecodable_rows_are_skipped(store: BoardStore) -> None:
    good = h.job()
    store.save("p", good)
    store._conn().execute(
        "INSERT INTO jobs (peer, job_id, version, state, expires, job_json) "
        "VALUES ('p', 'x', '1', 'Pending', 0, '{\"broken\":1}')"
    )
    assert store.load_all() == {"p": [good]}


def test_outbox_order_drain_and_ack(tmp_path: Path) -> None:
    with BoardStore(tmp_path) as s:
        first = s.enqueue("peer", "one")
        s.enqueue("other", "x")
        second = s.enqueue("peer", "two")
        assert second > first
    with BoardStore(tmp_path) as s:
        assert [q.payload for q in s.pending("peer")] == ["one", "two"]
        assert s.queued_peers() == ["other", "peer"]
        assert s.ack("peer", first) == 1
        assert [q.payload for q in s.pending("peer")] == ["two"]
        assert s.drain("peer") == ["two"]
        assert s.drain("peer") == []
        assert s.drain("other") == ["x"]


def test_execution_markers(tmp_path: Path) -> None:
    done = h.job().completed_none(now=T0 + 3)
    crashed = uuid.uuid4()
    with BoardStore(tmp_path) as s:
        assert s.execution(done.id) is None
        assert s.mark_started(done.id, T0)
        assert not s.mark_started(done.id, T0 + 1)  # already started: do not run again
        s.mark_finished(done.id, T0 + 3, done)
        assert s.mark_started(crashed, T0 + 2)
    with BoardStore(tmp_path) as s:
        record = s.execution(done.id)
        assert record is not None and record.is_finished
        assert (record.started_at, record.finished_at, record.result) == (T0, T0 + 3, done)
        assert [e.job_id for e in s.interrupted()] == [str(crashed)]
        assert s.prune_executions(T0 + 4) == 1
        assert s.execution(done.id) is None
        assert s.execution(crashed) is not None


def test_board_round_trips_through_the_store(store: BoardStore) -> None:
    board = Board("p")
    original = h.job()
    board.add(original, T0)
    dup = board.add(h.job(), T0 + 1).job
    store.save_all("p", board.jobs())
    store.enqueue("p", encode_command(Put(original)))
    restored = Board("p", store.load_all()["p"])
    assert restored.jobs() == board.jobs()
    assert restored.duplicates_of(original.id) == (dup.id,)


def test_closed_store_refuses_work(tmp_path: Path) -> None:
    s = BoardStore(tmp_path)
    s.close()
    s.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        s.save("p", h.job())


WRITER = textwrap.dedent(
    """
    import sys
    from broadgauge.jobs import Job
    from broadgauge.runtime.store import BoardStore

    store = BoardStore(sys.argv[1])
    padding = "x" * 20_000  # long rows: the kill is likely to land mid-transaction
    batch = 0
    while True:
        jobs = [
            Job.parse(f"portal.cluster add_user u{batch}n{i}.p.portal", now=1_717_400_000)
            .pending(now=1_717_400_000)
            .running(padding, now=1_717_400_001)
            for i in range(25)
        ]
        store.save_all(f"peer{batch}", jobs)
        store.enqueue(f"peer{batch}", padding)
        store.mark_started(jobs[0].id, 1_717_400_002)
        print(batch, ",".join(str(j.id) for j in jobs), flush=True)
        batch += 1
    """
)


@pytest.mark.slow
def test_sigkill_mid_write_loses_nothing_committed(tmp_path: Path) -> None:
    src = str(Path(broadgauge.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": src}
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    committed: dict[str, list[str]] = {}
    try:
        for line in proc.stdout:
            batch, id_list = line.split()
            committed[f"peer{batch}"] = id_list.split(",")
            if len(committed) >= 40:
                break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert len(committed) >= 40

    with BoardStore(tmp_path) as s:
        assert s.integrity_ok()
        boards = s.load_all()
        for peer, ids in committed.items():
            assert [str(j.id) for j in boards[peer]] == ids
            assert len(s.pending(peer)) == 1
            record = s.execution(ids[0])
            assert record is not None and not record.is_finished
        # Whatever was in flight at the kill is all-or-nothing.
        assert all(len(jobs) == 25 for jobs in boards.values())
        assert all(j.state is Status.RUNNING for jobs in boards.values() for j in jobs)
