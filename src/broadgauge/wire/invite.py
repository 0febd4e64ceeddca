"""Invitation files: how a server introduces itself to a new client (notes §1.11).

An invite carries the *server's* name, its WebSocket URL, the zone of the link and the two
pre-shared keys.  Whoever holds it can connect as that client, so files are written ``0600``.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from broadgauge.wire.errors import ConfigError
from broadgauge.wire.keys import Key
from broadgauge.wire.names import check_name, check_zone
from broadgauge.wire.urls import canonical_websocket_url


@dataclass(frozen=True)
class Invite:
    """The credentials a client needs to dial one server."""

    name: str
    url: str
    zone: str
    inner_key: Key
    outer_key: Key

    @classmethod
    def from_dict(cls, data: Any) -> Invite:
        """Validate the fields of a parsed invite table."""
        if not isinstance(data, dict):
            raise ConfigError("an invite must be a table")
        missing = [k for k in ("name", "url", "zone", "inner_key", "outer_key") if k not in data]
        if missing:
            raise ConfigError(f"invite is missing {', '.join(missing)}")
        url = data["url"]
        if not isinstance(url, str):
            raise ConfigError("invite url must be a string")
        return cls(
            name=check_name(data["name"], "invite name"),
            url=canonical_websocket_url(url),
            zone=check_zone(data["zone"]),
            inner_key=Key.from_table(data["inner_key"]),
            outer_key=Key.from_table(data["outer_key"]),
        )

    def to_dict(self) -> dict[str, Any]:
        """Return the TOML table, with keys in the reference's ``{data = ...}`` form."""
        return {
            "name": self.name,
            "url": self.url,
            "zone": self.zone,
            "inner_key": self.inner_key.to_table(),
            "outer_key": self.outer_key.to_table(),
        }

    @classmethod
    def loads(cls, text: str) -> Invite:
        """Parse invite TOML text."""
        try:
            data = tomllib.loads(text)
        except (tomllib.TOMLDecodeError, RecursionError) as exc:
            raise ConfigError(f"invite is not valid TOML: {exc}") from None
        return cls.from_dict(data)

    def dumps(self) -> str:
        """Render invite TOML text."""
        return tomli_w.dumps(self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Invite:
        """Read an invite file."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read invite {path}: {exc}") from None
        return cls.loads(text)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the invite readable by its owner only."""
        write_private(Path(path), self.dumps())

    def __repr__(self) -> str:
        return f"Invite(name={self.name!r}, url={self.url!r}, zone={self.zone!r}, keys=<redacted>)"


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
