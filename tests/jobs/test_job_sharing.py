"""Jobs decoded from the wire share their equal parts, and stay equal to fresh ones.

A board keeps finished jobs until they expire; under load they are most of an agent's
memory.  Timestamps, short results and result types repeat across those jobs, so each is
one object however many jobs hold it.
"""

from __future__ import annotations

import uuid

from broadgauge.grammar import Command
from broadgauge.jobs.job import Job, whole_seconds

NOW = 1_796_626_168


def finished(user: str) -> str:
    command = Command.parse(f"cluster.account is_existing_user {user}.physics.brics")
    job = Job.create(command, now=NOW, job_id=uuid.uuid4())
    return job.pending(now=NOW).completed("true", "bool", now=NOW).to_json()


def test_timestamps_results_and_types_are_shared() -> None:
    first, second = (Job.from_json(finished(user)) for user in ("ada", "alan"))

    assert first.created == second.created == NOW
    assert first.created is second.created
    assert first.expires is second.expires
    assert first.result == "true" and first.result is second.result
    assert first.result_type is second.result_type
    assert first.command.destination is second.command.destination


def test_shared_job_round_trips_byte_for_byte() -> None:
    text = finished("ada")
    assert Job.from_json(text).to_json() == text


def test_whole_seconds_shares_equal_stamps_and_keeps_types() -> None:
    assert whole_seconds(NOW + 0.25) is whole_seconds(NOW + 0.75)
    assert type(whole_seconds(1.0)) is int and whole_seconds(1.0) == 1
