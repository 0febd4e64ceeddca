"""The health and diagnostics codec: relays send on what they read, byte for byte.

Every relay between an agent and the operator console decodes its health or diagnostics
answer (checking it) and encodes it again.  A decoded object keeps the JSON it was read
from when encoding would give exactly that back; these tests hold the kept JSON to what
encoding the decoded values writes, for well-formed input, input in other forms, and
damaged input.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broadgauge import jobs
from broadgauge.jobs import _json
from broadgauge.jobs.health import (
    DiagnosticsReport,
    ExpiredJobEntry,
    FailedJobEntry,
    HealthInfo,
    LogEntry,
    NotificationStatistics,
    RunningJobEntry,
    SlowJobEntry,
    _format_with_strftime,
    format_datetime,
)

from . import helpers as h

STAMP = datetime(2024, 6, 3, 7, 33, 20, 123456, tzinfo=UTC)

# Years from 1000 on: below that the format writes an unpadded year that no reader parses.
stamps = st.datetimes(min_value=datetime(1000, 1, 1), timezones=st.just(UTC))
texts = st.text(max_size=8).filter(lambda t: not any(0xD800 <= ord(c) <= 0xDFFF for c in t))
counts = st.integers(0, 2**64 - 1)
finite = st.floats(allow_nan=False, allow_infinity=False)


def _few(items: st.SearchStrategy[Any]) -> st.SearchStrategy[tuple[Any, ...]]:
    return st.lists(items, max_size=3).map(tuple)


@st.composite
def reports(draw: st.DrawFn) -> DiagnosticsReport:
    """Diagnostics reports with every kind of entry."""
    signed = st.integers(-(2**63), 2**63 - 1)
    return DiagnosticsReport(
        agent_name=draw(texts),
        generated_at=draw(stamps),
        failed_jobs=draw(
            _few(st.builds(FailedJobEntry, texts, texts, texts, counts, stamps, stamps))
        ),
        slowest_jobs=draw(_few(st.builds(SlowJobEntry, texts, texts, finite, stamps))),
        expired_jobs=draw(_few(st.builds(ExpiredJobEntry, texts, texts, stamps, stamps, counts))),
        running_jobs=draw(_few(st.builds(RunningJobEntry, texts, texts, stamps, counts, signed))),
        warnings=draw(_few(texts)),
        recent_logs=draw(_few(st.builds(LogEntry, stamps, texts, texts, texts))),
        notification_statistics=draw(st.builds(NotificationStatistics, counts, counts, counts)),
    )


@st.composite
def healths(draw: st.DrawFn, depth: int = 2) -> HealthInfo:
    """Health trees, a few agents deep."""
    info = HealthInfo(
        name=draw(texts),
        agent_type=draw(st.sampled_from(list(jobs.AgentType))),
        connected=draw(st.booleans()),
        active_jobs=draw(counts),
        cpu_percent=draw(finite),
        job_time_mean_ms=draw(finite),
        uptime_seconds=draw(st.integers(-(2**63), 2**63 - 1)),
        start_time=draw(stamps),
        current_time=draw(stamps),
    )
    if depth > 0:
        for peer in draw(st.lists(healths(depth - 1), max_size=2)):
            info = info.with_peer(peer)
    return info


def _outcome(decode: Any) -> tuple[str, str, str]:
    """What a decode gives: the object's repr and its encoding, or the error."""
    try:
        decoded = decode()
    except Exception as exc:  # both ways of decoding must fail alike, whatever the failure
        return ("error", type(exc).__name__, str(exc))
    return ("decoded", repr(decoded), decoded.to_json())


def _plain(value: Any) -> Any:
    """``value`` with every object a plain dict: decoding it keeps nothing, and so encodes."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def _kept_and_encoded(cls: type[Any], text: str) -> tuple[tuple[str, str, str], ...]:
    """Decoding ``text`` as a relay does (keeping what it read), and without keeping it."""
    kept = _outcome(lambda: cls.from_json(text))
    name = cls.__name__
    encoded = _outcome(lambda: cls.from_json_value(_plain(_json.loads(text, name)), name))
    return kept, encoded


def _locations(value: Any) -> list[tuple[Any, Any]]:
    """Every (container, key or index) in a decoded JSON value."""
    found: list[tuple[Any, Any]] = []
    stack = [value]
    while stack:
        node = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, child in items:
            found.append((node, key))
            if isinstance(child, dict | list):
                stack.append(child)
    return found


def _mutate(value: Any, data: st.DataObject) -> None:
    """Replace, delete or add one value somewhere in ``value``."""
    container, key = data.draw(st.sampled_from(_locations(value)))
    action = data.draw(st.sampled_from(["replace", "delete", "add"]))
    if action == "replace":
        container[key] = data.draw(h.json_values(max_leaves=4))
    elif action == "delete":
        del container[key]
    elif isinstance(container, dict):
        container[data.draw(st.text(max_size=12))] = data.draw(h.json_values(max_leaves=2))
    else:
        container.append(data.draw(h.json_values(max_leaves=2)))


@settings(max_examples=300)
@given(st.data())
def test_kept_json_is_what_encoding_writes_even_for_damaged_input(data: st.DataObject) -> None:
    original: HealthInfo | DiagnosticsReport = data.draw(reports() | healths())
    value = json.loads(original.to_json())
    for _ in range(data.draw(st.integers(1, 3))):
        _mutate(value, data)
    text = json.dumps(value, ensure_ascii=data.draw(st.booleans()))
    kept, encoded = _kept_and_encoded(type(original), text)
    assert kept == encoded


@settings(max_examples=200)
@given(reports())
def test_a_relay_sends_on_the_report_it_received_byte_for_byte(report: DiagnosticsReport) -> None:
    text = jobs.encode_command(jobs.DiagnosticsResponse(report))
    relayed = jobs.decode_command(text)
    assert relayed == jobs.DiagnosticsResponse(report)
    assert jobs.encode_command(relayed) == text
    # What was read is kept and sent on, not encoded again.
    assert isinstance(relayed, jobs.DiagnosticsResponse) and hasattr(relayed.report, "_wire")


@settings(max_examples=100)
@given(healths())
def test_a_relay_nests_the_health_it_received_byte_for_byte(health: HealthInfo) -> None:
    text = jobs.encode_command(jobs.HealthResponse(health))
    relayed = jobs.decode_command(text)
    assert isinstance(relayed, jobs.HealthResponse)
    assert jobs.encode_command(relayed) == text
    own = HealthInfo.new(
        "relay", jobs.AgentType.PLATFORM, connected=True, start_time=STAMP, now=STAMP
    )
    nested = own.with_peer(relayed.health)
    assert nested.to_json() == own.with_peer(health).to_json()


def _report_json() -> dict[str, Any]:
    report = DiagnosticsReport(
        agent_name="account",
        generated_at=STAMP,
        slowest_jobs=(SlowJobEntry("a.b", "add_user u.p.a", 12.5, STAMP),),
        warnings=("cluster is not connected",),
        recent_logs=(LogEntry(STAMP, "INFO", "broadgauge::account", "received"),),
    )
    value: dict[str, Any] = json.loads(report.to_json())
    return value


def _set_stamp(value: dict[str, Any], stamp: str) -> None:
    value["recent_logs"][0]["timestamp"] = stamp


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(lambda v: v["slowest_jobs"][0].update(duration_ms=12), id="integer-float"),
        pytest.param(lambda v: _set_stamp(v, "2024-06-03T08:33:20.123456+01:00"), id="offset"),
        pytest.param(lambda v: _set_stamp(v, "2024-06-03T07:33:20.123456789Z"), id="nanoseconds"),
        pytest.param(lambda v: _set_stamp(v, "2024-06-03T07:33:20.5Z"), id="one-digit-fraction"),
        pytest.param(lambda v: _set_stamp(v, "2024-06-03T07:33:20.000Z"), id="zero-fraction"),
        pytest.param(lambda v: _set_stamp(v, "2024-06-03T07:33:20.500000Z"), id="six-for-three"),
        pytest.param(lambda v: v.update(unknown=[1, 2]), id="unknown-key"),
        pytest.param(lambda v: v.pop("recent_logs"), id="defaulted-key-absent"),
        pytest.param(lambda v: v["notification_statistics"].pop("total_sent"), id="nested-bad"),
        pytest.param(lambda v: v["notification_statistics"].update(x=1), id="nested-unknown-key"),
        pytest.param(lambda v: v["recent_logs"][0].update(x=1), id="item-unknown-key"),
        pytest.param(lambda v: v.update(agent_name=v.pop("agent_name")), id="key-order"),
    ],
)
def test_input_in_another_form_is_written_as_encoding_writes_it(edit: Any) -> None:
    value = _report_json()
    edit(value)
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    kept, encoded = _kept_and_encoded(DiagnosticsReport, text)
    assert kept == encoded
    if kept[0] == "decoded":
        assert kept[2] != text  # written in the one form, not sent on as it came


def _health_json() -> dict[str, Any]:
    value: dict[str, Any] = json.loads(
        HealthInfo.new(
            "cluster", jobs.AgentType.INSTANCE, connected=True, start_time=STAMP, now=STAMP
        )
        .with_peer(HealthInfo(name="slurm", agent_type=jobs.AgentType.SCHEDULER))
        .to_json()
    )
    return value


def test_a_duplicated_field_is_refused_and_a_duplicated_unknown_key_is_not() -> None:
    text = json.dumps(_report_json())
    duplicated = text.replace('{"agent_name":', '{"agent_name":"other","agent_name":', 1)
    with pytest.raises(jobs.ProtocolError, match="duplicate field `agent_name`"):
        DiagnosticsReport.from_json(duplicated)
    unknown = text.replace('{"agent_name":', '{"x":1,"x":2,"agent_name":', 1)
    decoded = DiagnosticsReport.from_json(unknown)
    assert decoded.to_json() == json.dumps(_report_json(), separators=(",", ":"))


def test_a_non_finite_float_held_in_parsed_json_is_written_as_null() -> None:
    # The strict loader never yields one; a caller building the parsed object itself may.
    value = _health_json()
    value["peers"] = {}
    value["cpu_percent"] = float("nan")
    parsed = _json.JsonObject(list(value.items()))
    assert json.loads(HealthInfo.from_json_value(parsed).to_json())["cpu_percent"] is None


def test_changing_a_decoded_object_writes_the_change() -> None:
    decoded = HealthInfo.from_json(
        HealthInfo.new(
            "cluster", jobs.AgentType.INSTANCE, connected=True, start_time=STAMP, now=STAMP
        )
        .with_peer(
            HealthInfo.new(
                "slurm", jobs.AgentType.SCHEDULER, connected=True, start_time=STAMP, now=STAMP
            )
        )
        .to_json()
    )
    changed = dataclasses.replace(decoded, cpu_percent=42.5)
    assert json.loads(changed.to_json())["cpu_percent"] == 42.5
    joined = decoded.with_peer(HealthInfo(name="ipa", agent_type=jobs.AgentType.ACCOUNT))
    assert list(json.loads(joined.to_json())["peers"]) == ["slurm", "ipa"]
    assert decoded == dataclasses.replace(decoded) and hash(decoded.peers["slurm"].agent_type)


def test_the_json_of_a_decoded_object_is_the_callers_to_change() -> None:
    decoded = DiagnosticsReport.from_json(json.dumps(_report_json()))
    first = decoded.to_json_value()
    del first["warnings"]
    first["agent_name"] = "someone else"
    assert decoded.to_json_value() == _report_json()
    assert json.loads(decoded.to_json()) == _report_json()


def test_decoded_objects_equal_built_ones() -> None:
    entry = NotificationStatistics(1, 2, 3)
    decoded = NotificationStatistics.from_json(entry.to_json())
    assert decoded == entry and hash(decoded) == hash(entry) and repr(decoded) == repr(entry)


@given(
    st.datetimes(
        min_value=datetime(1, 1, 2),
        max_value=datetime(9999, 12, 30),
        timezones=st.sampled_from(
            [UTC, timezone(timedelta(hours=1)), timezone(timedelta(hours=-9, minutes=-30))]
        ),
    )
)
def test_format_datetime_writes_what_strftime_writes(value: datetime) -> None:
    assert format_datetime(value) == _format_with_strftime(value.astimezone(UTC))
