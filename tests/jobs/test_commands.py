"""Templemeads wire commands: exact JSON, decoding errors, fuzzing."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broadgauge.grammar import Destination, ProjectIdentifier, UserIdentifier
from broadgauge.jobs import (
    AgentType,
    Delete,
    DiagnosticsReport,
    DiagnosticsRequest,
    DiagnosticsResponse,
    ErrorCommand,
    EventKind,
    HealthCheck,
    HealthInfo,
    HealthResponse,
    Notification,
    NotificationEvent,
    NotificationStatistics,
    Notify,
    ProtocolError,
    Put,
    Register,
    Restart,
    Sync,
    Update,
    WireCommand,
    decode_command,
    encode_command,
)
from broadgauge.jobs.health import FailedJobEntry, LogEntry, format_datetime, parse_datetime

from . import helpers as h

JOB = h.job()
JOB_JSON = JOB.to_json()
STAMP = datetime(2024, 6, 3, 7, 33, 20, tzinfo=UTC)


def _round_trip(command: WireCommand) -> str:
    text = encode_command(command)
    assert decode_command(text) == command
    assert decode_command(text.encode()) == command
    return text


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (Put(JOB), '{"Put":{"job":' + JOB_JSON + "}}"),
        (Update(JOB), '{"Update":{"job":' + JOB_JSON + "}}"),
        (Delete(JOB), '{"Delete":{"job":' + JOB_JSON + "}}"),
        (
            Register(AgentType.INSTANCE),
            '{"Register":{"agent":"Instance","engine":"templemeads","version":"0.32.2"}}',
        ),
        (Sync((JOB, JOB)), '{"Sync":{"state":{"jobs":[' + JOB_JSON + "," + JOB_JSON + "]}}}"),
        (Sync(), '{"Sync":{"state":{"jobs":[]}}}'),
        (HealthCheck(("bridge", "portal")), '{"HealthCheck":{"visited":["bridge","portal"]}}'),
        (HealthCheck(), '{"HealthCheck":{"visited":[]}}'),
        (
            Restart("soft", "provider.clusters"),
            '{"Restart":{"restart_type":"soft","destination":"provider.clusters"}}',
        ),
        (
            DiagnosticsRequest("clusters@default"),
            '{"DiagnosticsRequest":{"destination":"clusters@default"}}',
        ),
        (ErrorCommand("free text"), '{"Error":{"error":"free text"}}'),
    ],
)
def test_exact_wire_form(command: WireCommand, expected: str) -> None:
    assert _round_trip(command) == expected


def test_notify_wire_form() -> None:
    note = Notification(
        uuid.UUID("3f0c6679-7425-40de-944b-e07fc1f90ae7"),
        Destination.parse("cluster.clusters.provider.portal"),
        NotificationEvent(EventKind.USER_ADDED, UserIdentifier.parse("alice.proj.portal")),
    )
    assert _round_trip(Notify(note)) == (
        '{"Notify":{"notification":{"id":"3f0c6679-7425-40de-944b-e07fc1f90ae7",'
        '"destination":"cluster.clusters.provider.portal",'
        '"event":{"UserAdded":"alice.proj.portal"}}}}'
    )


@pytest.mark.parametrize("agent_type", list(AgentType))
def test_every_agent_type_registers_by_type_name(agent_type: AgentType) -> None:
    text = _round_trip(Register(agent_type))
    assert json.loads(text)["Register"]["agent"] == agent_type.value


def test_health_check_visited_defaults_to_empty() -> None:
    assert decode_command('{"HealthCheck":{}}') == HealthCheck(())


def test_register_accepts_any_engine_and_version() -> None:
    cmd = decode_command('{"Register":{"agent":"Bridge","engine":"x","version":"9"}}')
    assert cmd == Register(AgentType.BRIDGE, "x", "9")


# ------------------------------------------------------------ health payloads

HEALTH_KEYS = [
    "name",
    "agent_type",
    "connected",
    "active_jobs",
    "pending_jobs",
    "running_jobs",
    "completed_jobs",
    "duplicate_jobs",
    "successful_jobs",
    "expired_jobs",
    "errored_jobs",
    "inflight_jobs",
    "queued_jobs",
    "worker_count",
    "memory_bytes",
    "cpu_percent",
    "system_memory_total",
    "system_cpus",
    "job_time_min_ms",
    "job_time_max_ms",
    "job_time_mean_ms",
    "job_time_median_ms",
    "job_time_count",
    "total_completed",
    "total_failed",
    "total_expired",
    "total_slow",
    "start_time",
    "current_time",
    "uptime_seconds",
    "engine",
    "version",
    "last_updated",
    "peers",
]


def _health(name: str = "cluster") -> HealthInfo:
    return HealthInfo.new(
        name,
        AgentType.INSTANCE,
        connected=True,
        start_time=STAMP,
        now=STAMP + timedelta(seconds=90, milliseconds=250),
    )


def test_health_info_has_every_key_in_rust_order() -> None:
    value = _health().with_peer(_health("slurm")).to_json_value()
    assert list(value) == HEALTH_KEYS
    assert value["uptime_seconds"] == 90
    assert value["engine"] == "templemeads" and value["version"] == "0.32.2"
    assert value["start_time"] == "2024-06-03T07:33:20Z"
    assert value["current_time"] == "2024-06-03T07:34:50.250Z"
    assert list(value["peers"]) == ["slurm"]
    assert list(value["peers"]["slurm"]) == HEALTH_KEYS


def test_health_response_round_trip_and_peers_default() -> None:
    health = _health().with_peer(_health("freeipa"))
    _round_trip(HealthResponse(health))
    value = health.to_json_value()
    del value["peers"]
    decoded = HealthInfo.from_json_value(value)
    assert decoded.peers == {}


def test_health_info_requires_other_keys() -> None:
    value = _health().to_json_value()
    del value["cpu_percent"]
    with pytest.raises(ProtocolError, match=r"HealthResponse\.health: missing field `cpu_percent`"):
        decode_command(json.dumps({"HealthResponse": {"health": value}}))


def test_health_info_non_finite_floats_are_written_as_null() -> None:
    value = HealthInfo(
        name="x", agent_type=AgentType.PORTAL, cpu_percent=float("nan")
    ).to_json_value()
    assert value["cpu_percent"] is None


@pytest.mark.parametrize(("raw", "fragment"), [("1e400", "out of range"), ("true", "number")])
def test_health_info_floats_must_be_finite_numbers(raw: str, fragment: str) -> None:
    text = json.dumps({"HealthResponse": {"health": _health().to_json_value()}})
    text = text.replace('"cpu_percent": 0.0', f'"cpu_percent": {raw}')
    with pytest.raises(ProtocolError, match=fragment):
        decode_command(text)


@pytest.mark.parametrize(
    "stamp",
    ["0001-01-01T00:00:00+01:00", "2024-06-03T07:33:20", "yesterday", "2024-13-01T00:00:00Z"],
)
def test_bad_timestamps_are_protocol_errors(stamp: str) -> None:
    value = _health().to_json_value()
    value["start_time"] = stamp
    with pytest.raises(ProtocolError, match=r"HealthResponse\.health\.start_time"):
        decode_command(json.dumps({"HealthResponse": {"health": value}}))


def test_diagnostics_report_defaults_and_required_lists() -> None:
    report = DiagnosticsReport(
        agent_name="portal",
        generated_at=STAMP,
        failed_jobs=(
            FailedJobEntry("a.b", "add_user u.p.a", "boom", 2, STAMP, STAMP + timedelta(1)),
        ),
        warnings=("slow",),
        recent_logs=(LogEntry(STAMP, "WARN", "templemeads", "hello"),),
        notification_statistics=NotificationStatistics(1, 2, 3),
    )
    text = _round_trip(DiagnosticsResponse(report))
    body = json.loads(text)["DiagnosticsResponse"]["report"]
    assert list(body) == [
        "agent_name",
        "generated_at",
        "failed_jobs",
        "slowest_jobs",
        "expired_jobs",
        "running_jobs",
        "warnings",
        "recent_logs",
        "notification_statistics",
    ]
    del body["recent_logs"], body["notification_statistics"]
    minimal = DiagnosticsReport.from_json_value(body)
    assert minimal.recent_logs == ()
    assert minimal.notification_statistics == NotificationStatistics(0, 0, 0)
    del body["failed_jobs"]
    with pytest.raises(ProtocolError, match="missing field `failed_jobs`"):
        DiagnosticsReport.from_json_value(body)


def test_datetime_format_follows_chrono() -> None:
    assert format_datetime(STAMP) == "2024-06-03T07:33:20Z"
    assert format_datetime(STAMP.replace(microsecond=500000)) == "2024-06-03T07:33:20.500Z"
    assert format_datetime(STAMP.replace(microsecond=1)) == "2024-06-03T07:33:20.000001Z"
    plus_one = STAMP.astimezone(timezone(timedelta(hours=1)))
    assert format_datetime(plus_one) == "2024-06-03T07:33:20Z"
    assert parse_datetime("2024-06-03T08:33:20.123456789+01:00") == STAMP.replace(
        microsecond=123456
    )
    with pytest.raises(ValueError, match="offset"):
        parse_datetime("2024-06-03T07:33:20")


# -------------------------------------------------------------- notifications


def test_notification_events_check_their_argument_type() -> None:
    with pytest.raises(TypeError):
        NotificationEvent(EventKind.USER_ADDED, ProjectIdentifier.parse("p.x"))
    assert EventKind.AWARD_REJECTED.keyword == "award_rejected"
    assert EventKind.PROJECT_BLOCKED.takes_project and EventKind.USER_CHANGED.takes_user


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a.b", "missing event"),
        ("a.b forward x", "infrastructure-only"),
        ("a.b blah x", "Unknown notification event: 'blah'"),
        ("a.b user_added", "UserIdentifier"),
        ("a.b project_added u.p.x", "ProjectIdentifier"),
        ("a user_added u.p.x", "single agent"),
    ],
)
def test_notification_parse_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Notification.parse(text)


def test_notification_event_parse_splits_on_the_first_ascii_space_like_rust() -> None:
    assert str(NotificationEvent.parse("project_added  p.x ")) == "project_added p.x"
    with pytest.raises(ValueError, match="UserIdentifier"):
        NotificationEvent.parse("user_added\t")  # no space: the keyword is trimmed
    with pytest.raises(ValueError, match="Unknown notification event: ''"):
        NotificationEvent.parse(" user_added u.p.x")


def test_notification_text_form() -> None:
    note = Notification.parse("portal.clusters.shared  user_added  chris.p.portal ")
    assert str(note) == "portal.clusters.shared user_added chris.p.portal"
    assert note.id.version == 4


# --------------------------------------------------------------- bad payloads


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ("KEEPALIVE", "invalid JSON"),
        ('"Put"', "expected an object"),
        ("{}", "exactly one variant"),
        ('{"Put":{"job":' + JOB_JSON + '},"Update":{}}', "exactly one variant"),
        ('{"Put":{},"Put":{}}', "exactly one variant"),
        ('{"Nope":{}}', "unknown variant `Nope`"),
        ('{"Put":{}}', "Put: missing field `job`"),
        ('{"Put":[]}', "Put: expected an object"),
        ('{"Put":{"job":' + JOB_JSON.replace('"Pending"', '"pending"') + "}}", "Put.job.state"),
        ('{"Sync":{"state":{}}}', "Sync.state: missing field `jobs`"),
        ('{"Sync":{"state":{"jobs":[1]}}}', r"Sync.state.jobs\[0\]"),
        ('{"Register":{"agent":"Instance","engine":"t"}}', "missing field `version`"),
        ('{"Register":{"agent":"instance","engine":"t","version":"1"}}', "Register.agent"),
        ('{"HealthCheck":{"visited":[1]}}', r"HealthCheck.visited\[0\]"),
        ('{"Restart":{"restart_type":"soft"}}', "missing field `destination`"),
        ('{"Error":{"error":null}}', "Error.error"),
        (
            '{"Notify":{"notification":{"id":"3f0c6679-7425-40de-944b-e07fc1f90ae7",'
            '"destination":"a.b","event":{"UserAdded":"u.p"}}}}',
            "Notify.notification.event.UserAdded",
        ),
        (
            '{"Notify":{"notification":{"id":"3f0c6679-7425-40de-944b-e07fc1f90ae7",'
            '"destination":"a.b","event":"UserAdded"}}}',
            "Notify.notification.event",
        ),
        ("[" * 100_000, "nested too deeply"),
    ],
)
def test_malformed_payloads_raise_protocol_error_naming_the_problem(
    payload: str, fragment: str
) -> None:
    with pytest.raises(ProtocolError, match=fragment):
        decode_command(payload)


TAGS = [
    "PlannerRulesRequest",
    "PlannerRulesResponse",
    "Put",
    "Update",
    "Delete",
    "Register",
    "Sync",
    "HealthCheck",
    "HealthResponse",
    "Restart",
    "DiagnosticsRequest",
    "DiagnosticsResponse",
    "Notify",
    "Error",
]


@settings(max_examples=500)
@given(st.text(max_size=200) | st.binary(max_size=200))
def test_decode_command_only_raises_protocol_error_on_arbitrary_text(text: str | bytes) -> None:
    try:
        decoded = decode_command(text)
    except ProtocolError as exc:
        assert str(exc)
    else:
        assert type(decoded).TAG in TAGS


@settings(max_examples=500)
@given(st.sampled_from(TAGS), h.json_values())
def test_decode_command_only_raises_protocol_error_on_arbitrary_bodies(
    tag: str, body: object
) -> None:
    try:
        decoded = decode_command(json.dumps({tag: body}))
    except ProtocolError as exc:
        assert str(exc).startswith(tag)
    else:
        assert tag == decoded.TAG


@given(
    h.jobs(),
    st.sampled_from(["job", "state", "version", "id", "command", "created"]),
    h.json_values(4),
)
def test_corrupting_one_job_field_never_crashes(job: object, key: str, junk: object) -> None:
    value = job.to_json_value()  # type: ignore[attr-defined]
    value[key] = junk
    try:
        decoded = decode_command(json.dumps({"Update": {"job": value}}))
    except ProtocolError:
        return
    assert isinstance(decoded, Update)


commands_strategy = st.one_of(
    h.jobs().map(Put),
    h.jobs().map(Update),
    h.jobs().map(Delete),
    st.sampled_from(list(AgentType)).map(Register),
    st.lists(h.jobs(), max_size=3).map(lambda js: Sync(tuple(js))),
    st.lists(h.names, max_size=4).map(lambda v: HealthCheck(tuple(v))),
    st.builds(Restart, st.sampled_from(["soft", "hard", "other"]), st.text(max_size=20)),
    st.builds(DiagnosticsRequest, st.text(max_size=20)),
    st.builds(ErrorCommand, st.text(max_size=40)),
)


@given(commands_strategy)
def test_encode_decode_round_trip(command: WireCommand) -> None:
    _round_trip(command)


def _paths(value: object, prefix: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*prefix, index))
    return found


def _rich_commands() -> st.SearchStrategy[WireCommand]:
    report = DiagnosticsReport(
        agent_name="portal",
        generated_at=STAMP,
        failed_jobs=(FailedJobEntry("a.b", "add_user u.p.a", "boom", 2, STAMP, STAMP),),
        recent_logs=(LogEntry(STAMP, "WARN", "t", "m"),),
    )
    note = Notification.parse("a.b.c user_added u.p.a")
    forward = Notification.create(
        Destination.parse("x.y"), NotificationEvent(EventKind.FORWARD, note)
    )
    return st.one_of(
        commands_strategy,
        st.sampled_from(
            [
                HealthResponse(_health().with_peer(_health("slurm"))),
                DiagnosticsResponse(report),
                Notify(note),
                Notify(forward),
            ]
        ),
    )


@settings(max_examples=400)
@given(_rich_commands(), st.data(), h.json_values(6), st.booleans())
def test_mutating_any_part_of_a_valid_command_never_crashes(
    command: WireCommand, data: st.DataObject, junk: object, delete: bool
) -> None:
    value = json.loads(encode_command(command))
    path = data.draw(st.sampled_from(_paths(value)[1:]))
    parent = value
    for step in path[:-1]:
        parent = parent[step]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = junk
    try:
        decoded = decode_command(json.dumps(value))
    except ProtocolError as exc:
        assert not str(exc).startswith("invalid command:"), exc  # no unexpected exception
    else:
        assert type(decoded) is type(command)  # the tag itself is never mutated
