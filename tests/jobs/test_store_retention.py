"""The execution markers do not grow without bound: each is forgotten once no job can need it.

A marker lets an agent answer a job it already ran from the record instead of running it
again.  Only a job that has not expired can arrive again, so a finished marker is kept until
:data:`EXECUTION_GRACE_SECONDS` after its job's expiry, and a marker of a run cut off by a
crash that was never resumed for :data:`STALE_START_SECONDS`.  Finishing a run prunes them,
at most once a minute of the agent's clock.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from broadgauge.jobs.job import DEFAULT_LIFETIME_SECONDS, Job
from broadgauge.runtime.store import (
    DB_FILENAME,
    EXECUTION_GRACE_SECONDS,
    STALE_START_SECONDS,
    BoardStore,
)

T0 = 1_717_400_000.0


def done(number: int, now: float, lifetime: int = DEFAULT_LIFETIME_SECONDS) -> Job:
    """A job created at ``now`` and completed at once."""
    job = Job.parse(f"portal.instance add_user u{number}.p.portal", now=now, lifetime=lifetime)
    return job.pending(now=now).complete_with("ok", now=now)


def markers(path: Path) -> int:
    with closing(sqlite3.connect(path / DB_FILENAME)) as db:
        return int(db.execute("SELECT COUNT(*) FROM executions").fetchone()[0])


def test_a_marker_is_kept_until_the_grace_after_its_job_expired(tmp_path: Path) -> None:
    with closing(BoardStore(tmp_path)) as store:
        short = done(1, T0)
        long_lived = done(2, T0, lifetime=3 * 3600)  # a job may live longer than the grace
        for job in (short, long_lived):
            store.mark_started(job.id, T0)
            store.mark_finished(job.id, T0, job)

        just_kept = short.expires + EXECUTION_GRACE_SECONDS
        assert store.prune_expired_executions(just_kept) == 0
        assert store.prune_expired_executions(just_kept + 1) == 1
        assert store.execution(short.id) is None
        assert store.execution(long_lived.id) is not None  # its job has not expired yet
        assert store.prune_expired_executions(long_lived.expires + EXECUTION_GRACE_SECONDS + 1)
        assert store.execution(long_lived.id) is None


def test_a_run_never_finished_is_forgotten_a_day_after_it_started(tmp_path: Path) -> None:
    with closing(BoardStore(tmp_path)) as store:
        cut_off = done(1, T0)
        store.mark_started(cut_off.id, T0)
        assert store.prune_expired_executions(T0 + STALE_START_SECONDS) == 0
        assert [e.job_id for e in store.interrupted()] == [str(cut_off.id)]
        assert store.prune_expired_executions(T0 + STALE_START_SECONDS + 1) == 1
        assert store.interrupted() == []


def test_a_marker_without_a_readable_result_goes_by_its_finishing_time(tmp_path: Path) -> None:
    with closing(BoardStore(tmp_path)) as store:
        no_result, unreadable = done(1, T0), done(2, T0)
        store.mark_finished(no_result.id, T0)
        store.mark_finished(unreadable.id, T0, unreadable)
        store._conn().execute(
            "UPDATE executions SET result_json = '{torn' WHERE job_id = ?", (str(unreadable.id),)
        )
        assert store.prune_expired_executions(T0 + EXECUTION_GRACE_SECONDS) == 0
        assert store.prune_expired_executions(T0 + EXECUTION_GRACE_SECONDS + 1) == 2


def test_an_agent_finishing_jobs_for_hours_keeps_a_bounded_number_of_markers(
    tmp_path: Path,
) -> None:
    """One job every 2 s for 6 hours: the table never holds more than the jobs of the
    last lifetime + grace + prune interval, and its file stops growing."""
    every = 2.0
    window = DEFAULT_LIFETIME_SECONDS + EXECUTION_GRACE_SECONDS + 60 + 2 * every
    bound = int(window / every) + 1
    largest = 0
    sizes = []
    with closing(BoardStore(tmp_path)) as store:
        for number in range(int(6 * 3600 / every)):
            now = T0 + number * every
            job = done(number, now)
            store.mark_started(job.id, now)
            store.mark_finished(job.id, now, job)
            largest = max(largest, markers(tmp_path)) if number % 50 == 0 else largest
            if number % 1800 == 0:
                sizes.append((tmp_path / DB_FILENAME).stat().st_size)
        held = markers(tmp_path)
    assert held <= bound
    assert largest <= bound
    # Pages freed by pruning are reused: after the first hour the file stops growing.  Job
    # ids are random, so the B-tree may split a page more or less from run to run; a few
    # pages of slack allow that, while keeping every marker would add about a first hour's
    # growth (~45 pages) each hour.
    page = 4096
    assert max(sizes[2:]) - sizes[2] <= 4 * page, sizes
    assert sizes[2] - sizes[0] > 20 * page, sizes  # the first hour did grow: the check can fail
