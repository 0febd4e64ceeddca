"""Unit and property tests of the Job value: transitions, versions, JSON."""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broadgauge.grammar import Command, Destination, GrammarError
from broadgauge.jobs import (
    DEFAULT_LIFETIME_SECONDS,
    InvalidStateError,
    Job,
    JobDecodeError,
    ProtocolError,
    Status,
)
from broadgauge.jobs.job import TIMESTAMP_MAX, TIMESTAMP_MIN, VERSION_MAX

from . import helpers as h
from .helpers import T0

NOTES_EXAMPLE = (
    '{"id":"7c9e6679-7425-40de-944b-e07fc1f90ae7","created":1717400000,"changed":1717400003,'
    '"expires":1717400120,"version":1002,'
    '"command":"portal.provider.clusters.cluster add_user alice.proj.portal",'
    '"state":"Complete","result":"\\"alice.proj.portal:alice.proj:portal.proj\\"",'
    '"result_type":"UserMapping","forwarded_for":null}'
)


def _wire(**changes: object) -> str:
    value = json.loads(NOTES_EXAMPLE)
    value.update(changes)
    return json.dumps(value)


# ---------------------------------------------------------------- creation


def test_parse_creates_version_one_created_job_with_two_minute_lifetime() -> None:
    job = Job.parse("portal.provider  add_user\talice.proj.portal", now=T0 + 0.9)
    assert job.state is Status.CREATED
    assert job.version == 1
    assert job.created == job.changed == T0  # whole seconds, floored
    assert job.expires == T0 + DEFAULT_LIFETIME_SECONDS == T0 + 120
    assert job.id.version == 4
    assert str(job.command) == "portal.provider add_user alice.proj.portal"
    assert job.result is None and job.result_type is None and job.forwarded_for is None


def test_parse_rejects_invalid_command_and_failed_portal_check() -> None:
    with pytest.raises(GrammarError):
        Job.parse("portal add_user alice.proj.portal", now=T0)
    with pytest.raises(GrammarError, match="can only be issued via the portal"):
        Job.parse("other.provider add_user alice.proj.portal", now=T0, portal_check=True)
    assert Job.parse("other.provider add_user alice.proj.portal", now=T0).version == 1


def test_set_lifetime_counts_from_created() -> None:
    job = Job.parse("a.b add_user u.p.a", now=T0).pending(now=T0 + 30)
    assert job.set_lifetime(300).expires == T0 + 300
    assert job.set_lifetime(300).version == job.version


def test_is_expired_is_strict() -> None:
    job = h.job(created=T0, lifetime=120)
    assert not job.is_expired(T0 + 120)
    assert job.is_expired(T0 + 120.001)


# -------------------------------------------------------------- transitions

ALL = list(Status)


def _job_in(state: Status) -> Job:
    return h.job(state=state, version=50, result="r" if state is Status.RUNNING else None)


def _finished_other() -> Job:
    return h.job(state=Status.COMPLETE, version=1002, result='"x"', result_type="String")


TRANSITIONS: dict[str, tuple[Callable[[Job], Job], set[Status], int, str]] = {
    # name: (call, allowed-from, version delta, Rust refusal text)
    "pending": (lambda j: j.pending(now=T0 + 5), {Status.CREATED}, 1, "pending"),
    "running": (lambda j: j.running("p", now=T0 + 5), {Status.PENDING, Status.RUNNING}, 1, ""),
    "completed": (
        lambda j: j.completed('"v"', "String", now=T0 + 5),
        {Status.PENDING, Status.RUNNING},
        1000,
        "complete",
    ),
    "completed_none": (
        lambda j: j.completed_none(now=T0 + 5),
        {Status.PENDING, Status.RUNNING},
        1000,
        "complete",
    ),
    "errored": (
        lambda j: j.errored("boom", now=T0 + 5),
        {Status.PENDING, Status.RUNNING, Status.DUPLICATE},
        1000,
        "error",
    ),
    "copy_result_from": (
        lambda j: j.copy_result_from(_finished_other(), now=T0 + 5),
        {Status.PENDING, Status.RUNNING, Status.DUPLICATE},
        1000,
        "",
    ),
    "increment_version": (lambda j: j.increment_version(now=T0 + 5), set(ALL), 1, ""),
}


@pytest.mark.parametrize("name", sorted(TRANSITIONS))
@pytest.mark.parametrize("state", ALL, ids=lambda s: s.value)
def test_transition_allowed_states_and_version_arithmetic(name: str, state: Status) -> None:
    call, allowed, delta, word = TRANSITIONS[name]
    before = _job_in(state)
    if (name, state) == ("pending", Status.PENDING):
        assert call(before) is before  # Rust: pending() of a Pending job is a no-op
    elif state in allowed:
        after = call(before)
        assert after.version == before.version + delta
        assert after.changed == T0 + 5
        assert (after.id, after.created, after.expires) == (
            before.id,
            before.created,
            before.expires,
        )
    else:
        with pytest.raises(InvalidStateError) as info:
            call(before)
        if word:
            assert str(info.value) == f"Cannot set {word} on job in state: {state.value}"


def test_pending_of_pending_is_a_no_op() -> None:
    job = h.job(state=Status.PENDING, version=2)
    assert job.pending(now=T0 + 99) is job


def test_transition_results() -> None:
    pending = h.job(state=Status.PENDING, version=2)
    running = pending.running("working", now=T0 + 1)
    assert (running.state, running.result, running.result_type) == (
        Status.RUNNING,
        "working",
        None,
    )
    assert running.progress_message == "working"
    assert running.running(now=T0 + 2).progress_message == "Running"
    done = running.completed('"alice"', "String", now=T0 + 3)
    assert (done.state, done.result, done.result_type, done.version) == (
        Status.COMPLETE,
        '"alice"',
        "String",
        1003,  # 2 (Pending) -> 3 (Running) -> +1000
    )
    none = pending.completed_none(now=T0 + 3)
    assert (none.result, none.result_type) == (None, "None")
    err = pending.errored("bad thing", now=T0 + 3)
    assert (err.state, err.result, err.result_type, err.error_message) == (
        Status.ERROR,
        "bad thing",
        "Error",
        "bad thing",
    )
    assert done.is_finished and err.is_finished and not running.is_finished


def test_completed_requires_json_text_and_type_name() -> None:
    pending = h.job()
    with pytest.raises(ValueError, match="JSON"):
        pending.completed("not json", "String", now=T0)
    with pytest.raises(ValueError, match="type"):
        pending.completed('"x"', "", now=T0)


def test_copy_result_from_takes_state_result_and_type() -> None:
    dup = h.job(state=Status.DUPLICATE, version=3)
    error = h.job(state=Status.ERROR, version=1002, result="nope", result_type="Error")
    copied = dup.copy_result_from(error, now=T0 + 1)
    assert (copied.state, copied.result, copied.result_type, copied.version) == (
        Status.ERROR,
        "nope",
        "Error",
        1003,
    )
    with pytest.raises(InvalidStateError, match="Cannot copy result from job in state: Pending"):
        dup.copy_result_from(h.job(), now=T0)


def test_duplicate_takes_original_command_and_id() -> None:
    original = h.job("a.x.cluster add_user u.p.a", version=2)
    new = h.job("b.cluster add_user  u.p.a", version=2, created=T0 + 10)
    assert new.is_duplicate_of(original, T0 + 10)
    dup = new.duplicate(original, now=T0 + 11)
    assert dup.state is Status.DUPLICATE
    assert dup.version == 3
    assert dup.result == str(original.id) and dup.original_id == original.id
    assert dup.command == original.command
    assert dup.progress_message == "Pending"


@pytest.mark.parametrize(
    ("original", "candidate", "at"),
    [
        ("a.c add_user u.p.a", "a.d add_user u.p.a", T0),  # different last hop
        ("a.c add_user u.p.a", "a.c add_user v.p.a", T0),  # different instruction
        ("a.c add_user u.p.a", "a.c add_user u.p.a", T0 + 121),  # original expired
    ],
)
def test_not_a_duplicate(original: str, candidate: str, at: int) -> None:
    o = h.job(original)
    c = h.job(candidate, created=at, lifetime=500)
    assert not c.is_duplicate_of(o, at)
    with pytest.raises(InvalidStateError, match="is not a duplicate of job"):
        c.duplicate(o, now=at)


def test_duplicate_requires_both_pending() -> None:
    o = h.job("a.c add_user u.p.a")
    assert not h.job("a.c add_user u.p.a", state=Status.RUNNING).is_duplicate_of(o, T0)
    assert not h.job("a.c add_user u.p.a").is_duplicate_of(
        dataclasses.replace(o, state=Status.RUNNING), T0
    )


def test_versions_saturate_instead_of_wrapping() -> None:
    top = h.job(version=VERSION_MAX - 10)
    assert top.errored("x", now=T0).version == VERSION_MAX
    assert top.increment_version(now=T0).version == VERSION_MAX - 9


def test_job_validates_its_fields() -> None:
    base = h.job()
    with pytest.raises(ValueError):
        dataclasses.replace(base, version=-1)
    with pytest.raises(ValueError):
        dataclasses.replace(base, created=TIMESTAMP_MAX + 1)
    with pytest.raises(TypeError):
        dataclasses.replace(base, created=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        dataclasses.replace(base, result="\ud800")


def test_display_matches_rust() -> None:
    cmd = "a.b add_user u.p.a"
    assert str(h.job(cmd)) == "{a.b add_user u.p.a: Pending}"
    assert str(h.job(cmd, state=Status.ERROR, result="x")) == "{a.b add_user u.p.a: Error - x}"
    assert str(h.job(cmd, state=Status.ERROR)) == "{a.b add_user u.p.a: Unknown Error}"
    dup = h.job(cmd, state=Status.DUPLICATE, result="abc")
    assert str(dup) == '{a.b add_user u.p.a: Duplicate of Some("abc")}'


# --------------------------------------------------------------------- JSON


def test_notes_example_round_trips_byte_for_byte() -> None:
    job = Job.from_json(NOTES_EXAMPLE)
    assert job.to_json() == NOTES_EXAMPLE
    assert job.version == 1002 and job.state is Status.COMPLETE
    assert job.id == uuid.UUID("7c9e6679-7425-40de-944b-e07fc1f90ae7")


def test_key_order_and_compact_form() -> None:
    text = h.job().to_json()
    keys = list(json.loads(text))
    assert keys[:5] == ["id", "created", "changed", "expires", "version"]
    assert keys[5:] == ["command", "state", "result", "result_type", "forwarded_for"]
    assert ", " not in text and '": ' not in text


def test_optional_keys_may_be_missing_and_unknown_keys_are_ignored() -> None:
    value = json.loads(NOTES_EXAMPLE)
    for key in ("result", "result_type", "forwarded_for"):
        del value[key]
    value["extra"] = {"anything": [1, 2]}
    job = Job.from_json(json.dumps(value))
    assert job.result is None and job.result_type is None and job.forwarded_for is None
    assert '"forwarded_for":null' in job.to_json()


def test_command_and_forwarded_for_are_reparsed_into_canonical_form() -> None:
    job = Job.from_json(
        _wire(
            command="  portal.provider\t set_project_quota p.portal scratch 100GB ",
            forwarded_for="a..b.",
        )
    )
    assert str(job.command) == "portal.provider set_project_quota p.portal scratch 100.00 GB"
    assert job.forwarded_for == Destination.parse("a.b")
    assert '"forwarded_for":"a.b"' in job.to_json()


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"created": 1717400000.0}, "created"),
        ({"version": 2.0}, "version"),
        ({"version": -1}, "version"),
        ({"version": 2**64}, "version"),
        ({"version": True}, "version"),
        ({"expires": TIMESTAMP_MAX + 1}, "expires"),
        ({"changed": TIMESTAMP_MIN - 1}, "changed"),
        ({"state": "pending"}, "state"),
        ({"state": None}, "state"),
        ({"state": {"Pending": None}}, "state"),
        ({"id": "7c9e-6679-7425-40de-944b-e07fc1f90ae7"}, "id"),
        ({"id": "URN:UUID:7c9e6679-7425-40de-944b-e07fc1f90ae7"}, "id"),
        ({"id": 5}, "id"),
        ({"command": "portal add_user alice.proj.portal"}, "command"),
        ({"command": "a.b add_user alice.proj"}, "command"),
        ({"command": ""}, "command"),
        ({"result": 5}, "result"),
        ({"forwarded_for": "a"}, "forwarded_for"),
        ({"forwarded_for": ""}, "forwarded_for"),
    ],
)
def test_invalid_fields_reject_the_whole_job(changes: dict[str, object], fragment: str) -> None:
    with pytest.raises(JobDecodeError, match=rf"job\.{fragment}"):
        Job.from_json(_wire(**changes))


@pytest.mark.parametrize(
    "text",
    [
        NOTES_EXAMPLE.replace('"version":1002', '"version":-0'),
        NOTES_EXAMPLE.replace('"version":1002', '"version":1e3'),
        NOTES_EXAMPLE.replace('"version":1002', '"version":NaN'),
        NOTES_EXAMPLE.replace("{", '{"id":"7c9e6679-7425-40de-944b-e07fc1f90ae7",', 1),
        NOTES_EXAMPLE + "x",
        "\ufeff" + NOTES_EXAMPLE,
        NOTES_EXAMPLE.replace('"result":"', '"result":"\\ud800', 1),
        "[]",
        "",
        b"\xff\xfe",
    ],
    ids=[
        "minus-zero",
        "exponent",
        "nan",
        "duplicate-key",
        "trailing",
        "bom",
        "lone-surrogate",
        "array",
        "empty",
        "bad-utf8",
    ],
)
def test_strict_json(text: str | bytes) -> None:
    with pytest.raises(JobDecodeError):
        Job.from_json(text)


@pytest.mark.parametrize(
    "form",
    [
        "7C9E6679-7425-40DE-944B-E07FC1F90AE7",
        "7c9e6679742540de944be07fc1f90ae7",
        "{7c9e6679-7425-40de-944b-e07fc1f90ae7}",
        "urn:uuid:7c9e6679-7425-40de-944b-e07fc1f90ae7",
    ],
)
def test_uuid_forms_rust_accepts_are_canonicalised(form: str) -> None:
    assert Job.from_json(_wire(id=form)).to_json() == NOTES_EXAMPLE


def test_leading_and_trailing_json_whitespace_is_fine() -> None:
    assert Job.from_json(" \n" + NOTES_EXAMPLE + "\r\n\t").to_json() == NOTES_EXAMPLE


def test_control_characters_are_escaped_like_serde_json() -> None:
    job = dataclasses.replace(h.job(), result='a\x01\x1f\b\f\n\r\t"\\\x7fé☃')
    fragment = '"result":"a\\u0001\\u001f\\b\\f\\n\\r\\t\\"\\\\\x7fé☃"'
    assert fragment in job.to_json()


def test_decode_errors_are_protocol_errors() -> None:
    assert issubclass(JobDecodeError, ProtocolError)


@given(h.jobs())
def test_json_round_trip(job: Job) -> None:
    text = job.to_json()
    again = Job.from_json(text)
    assert again == job
    assert again.to_json() == text
    assert Job.from_json(text.encode()) == job


@given(h.command_texts(), st.floats(0, 4e9))
def test_parse_then_round_trip(command: str, now: float) -> None:
    job = Job.parse(command, now=now)
    assert Job.from_json(job.to_json()) == job
    assert job.command == Command.parse(command)


def test_complete_with_and_result_value() -> None:
    from broadgauge.grammar import ResultError, UserMapping

    pending = h.job()
    mapping = UserMapping.parse("alice.proj.portal:alice.proj:portal.proj")
    done = pending.complete_with(mapping, now=T0 + 1)
    assert (done.result_type, done.version) == ("UserMapping", 1002)
    assert done.result_value() == mapping
    assert pending.complete_with(None, now=T0).result_type == "None"
    assert pending.complete_with(None, now=T0).result_value() is None
    failed = pending.complete_with(ResultError("nope"), now=T0)
    assert failed.is_error and failed.result_value() == ResultError("nope")
    assert pending.complete_with(["a", "b"], now=T0).result_value() == ["a", "b"]
    with pytest.raises(InvalidStateError, match="not finished"):
        pending.result_value()
    with pytest.raises(GrammarError):
        pending.complete_with(object(), now=T0)
