"""Execution requests, offers and session updates in Calycopis's JSON shape (pure).

An execution request (the body of ``POST /requests`` and ``POST /direct``, Calycopis v1.0)
becomes an :class:`ExecutionRequest` with one minimum of each resource and the windows in
which it may start; :func:`candidate_starts` proposes start times inside those windows;
:func:`session_json` and :func:`offerset_json` render the stored records back as Calycopis
JSON; :func:`parse_update` reads a ``POST /sessions/{uuid}`` body, and
:data:`BROKER_TRANSITIONS` is the session phase graph every change is checked against.

The session side (times, JSON, updates, phases) lives in :mod:`.sessions` and is
re-exported here, so callers need only this module.

Nothing here does I/O or reads a clock: the caller passes ``now``.  Malformed input raises
:class:`RequestError`, whose ``path`` points into the request (``compute.cores.min``,
``storage.0.size.min``), so the broker can answer with the IVOA draft's ``reasons[] {path,
text}``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from broadgauge.planner.offers.sessions import (
    BROKER_TRANSITIONS,
    COMPUTE_KIND,
    SESSION_KIND,
    STORAGE_KIND,
    USER_TRANSITIONS,
    IllegalTransition,
    RequestError,
    as_object,
    check_transition,
    check_user_update,
    describe,
    iso,
    iso_duration,
    message_item,
    offerset_json,
    parse_duration,
    parse_interval,
    parse_update,
    session_json,
)

__all__ = [
    "BROKER_TRANSITIONS",
    "COMPUTE_KIND",
    "SESSION_KIND",
    "STORAGE_KIND",
    "USER_TRANSITIONS",
    "ExecutionRequest",
    "IllegalTransition",
    "Limits",
    "RequestError",
    "candidate_starts",
    "check_transition",
    "check_user_update",
    "iso",
    "iso_duration",
    "message_item",
    "offerset_json",
    "parse_request",
    "parse_update",
    "session_json",
    "tasktype_for_kind",
]

_CALYCOPIS = "https://www.purl.org/ivoa.net/Calycopis-openapi/schema/v1.0/kinds/"
# The Working Draft's type URIs, with and without the version folder (both were published).
_EB_TYPES = (
    "https://www.purl.org/ivoa.net/EB/schema/v1.0/types/",
    "https://www.purl.org/ivoa.net/EB/schema/types/",
)


def _executable_aliases(name: str) -> list[str]:
    return [
        name,
        f"{_CALYCOPIS}executable/{name}.yaml",
        f"{_CALYCOPIS}executable/{name}-1.0.yaml",
        *(f"{base}executables/{name}-1.0" for base in _EB_TYPES),
    ]


# Executable kind names are also the planner's task types, so rules written for ``/accepts``
# apply unchanged to execution requests.
_TASKTYPES = ("jupyter-notebook", "docker-container", "singularity-container")
_EXECUTABLE_KINDS = {
    alias: tasktype for tasktype in _TASKTYPES for alias in _executable_aliases(tasktype)
}


def tasktype_for_kind(kind: str) -> str | None:
    """The planner task type for an executable ``kind`` URI or short name (None if unknown)."""
    return _EXECUTABLE_KINDS.get(kind)


@dataclass(frozen=True)
class Limits:
    """What a broker will consider, after Calycopis's constants.  Times are seconds."""

    #: the start window when a request gives none: [now, now + default_window]
    default_window: float = 300.0
    default_duration: float = 7200.0
    max_duration: float = 14400.0
    #: how far ahead a start window may begin
    max_lookahead: float = 86400.0
    default_cores: int = 1
    default_memory_gib: float = 1.0
    max_cores: int = 1024
    max_memory_gib: float = 16384.0
    max_storage_gib: int = 1_048_576
    offers_per_site: int = 4
    #: how long an OFFERED session holds its capacity
    offer_ttl: float = 300.0


@dataclass(frozen=True)
class ExecutionRequest:
    """An execution request, checked and reduced to what booking needs."""

    name: str | None
    tasktype: str
    #: the executable as sent (a deep copy)
    executable: dict[str, Any]
    cores_min: int
    cores_max: int
    memory_mib_min: int
    memory_mib_max: int
    storage_gib: int
    #: ``[earliest start, latest start]`` windows, clipped to [now, now + max_lookahead]
    windows: tuple[tuple[float, float], ...]
    #: the minimum execution duration, seconds
    duration: float
    #: top-level keys we do not use (e.g. Calycopis ``data``, ``costs``), in the order sent
    ignored: tuple[str, ...]
    raw: dict[str, Any]


_KNOWN_KEYS = frozenset({"name", "executable", "compute", "storage", "schedule"})


def _string(value: object, path: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise RequestError(path, f"must be a non-empty string, not {describe(value)}")
    return value


def parse_request(body: object, now: float, *, limits: Limits = Limits()) -> ExecutionRequest:
    """Check an execution request (Calycopis v1.0 shape) and reduce it to an ExecutionRequest.

    Raises :class:`RequestError` naming the path of the first problem found.  Unknown
    top-level keys are not errors (Calycopis ignores them too); they are listed in
    ``ignored`` so the broker can say so.
    """
    if not isinstance(body, Mapping):
        raise RequestError("", f"an execution request must be a JSON object, not {describe(body)}")
    name = body.get("name")
    if name is not None and not isinstance(name, str):
        raise RequestError("name", f"must be a string, not {describe(name)}")
    if "executable" not in body:
        raise RequestError("executable", "is required")
    executable = as_object(body["executable"], "executable")
    tasktype = _parse_executable(executable)
    cores, memory = _parse_compute(body.get("compute"), limits)
    storage = _parse_storage(body.get("storage"), limits)
    windows, duration = _parse_schedule(body.get("schedule"), now, limits)
    return ExecutionRequest(
        name=name,
        tasktype=tasktype,
        executable=copy.deepcopy(dict(executable)),
        cores_min=cores[0],
        cores_max=cores[1],
        memory_mib_min=memory[0],
        memory_mib_max=memory[1],
        storage_gib=storage,
        windows=windows,
        duration=duration,
        ignored=tuple(str(key) for key in body if key not in _KNOWN_KEYS),
        raw=copy.deepcopy(dict(body)),
    )


def _parse_executable(executable: Mapping[str, Any]) -> str:
    # The Working Draft called the discriminator ``type``; Calycopis renamed it ``kind``.
    key = "kind" if "kind" in executable or "type" not in executable else "type"
    path = f"executable.{key}"
    if key not in executable:
        raise RequestError(path, "is required")
    kind = executable[key]
    tasktype = tasktype_for_kind(kind) if isinstance(kind, str) else None
    if tasktype is None:
        raise RequestError(
            path, f"unknown executable kind {kind!r}, known: {', '.join(_TASKTYPES)}"
        )
    if tasktype == "docker-container":
        _check_docker(executable)
    elif "location" in executable:
        _check_url(executable["location"], "executable.location")
    return tasktype


def _check_url(value: object, path: str) -> None:
    text = _string(value, path)
    parts = urlsplit(text)
    if not parts.scheme or not parts.netloc:
        raise RequestError(path, f"must be a URL like https://host/path, not {text!r}")


def _check_docker(executable: Mapping[str, Any]) -> None:
    # Light checks: enough to say what is wrong before a site tries to pull the image.
    if "image" not in executable:
        raise RequestError("executable.image", "is required for a docker-container")
    image = executable["image"]
    if isinstance(image, str):
        _string(image, "executable.image")
    else:
        spec = as_object(image, "executable.image", "an image name or an object")
        locations = spec.get("locations")
        if locations is None and spec.get("digest") is None:
            raise RequestError("executable.image", "needs locations or a digest")
        if locations is not None:
            if not isinstance(locations, list) or not locations:
                raise RequestError("executable.image.locations", "must be a non-empty list")
            for i, location in enumerate(locations):
                _string(location, f"executable.image.locations.{i}")
        if spec.get("digest") is not None:
            _string(spec["digest"], "executable.image.digest")
    if "privileged" in executable and not isinstance(executable["privileged"], bool):
        raise RequestError("executable.privileged", "must be true or false")
    if "entrypoint" in executable:
        _string(executable["entrypoint"], "executable.entrypoint")
    if "command" in executable:
        command = executable["command"]
        if not isinstance(command, list) or not all(isinstance(c, str) for c in command):
            raise RequestError("executable.command", "must be a list of strings")
    if "environment" in executable:
        environment = as_object(executable["environment"], "executable.environment")
        for key, value in environment.items():
            if not isinstance(value, str):
                raise RequestError(f"executable.environment.{key}", "must be a string")


def _parse_compute(value: object, limits: Limits) -> tuple[tuple[int, int], tuple[int, int]]:
    default_memory = math.ceil(limits.default_memory_gib * 1024)
    if value is None:
        return (limits.default_cores,) * 2, (default_memory,) * 2
    path = "compute"
    if isinstance(value, list):
        # Calycopis has one compute resource (issue #206); the draft had a list of them.
        if len(value) != 1:
            raise RequestError(path, f"only one compute resource is supported, got {len(value)}")
        value, path = value[0], "compute.0"
    compute = as_object(value, path)
    if "kind" in compute:
        _check_compute_kind(compute["kind"], f"{path}.kind")
    cores = _min_max(compute.get("cores"), f"{path}.cores", limits.default_cores, limits.max_cores)
    low, high = _min_max(
        compute.get("memory"),
        f"{path}.memory",
        limits.default_memory_gib,
        limits.max_memory_gib,
        whole=False,
    )
    # Round up: an offer must meet the requested minimum, never fall a fraction short.
    return (int(cores[0]), int(cores[1])), (math.ceil(low * 1024), math.ceil(high * 1024))


def _check_compute_kind(kind: object, path: str) -> None:
    segment = kind.rsplit("/", 1)[-1] if isinstance(kind, str) else ""
    segment = segment.removesuffix(".yaml").removesuffix("-1.0")
    if segment != "simple-compute-resource":
        raise RequestError(path, f"unknown compute kind {kind!r}, known: simple-compute-resource")


def _min_max(
    value: object, path: str, default: float, limit: float, *, whole: bool = True
) -> tuple[float, float]:
    """A ``{min, max}`` block; max defaults to min, min to ``default``."""
    if value is None:
        return default, default
    block = as_object(value, path, "an object {min, max}")
    low = _amount(block["min"], f"{path}.min", limit, whole) if "min" in block else None
    high = _amount(block["max"], f"{path}.max", limit, whole) if "max" in block else None
    if low is None:
        low = default if high is None else min(default, high)
    if high is None:
        high = low
    if low > high:
        raise RequestError(path, f"min {_number(low)} is more than max {_number(high)}")
    return low, high


def _amount(value: object, path: str, limit: float, whole: bool) -> float:
    if whole:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise RequestError(path, f"must be a whole number >= 1, not {describe(value)}")
    elif (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise RequestError(path, f"must be a number > 0, not {describe(value)}")
    if value > limit:
        raise RequestError(
            path, f"{_number(value)} is more than this broker considers ({_number(limit)})"
        )
    return value


def _number(value: float) -> str:
    # ``:g`` would turn a huge JSON integer into a float and overflow; ints print as they are.
    return str(value) if isinstance(value, int) else f"{value:g}"


def _parse_storage(value: object, limits: Limits) -> int:
    if value is None:
        return 0
    if not isinstance(value, list):
        raise RequestError("storage", f"must be a list, not {describe(value)}")
    total = 0
    for i, item in enumerate(value):
        storage = as_object(item, f"storage.{i}")
        low, _ = _min_max(storage.get("size"), f"storage.{i}.size", 1, limits.max_storage_gib)
        total += int(low)
    if total > limits.max_storage_gib:
        raise RequestError("storage", f"{total} GiB in all is more than {limits.max_storage_gib}")
    return total


def _parse_schedule(
    value: object, now: float, limits: Limits
) -> tuple[tuple[tuple[float, float], ...], float]:
    requested: Mapping[str, Any] = {}
    if value is not None:
        schedule = as_object(value, "schedule")
        if schedule.get("requested") is not None:
            requested = as_object(schedule["requested"], "schedule.requested")
    windows = _parse_windows(
        requested.get("start"),
        now,
        default_window=limits.default_window,
        max_lookahead=limits.max_lookahead,
    )
    duration = _parse_requested_duration(
        requested.get("duration"), default=limits.default_duration, maximum=limits.max_duration
    )
    return windows, duration


_START = "schedule.requested.start"
_DURATION_PATH = "schedule.requested.duration"


def _parse_windows(
    value: object, now: float, *, default_window: float, max_lookahead: float
) -> tuple[tuple[float, float], ...]:
    """The ``[earliest, latest]`` start windows of ``schedule.requested.start``.

    ``value`` is an interval string, a list of them, or None (then ``[now, now +
    default_window]``).  A window ending before ``now`` or starting after ``now +
    max_lookahead`` is an error; one already open starts at ``now`` and one reaching past
    the horizon is cut there.
    """
    if value is None:
        return ((now, now + default_window),)
    if isinstance(value, str):
        items: list[tuple[str, object]] = [(_START, value)]
    elif isinstance(value, list) and value:
        items = [(f"{_START}.{i}", item) for i, item in enumerate(value)]
    else:
        raise RequestError(_START, "must be an ISO-8601 interval or a non-empty list of them")
    horizon = now + max_lookahead
    windows = []
    for where, item in items:
        if not isinstance(item, str):
            raise RequestError(where, f"must be an ISO-8601 interval, not {describe(item)}")
        try:
            first, last = parse_interval(item)
        except ValueError as error:
            raise RequestError(where, str(error)) from None
        if last < now:
            raise RequestError(where, f"{item!r} is in the past (now is {iso(now)})")
        if first > horizon:
            raise RequestError(
                where,
                f"{item!r} starts more than {iso_duration(max_lookahead)} ahead "
                f"(latest {iso(horizon)})",
            )
        windows.append((max(first, now), min(last, horizon)))
    return tuple(windows)


def _parse_requested_duration(value: object, *, default: float, maximum: float) -> float:
    """The minimum execution duration in ``schedule.requested.duration``, in seconds.

    ``value`` is a duration string (min = max), ``{min, max}`` of them, or None
    (``default``).  A missing min is ``default``, or max if that is shorter; a missing max
    is min.  A min longer than ``maximum`` is an error; a longer max is not, since only the
    min is booked.
    """
    if value is None:
        return default
    if isinstance(value, str):
        return _bounded(_positive_duration(value, _DURATION_PATH), maximum)
    block = as_object(value, _DURATION_PATH, "an ISO-8601 duration or an object {min, max}")
    path = _DURATION_PATH
    low = _positive_duration(block["min"], f"{path}.min") if "min" in block else None
    high = _positive_duration(block["max"], f"{path}.max") if "max" in block else None
    if low is None:
        low = default if high is None else min(default, high)
    if high is not None and low > high:
        raise RequestError(path, f"min {iso_duration(low)} is more than max {iso_duration(high)}")
    return _bounded(low, maximum)


def _bounded(seconds: float, maximum: float) -> float:
    if seconds > maximum:
        raise RequestError(
            _DURATION_PATH,
            f"{iso_duration(seconds)} is longer than the most offered, {iso_duration(maximum)}",
        )
    return seconds


def _positive_duration(value: object, path: str) -> float:
    if not isinstance(value, str):
        raise RequestError(path, f"must be an ISO-8601 duration like PT2H, not {describe(value)}")
    try:
        seconds = parse_duration(value)
    except ValueError as error:
        raise RequestError(path, str(error)) from None
    if seconds <= 0:
        raise RequestError(path, "must be longer than zero")
    return seconds


def candidate_starts(request: ExecutionRequest, limits: Limits) -> list[float]:
    """Up to ``limits.offers_per_site`` start times, each inside one requested window.

    Each window gives its earliest start, then further starts one duration apart while they
    stay inside it (Calycopis spaces its offers by the duration, so two offers from one site
    do not overlap); the result is sorted and without duplicates.
    """
    wanted = limits.offers_per_site
    starts: set[float] = set()
    for first, last in request.windows:
        # No window can contribute more than ``wanted`` to the first ``wanted`` overall.
        for i in range(wanted):
            start = first + i * request.duration
            if start > last:
                break
            starts.add(start)
    return sorted(starts)[:wanted]
