"""``broadgauge demo`` (the README's first command) and ``broadgauge audit verify``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import tomllib
import urllib.request
from pathlib import Path

from .processes import BROADGAUGE, run_broadgauge


def test_demo_runs_the_whole_scenario_and_exits_0(tmp_path: Path) -> None:
    result = run_broadgauge(
        "demo", "--dir", str(tmp_path), timeout=120, env={**os.environ, "COLUMNS": "400"}
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # Rich wraps long lines at the console width: compare with whitespace collapsed.
    out = " ".join(result.stdout.split())
    for expected in (
        "✓ Create project physics.portal",
        'UserMapping: "alice.physics.portal:alice.physics:portal.physics"',
        'Quota: {"limit":"10.00 GB"',
        'Usage: {"seconds":3600000}',
        "bool: true",
        "alice.physics.portal: 9000 s in 3 jobs",
        'Vec<UserMapping>: ["alice.physics.portal:alice.physics:portal.physics"]',
        "user_removed bob.physics.portal",
        # The network planner: YES for a hub user; for a newcomer, where to provision.
        "YES at portal.provider.notebooks.jupyter: https://jupyter.instance.example/",
        "NO for now; provision: portal.provider.notebooks.jupyter add_user carol.physics.portal",
        # The notebook platform: alice's server, on the stand-in's URL.
        'String: "https://jupyter.instance.example/user/alice.physics/"',
        "jupyter.notebooks.provider.portal user_added carol.physics.portal",
    ):
        assert expected in out, expected
    assert "✗" not in out
    # The sandbox really holds the directories, and alice's home survived bob's removal.
    assert (tmp_path / "filesystem" / "sandbox" / "home" / "physics" / "alice.physics").is_dir()
    assert not (tmp_path / "filesystem" / "sandbox" / "home" / "physics" / "bob.physics").exists()
    # Every agent kept an audit log that verifies.
    for name in ("portal", "instance", "account", "filesystem", "scheduler", "jupyter"):
        log = tmp_path / name / "audit.jsonl"
        check = run_broadgauge("audit", "verify", str(log))
        assert check.returncode == 0, check.stdout
        assert "chain intact" in check.stdout


def test_audit_verify_names_the_first_altered_entry(tmp_path: Path) -> None:
    run_broadgauge("demo", "--dir", str(tmp_path), timeout=120)
    log = tmp_path / "account" / "audit.jsonl"
    lines = log.read_text().splitlines()
    entry = json.loads(lines[4])
    entry["outcome"] = "nothing happened here"
    lines[4] = json.dumps(entry)
    log.write_text("\n".join(lines) + "\n")
    check = run_broadgauge("audit", "verify", str(log))
    assert check.returncode == 1
    assert "line 5" in check.stdout and "altered" in check.stdout


def test_demo_serve_describes_the_network_and_stops_on_sigint(tmp_path: Path) -> None:
    server = subprocess.Popen(
        [*BROADGAUGE, "demo", "--serve", "--dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        description = tmp_path / "network.toml"
        deadline = time.monotonic() + 60
        while not description.exists():
            assert server.poll() is None, server.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.1)
        network = tomllib.loads(description.read_text())
        agents = network["agents"]
        assert set(agents) == {
            "portal",
            "bridge",
            "provider",
            "platform",
            "instance",
            "notebooks",
            "jupyter",
            "account",
            "filesystem",
            "scheduler",
        }
        assert agents["portal"]["type"] == "Portal"
        assert agents["portal"]["url"].startswith("ws://127.0.0.1:")
        # The network planner beside the bridge answers over HTTP from the published rules.
        with urllib.request.urlopen(
            network["planner"] + "accepts?tasktype=jupyter-notebook", timeout=30
        ) as reply:
            body = json.loads(reply.read())
        # Anonymous callers cannot have an account, and the demo's rule requires one.
        assert body["reponseword"] == "NO"
        assert body["asked"] == 1 and body["failures"] == []
        with urllib.request.urlopen(
            network["planner"] + "accepts/explain?tasktype=jupyter-notebook", timeout=30
        ) as reply:
            explained = json.loads(reply.read())
        (only,) = explained["destinations"]
        assert only["destination"] == "portal.provider.notebooks.jupyter"
        assert only["explain"]["steps"][0]["outcome"] == "identity-denied"
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=30) == 0
    finally:
        if server.poll() is None:
            server.kill()
