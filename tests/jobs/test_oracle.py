"""Differential tests against the official ``openportal==0.32.2`` wheel.

Only well-formed commands are ever handed to the wheel: some malformed
instructions abort its interpreter (notes §4.5).
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from typing import Any

import openportal as op  # the official wheel: a test dependency, never skipped
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broadgauge.jobs import EventKind, Job, JobDecodeError, Notification, Status

from . import helpers as h
from .helpers import T0

PENDING = (
    '{"id":"7c9e6679-7425-40de-944b-e07fc1f90ae7","created":1717400000,"changed":1717400003,'
    '"expires":1717400120,"version":2,'
    '"command":"portal.provider.clusters.cluster add_user alice.proj.portal",'
    '"state":"Pending","result":null,"result_type":null,"forwarded_for":null}'
)


def _without_changed(text: str) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(text)
    value.pop("changed")
    return value


@settings(max_examples=300)
@given(h.jobs())
def test_oracle_reads_our_json_byte_for_byte(job: Job) -> None:
    ours = job.to_json()
    theirs = op.Job.from_json(ours)
    assert theirs.to_json() == ours
    assert str(theirs.id) == str(job.id)
    assert theirs.version == job.version
    assert str(theirs.state) == job.state.display


@settings(max_examples=300)
@given(h.jobs())
def test_we_read_oracle_json_byte_for_byte(job: Job) -> None:
    oracle_text = op.Job.from_json(job.to_json()).to_json()
    ours = Job.from_json(oracle_text)
    assert ours == job
    assert ours.to_json() == oracle_text


@given(h.command_texts(), st.sampled_from([Status.PENDING, Status.RUNNING, Status.DUPLICATE]))
def test_oracle_transitions_are_readable_and_match_ours(command: str, state: Status) -> None:
    start = dataclasses.replace(
        h.job(command, version=7),
        state=state,
        result="progress" if state is Status.RUNNING else None,
    )
    theirs = op.Job.from_json(start.to_json())

    errored = theirs.errored("it broke")
    ours = start.errored("it broke", now=T0 + 1)
    assert Job.from_json(errored.to_json()).version == ours.version == 1007
    assert _without_changed(errored.to_json()) == _without_changed(ours.to_json())

    if state is not Status.DUPLICATE:
        completed = theirs.completed("hello")
        ours = start.completed('"hello"', "String", now=T0 + 1)
        assert _without_changed(completed.to_json()) == _without_changed(ours.to_json())
        assert Job.from_json(completed.to_json()).result == '"hello"'


@pytest.mark.parametrize(
    ("value", "result", "result_type"),
    [
        (True, "true", "bool"),
        (["a", "b"], '["a","b"]', "Vec<String>"),
        ("x\ny", '"x\\ny"', "String"),
    ],
)
def test_completed_value_encodings(value: object, result: str, result_type: str) -> None:
    theirs = op.Job.from_json(PENDING).completed(value)
    ours = Job.from_json(PENDING).completed(result, result_type, now=T0)
    assert _without_changed(theirs.to_json()) == _without_changed(ours.to_json())


def test_oracle_refuses_the_same_transitions() -> None:
    created = PENDING.replace('"Pending"', '"Created"')
    with pytest.raises(OSError, match="Cannot set complete on job in state: Created"):
        op.Job.from_json(created).completed("x")
    error = PENDING.replace('"Pending"', '"Error"')
    with pytest.raises(OSError, match="Cannot set error on job in state: Error"):
        op.Job.from_json(error).errored("x")


@pytest.mark.parametrize(
    "text",
    [
        PENDING.replace('"created":1717400000', '"created":1717400000.0'),
        PENDING.replace('"version":2', '"version":-0'),
        PENDING.replace('"version":2', '"version":18446744073709551616'),
        PENDING.replace('"Pending"', '"pending"'),
        PENDING.replace("7c9e6679-7425", "7c9e-6679-7425"),
        PENDING.replace('"created":1717400000', '"created":8210266876800'),
        PENDING.replace("portal.provider.clusters.cluster", "portal"),
        PENDING.replace('"forwarded_for":null', '"forwarded_for":"a"'),
        PENDING.replace("{", '{"version":3,', 1),
        PENDING + " x",
    ],
)
def test_what_we_reject_the_oracle_rejects_too(text: str) -> None:
    with pytest.raises(JobDecodeError):
        Job.from_json(text)
    with pytest.raises(OSError):
        op.Job.from_json(text)


@pytest.mark.parametrize(
    "text",
    [
        PENDING.replace('"created":1717400000', '"created":-8334601228800'),
        PENDING.replace('"version":2', '"version":18446744073709551615'),
        PENDING.replace('"result":null,"result_type":null,"forwarded_for":null', '"x":1'),
        PENDING.replace(
            "7c9e6679-7425-40de-944b-e07fc1f90ae7", "{7C9E6679-7425-40DE-944B-E07FC1F90AE7}"
        ),
    ],
)
def test_what_the_oracle_accepts_we_accept_identically(text: str) -> None:
    assert Job.from_json(text).to_json() == op.Job.from_json(text).to_json()


# Every event the text form can carry (all but Forward), plus Rust's trimming.
NOTIFICATION_TEXTS = [
    f"a.b {kind.keyword} {'u.p.x' if kind.takes_user else 'p.x'}"
    for kind in EventKind
    if kind is not EventKind.FORWARD
] + ["portal.clusters.shared user_added chris.p.portal", "a..b  user_added   u . p . x "]


@pytest.mark.parametrize("text", NOTIFICATION_TEXTS)
def test_notifications_match_oracle(text: str) -> None:
    theirs = op.Notification.parse(text)
    ours = Notification.parse(text, id=uuid.UUID(str(theirs.id)))
    assert ours.to_json() == theirs.to_json()
    assert str(ours) == str(theirs)
    assert Notification.from_json(theirs.to_json()) == ours


def test_forward_notification_matches_oracle() -> None:
    text = (
        '{"id":"3f0c6679-7425-40de-944b-e07fc1f90ae7","destination":"a.b.c","event":'
        '{"Forward":{"id":"4f0c6679-7425-40de-944b-e07fc1f90ae7","destination":"x.y",'
        '"event":{"UserAdded":"u.p.x"}}}}'
    )
    theirs = op.Notification.from_json(text)
    ours = Notification.from_json(text)
    assert ours.to_json() == theirs.to_json() == text
    assert str(ours) == str(theirs) == "a.b.c forward [x.y user_added u.p.x]"


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        ("alice.proj.portal:alice.proj:portal.proj", "UserMapping"),
        ("proj.portal:portal.proj", "ProjectMapping"),
        ("alice.proj.portal", "UserIdentifier"),
    ],
)
def test_complete_with_grammar_values_matches_oracle(ours: str, theirs: str) -> None:
    import broadgauge.grammar as g

    value = getattr(g, theirs).parse(ours)
    expected = op.Job.from_json(PENDING).completed(getattr(op, theirs)(ours))
    job = Job.from_json(PENDING).complete_with(value, now=T0)
    assert _without_changed(job.to_json()) == _without_changed(expected.to_json())
    assert job.result_value() == value
