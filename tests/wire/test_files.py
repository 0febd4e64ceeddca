"""Files on disk: reading UTF-8 TOML and writing privately, for invites and configs alike."""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from broadgauge.wire import ConfigError, Invite, ServiceConfig
from broadgauge.wire.files import parse_toml, read_text_file, write_private

from .tables import CLIENT, SERVER, SERVICE, load_service, table

Saved = Invite | ServiceConfig

# What each kind of file is called in errors, a sample, and how it is read back.
KINDS = [
    pytest.param("invite", lambda: Invite.from_dict(SERVER), Invite, id="invite"),
    pytest.param(
        "config",
        lambda: load_service(table(SERVICE, clients=[CLIENT], servers=[SERVER])),
        ServiceConfig,
        id="config",
    ),
]


@pytest.mark.parametrize(("what", "sample", "kind"), KINDS)
def test_saved_file_is_private(
    tmp_path: Path, what: str, sample: Callable[[], Saved], kind: type[Saved]
) -> None:
    path = tmp_path / "deeper" / f"{what}.toml"
    sample().save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # Overwriting a looser existing file tightens it.
    os.chmod(path, 0o644)
    sample().save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # No temporary file is left behind.
    assert sorted(p.name for p in path.parent.iterdir()) == [f"{what}.toml"]
    assert kind.load(path) == sample()


@pytest.mark.parametrize(("what", "sample", "kind"), KINDS)
def test_saved_file_is_private_despite_a_stale_temp_file(
    tmp_path: Path, what: str, sample: Callable[[], Saved], kind: type[Saved]
) -> None:
    path = tmp_path / f"{what}.toml"
    stale = tmp_path / f".{what}.toml.tmp"
    stale.write_text("left over from a crash")
    os.chmod(stale, 0o666)
    sample().save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert kind.load(path) == sample()
    assert not stale.exists()


@pytest.mark.parametrize(("what", "sample", "kind"), KINDS)
def test_load_errors(
    tmp_path: Path, what: str, sample: Callable[[], Saved], kind: type[Saved]
) -> None:
    missing = tmp_path / "missing.toml"
    with pytest.raises(ConfigError, match=f"^cannot read {what} {re.escape(str(missing))}: "):
        kind.load(missing)
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"\xff\xfe not utf-8")
    with pytest.raises(ConfigError, match=f"^cannot read {what} {re.escape(str(bad))}: "):
        kind.load(bad)
    for text in ("this is = = not toml", "name = "):
        with pytest.raises(ConfigError, match=f"^{what} is not valid TOML: "):
            kind.loads(text)
    # Absurd nesting must not escape as RecursionError.
    for text in ("x = " + "[" * 5000, "x = " + "{ a = " * 3000):
        with pytest.raises(ConfigError, match=f"^{what} is not valid TOML: "):
            kind.loads(text)


def test_helpers_raise_the_error_they_are_given(tmp_path: Path) -> None:
    path = tmp_path / "f.toml"
    with pytest.raises(OSError, match=f"^cannot read client file {re.escape(str(path))}: "):
        read_text_file(path, "client file", error=OSError)
    with pytest.raises(OSError, match=r"^client file is not valid TOML: "):
        parse_toml("= 1", "client file", error=OSError)
    write_private(path, 'url = "ü"\n')
    assert read_text_file(path, "client file") == 'url = "ü"\n'
    assert parse_toml(read_text_file(path, "client file"), "client file") == {"url": "ü"}
