"""Validation of service names and zones, shared by configs and invites (notes §1.10-§1.11)."""

from __future__ import annotations

from broadgauge.text import first_bad_name_character
from broadgauge.wire.errors import ConfigError

DEFAULT_ZONE = "default"


def check_name(value: object, what: str = "name") -> str:
    """Return a trimmed agent name: non-empty, only alphanumerics, ``-`` and ``_``."""
    if not isinstance(value, str):
        raise ConfigError(f"{what} must be a string")
    name = value.strip()
    if not name:
        raise ConfigError(f"{what} must not be empty")
    bad = first_bad_name_character(name)
    if bad is not None:
        raise ConfigError(f"{what} {name!r} contains {bad!r}; use letters, digits, - and _")
    return name


def check_zone(value: object) -> str:
    """Return a trimmed zone: like a name, but ``<`` and ``>`` are also allowed."""
    if not isinstance(value, str):
        raise ConfigError("zone must be a string")
    zone = value.strip()
    if not zone:
        raise ConfigError("zone must not be empty")
    bad = first_bad_name_character(zone, "-_<>")
    if bad is not None:
        raise ConfigError(f"zone {zone!r} contains {bad!r}; use letters, digits, -, _, < and >")
    return zone
