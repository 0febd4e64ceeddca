"""Invitation files: how a server introduces itself to a new client (notes §1.11).

An invite carries the *server's* name, its WebSocket URL, the zone of the link and the two
pre-shared keys.  Whoever holds it can connect as that client, so files are written ``0600``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import tomli_w

from broadgauge.wire.errors import ConfigError
from broadgauge.wire.files import parse_toml, read_text_file, write_private
from broadgauge.wire.keys import Key
from broadgauge.wire.names import DEFAULT_ZONE, check_name, check_zone
from broadgauge.wire.urls import canonical_websocket_url

# write_private lived here before broadgauge.wire.files; it is still importable from here.
__all__ = ["Invite", "ServerCredentials", "require_keys", "write_private"]


def require_keys(data: dict[str, Any], what: str, *keys: str) -> None:
    """Raise :class:`ConfigError` naming every one of ``keys`` missing from the table."""
    missing = [k for k in keys if k not in data]
    if missing:
        raise ConfigError(f"{what} is missing {', '.join(missing)}")


@dataclass(frozen=True)
class ServerCredentials:
    """What a client needs to dial one server: its name, URL, the zone and the two keys.

    An :class:`Invite` hands them over; a config keeps them as a ``ServerEntry``.  Both are
    written as the same TOML table, with keys in the reference's ``{data = ...}`` form.
    """

    name: str
    url: str
    zone: str
    inner_key: Key
    outer_key: Key

    @classmethod
    def _from_table(cls, data: dict[str, Any], what: str, *, zone_required: bool) -> Self:
        """Validate the fields of a ``what`` table; without ``zone_required``, zone defaults."""
        if zone_required:
            require_keys(data, what, "name", "url", "zone", "inner_key", "outer_key")
        else:
            require_keys(data, what, "name", "url", "inner_key", "outer_key")
        url = data["url"]
        if not isinstance(url, str):
            raise ConfigError(f"{what} url must be a string")
        return cls(
            name=check_name(data["name"], f"{what} name"),
            url=canonical_websocket_url(url),
            zone=check_zone(data.get("zone", DEFAULT_ZONE)),
            inner_key=Key.from_table(data["inner_key"]),
            outer_key=Key.from_table(data["outer_key"]),
        )

    def _to_table(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "url": self.url,
            "zone": self.zone,
            "inner_key": self.inner_key.to_table(),
            "outer_key": self.outer_key.to_table(),
        }


@dataclass(frozen=True)
class Invite(ServerCredentials):
    """The credentials a client needs to dial one server."""

    @classmethod
    def from_dict(cls, data: Any) -> Invite:
        """Validate the fields of a parsed invite table."""
        if not isinstance(data, dict):
            raise ConfigError("an invite must be a table")
        return cls._from_table(data, "invite", zone_required=True)

    def to_dict(self) -> dict[str, Any]:
        """Return the TOML table, with keys in the reference's ``{data = ...}`` form."""
        return self._to_table()

    @classmethod
    def loads(cls, text: str) -> Invite:
        """Parse invite TOML text."""
        return cls.from_dict(parse_toml(text, "invite"))

    def dumps(self) -> str:
        """Render invite TOML text."""
        return tomli_w.dumps(self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Invite:
        """Read an invite file."""
        return cls.loads(read_text_file(path, "invite"))

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the invite readable by its owner only."""
        write_private(Path(path), self.dumps())

    def __repr__(self) -> str:
        return f"Invite(name={self.name!r}, url={self.url!r}, zone={self.zone!r}, keys=<redacted>)"
