"""The doctor changes nothing unless asked with ``--fix``, and then only what it listed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from broadgauge.cli import main
from broadgauge.jobs.agent_type import AgentType
from broadgauge.runtime.audit import AuditLog
from tests.cli.processes import free_port

from .helpers import agent_config, write


def _snapshot(root: Path) -> dict[str, tuple[int, int, bytes | None]]:
    """(mode, mtime in ns, content) of every file and folder under ``root``."""
    seen: dict[str, tuple[int, int, bytes | None]] = {}
    for path in [root, *sorted(root.rglob("*"))]:
        info = path.stat()
        content = path.read_bytes() if path.is_file() else None
        seen[str(path.relative_to(root))] = (info.st_mode, info.st_mtime_ns, content)
    return seen


@pytest.fixture
def broken(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A config others can read, a data folder others can read, and a tampered audit log."""
    config = write(agent_config(AgentType.PORTAL, "portal", free_port()), tmp_path / "p.toml")
    config.chmod(0o644)
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o755)
    log = AuditLog(data / "audit.jsonl", "portal")
    log.append(time=1.0, action="test", outcome="ok")
    log.append(time=2.0, action="test", outcome="ok")
    log.close()
    audit = data / "audit.jsonl"
    audit.write_text(audit.read_text().replace('"time":1.0', '"time":9.0'))
    return config, data, audit


def test_without_fix_nothing_changes(
    tmp_path: Path, broken: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    config, data, _ = broken
    before = _snapshot(tmp_path)
    assert main(["doctor", str(config), "--data-dir", str(data)]) == 1
    assert _snapshot(tmp_path) == before
    out = capsys.readouterr().out
    assert "2 fixable with --fix" in out
    assert "fixed" not in out


def test_fix_makes_only_the_listed_repairs(
    tmp_path: Path, broken: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    config, data, audit = broken
    audit_before = (audit.read_bytes(), audit.stat().st_mtime_ns, audit.stat().st_mode)
    config_text = config.read_bytes()
    status = main(["doctor", str(config), "--data-dir", str(data), "--fix"])
    out = capsys.readouterr().out
    assert f"fixed (portal config.mode): chmod 600 {config}" in out
    assert f"fixed (portal data.dir): chmod 700 {data}" in out
    assert config.stat().st_mode & 0o777 == 0o600
    assert data.stat().st_mode & 0o777 == 0o700
    assert config.read_bytes() == config_text
    # The tampered log is listed, but not fixable: it is left exactly as it was, and still fails.
    assert (audit.read_bytes(), audit.stat().st_mtime_ns, audit.stat().st_mode) == audit_before
    assert status == 1
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["audit.jsonl", "data", "p.toml"]


def test_fix_creates_a_missing_data_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write(agent_config(AgentType.PORTAL, "portal", free_port()), tmp_path / "p.toml")
    data = tmp_path / "new" / "data"
    assert main(["doctor", str(config), "--data-dir", str(data)]) == 0  # a warning only
    assert not data.exists()
    assert main(["doctor", str(config), "--data-dir", str(data), "--fix", "--json"]) == 0
    assert data.is_dir() and os.stat(data).st_mode & 0o777 == 0o700
    assert f"fixed (portal data.dir): mkdir -p -m 700 {data}" in capsys.readouterr().err
