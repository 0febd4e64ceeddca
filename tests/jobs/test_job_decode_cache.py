"""Jobs from peers: each command text is parsed once per agent and day, and never wrongly.

A job reaches an agent many times (Put, Update, Sync, duplicates), so
:func:`broadgauge.jobs.job._peer_command` keeps what it parsed by the exact text and the
local date (a named date range resolves against the date).
"""

from __future__ import annotations

import datetime
import json
import types

import pytest

from broadgauge.jobs import Job, JobDecodeError
from broadgauge.jobs import job as job_module

WIRE = (
    '{"id":"7c9e6679-7425-40de-944b-e07fc1f90ae7","created":1717400000,"changed":1717400003,'
    '"expires":1717400120,"version":3,'
    '"command":"portal.provider.clusters.cluster add_user alice.proj.portal",'
    '"state":"Pending","result":null,"result_type":null,"forwarded_for":null}'
)


def _with_command(text: str) -> str:
    value = json.loads(WIRE)
    value["command"] = text
    return json.dumps(value)


def test_the_same_text_decodes_to_the_same_command_and_the_same_bytes() -> None:
    first, again = Job.from_json(WIRE), Job.from_json(WIRE)
    assert first == again
    assert first.command is again.command  # parsed once
    assert again.to_json() == WIRE  # the cache changes nothing on the wire


def test_another_day_parses_the_text_again(monkeypatch: pytest.MonkeyPatch) -> None:
    today = Job.from_json(WIRE).command

    class Tomorrow(datetime.date):
        @classmethod
        def today(cls) -> Tomorrow:
            return cls.fromordinal(datetime.date.today().toordinal() + 1)

    monkeypatch.setattr(job_module, "datetime", types.SimpleNamespace(date=Tomorrow))
    tomorrow = Job.from_json(WIRE).command
    assert tomorrow == today and tomorrow is not today


def test_a_bad_command_is_refused_every_time_and_never_kept() -> None:
    bad = _with_command("portal.provider add_user not-an-identifier")
    for _ in range(2):
        with pytest.raises(JobDecodeError, match=r"job\.command: could not parse command"):
            Job.from_json(bad)
    misses = job_module._parse_on.cache_info().misses
    with pytest.raises(JobDecodeError):
        Job.from_json(bad)
    assert job_module._parse_on.cache_info().misses == misses + 1  # parsed again: not kept


def test_the_cache_is_bounded() -> None:
    for n in range(job_module.PEER_COMMANDS_KEPT + 10):
        Job.from_json(_with_command(f"portal.cluster add_user u{n}.proj.portal"))
    assert job_module._parse_on.cache_info().currsize <= job_module.PEER_COMMANDS_KEPT
