"""``broadgauge bridge console-user``: the config gets an Argon2 hash, never the password."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from broadgauge.bridge.console.auth import PasswordBook
from broadgauge.bridge.console.settings import ConsoleSettings
from broadgauge.runtime.config import AgentConfig


def _cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "broadgauge", *args], input=stdin, capture_output=True, text=True
    )


def test_console_user_add_list_remove(tmp_path: Path) -> None:
    config = tmp_path / "bridge.toml"
    assert _cli("bridge", "init", "-c", str(config)).returncode == 0
    added = _cli(
        "bridge", "console-user", "-c", str(config), "--add", "ops", stdin="a long password\n"
    )
    assert added.returncode == 0, added.stderr
    assert "a long password" not in config.read_text()
    settings = ConsoleSettings.of(AgentConfig.load(config))
    assert PasswordBook(settings.users).verify("ops", "a long password")
    assert _cli("bridge", "console-user", "-c", str(config), "--list").stdout.split() == ["ops"]
    short = _cli("bridge", "console-user", "-c", str(config), "--add", "eve", stdin="short\n")
    assert short.returncode != 0 and "at least" in short.stderr
    assert _cli("bridge", "console-user", "-c", str(config), "--remove", "ops").returncode == 0
    assert ConsoleSettings.of(AgentConfig.load(config)).users == {}
