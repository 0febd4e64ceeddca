"""Execution requests, offers and updates in Calycopis's shape: pure, no sockets, no clock."""

from __future__ import annotations

import contextlib
import json
from datetime import datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broadgauge.planner.offers.model import (
    BROKER_TRANSITIONS,
    COMPUTE_KIND,
    SESSION_KIND,
    STORAGE_KIND,
    USER_TRANSITIONS,
    ExecutionRequest,
    IllegalTransition,
    Limits,
    RequestError,
    candidate_starts,
    check_transition,
    check_user_update,
    iso,
    iso_duration,
    message_item,
    offerset_json,
    parse_request,
    parse_update,
    session_json,
    tasktype_for_kind,
)
from broadgauge.planner.offers.records import (
    FINAL,
    HOLDING,
    OfferSetRecord,
    Phase,
    SessionRecord,
)
from broadgauge.planner.offers.sessions import parse_duration, parse_instant, parse_interval


def at(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


NOW = at("2026-12-06T18:00:00+00:00")
HOUR = 3600.0
DEFAULTS = Limits()
CALYCOPIS = "https://www.purl.org/ivoa.net/Calycopis-openapi/schema/v1.0/kinds/"
NOTEBOOK = {
    "kind": CALYCOPIS + "executable/jupyter-notebook.yaml",
    "location": "https://github.com/example/notebooks/blob/main/demo.ipynb",
}


def request(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"executable": dict(NOTEBOOK)}
    body.update(fields)
    return body


def parse(body: object, limits: Limits = DEFAULTS) -> ExecutionRequest:
    return parse_request(body, NOW, limits=limits)


def error_of(body: object, limits: Limits = DEFAULTS) -> RequestError:
    with pytest.raises(RequestError) as caught:
        parse(body, limits)
    return caught.value


# --- the whole request -----------------------------------------------------------------------


def test_minimal_request_takes_every_default() -> None:
    got = parse(request())
    assert got.name is None
    assert got.tasktype == "jupyter-notebook"
    assert got.executable == NOTEBOOK
    assert (got.cores_min, got.cores_max) == (1, 1)
    assert (got.memory_mib_min, got.memory_mib_max) == (1024, 1024)
    assert got.storage_gib == 0
    assert got.windows == ((NOW, NOW + 300.0),)
    assert got.duration == 2 * HOUR
    assert got.ignored == ()
    assert got.raw == request()


def test_full_calycopis_request() -> None:
    body = {
        "name": "my analysis",
        "executable": {
            "kind": CALYCOPIS + "executable/docker-container.yaml",
            "image": {"locations": ["ghcr.io/example/app:1.0"], "digest": "sha256:abc"},
            "privileged": False,
            "entrypoint": "/bin/run",
            "command": ["--fast"],
            "environment": {"MODE": "batch"},
        },
        "compute": {
            "kind": CALYCOPIS + "compute/simple-compute-resource.yaml",
            "cores": {"min": 5, "max": 15},
            "memory": {"min": 3, "max": 9},
        },
        "storage": [{"size": {"min": 10, "max": 20}}, {"size": {"min": 5}}],
        "schedule": {
            "requested": {
                "start": ["2026-12-06T20:00:00Z/PT1H", "2026-12-07T08:00:00Z"],
                "duration": {"min": "PT1H", "max": "PT3H"},
            }
        },
        "data": [{"kind": "whatever"}],
        "costs": [],
    }
    got = parse(body)
    assert got.name == "my analysis"
    assert got.tasktype == "docker-container"
    assert (got.cores_min, got.cores_max) == (5, 15)
    assert (got.memory_mib_min, got.memory_mib_max) == (3 * 1024, 9 * 1024)
    assert got.storage_gib == 15
    twenty = at("2026-12-06T20:00:00+00:00")
    eight = at("2026-12-07T08:00:00+00:00")
    assert got.windows == ((twenty, twenty + HOUR), (eight, eight))
    assert got.duration == HOUR
    assert got.ignored == ("data", "costs")


def test_parsed_request_is_independent_of_the_body() -> None:
    body = request()
    got = parse(body)
    body["executable"]["location"] = "https://elsewhere.example/x.ipynb"
    assert got.executable == NOTEBOOK
    assert got.raw["executable"] == NOTEBOOK


@pytest.mark.parametrize("body", [None, [], "text", 3, True])
def test_request_must_be_an_object(body: object) -> None:
    error = error_of(body)
    assert error.path == ""
    assert str(error) == error.text
    assert "must be a JSON object" in error.text


def test_error_string_is_path_colon_text() -> None:
    error = error_of(request(name=3))
    assert (error.path, error.text) == ("name", "must be a string, not the number 3")
    assert str(error) == "name: must be a string, not the number 3"


# --- executable ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["jupyter-notebook", "docker-container", "singularity-container"])
@pytest.mark.parametrize(
    "form",
    [
        "{}",
        CALYCOPIS + "executable/{}.yaml",
        CALYCOPIS + "executable/{}-1.0.yaml",
        "https://www.purl.org/ivoa.net/EB/schema/v1.0/types/executables/{}-1.0",
        "https://www.purl.org/ivoa.net/EB/schema/types/executables/{}-1.0",
    ],
)
def test_executable_kind_aliases(name: str, form: str) -> None:
    kind = form.format(name)
    assert tasktype_for_kind(kind) == name
    executable: dict[str, Any] = {"kind": kind}
    if name == "docker-container":
        executable["image"] = "alpine:3"
    assert parse({"executable": executable}).tasktype == name


def test_executable_type_is_the_drafts_name_for_kind() -> None:
    got = parse({"executable": {"type": "jupyter-notebook"}})
    assert got.tasktype == "jupyter-notebook"


@pytest.mark.parametrize(
    ("body", "path", "fragment"),
    [
        ({}, "executable", "is required"),
        ({"executable": "docker"}, "executable", "must be an object"),
        ({"executable": {}}, "executable.kind", "is required"),
        ({"executable": {"kind": 3}}, "executable.kind", "unknown executable kind 3"),
        (
            {"executable": {"kind": CALYCOPIS + "executable/python-script.yaml"}},
            "executable.kind",
            "known: jupyter-notebook, docker-container, singularity-container",
        ),
        ({"executable": {"type": "wasm"}}, "executable.type", "unknown executable kind 'wasm'"),
        (
            {"executable": {"kind": "jupyter-notebook", "location": 5}},
            "executable.location",
            "non-empty string",
        ),
        (
            {"executable": {"kind": "jupyter-notebook", "location": "notebook.ipynb"}},
            "executable.location",
            "must be a URL",
        ),
        ({"executable": {"kind": "docker-container"}}, "executable.image", "is required"),
        ({"executable": {"kind": "docker-container", "image": ""}}, "executable.image", "empty"),
        (
            {"executable": {"kind": "docker-container", "image": 7}},
            "executable.image",
            "an image name or an object",
        ),
        (
            {"executable": {"kind": "docker-container", "image": {}}},
            "executable.image",
            "needs locations or a digest",
        ),
        (
            {"executable": {"kind": "docker-container", "image": {"locations": []}}},
            "executable.image.locations",
            "non-empty list",
        ),
        (
            {"executable": {"kind": "docker-container", "image": {"locations": ["a", 2]}}},
            "executable.image.locations.1",
            "non-empty string",
        ),
        (
            {"executable": {"kind": "docker-container", "image": {"digest": 2}}},
            "executable.image.digest",
            "non-empty string",
        ),
        (
            {"executable": {"kind": "docker-container", "image": "a", "privileged": "no"}},
            "executable.privileged",
            "true or false",
        ),
        (
            {"executable": {"kind": "docker-container", "image": "a", "entrypoint": []}},
            "executable.entrypoint",
            "non-empty string",
        ),
        (
            {"executable": {"kind": "docker-container", "image": "a", "command": "run"}},
            "executable.command",
            "list of strings",
        ),
        (
            {"executable": {"kind": "docker-container", "image": "a", "environment": []}},
            "executable.environment",
            "must be an object",
        ),
        (
            {"executable": {"kind": "docker-container", "image": "a", "environment": {"N": 1}}},
            "executable.environment.N",
            "must be a string",
        ),
    ],
)
def test_executable_errors(body: dict[str, Any], path: str, fragment: str) -> None:
    error = error_of(body)
    assert error.path == path
    assert fragment in error.text


def test_docker_image_by_digest_only() -> None:
    body = {"executable": {"kind": "docker-container", "image": {"digest": "sha256:0"}}}
    assert parse(body).tasktype == "docker-container"


# --- compute and storage ---------------------------------------------------------------------


def test_compute_max_defaults_to_min() -> None:
    got = parse(request(compute={"cores": {"min": 4}, "memory": {"min": 8}}))
    assert (got.cores_min, got.cores_max) == (4, 4)
    assert (got.memory_mib_min, got.memory_mib_max) == (8192, 8192)


def test_compute_min_defaults_to_one_or_max() -> None:
    got = parse(request(compute={"cores": {"max": 8}, "memory": {"max": 0.5}}))
    assert (got.cores_min, got.cores_max) == (1, 8)
    assert (got.memory_mib_min, got.memory_mib_max) == (512, 512)


def test_fractional_memory_rounds_up_to_whole_mib() -> None:
    got = parse(request(compute={"memory": {"min": 1.5, "max": 2.0001}}))
    assert got.memory_mib_min == 1536
    assert got.memory_mib_max == 2049


def test_compute_as_one_element_list() -> None:
    got = parse(request(compute=[{"cores": {"min": 2}}]))
    assert got.cores_min == 2


@pytest.mark.parametrize(
    "kind",
    [
        "simple-compute-resource",
        CALYCOPIS + "compute/simple-compute-resource.yaml",
        CALYCOPIS + "compute/simple-compute-resource-1.0.yaml",
        "https://www.purl.org/ivoa.net/EB/schema/v1.0/types/compute/simple-compute-resource-1.0",
    ],
)
def test_compute_kind_aliases(kind: str) -> None:
    assert parse(request(compute={"kind": kind})).cores_min == 1


@pytest.mark.parametrize(
    ("compute", "path", "fragment"),
    [
        ("big", "compute", "must be an object"),
        ([], "compute", "only one compute resource is supported, got 0"),
        ([{}, {}], "compute", "got 2"),
        ([{"cores": 2}], "compute.0.cores", "must be an object {min, max}"),
        ({"kind": "gpu-resource"}, "compute.kind", "unknown compute kind 'gpu-resource'"),
        ({"cores": 4}, "compute.cores", "must be an object {min, max}"),
        ({"cores": {"min": 0}}, "compute.cores.min", "whole number >= 1"),
        ({"cores": {"min": 1.5}}, "compute.cores.min", "whole number >= 1"),
        ({"cores": {"min": True}}, "compute.cores.min", "a boolean"),
        ({"cores": {"min": 2, "max": "4"}}, "compute.cores.max", "whole number >= 1"),
        ({"cores": {"min": 8, "max": 4}}, "compute.cores", "min 8 is more than max 4"),
        ({"cores": {"min": 5000}}, "compute.cores.min", "5000 is more than this broker"),
        ({"cores": {"max": 10**400}}, "compute.cores.max", "is more than this broker"),
        ({"memory": {"min": 0}}, "compute.memory.min", "number > 0"),
        ({"memory": {"min": -1}}, "compute.memory.min", "number > 0"),
        ({"memory": {"min": float("inf")}}, "compute.memory.min", "number > 0"),
        ({"memory": {"min": float("nan")}}, "compute.memory.min", "number > 0"),
        ({"memory": {"min": 4, "max": 2.5}}, "compute.memory", "min 4 is more than max 2.5"),
        ({"memory": {"min": 1e9}}, "compute.memory.min", "more than this broker considers"),
    ],
)
def test_compute_errors(compute: object, path: str, fragment: str) -> None:
    error = error_of(request(compute=compute))
    assert error.path == path
    assert fragment in error.text


def test_compute_limits_are_configurable() -> None:
    limits = Limits(max_cores=8, max_memory_gib=16)
    assert parse(request(compute={"cores": {"min": 8}}), limits).cores_min == 8
    assert error_of(request(compute={"cores": {"min": 9}}), limits).path == "compute.cores.min"
    assert error_of(request(compute={"memory": {"max": 17}}), limits).path == "compute.memory.max"


def test_storage_sums_the_minima() -> None:
    got = parse(request(storage=[{"size": {"min": 3, "max": 9}}, {"size": {"min": 4}}, {}]))
    assert got.storage_gib == 3 + 4 + 1


@pytest.mark.parametrize(
    ("storage", "path", "fragment"),
    [
        ({"size": 3}, "storage", "must be a list"),
        (["disk"], "storage.0", "must be an object"),
        ([{}, {"size": 4}], "storage.1.size", "must be an object {min, max}"),
        ([{"size": {"min": 0.5}}], "storage.0.size.min", "whole number >= 1"),
        ([{"size": {"min": 9, "max": 3}}], "storage.0.size", "min 9 is more than max 3"),
        ([{"size": {"min": 600_000}}] * 2, "storage", "1200000 GiB in all is more than"),
    ],
)
def test_storage_errors(storage: object, path: str, fragment: str) -> None:
    error = error_of(request(storage=storage))
    assert error.path == path
    assert fragment in error.text


# --- schedule --------------------------------------------------------------------------------


def schedule(**requested: Any) -> dict[str, Any]:
    return request(schedule={"requested": requested})


@pytest.mark.parametrize(
    ("start", "window"),
    [
        ("2026-12-06T20:00:00Z/PT1H", ("2026-12-06T20:00:00", "2026-12-06T21:00:00")),
        (
            "2026-12-06T20:00:00Z/2026-12-06T22:30:00Z",
            ("2026-12-06T20:00:00", "2026-12-06T22:30:00"),
        ),
        ("PT2H/2026-12-06T22:00:00Z", ("2026-12-06T20:00:00", "2026-12-06T22:00:00")),
        ("2026-12-06T20:00:00Z", ("2026-12-06T20:00:00", "2026-12-06T20:00:00")),
        ("2026-12-06T21:00:00+01:00", ("2026-12-06T20:00:00", "2026-12-06T20:00:00")),
    ],
)
def test_start_interval_forms(start: str, window: tuple[str, str]) -> None:
    first, last = (at(text + "+00:00") for text in window)
    assert parse(schedule(start=start)).windows == ((first, last),)


def test_open_window_starts_now_and_long_window_stops_at_the_horizon() -> None:
    got = parse(schedule(start="2026-12-06T17:00:00Z/P2D"))
    assert got.windows == ((NOW, NOW + 86400.0),)


def test_no_schedule_or_empty_requested_takes_the_defaults() -> None:
    limits = Limits(default_window=60.0, default_duration=HOUR)
    for body in (request(), request(schedule={}), request(schedule={"requested": None})):
        got = parse(body, limits)
        assert got.windows == ((NOW, NOW + 60.0),)
        assert got.duration == HOUR


@pytest.mark.parametrize(
    ("duration", "seconds"),
    [
        ("PT2H", 2 * HOUR),
        ("PT1H30M", 5400.0),
        ("PT45S", 45.0),
        ("PT0.5S", 0.5),
        ({"min": "PT1H"}, HOUR),
        ({"min": "PT1H", "max": "PT8H"}, HOUR),
        ({"max": "PT3H"}, 2 * HOUR),
        ({"max": "PT30M"}, 1800.0),
        ({}, 2 * HOUR),
    ],
)
def test_duration_forms(duration: object, seconds: float) -> None:
    assert parse(schedule(duration=duration)).duration == seconds


@pytest.mark.parametrize(
    ("requested", "path", "fragment"),
    [
        ({"start": 5}, "schedule.requested.start", "an ISO-8601 interval or a non-empty list"),
        ({"start": []}, "schedule.requested.start", "non-empty list"),
        ({"start": ["2026-12-06T20:00:00Z", 3]}, "schedule.requested.start.1", "the number 3"),
        ({"start": "tomorrow"}, "schedule.requested.start", "not an ISO-8601 date-time"),
        ({"start": "2026-12-06T20:00:00"}, "schedule.requested.start", "has no time zone"),
        (
            {"start": "R3/2026-12-06T20:00:00Z/PT1H"},
            "schedule.requested.start",
            "repeating intervals",
        ),
        ({"start": "a/b/c"}, "schedule.requested.start", "not an ISO-8601 interval"),
        ({"start": "PT1H/PT2H"}, "schedule.requested.start", "not two durations"),
        (
            {"start": "2026-12-06T22:00:00Z/2026-12-06T20:00:00Z"},
            "schedule.requested.start",
            "ends before it starts",
        ),
        (
            {"start": "2026-12-06T20:00:00Z/P1M"},
            "schedule.requested.start",
            "years, months and weeks are not supported",
        ),
        (
            {"start": ["2026-12-06T20:00:00Z", "2026-12-06T16:00:00Z/PT1H"]},
            "schedule.requested.start.1",
            "is in the past (now is 2026-12-06T18:00:00Z)",
        ),
        (
            {"start": "2026-12-07T18:00:01Z"},
            "schedule.requested.start",
            "starts more than PT24H ahead (latest 2026-12-07T18:00:00Z)",
        ),
        (
            {"duration": 3600},
            "schedule.requested.duration",
            "or an object {min, max}, not the number 3600",
        ),
        ({"duration": "2h"}, "schedule.requested.duration", "not an ISO-8601 duration"),
        ({"duration": "PT0S"}, "schedule.requested.duration", "longer than zero"),
        ({"duration": "PT5H"}, "schedule.requested.duration", "PT5H is longer than the most"),
        ({"duration": ["PT1H"]}, "schedule.requested.duration", "or an object {min, max}"),
        ({"duration": {"min": 1}}, "schedule.requested.duration.min", "not the number 1"),
        ({"duration": {"max": "P1Y"}}, "schedule.requested.duration.max", "years"),
        (
            {"duration": {"min": "PT3H", "max": "PT1H"}},
            "schedule.requested.duration",
            "min PT3H is more than max PT1H",
        ),
        (
            {"duration": {"min": "PT5H", "max": "PT6H"}},
            "schedule.requested.duration",
            "longer than the most offered, PT4H",
        ),
    ],
)
def test_schedule_errors(requested: dict[str, Any], path: str, fragment: str) -> None:
    error = error_of(schedule(**requested))
    assert error.path == path
    assert fragment in error.text


@pytest.mark.parametrize(
    ("body", "path"),
    [
        (request(schedule="soon"), "schedule"),
        (request(schedule={"requested": "soon"}), "schedule.requested"),
    ],
)
def test_schedule_shape_errors(body: dict[str, Any], path: str) -> None:
    assert error_of(body).path == path


def test_a_window_ending_exactly_now_is_still_open() -> None:
    got = parse(schedule(start="2026-12-06T17:00:00Z/2026-12-06T18:00:00Z"))
    assert got.windows == ((NOW, NOW),)


def test_lookahead_is_configurable() -> None:
    limits = Limits(max_lookahead=HOUR)
    error = error_of(schedule(start="2026-12-06T19:30:00Z"), limits)
    assert "starts more than PT1H ahead" in error.text


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("PT2H", 7200.0),
        ("P1D", 86400.0),
        ("P1DT2H3M4S", 86400.0 + 7384.0),
        ("PT90M", 5400.0),
        ("PT1.25S", 1.25),
        ("PT0S", 0.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "not an ISO-8601 duration"),
        ("P", "not an ISO-8601 duration"),
        ("PT", "not an ISO-8601 duration"),
        ("P1DT", "not an ISO-8601 duration"),
        ("pt2h", "not an ISO-8601 duration"),
        ("-PT1H", "not an ISO-8601 duration"),
        ("PT1.5H", "not an ISO-8601 duration"),
        ("PT1S2M", "not an ISO-8601 duration"),
        ("P1Y", "years, months and weeks"),
        ("P2M", "years, months and weeks"),
        ("P1W", "years, months and weeks"),
        ("PT1234567890123H", "too long"),
    ],
)
def test_parse_duration_refuses(text: str, fragment: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_duration(text)
    assert fragment in str(caught.value)


def test_parse_instant_and_interval() -> None:
    assert parse_instant("2026-12-06T18:00:00Z") == NOW
    assert parse_instant("2026-12-06T19:00:00+01:00") == NOW
    assert parse_interval("2026-12-06T18:00:00Z/PT1M") == (NOW, NOW + 60)


# --- candidate starts ------------------------------------------------------------------------


def with_windows(windows: tuple[tuple[float, float], ...], duration: float) -> ExecutionRequest:
    base = parse(request())
    return ExecutionRequest(**{**base.__dict__, "windows": windows, "duration": duration})


def test_default_window_gives_one_start() -> None:
    assert candidate_starts(parse(request()), Limits()) == [NOW]


def test_starts_are_spaced_by_the_duration_inside_the_window() -> None:
    wanted = with_windows(((NOW, NOW + 5 * HOUR),), 2 * HOUR)
    assert candidate_starts(wanted, Limits()) == [NOW, NOW + 2 * HOUR, NOW + 4 * HOUR]


def test_the_last_start_may_be_the_end_of_the_window() -> None:
    wanted = with_windows(((NOW, NOW + 2 * HOUR),), HOUR)
    assert candidate_starts(wanted, Limits()) == [NOW, NOW + HOUR, NOW + 2 * HOUR]


def test_starts_are_capped_sorted_and_deduplicated() -> None:
    wanted = with_windows(
        ((NOW + 10 * HOUR, NOW + 20 * HOUR), (NOW, NOW), (NOW, NOW + HOUR), (NOW + HOUR, NOW)),
        HOUR,
    )
    assert candidate_starts(wanted, Limits()) == [NOW, NOW + HOUR, NOW + 10 * HOUR, NOW + 11 * HOUR]
    assert candidate_starts(wanted, Limits(offers_per_site=2)) == [NOW, NOW + HOUR]


def test_candidate_starts_from_parsed_windows() -> None:
    got = parse(
        schedule(
            start=["2026-12-06T22:00:00Z", "2026-12-06T19:00:00Z/PT3H"],
            duration="PT1H",
        )
    )
    starts = candidate_starts(got, Limits())
    assert [iso(t) for t in starts] == [
        "2026-12-06T19:00:00Z",
        "2026-12-06T20:00:00Z",
        "2026-12-06T21:00:00Z",
        "2026-12-06T22:00:00Z",
    ]


def test_zero_duration_does_not_loop() -> None:
    assert candidate_starts(with_windows(((NOW, NOW + HOUR),), 0.0), Limits()) == [NOW]


# --- rendering -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("t", "text"),
    [
        (NOW, "2026-12-06T18:00:00Z"),
        (NOW + 0.999, "2026-12-06T18:00:00Z"),
        (0.0, "1970-01-01T00:00:00Z"),
    ],
)
def test_iso(t: float, text: str) -> None:
    assert iso(t) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (7200, "PT2H"),
        (5400, "PT1H30M"),
        (45, "PT45S"),
        (3661, "PT1H1M1S"),
        (0, "PT0S"),
        (0.4, "PT0S"),
        (93600, "PT26H"),
    ],
)
def test_iso_duration(seconds: float, text: str) -> None:
    assert iso_duration(seconds) == text
    assert parse_duration(text) == round(seconds)


@pytest.mark.parametrize("seconds", [-1.0, float("inf"), float("nan")])
def test_iso_duration_refuses(seconds: float) -> None:
    with pytest.raises(ValueError, match="finite number of seconds"):
        iso_duration(seconds)


def session(**fields: Any) -> SessionRecord:
    values: dict[str, Any] = {
        "uuid": "5e551011-0000-4000-8000-000000000001",
        "offerset": "0ffe4527-0000-4000-8000-000000000001",
        "owner": "alice@example.org",
        "resource": "portal.provider.platform.instance",
        "cores": 2,
        "memory_mib": 1536,
        "storage_gib": 10,
        "start": NOW + 2 * HOUR,
        "end": NOW + 4 * HOUR + 1800,
        "expires": NOW + 300,
        "phase": Phase.OFFERED,
        "executable": dict(NOTEBOOK),
        "created": NOW,
        "modified": NOW + 1,
        "connectors": (),
        "messages": (message_item(NOW, "INFO", "offered"),),
    }
    values.update(fields)
    return SessionRecord(**values)


GOLDEN_SESSION = {
    "kind": CALYCOPIS + "session/scheduled-execution-session.yaml",
    "meta": {
        "uuid": "5e551011-0000-4000-8000-000000000001",
        "url": "https://broker.example/api/sessions/5e551011-0000-4000-8000-000000000001",
        "created": "2026-12-06T18:00:00Z",
        "modified": "2026-12-06T18:00:01Z",
        "messages": [{"time": "2026-12-06T18:00:00Z", "level": "INFO", "message": "offered"}],
    },
    "phase": "OFFERED",
    "expires": "2026-12-06T18:05:00Z",
    "executable": NOTEBOOK,
    "compute": {
        "kind": CALYCOPIS + "compute/simple-compute-resource.yaml",
        "cores": {"min": 2, "max": 2},
        "memory": {"min": 1.5, "max": 1.5},
    },
    "storage": [
        {
            "kind": CALYCOPIS + "storage/simple-storage-resource.yaml",
            "size": {"min": 10, "max": 10},
        }
    ],
    "schedule": {"available": {"start": "2026-12-06T20:00:00Z/PT0S", "duration": "PT2H30M"}},
    "connectors": [],
    "site": "portal.provider.platform.instance",
}


def test_session_json_golden() -> None:
    got = session_json(session(), "https://broker.example/api/")
    assert got == GOLDEN_SESSION
    assert json.loads(json.dumps(got)) == got
    assert (got["kind"], got["compute"]["kind"]) == (SESSION_KIND, COMPUTE_KIND)
    assert got["storage"][0]["kind"] == STORAGE_KIND


def test_session_json_after_acceptance() -> None:
    connector = {
        "kind": "k",
        "status": "AVAILABLE",
        "protocol": "https",
        "location": "https://x/",
    }
    record = session(
        phase=Phase.RUNNING,
        memory_mib=2048,
        storage_gib=0,
        connectors=(connector,),
        messages=(
            {"time": NOW, "level": "warning", "message": "slow"},
            {"time": "2026-12-06T18:00:00Z", "level": "odd", "message": "kept"},
        ),
    )
    got = session_json(record, "https://broker.example/api")
    assert "expires" not in got
    assert "storage" not in got
    assert got["phase"] == "RUNNING"
    assert got["compute"]["memory"] == {"min": 2, "max": 2}
    assert got["connectors"] == [connector]
    assert got["meta"]["url"].endswith("/api/sessions/5e551011-0000-4000-8000-000000000001")
    assert got["meta"]["messages"] == [
        {"time": "2026-12-06T18:00:00Z", "level": "WARN", "message": "slow"},
        {"time": "2026-12-06T18:00:00Z", "level": "INFO", "message": "kept"},
    ]


def test_session_json_does_not_share_the_records_dicts() -> None:
    record = session()
    got = session_json(record, "https://b/")
    got["executable"]["location"] = "changed"
    assert record.executable == NOTEBOOK


def test_offerset_json_golden() -> None:
    record = OfferSetRecord(
        uuid="0ffe4527-0000-4000-8000-000000000001",
        owner="alice@example.org",
        name="my analysis",
        result="YES",
        created=NOW,
        messages=(message_item(NOW, "INFO", "ignored 'data'"),),
        request=request(),
    )
    got = offerset_json(record, [session()], "https://broker.example/api/")
    assert got == {
        "meta": {
            "uuid": "0ffe4527-0000-4000-8000-000000000001",
            "name": "my analysis",
            "url": "https://broker.example/api/offersets/0ffe4527-0000-4000-8000-000000000001",
            "created": "2026-12-06T18:00:00Z",
            "messages": [
                {"time": "2026-12-06T18:00:00Z", "level": "INFO", "message": "ignored 'data'"}
            ],
        },
        "result": "YES",
        "offers": [GOLDEN_SESSION],
    }


def test_offerset_json_no_and_foreign_sessions() -> None:
    record = OfferSetRecord(uuid="o", owner=None, name="n", result="NO", created=NOW)
    got = offerset_json(record, [], "https://b/")
    assert (got["result"], got["offers"], got["meta"]["messages"]) == ("NO", [], [])
    with pytest.raises(ValueError, match="belongs to"):
        offerset_json(record, [session()], "https://b/")


def test_message_item_checks_the_level() -> None:
    assert message_item(NOW, "ERROR", "x") == {"time": NOW, "level": "ERROR", "message": "x"}
    with pytest.raises(ValueError, match="DEBUG, ERROR, INFO, WARN"):
        message_item(NOW, "WARNING", "x")


# --- updates ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"kind": "uri:enum-value-update", "path": "phase", "value": "ACCEPTED"},
        {"kind": "enum-value-update", "path": "phase", "value": "ACCEPTED"},
        {"kind": CALYCOPIS + "update/enum-value-update.yaml", "path": "phase", "value": "ACCEPTED"},
        {
            "kind": CALYCOPIS + "update/enum-value-update-1.0.yaml",
            "path": "phase",
            "value": "ACCEPTED",
        },
        {"type": "uri:enum-value-update", "path": "state", "value": "ACCEPTED"},
        {"update": {"type": "uri:enum-value-update", "path": "state", "value": "ACCEPTED"}},
        {"update": {"kind": "uri:enum-value-update", "path": "phase", "value": "ACCEPTED"}},
    ],
)
def test_update_forms(body: dict[str, Any]) -> None:
    assert parse_update(body) is Phase.ACCEPTED


def test_update_cancel() -> None:
    body = {"kind": "uri:enum-value-update", "path": "phase", "value": "CANCELLED"}
    assert parse_update(body) is Phase.CANCELLED


@pytest.mark.parametrize(
    ("body", "path", "fragment"),
    [
        ([], "", "must be a JSON object"),
        ({"update": "ACCEPTED"}, "update", "must be an object"),
        ({"path": "phase", "value": "ACCEPTED"}, "kind", "is required"),
        ({"kind": "uri:integer-value-update", "path": "phase"}, "kind", "unsupported update"),
        (
            {"kind": "https://evil.example/enum-value-update.yaml", "path": "phase"},
            "kind",
            "unsupported update",
        ),
        ({"type": 3}, "type", "unsupported update 3"),
        ({"kind": "uri:enum-value-update", "value": "ACCEPTED"}, "path", "not null"),
        ({"kind": "uri:enum-value-update", "path": "cores"}, "path", "only the phase"),
        ({"kind": "uri:enum-value-update", "path": "phase"}, "value", "ACCEPTED, CANCELLED"),
        ({"kind": "uri:enum-value-update", "path": "phase", "value": "RUNNING"}, "value", ""),
        ({"kind": "uri:enum-value-update", "path": "phase", "value": "accepted"}, "value", ""),
        (
            {"update": {"kind": "uri:enum-value-update", "path": "phase", "value": 1}},
            "update.value",
            "not the number 1",
        ),
    ],
)
def test_update_errors(body: object, path: str, fragment: str) -> None:
    with pytest.raises(RequestError) as caught:
        parse_update(body)
    assert caught.value.path == path
    assert fragment in caught.value.text


# --- phases ----------------------------------------------------------------------------------


def test_graph_covers_every_phase_and_final_phases_have_no_exit() -> None:
    assert set(BROKER_TRANSITIONS) == set(Phase)
    for phase in Phase:
        assert (not BROKER_TRANSITIONS[phase]) == (phase in FINAL), phase


def test_user_transitions_are_legal_moves_of_the_graph() -> None:
    assert set(USER_TRANSITIONS) == {Phase.ACCEPTED, Phase.CANCELLED}
    assert USER_TRANSITIONS[Phase.ACCEPTED] == {Phase.OFFERED}
    for to, sources in USER_TRANSITIONS.items():
        for frm in sources:
            check_transition(frm, to)
    # Only phases that hold capacity can be cancelled, and RELEASING is past cancelling.
    assert USER_TRANSITIONS[Phase.CANCELLED] == HOLDING - {Phase.RELEASING}


def test_every_holding_phase_can_reach_a_final_phase() -> None:
    for start in HOLDING:
        seen, todo = set(), [start]
        while todo:
            phase = todo.pop()
            if phase not in seen:
                seen.add(phase)
                todo.extend(BROKER_TRANSITIONS[phase])
        assert seen & FINAL, start


@pytest.mark.parametrize(
    ("frm", "to"),
    [
        (Phase.OFFERED, Phase.ACCEPTED),
        (Phase.OFFERED, Phase.EXPIRED),
        (Phase.ACCEPTED, Phase.WAITING),
        (Phase.WAITING, Phase.PREPARING),
        (Phase.PREPARING, Phase.AVAILABLE),
        (Phase.AVAILABLE, Phase.RUNNING),
        (Phase.AVAILABLE, Phase.RELEASING),
        (Phase.RUNNING, Phase.RELEASING),
        (Phase.RELEASING, Phase.COMPLETED),
        (Phase.RUNNING, Phase.CANCELLED),
        (Phase.PREPARING, Phase.FAILED),
    ],
)
def test_legal_transitions(frm: Phase, to: Phase) -> None:
    assert to in BROKER_TRANSITIONS[frm]
    check_transition(frm, to)  # and the checker agrees: it does not raise


def test_illegal_transitions_raise() -> None:
    with pytest.raises(IllegalTransition) as caught:
        check_transition(Phase.OFFERED, Phase.RUNNING)
    assert (caught.value.frm, caught.value.to) == (Phase.OFFERED, Phase.RUNNING)
    assert str(caught.value) == (
        "a session cannot go from OFFERED to RUNNING; "
        "from OFFERED it may go to ACCEPTED, CANCELLED, EXPIRED, REJECTED"
    )
    with pytest.raises(IllegalTransition, match="RELEASING it may go to COMPLETED, FAILED"):
        check_transition(Phase.RELEASING, Phase.CANCELLED)
    for final in FINAL:
        for to in Phase:
            with pytest.raises(IllegalTransition, match=f"{final} is final"):
                check_transition(final, to)


def test_user_updates() -> None:
    check_user_update(Phase.OFFERED, Phase.ACCEPTED)
    check_user_update(Phase.RUNNING, Phase.CANCELLED)
    with pytest.raises(IllegalTransition, match="a EXPIRED session cannot be set to ACCEPTED"):
        check_user_update(Phase.EXPIRED, Phase.ACCEPTED)
    with pytest.raises(IllegalTransition, match=r"only .* sessions can"):
        check_user_update(Phase.RELEASING, Phase.CANCELLED)
    with pytest.raises(IllegalTransition, match="a user cannot set a session to RUNNING"):
        check_user_update(Phase.AVAILABLE, Phase.RUNNING)


# --- robustness ------------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=20,
)
KEYS = st.sampled_from(
    [
        *("name", "executable", "compute", "storage", "schedule", "requested", "start"),
        *("duration", "kind", "cores", "memory", "size", "min", "max", "image", "location"),
        *("path", "value", "update", "type"),
    ]
)
# Shapes close to a real request, so that the fuzzing reaches past the first check.
NEAR = st.recursive(
    JSON
    | st.sampled_from(["jupyter-notebook", "docker-container", "PT1H", "P1Y"])
    | st.sampled_from(["2026-12-06T20:00:00Z/PT1H", "2026-12-06T20:00:00Z", "R2/x", "x/y/z"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=5),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(JSON, NEAR))
def test_parse_request_raises_only_request_error(body: object) -> None:
    with contextlib.suppress(RequestError):
        parse(body)


@settings(max_examples=200, deadline=None)
@given(st.one_of(JSON, NEAR))
def test_parse_update_raises_only_request_error(body: object) -> None:
    with contextlib.suppress(RequestError):
        parse_update(body)
