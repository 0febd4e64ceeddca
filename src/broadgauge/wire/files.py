"""Config, invite and key files on disk: read as UTF-8 TOML, written privately.

Every file of the wire layer (and of the configs built on it) is read and written the same
way, so the errors say the same things: ``cannot read <what> <path>: …`` when the file cannot
be read as UTF-8 text, ``<what> is not valid TOML: …`` when its text does not parse.  Files
hold keys, so they are written atomically with mode ``0600``.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from broadgauge.wire.errors import ConfigError


def read_text_file(
    path: str | os.PathLike[str], what: str, *, error: type[Exception] = ConfigError
) -> str:
    """Return the UTF-8 text of ``path``, or raise ``error("cannot read <what> <path>: …")``."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"cannot read {what} {path}: {exc}") from None


def parse_toml(text: str, what: str, *, error: type[Exception] = ConfigError) -> dict[str, Any]:
    """Parse a TOML document, or raise ``error("<what> is not valid TOML: …")``.

    Absurdly deep nesting is refused the same way, not let out as a ``RecursionError``.
    """
    try:
        return tomllib.loads(text)
    except (tomllib.TOMLDecodeError, RecursionError) as exc:
        raise error(f"{what} is not valid TOML: {exc}") from None


def write_private(path: Path, text: str) -> None:
    """Atomically write ``text`` to ``path`` with mode 0600 (it holds keys)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    # A stale temp file (say from a crash) would keep its old, possibly looser, mode: start afresh.
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
