"""The quick reader of job commands (:mod:`broadgauge.jobs._canonical`).

It may take only texts in the one form serde_json and our encoder write, and must then give
exactly what the strict reader gives; every other text it declines, and the strict reader
judges it (with its own errors).
"""

from __future__ import annotations

import json
import sys

import msgspec
import openportal as op  # the official wheel: a test dependency, never skipped
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broadgauge import jobs
from broadgauge.jobs import _canonical, _json
from broadgauge.jobs import job as job_module
from broadgauge.jobs.commands import decode_strictly

from . import helpers as h

JOB = h.job()
PUT = jobs.encode_command(jobs.Put(JOB))


def _strict(text: str | bytes) -> object:
    """What the strict reader makes of ``text``: a command, or its error's message."""
    try:
        return decode_strictly(text)
    except jobs.ProtocolError as exc:
        return str(exc)


def _decoded(text: str | bytes) -> object:
    try:
        return jobs.decode_command(text)
    except jobs.ProtocolError as exc:
        return str(exc)


def test_msgspec_escapes_every_code_point_as_json_dumps_does() -> None:
    # The quick reader compares msgspec's bytes with the text, and the Job keeps that text as
    # its JSON: both rest on this.  Checked against whichever msgspec is installed.
    chars = [chr(cp) for cp in range(sys.maxunicode + 1) if not 0xD800 <= cp <= 0xDFFF]
    assert msgspec.json.encode(chars).decode() == _json.dumps(chars)


@pytest.mark.parametrize("command", [jobs.Put, jobs.Update, jobs.Delete])
def test_a_canonical_text_is_read_quickly_and_as_the_strict_reader_reads_it(
    command: type[jobs.Put] | type[jobs.Update] | type[jobs.Delete],
) -> None:
    text = jobs.encode_command(command(JOB))
    for form in (text, text.encode()):
        quick = _canonical.read_job_command(form)
        assert quick is not None
        assert quick == (command.TAG, JOB)
        assert jobs.decode_command(form) == decode_strictly(form) == command(JOB)


@settings(max_examples=300)
@given(h.jobs(), st.sampled_from(["Put", "Update", "Delete"]))
def test_what_the_rust_client_writes_is_read_quickly(job: jobs.Job, tag: str) -> None:
    rust_job = op.Job.from_json(job.to_json()).to_json()
    text = f'{{"{tag}":{{"job":{rust_job}}}}}'
    quick = _canonical.read_job_command(text)
    assert quick is not None, text
    assert quick == (tag, job)
    assert decode_strictly(text) == jobs.decode_command(text)


@settings(max_examples=300)
@given(h.jobs())
def test_the_json_kept_for_a_job_read_quickly_is_what_it_would_write(job: jobs.Job) -> None:
    text = jobs.encode_command(jobs.Update(job))
    quick = _canonical.read_job_command(text)
    assert quick is not None
    _, read = quick
    assert read.to_json() == _json.dumps(read.to_json_value()) == job.to_json()


VALID_BUT_NOT_CANONICAL = [
    pytest.param(PUT.replace(",", ", "), id="whitespace"),
    pytest.param(PUT.replace('"state"', '"\\u0073tate"'), id="escaped-key"),
    pytest.param(PUT.replace(str(JOB.id), str(JOB.id).upper()), id="upper-case-id"),
    pytest.param(PUT.replace(str(JOB.id), JOB.id.hex), id="simple-id"),
    pytest.param(PUT.replace(',"forwarded_for":null', ""), id="missing-optional"),
    pytest.param(PUT.replace("}}}", ',"extra":1}}}'), id="unknown-field"),
    pytest.param(PUT.replace(" add_user", "  add_user"), id="command-spacing"),
    pytest.param(
        PUT.replace('"forwarded_for":null', '"forwarded_for":"a..b"'), id="destination-spelling"
    ),
    pytest.param(PUT.replace('"Pending"', '"P\\u0065nding"'), id="escaped-value"),
]

INVALID = [
    pytest.param(PUT.replace('"version":', '"version":7,"version":'), id="duplicate-field"),
    pytest.param(PUT.replace('"state":', '"\\u0073tate":"Error","state":'), id="duplicate-escaped"),
    pytest.param(PUT.replace('{"job":', '{"job":{},"job":'), id="duplicate-job"),
    pytest.param(PUT[:-1] + ',"Put":{}}', id="duplicate-variant"),
    pytest.param(PUT[:-1] + ',"Update":' + PUT[7:], id="two-variants"),
    pytest.param(PUT.replace(f'"version":{JOB.version}', '"version":-0'), id="minus-zero"),
    pytest.param(PUT.replace(f'"version":{JOB.version}', '"version":1.0'), id="float"),
    pytest.param(PUT.replace(f'"version":{JOB.version}', '"version":true'), id="boolean"),
    pytest.param(PUT.replace(f'"version":{JOB.version}', f'"version":{2**64}'), id="beyond-u64"),
    pytest.param(PUT.replace(f'"created":{JOB.created}', '"created":10000000000000'), id="date"),
    pytest.param(PUT.replace('"Pending"', '"pending"'), id="state-spelling"),
    pytest.param(PUT.replace('"result":null', '"result":"\\ud800"'), id="lone-surrogate"),
    pytest.param(PUT.replace(str(JOB.id), "not-a-uuid"), id="bad-id"),
    pytest.param(PUT.replace(" add_user", " frobnicate"), id="bad-instruction"),
    pytest.param(PUT.replace('"forwarded_for":null', '"forwarded_for":"a"'), id="bad-destination"),
    pytest.param(PUT.replace(',"state":"Pending"', ""), id="missing-field"),
    pytest.param(PUT.replace('"Put"', '"Shove"'), id="unknown-variant"),
    pytest.param('{"Put":null}', id="null-body"),
    pytest.param("{}", id="empty"),
    pytest.param(PUT.replace('"version":', '"extra":[1e400],"version":'), id="out-of-range"),
    pytest.param(PUT + " x", id="trailing"),
]


@pytest.mark.parametrize("text", VALID_BUT_NOT_CANONICAL)
def test_a_valid_text_in_another_form_is_left_to_the_strict_reader(text: str) -> None:
    assert _canonical.read_job_command(text) is None
    assert isinstance(_strict(text), jobs.Put)  # fails if the case above is not valid
    assert _decoded(text) == _strict(text)


@pytest.mark.parametrize("text", INVALID)
def test_an_invalid_text_is_refused_with_the_strict_readers_error(text: str) -> None:
    assert _canonical.read_job_command(text) is None
    refusal = _strict(text)
    assert isinstance(refusal, str)  # fails if the case above is not invalid
    assert _decoded(text) == refusal


@settings(max_examples=500)
@given(h.jobs(), st.data())
def test_a_changed_character_never_makes_the_readers_disagree(
    job: jobs.Job, data: st.DataObject
) -> None:
    text = jobs.encode_command(jobs.Update(job))
    at = data.draw(st.integers(0, len(text) - 1))
    replacement = data.draw(st.sampled_from([" ", '"', "0", "-", "\\", ",", ":", "}", "e", "1"]))
    changed = text[:at] + replacement + text[at + 1 :]
    assert _decoded(changed) == _strict(changed)


def test_the_ids_and_commands_kept_are_bounded() -> None:
    for _ in range(3000):
        _canonical.read_job_command(jobs.encode_command(jobs.Put(h.job())))
    assert _canonical._job_id.cache_info().currsize <= 1024
    assert job_module._canonical_on.cache_info().currsize <= job_module.PEER_COMMANDS_KEPT


def test_the_strict_reader_and_the_oracle_agree_on_what_the_quick_one_declines() -> None:
    # A text the quick reader declines is still one the Rust client reads, when it is valid.
    text = PUT.replace(",", ", ")
    body = json.loads(text)["Put"]["job"]
    assert op.Job.from_json(json.dumps(body)).to_json() == JOB.to_json()


@settings(max_examples=300)
@given(h.jobs())
def test_a_job_written_by_msgspec_is_what_json_dumps_writes(job: jobs.Job) -> None:
    # Job.to_json writes through msgspec (jobs/_job_json.py); the strict writer is the
    # reference, and the oracle tests check that against the Rust client.
    fresh = jobs.Job(**{field: getattr(job, field) for field in job.__dataclass_fields__})
    assert fresh.to_json() == _json.dumps(job.to_json_value())


def test_a_jobs_id_text_is_its_own_id_among_many() -> None:
    many = [h.job() for _ in range(5000)]
    assert all(job.id_text == str(job.id) for job in many)
    assert all(job.id_text == str(job.id) for job in reversed(many))  # some no longer kept
