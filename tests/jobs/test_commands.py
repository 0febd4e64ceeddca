"""Templemeads wire commands: exact JSON, decoding errors, fuzzing."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broadgauge import jobs
from broadgauge.grammar import Destination, ProjectIdentifier, UserIdentifier
from broadgauge.jobs.health import FailedJobEntry, LogEntry, format_datetime, parse_datetime

from . import helpers as h

JOB = h.job()
JOB_JSON = JOB.to_json()
STAMP = datetime(2024, 6, 3, 7, 33, 20, tzinfo=UTC)


def _round_trip(command: jobs.WireCommand) -> str:
    text = jobs.encode_command(command)
    assert jobs.decode_command(text) == command
    assert jobs.decode_command(text.encode()) == command
    return text


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (jobs.Put(JOB), '{"Put":{"job":' + JOB_JSON + "}}"),
        (jobs.Update(JOB), '{"Update":{"job":' + JOB_JSON + "}}"),
        (jobs.Delete(JOB), '{"Delete":{"job":' + JOB_JSON + "}}"),
        (
            jobs.Register(jobs.AgentType.INSTANCE),
            '{"Register":{"agent":"Instance","engine":"templemeads","version":"0.32.2"}}',
        ),
        (jobs.Sync((JOB, JOB)), '{"Sync":{"state":{"jobs":[' + JOB_JSON + "," + JOB_JSON + "]}}}"),
        (jobs.Sync(), '{"Sync":{"state":{"jobs":[]}}}'),
        (jobs.HealthCheck(("bridge", "portal")), '{"HealthCheck":{"visited":["bridge","portal"]}}'),
        (jobs.HealthCheck(), '{"HealthCheck":{"visited":[]}}'),
        (
            jobs.Restart("soft", "provider.clusters"),
            '{"Restart":{"restart_type":"soft","destination":"provider.clusters"}}',
        ),
        (
            jobs.DiagnosticsRequest("clusters@default"),
            '{"DiagnosticsRequest":{"destination":"clusters@default"}}',
        ),
        (jobs.ErrorCommand("free text"), '{"Error":{"error":"free text"}}'),
    ],
)
def test_exact_wire_form(command: jobs.WireCommand, expected: str) -> None:
    assert _round_trip(command) == expected


def test_notify_wire_form() -> None:
    note = jobs.Notification.create(
        Destination.parse("cluster.clusters.provider.portal"),
        id=uuid.UUID("3f0c6679-7425-40de-944b-e07fc1f90ae7"),
        event=jobs.NotificationEvent(
            jobs.EventKind.USER_ADDED, UserIdentifier.parse("alice.proj.portal")
        ),
    )
    assert _round_trip(jobs.Notify(note)) == (
        '{"Notify":{"notification":{"id":"3f0c6679-7425-40de-944b-e07fc1f90ae7",'
        '"destination":"cluster.clusters.provider.portal",'
        '"event":{"UserAdded":"alice.proj.portal"}}}}'
    )


@pytest.mark.parametrize("agent_type", list(jobs.AgentType))
def test_every_agent_type_registers_by_type_name(agent_type: jobs.AgentType) -> None:
    text = _round_trip(jobs.Register(agent_type))
    assert json.loads(text)["Register"]["agent"] == agent_type.value


def test_health_check_visited_defaults_to_empty() -> None:
    assert jobs.decode_command('{"HealthCheck":{}}') == jobs.HealthCheck(())


def test_register_accepts_any_engine_and_version() -> None:
    cmd = jobs.decode_command('{"Register":{"agent":"Bridge","engine":"x","version":"9"}}')
    assert cmd == jobs.Register(jobs.AgentType.BRIDGE, "x", "9")


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


def _health(name: str = "cluster") -> jobs.HealthInfo:
    return jobs.HealthInfo.new(
        name,
        jobs.AgentType.INSTANCE,
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
    _round_trip(jobs.HealthResponse(health))
    value = health.to_json_value()
    del value["peers"]
    decoded = jobs.HealthInfo.from_json_value(value)
    assert decoded.peers == {}


def test_health_info_requires_other_keys() -> None:
    value = _health().to_json_value()
    del value["cpu_percent"]
    with pytest.raises(
        jobs.ProtocolError, match=r"HealthResponse\.health: missing field `cpu_percent`"
    ):
        jobs.decode_command(json.dumps({"HealthResponse": {"health": value}}))


def test_health_info_non_finite_floats_are_written_as_null() -> None:
    value = jobs.HealthInfo(
        name="x", agent_type=jobs.AgentType.PORTAL, cpu_percent=float("nan")
    ).to_json_value()
    assert value["cpu_percent"] is None


@pytest.mark.parametrize(("raw", "fragment"), [("1e400", "out of range"), ("true", "number")])
def test_health_info_floats_must_be_finite_numbers(raw: str, fragment: str) -> None:
    text = json.dumps({"HealthResponse": {"health": _health().to_json_value()}})
    text = text.replace('"cpu_percent": 0.0', f'"cpu_percent": {raw}')
    with pytest.raises(jobs.ProtocolError, match=fragment):
        jobs.decode_command(text)


@pytest.mark.parametrize(
    "stamp",
    ["0001-01-01T00:00:00+01:00", "2024-06-03T07:33:20", "yesterday", "2024-13-01T00:00:00Z"],
)
def test_bad_timestamps_are_protocol_errors(stamp: str) -> None:
    value = _health().to_json_value()
    value["start_time"] = stamp
    with pytest.raises(jobs.ProtocolError, match=r"HealthResponse\.health\.start_time"):
        jobs.decode_command(json.dumps({"HealthResponse": {"health": value}}))


def test_diagnostics_report_defaults_and_required_lists() -> None:
    report = jobs.DiagnosticsReport(
        agent_name="portal",
        generated_at=STAMP,
        failed_jobs=(
            FailedJobEntry("a.b", "add_user u.p.a", "boom", 2, STAMP, STAMP + timedelta(1)),
        ),
        warnings=("slow",),
        recent_logs=(LogEntry(STAMP, "WARN", "templemeads", "hello"),),
        notification_statistics=jobs.NotificationStatistics(1, 2, 3),
    )
    text = _round_trip(jobs.DiagnosticsResponse(report))
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
    minimal = jobs.DiagnosticsReport.from_json_value(body)
    assert minimal.recent_logs == ()
    assert minimal.notification_statistics == jobs.NotificationStatistics(0, 0, 0)
    del body["failed_jobs"]
    with pytest.raises(jobs.ProtocolError, match="missing field `failed_jobs`"):
        jobs.DiagnosticsReport.from_json_value(body)


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
        jobs.NotificationEvent(jobs.EventKind.USER_ADDED, ProjectIdentifier.parse("p.x"))
    assert jobs.EventKind.AWARD_REJECTED.keyword == "award_rejected"
    assert jobs.EventKind.PROJECT_BLOCKED.takes_project and jobs.EventKind.USER_CHANGED.takes_user


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
        jobs.Notification.parse(text)


def test_notification_event_parse_splits_on_the_first_ascii_space_like_rust() -> None:
    assert str(jobs.NotificationEvent.parse("project_added  p.x ")) == "project_added p.x"
    with pytest.raises(ValueError, match="UserIdentifier"):
        jobs.NotificationEvent.parse("user_added\t")  # no space: the keyword is trimmed
    with pytest.raises(ValueError, match="Unknown notification event: ''"):
        jobs.NotificationEvent.parse(" user_added u.p.x")


def test_notification_text_form() -> None:
    note = jobs.Notification.parse("portal.clusters.shared  user_added  chris.p.portal ")
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
    with pytest.raises(jobs.ProtocolError, match=fragment):
        jobs.decode_command(payload)


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
        decoded = jobs.decode_command(text)
    except jobs.ProtocolError as exc:
        assert str(exc)
    else:
        assert type(decoded).TAG in TAGS


@settings(max_examples=500)
@given(st.sampled_from(TAGS), h.json_values())
def test_decode_command_only_raises_protocol_error_on_arbitrary_bodies(
    tag: str, body: object
) -> None:
    try:
        decoded = jobs.decode_command(json.dumps({tag: body}))
    except jobs.ProtocolError as exc:
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
        decoded = jobs.decode_command(json.dumps({"Update": {"job": value}}))
    except jobs.ProtocolError:
        return
    assert isinstance(decoded, jobs.Update)


commands_strategy = st.one_of(
    h.jobs().map(jobs.Put),
    h.jobs().map(jobs.Update),
    h.jobs().map(jobs.Delete),
    st.sampled_from(list(jobs.AgentType)).map(jobs.Register),
    st.lists(h.jobs(), max_size=3).map(lambda js: jobs.Sync(tuple(js))),
    st.lists(h.names, max_size=4).map(lambda v: jobs.HealthCheck(tuple(v))),
    st.builds(jobs.Restart, st.sampled_from(["soft", "hard", "other"]), st.text(max_size=20)),
    st.builds(jobs.DiagnosticsRequest, st.text(max_size=20)),
    st.builds(jobs.ErrorCommand, st.text(max_size=40)),
)


@given(commands_strategy)
def test_encode_decode_round_trip(command: jobs.WireCommand) -> None:
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


def _rich_commands() -> st.SearchStrategy[jobs.WireCommand]:
    report = jobs.DiagnosticsReport(
        agent_name="portal",
        generated_at=STAMP,
        failed_jobs=(FailedJobEntry("a.b", "add_user u.p.a", "boom", 2, STAMP, STAMP),),
        recent_logs=(LogEntry(STAMP, "WARN", "t", "m"),),
    )
    note = jobs.Notification.parse("a.b.c user_added u.p.a")
    forward = jobs.Notification.create(
        Destination.parse("x.y"), jobs.NotificationEvent(jobs.EventKind.FORWARD, note)
    )
    return st.one_of(
        commands_strategy,
        st.sampled_from(
            [
                jobs.HealthResponse(_health().with_peer(_health("slurm"))),
                jobs.DiagnosticsResponse(report),
                jobs.Notify(note),
                jobs.Notify(forward),
            ]
        ),
    )


@settings(max_examples=400)
@given(_rich_commands(), st.data(), h.json_values(6), st.booleans())
def test_mutating_any_part_of_a_valid_command_never_crashes(
    command: jobs.WireCommand, data: st.DataObject, junk: object, delete: bool
) -> None:
    value = json.loads(jobs.encode_command(command))
    path = data.draw(st.sampled_from(_paths(value)[1:]))
    parent = value
    for step in path[:-1]:
        parent = parent[step]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = junk
    try:
        decoded = jobs.decode_command(json.dumps(value))
    except jobs.ProtocolError as exc:
        assert not str(exc).startswith("invalid command:"), exc  # no unexpected exception
    else:
        assert type(decoded) is type(command)  # the tag itself is never mutated
