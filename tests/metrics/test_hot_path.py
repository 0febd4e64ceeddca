"""What a job costs in metrics and logs is cut short; what they write is not changed.

A job's trace lines are written straight to the JSON handler by :func:`trace_line`, and the
store's commits go straight into their histogram row.  These tests hold both to the general
paths they stand in for: the same JSON line as :func:`json_line` (and as a ``LogRecord``
through :class:`JsonFormatter`), and the same histogram as ``_Histograms.observe``.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import generate_latest

from broadgauge.jobs.agent_type import AgentType
from broadgauge.runtime.agent import Agent
from broadgauge.runtime.config import AgentConfig
from broadgauge.runtime.logs import (
    configure_logging,
    json_line,
    log_trace_event,
    remember_secret,
    trace_fields,
    trace_line,
    trace_log,
)
from broadgauge.runtime.metrics import STORE_BUCKETS, AgentMetrics, _Histograms
from broadgauge.runtime.trace import Action, TraceEvent
from broadgauge.wire import ServiceConfig

#: Remembered by this module's tests: any line holding it must show ``***`` instead.
SECRET = "hot-path-secret-9f1c"

texts = st.text(max_size=20) | st.sampled_from(["", SECRET, f'a"{SECRET}\\', "ü\n\x00\t"])


@st.composite
def events(draw: st.DrawFn) -> TraceEvent:
    """Trace events with awkward text in every field a line carries."""
    return TraceEvent(
        time=draw(st.floats(0, 4e9)),
        agent=draw(texts.filter(bool)),
        action=draw(st.sampled_from(list(Action))),
        job_id=draw(st.uuids().map(str) | texts),
        instruction=draw(texts),
        path=draw(texts),
        peer=draw(texts),
        state=draw(texts.filter(bool)),
        detail=draw(texts),
    )


def _general_line(event: TraceEvent, level: str, created: float) -> str:
    """The line as the general path writes it: a dict of fields through json_line."""
    message, fields = trace_fields(event)
    return json_line(created, level, "broadgauge.trace", message, fields)


@given(events(), st.sampled_from(["INFO", "DEBUG"]), st.floats(0, 4e9))
def test_a_trace_line_is_the_line_json_line_writes(
    event: TraceEvent, level: str, created: float
) -> None:
    remember_secret(SECRET)
    line = trace_line(event, level, created)
    assert line == _general_line(event, level, created)
    assert SECRET not in line and json.loads(line)["level"] == level


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """The root logger writing JSON lines at DEBUG into a string."""
    stream = io.StringIO()
    configure_logging(logging.DEBUG, "json", stream)
    try:
        yield stream
    finally:
        configure_logging(logging.WARNING, "human")


def _without_time(line: str) -> dict[str, object]:
    value: dict[str, object] = json.loads(line)
    value.pop("time")
    return value


def test_the_direct_line_and_the_log_record_line_are_the_same(json_log: io.StringIO) -> None:
    remember_secret(SECRET)
    event = TraceEvent(
        time=time.time(),
        agent="portal",
        action=Action.FORWARDED,
        job_id="7c9e6679-7425-40de-944b-e07fc1f90ae7",
        instruction="add_user u1.proj.portal",
        path="portal.cluster",
        peer="cluster@default",
        state="Pending",
        detail=f'said "{SECRET}"',
    )
    log_trace_event(event)  # the JSON handler is the only one: written straight to it
    # A second handler on the trace logger sends the next line through a LogRecord.
    extra = logging.NullHandler()
    trace_log.addHandler(extra)
    try:
        log_trace_event(event)
    finally:
        trace_log.removeHandler(extra)
    direct, through_logging = json_log.getvalue().splitlines()
    assert _without_time(direct) == _without_time(through_logging)
    assert _without_time(direct)["outcome"] == 'said "***"'


def test_a_filtered_out_action_writes_nothing(json_log: io.StringIO) -> None:
    configure_logging(logging.INFO, "json", json_log)
    received = TraceEvent(time.time(), "portal", Action.RECEIVED, "j", "add_user x", "p", "q", "s")
    log_trace_event(received)  # logged at DEBUG only
    assert json_log.getvalue() == ""


def test_store_commits_fill_the_histogram_as_observe_does(tmp_path: Path) -> None:
    agent = Agent(
        AgentConfig(AgentType.PROVIDER, ServiceConfig.create("provider", port=0)),
        data_dir=tmp_path,
    )
    metrics = AgentMetrics(agent)
    name = b"broadgauge_store_commit_duration_seconds"
    assert name + b"_count" not in generate_latest(metrics.registry)  # no commit, no series
    seconds = [0.00005, 0.0003, 0.0003, 0.004, 0.7, 3.0]
    expected = _Histograms(STORE_BUCKETS)
    for value in seconds:
        metrics.committed(value)
        expected.observe((), value)
    assert metrics.commits.values == expected.values
    text = generate_latest(metrics.registry).decode()
    assert f'{name.decode()}_count{{agent="provider"}} 6.0' in text
    assert f'{name.decode()}_bucket{{agent="provider",le="0.0005"}} 3.0' in text
    assert f'{name.decode()}_bucket{{agent="provider",le="1.0"}} 5.0' in text
    assert agent.store is not None
    agent.store.close()


def _event(action: Action, job: str) -> TraceEvent:
    return TraceEvent(time.time(), "portal", action, job, "add_user x", "portal.c", "c", "Pending")


def test_lines_held_for_the_loop_keep_their_order_and_none_is_lost(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"

    def jobs() -> list[object]:
        return [json.loads(line).get("job") for line in path.read_text().splitlines()]

    async def write() -> list[list[object]]:
        seen = []
        log_trace_event(_event(Action.FORWARDED, "a"))
        logging.getLogger("broadgauge.test").info("between")
        log_trace_event(_event(Action.FINISHED, "b"))
        seen.append(jobs())  # held for the loop's next turn
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        seen.append(jobs())
        log_trace_event(_event(Action.RETURNED, "c"))
        configure_logging(logging.WARNING, "human")  # switching writes what is held
        seen.append(jobs())
        return seen

    with path.open("w") as stream:
        configure_logging(logging.INFO, "json", stream)
        try:
            held, turned, switched = asyncio.run(write())
        finally:
            configure_logging(logging.WARNING, "human")
    assert held == []
    assert turned == ["a", None, "b"]
    assert switched == ["a", None, "b", "c"]
