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


def test_a_job_is_encoded_once_and_each_version_on_its_own() -> None:
    job = Job.create(Command.parse("cluster.account add_user ada.physics.brics"), now=NOW)
    text = job.to_json()
    assert job.to_json() is text
    later = job.pending(now=NOW + 1)
    assert later.to_json() != text
    assert Job.from_json(later.to_json()) == later


def test_job_commands_encode_as_the_whole_command_would() -> None:
    from broadgauge.jobs import _json
    from broadgauge.jobs.commands import Delete, Put, Update, decode_command, encode_command

    command = Command.parse("cluster.account add_user zoë.physics.brics")
    job = Job.create(command, now=NOW).pending(now=NOW).completed('"ok"', "String", now=NOW)
    for kind in (Put, Update, Delete):
        wire = encode_command(kind(job))
        assert wire == _json.dumps({kind.TAG: {"job": job.to_json_value()}})
        assert decode_command(wire) == kind(job)
