"""``--log-format json``: one JSON object per line, and one job followed across every hop.

The demo network runs as ``broadgauge -v --log-format json demo --serve``; portal software
(Broadgauge's client) sends one ``add_user`` through the bridge's HTTP API, and the test reads
the JSON log of every agent (one process here, told apart by ``agent``) for the job's trace.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import subprocess
import time
import tomllib
import uuid
from pathlib import Path

import pytest

from broadgauge.client import Client, ClientConfig
from broadgauge.runtime.logs import (
    JsonFormatter,
    child_job_id,
    configure_logging,
    json_line,
    remember_secret,
    scrub,
    trace_id,
)

from .processes import BROADGAUGE

PATH = "portal.provider.platform.instance"


def test_one_job_is_followed_from_the_bridge_to_the_back_end_and_back(tmp_path: Path) -> None:
    log_file = (tmp_path / "stderr.jsonl").open("w")
    server = subprocess.Popen(
        [*BROADGAUGE, "-v", "--log-format", "json", "demo", "--serve", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=log_file,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "network.toml").exists():
            assert server.poll() is None, (tmp_path / "stderr.jsonl").read_text()[-3000:]
            assert time.monotonic() < deadline
            time.sleep(0.1)
        with Client(ClientConfig.load(tmp_path / "bridge.toml")) as client:
            job = client.run(f"{PATH} add_user alice.physics.portal", max_ms=30_000)
        assert job.is_finished and not job.is_error, job
        key = tomllib.loads((tmp_path / "bridge.toml").read_text())["key"]["data"]
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=60)
        log_file.close()
    lines = (tmp_path / "stderr.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"time", "level", "agent", "event", "message"} <= set(r) for r in records)
    mine = [r for r in records if r.get("trace") == trace_id(str(job.id))]
    agents = {r["agent"] for r in mine}
    assert {
        "bridge",
        "portal",
        "provider",
        "platform",
        "instance",
        "account",
        "filesystem",
        "scheduler",
    } <= agents, agents
    # The bridge's own job, finished; the inner job on every hop down and back.
    bridge_events = {r["event"] for r in mine if r.get("job") == str(job.id)}
    assert "finished" in bridge_events, bridge_events
    for hop in ("provider", "platform"):
        events = {r["event"] for r in mine if r["agent"] == hop}
        assert {"forwarded", "returned"} <= events, (hop, events)
    finished = {r["agent"] for r in mine if r["event"] == "finished"}
    assert {"instance", "account", "filesystem", "scheduler"} <= finished, finished
    # The back end's work, done for this job.
    operations = [r for r in mine if r["event"] == "operation" and r["agent"] == "account"]
    # (the instance's sub-jobs: the project's group, the user, then the home directory)
    assert {r["keyword"] for r in operations} == {"add_project", "add_user", "update_homedir"}
    assert any("alice.physics" in r["message"] for r in operations if r["keyword"] == "add_user")
    # Secrets never appear: the bridge's API key is in no line.
    assert key not in "\n".join(lines)


def test_a_child_job_shares_its_parents_trace_and_stays_a_uuid4() -> None:
    parent = str(uuid.uuid4())
    child = child_job_id(parent)
    assert str(child)[:8] == parent[:8] and str(child) != parent
    assert child.version == 4 and child.variant == uuid.RFC_4122
    assert child_job_id(None).version == 4
    assert child_job_id("not a uuid").version == 4


def test_json_lines_carry_the_fields_and_never_a_secret(
    capsys: pytest.CaptureFixture[str],
) -> None:
    remember_secret("s3cr3t-token-value")
    configure_logging(logging.INFO, "json")
    try:
        logging.getLogger("broadgauge.test").info(
            "token is %s",
            "s3cr3t-token-value",
            extra={"agent": "instance", "event": "operation", "job": "j", "outcome": "ok"},
        )
        try:
            raise ValueError("boom s3cr3t-token-value")
        except ValueError:
            logging.getLogger("broadgauge.test").exception("failed")
    finally:
        configure_logging(logging.WARNING, "human")
    first, second = (json.loads(line) for line in capsys.readouterr().err.splitlines())
    assert first["agent"] == "instance" and first["event"] == "operation"
    assert first["job"] == "j" and first["outcome"] == "ok" and first["level"] == "INFO"
    assert first["message"] == "token is ***"
    assert "s3cr3t" not in second["error"] and second["event"] == "log"
    with pytest.raises(ValueError, match="log format"):
        configure_logging(logging.INFO, "xml")
    assert JsonFormatter().format(logging.makeLogRecord({"msg": "x"}))


def test_json_lines_on_a_loop_reach_the_file_by_the_next_iteration(tmp_path: Path) -> None:
    """Lines written on an event loop share one flush per iteration; each is whole, in
    order, and in the file once the loop has turned."""
    path = tmp_path / "log.jsonl"

    async def write() -> list[str]:
        for n in range(50):
            logging.getLogger("broadgauge.test").info("line %d", n, extra={"agent": "a"})
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return path.read_text().splitlines()

    with path.open("w") as stream:
        configure_logging(logging.INFO, "json", stream)
        try:
            lines = asyncio.run(write())
        finally:
            configure_logging(logging.WARNING, "human")
    assert [json.loads(line)["message"] for line in lines] == [f"line {n}" for n in range(50)]


def test_json_line_is_the_json_of_its_fields() -> None:
    """The hand-assembled line is valid JSON for awkward text, times keep their millisecond."""
    remember_secret('hidden"quote\\value')
    text = json_line(
        1_700_000_000.9996,
        "INFO",
        "broadgauge.x",
        'say "hi"\n\x00 é hidden"quote\\value',
        {"agent": "a", "job": "j", "peer": None, "outcome": 'hidden"quote\\value'},
    )
    line = json.loads(text)
    assert line == {
        "time": "2023-11-14T22:13:20.999+00:00",
        "level": "INFO",
        "logger": "broadgauge.x",
        "agent": "a",
        "event": "log",
        "message": 'say "hi"\n\x00 é ***',
        "job": "j",
        "outcome": "***",
    }
    assert json_line(1_700_000_001.0, "INFO", "x", "m", {})[:38].endswith("21.000+00:00")


def test_a_secret_inside_a_longer_secret_does_not_reveal_the_rest_of_it() -> None:
    # Remembered in the order that used to leak: the short one first.
    remember_secret("bridge-key")
    remember_secret("bridge-key-2f9c41d7e0")
    assert scrub("token bridge-key-2f9c41d7e0 and bridge-key") == "token *** and ***"
