"""The pure board: replace rules, duplicates, cleaner, queue and sync decisions."""

from __future__ import annotations

import dataclasses
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broadgauge.grammar import Command
from broadgauge.jobs import (
    AddOutcome,
    Board,
    ExpiredError,
    Job,
    Put,
    Status,
    SyncAction,
    Update,
)
from broadgauge.jobs.board import MAX_DUPLICATES

from . import helpers as h
from .helpers import T0

CMD = "portal.provider.clusters.cluster add_user alice.proj.portal"


def _complete(job: Job, at: float = T0 + 5) -> Job:
    return job.completed('"alice.proj.portal:alice.proj:portal.proj"', "UserMapping", now=at)


# ------------------------------------------------------------ replace rules


def test_add_unknown_job_is_added() -> None:
    board = Board("provider@default")
    job = h.job()
    result = board.add(job, T0)
    assert result.outcome is AddOutcome.ADDED and result.should_send
    assert board.get(job.id) == job and board.jobs() == [job] and job.id in board


def test_greater_version_replaces() -> None:
    board = Board("p")
    job = h.job()
    board.add(job, T0)
    newer = job.running("half way", now=T0 + 1)
    result = board.add(newer, T0 + 1)
    assert result.outcome is AddOutcome.UPDATED
    assert board.get(job.id) == newer


def test_same_or_lower_version_without_later_change_is_unchanged() -> None:
    board = Board("p")
    newer = h.job(version=5, changed=T0 + 10)
    board.add(newer, T0)
    stale = h.job(version=3, changed=T0 + 10, job_id=newer.id)
    result = board.add(stale, T0)
    assert result.outcome is AddOutcome.UNCHANGED and not result.should_send
    assert result.job == stale and result.stored == newer  # Rust returns the incoming job
    assert board.get(newer.id) == newer
    same = board.add(newer, T0)
    assert same.outcome is AddOutcome.UNCHANGED


def test_later_changed_replaces_and_bumps_version_above_stored() -> None:
    board = Board("p")
    stored = h.job(version=40, changed=T0)
    board.add(stored, T0)
    incoming = h.job(version=7, changed=T0 + 3, job_id=stored.id, state=Status.RUNNING)
    result = board.add(incoming, T0 + 9.5)
    assert result.outcome is AddOutcome.UPDATED
    assert result.job.version == 41
    assert result.job.changed == T0 + 9  # increment_version() stamps "now"
    assert result.job.state is Status.RUNNING
    assert board.get(stored.id) == result.job


def test_expired_jobs_are_refused() -> None:
    board = Board("p")
    with pytest.raises(ExpiredError):
        board.add(h.job(lifetime=120), T0 + 121)
    with pytest.raises(ExpiredError):
        board.remove(h.job(lifetime=120), T0 + 121)


def test_finishing_a_job_reports_it_for_waking() -> None:
    board = Board("p")
    job = h.job()
    board.add(job, T0)
    result = board.add(_complete(job), T0 + 5)
    assert result.finished == (result.job,)
    assert board.add(h.job(), T0).finished == ()


@settings(max_examples=300)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 2),  # which of three ids
            st.integers(0, 3000),  # version
            st.integers(0, 60),  # changed offset
            st.sampled_from([Status.PENDING, Status.RUNNING, Status.COMPLETE, Status.ERROR]),
            st.integers(0, 50),  # clock advance
        ),
        max_size=40,
    )
)
def test_stored_versions_never_decrease(
    steps: list[tuple[int, int, int, Status, int]],
) -> None:
    ids = [uuid.UUID(int=i + 1) for i in range(3)]
    commands = [CMD, "a.b add_user u.p.a", "a.c get_projects a"]
    board = Board("p")
    seen: dict[uuid.UUID, int] = {}
    now = T0
    for which, version, changed, state, advance in steps:
        now += advance
        job = h.job(
            commands[which],
            job_id=ids[which],
            version=version,
            changed=T0 + changed,
            state=state,
            lifetime=10_000,
        )
        before = board.get(job.id)
        result = board.add(job, now)
        after = board.get(job.id)
        assert after is not None
        if before is not None:
            assert after.version >= before.version
            if result.outcome is AddOutcome.UPDATED:
                assert after.version > before.version
            if result.outcome is AddOutcome.UNCHANGED:
                assert after == before
        for stored in board.jobs():
            assert stored.version >= seen.get(stored.id, 0)
            seen[stored.id] = stored.version


# ----------------------------------------------------------------- duplicates


def _pending(command: str = CMD, created: float = T0, lifetime: int = 120) -> Job:
    return Job.parse(command, now=created, lifetime=lifetime).pending(now=created)


def test_second_identical_pending_job_becomes_duplicate() -> None:
    board = Board("p")
    original = _pending()
    board.add(original, T0)
    again = _pending("other.cluster add_user  alice.proj.portal", created=T0 + 30)
    result = board.add(again, T0 + 30)
    assert result.outcome is AddOutcome.DUPLICATE and not result.should_send
    dup = result.job
    assert (dup.state, dup.version, dup.result) == (Status.DUPLICATE, 3, str(original.id))
    assert dup.command == original.command
    assert board.duplicates_of(original.id) == (dup.id,)


@pytest.mark.parametrize(
    "command",
    [
        "portal.provider.clusters.other add_user alice.proj.portal",  # other last hop
        "portal.provider.clusters.cluster add_user bob.proj.portal",  # other instruction
    ],
)
def test_different_jobs_are_not_duplicates(command: str) -> None:
    board = Board("p")
    board.add(_pending(), T0)
    assert board.add(_pending(command), T0).outcome is AddOutcome.ADDED


def test_only_pending_jobs_are_compared() -> None:
    board = Board("p")
    original = _pending()
    board.add(original, T0)
    board.add(original.running(now=T0 + 1), T0 + 1)
    assert board.add(_pending(), T0 + 2).outcome is AddOutcome.ADDED
    running_new = _pending().running(now=T0 + 2)
    assert board.add(running_new, T0 + 2).outcome is AddOutcome.ADDED


def test_duplicates_are_only_detected_when_a_job_is_first_added() -> None:
    board = Board("p")
    board.add(_pending(), T0)
    other = _pending().running(now=T0)
    board.add(other, T0)
    back_to_pending = dataclasses.replace(other, state=Status.PENDING, version=other.version + 1)
    result = board.add(back_to_pending, T0 + 1)
    assert result.outcome is AddOutcome.UPDATED and result.job.is_pending


def test_original_finishing_completes_its_duplicates() -> None:
    board = Board("p")
    original = _pending()
    board.add(original, T0)
    dups = [board.add(_pending(), T0 + i).job for i in range(1, 4)]
    result = board.add(_complete(original), T0 + 10)
    assert [j.id for j in result.finished] == [original.id] + [d.id for d in dups]
    for dup, woken in zip(dups, result.finished[1:], strict=True):
        stored = board.get(dup.id)
        assert stored == woken
        assert stored is not None
        assert stored.state is Status.COMPLETE
        assert stored.version == dup.version + 1000
        assert stored.result == '"alice.proj.portal:alice.proj:portal.proj"'
        assert stored.result_type == "UserMapping"
    assert board.duplicates_of(original.id) == ()


def test_original_too_old_errors_the_new_job() -> None:
    board = Board("p")
    original = _pending(lifetime=3600)
    board.add(original, T0)
    ok = board.add(_pending(created=T0 + 659, lifetime=3600), T0 + 659)  # 10 min 59 s
    assert ok.outcome is AddOutcome.DUPLICATE
    late = _pending(created=T0 + 660, lifetime=3600)
    result = board.add(late, T0 + 660)
    assert result.outcome is AddOutcome.ADDED
    assert result.job.state is Status.ERROR and result.job.version == 1002
    assert result.job.result == (
        "TooManyDuplicatesError{Original job is too old (11 minutes). Please retry.}"
    )
    assert result.finished == (result.job,)


def test_too_many_duplicates_errors_the_new_job() -> None:
    board = Board("p")
    original = _pending()
    board.add(original, T0)
    for _ in range(MAX_DUPLICATES):
        assert board.add(_pending(), T0 + 1).outcome is AddOutcome.DUPLICATE
    result = board.add(_pending(), T0 + 1)
    assert result.outcome is AddOutcome.ADDED and result.job.is_error
    assert result.job.result == (
        "TooManyDuplicatesError{Maximum duplicates (100) reached. Please retry later.}"
    )


def test_restored_board_relinks_duplicates() -> None:
    board = Board("p")
    original = _pending()
    board.add(original, T0)
    dup = board.add(_pending(), T0 + 1).job
    restored = Board("p", board.jobs())
    assert restored.duplicates_of(original.id) == (dup.id,)
    result = restored.add(_complete(original), T0 + 2)
    assert [j.id for j in result.finished] == [original.id, dup.id]


# -------------------------------------------------------------------- cleaner


def test_sweep_errors_expired_unfinished_jobs_and_drops_finished_ones() -> None:
    board = Board("p")
    unfinished = _pending("a.b add_user u.p.a")
    finished = _complete(_pending("a.b add_user v.p.a"))
    fresh = _pending("a.b add_user w.p.a", created=T0 + 100)
    for job in (unfinished, finished, fresh):
        board.add(job, T0 + 5)
    swept = board.sweep_expired(T0 + 121)
    assert [j.id for j in swept] == [unfinished.id, finished.id]
    assert swept[0].state is Status.ERROR and swept[0].result == "Job expired"
    assert swept[0].version == unfinished.version + 1000
    assert swept[1] == finished
    assert board.jobs() == [fresh]


def _original_and_duplicate(delay: float, lifetime: int) -> tuple[Board, Job, Job]:
    """A board with a 60 s job and, ``delay`` later, a duplicate living ``lifetime``."""
    board = Board("p")
    original = _pending(lifetime=60)
    board.add(original, T0)
    dup = board.add(_pending(created=T0 + delay, lifetime=lifetime), T0 + delay).job
    return board, original, dup


def test_sweep_errors_duplicates_of_an_expired_original() -> None:
    board, original, dup = _original_and_duplicate(30, lifetime=600)
    swept = board.sweep_expired(T0 + 61)
    assert [j.id for j in swept] == [original.id, dup.id]
    assert swept[1].state is Status.ERROR and swept[1].result == "Original job expired"
    assert len(board) == 0


def test_sweep_reports_an_expired_duplicate_once_as_expired() -> None:
    board, original, dup = _original_and_duplicate(1, lifetime=60)
    swept = board.sweep_expired(T0 + 100)
    assert [(j.id, j.result) for j in swept] == [
        (original.id, "Job expired"),
        (dup.id, "Job expired"),
    ]


def test_sweep_removes_expired_queued_commands() -> None:
    board = Board("p")
    old = _pending("a.b add_user u.p.a")
    young = _pending("a.b add_user v.p.a", created=T0 + 100)
    board.queue(Put(old))
    board.queue(Update(young))
    swept = board.sweep_expired(T0 + 121)
    assert [j.id for j in swept] == [old.id]
    assert swept[0].result == "Job expired"
    assert board.queued() == (Update(young),)


# --------------------------------------------------------- remove and queue


def test_remove_wakes_with_errored_copy_and_settles_duplicates() -> None:
    board = Board("p")
    original = _pending()
    board.add(original, T0)
    dup = board.add(_pending(), T0 + 1).job
    result = board.remove(original, T0 + 2)
    assert result.removed and len(board) == 0
    assert result.woken[0].result == "Job removed from board"
    assert result.woken[1].id == dup.id
    assert result.woken[1].result == "Failed to copy result from original job"
    assert not board.remove(original, T0 + 2).removed


def test_remove_of_a_finished_job_hands_its_result_to_duplicates() -> None:
    board = Board("p")
    original = _pending()
    board.add(original, T0)
    board.add(_pending(), T0 + 1)
    result = board.remove(_complete(original), T0 + 2)
    assert [j.state for j in result.woken] == [Status.COMPLETE, Status.COMPLETE]


def test_queue_moves_the_job_off_the_board() -> None:
    board = Board("p")
    job = _pending()
    board.add(job, T0)
    board.queue(Put(job))
    assert job.id not in board and board.get(job.id) == job
    assert board.take_queued() == [Put(job)]
    assert board.queued() == () and board.get(job.id) is None


# ------------------------------------------------------------------------ sync


def _at(state: Status, command: str = CMD, version: int = 5) -> Job:
    return h.job(command, state=state, version=version, lifetime=600)


def test_sync_decisions_follow_position_and_state() -> None:
    board = Board("clusters")
    known = _at(Status.RUNNING, version=9)
    board.add(known, T0)
    incoming = [
        _at(Status.PENDING),  # me=provider, sender=clusters: provider is upstream
        _at(Status.COMPLETE),  # finished: always an update
        dataclasses.replace(known, version=9),  # not newer
        _at(Status.PENDING, "clusters.provider add_user alice.proj.portal"),  # destination
        _at(Status.RUNNING, "clusters.provider.cluster add_user alice.proj.portal"),  # downstream
        h.job(state=Status.PENDING, lifetime=60),  # expired at T0 + 61
        _at(Status.CREATED),
        _at(Status.PENDING, "a.provider add_user alice.proj.portal"),  # sender not on path
    ]
    decisions = board.sync_actions(incoming, "provider", "clusters", T0 + 61)
    actions = [(d.action, d.job) for d in decisions]
    assert actions == [
        (SyncAction.UPDATE, incoming[0]),
        (SyncAction.UPDATE, incoming[1]),
        (SyncAction.PUT, incoming[3]),
        (SyncAction.PUT, incoming[4]),
        (SyncAction.IGNORE, incoming[2]),
        (SyncAction.IGNORE, incoming[5]),
        (SyncAction.IGNORE, incoming[6]),
        (SyncAction.IGNORE, incoming[7]),
    ]
    reasons = [d.reason for d in decisions[4:]]
    assert reasons == ["not newer than our copy", "expired", "state Created", "errored position"]
    assert board.jobs() == [known]  # deciding changes nothing


def test_sync_state_and_stats() -> None:
    board = Board("p")
    mine = _pending("me.x add_user u.p.a")
    passing = _pending("a.me.b add_user u.p.a")
    board.add(mine, T0)
    board.add(passing, T0)
    board.add(_complete(_pending("x.me add_user v.p.a")), T0)
    board.queue(Put(_pending("me.y add_user w.p.a")))
    assert board.sync_state() == tuple(board.jobs())
    stats = board.stats("me", T0 + 1)
    assert (stats.active, stats.pending, stats.in_flight, stats.completed) == (3, 1, 1, 1)
    assert (stats.successful, stats.queued) == (1, 1)


def test_a_board_shrinks_back_after_a_backlog_is_swept() -> None:
    import sys

    from broadgauge.jobs.board import COMPACT_FROM

    board = Board("peer")
    backlog = 4 * COMPACT_FROM
    early = [
        Job.create(Command.parse(f"a.b add_user u{i}.p.portal"), now=0, lifetime=60)
        for i in range(backlog)
    ]
    late = [
        Job.create(Command.parse(f"a.b add_user v{i}.p.portal"), now=0, lifetime=600)
        for i in range(10)
    ]
    for job in early + late:
        board.add(job, now=1)
    full = sys.getsizeof(board._jobs)

    swept = board.sweep_expired(now=100)

    assert len(swept) == backlog
    assert sorted(j.id for j in board.jobs()) == sorted(j.id for j in late)
    assert sys.getsizeof(board._jobs) < full / 10
    assert board.add(late[0].pending(now=101), now=101).outcome.value == "Updated"
