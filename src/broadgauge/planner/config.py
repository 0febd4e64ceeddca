"""A planner service's configuration: one TOML file read with :mod:`tomllib`.

Tables: ``[service]`` (name, answer cache lifetime), ``[site]`` (capabilities, the groups
claim), ``[auth]`` (see :mod:`broadgauge.planner.auth`) and ``[[rules]]`` (see
:mod:`broadgauge.planner.rules`).  Parsing from a mapping is pure; only :func:`load` reads.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from broadgauge.planner.auth import AuthSettings, parse_auth
from broadgauge.planner.rules import RuleError, RuleSet, parse_ruleset

_TOP_KEYS = {"service", "site", "auth", "rules"}


@dataclass(frozen=True)
class ServiceConfig:
    """Everything a planner service needs to answer ``/accepts``."""

    name: str
    ruleset: RuleSet
    auth: AuthSettings
    #: Seconds a YES may be cached by clients and aggregators (``Cache-Control: max-age``).
    cache_max_age: int = 60


def parse_config(raw: Mapping[str, Any]) -> ServiceConfig:
    """Check and convert a parsed TOML document; :class:`RuleError` says what is wrong."""
    unknown = set(raw) - _TOP_KEYS
    if unknown:
        raise RuleError(f"unknown top-level tables {sorted(unknown)}")
    service = raw.get("service", {})
    if not isinstance(service, Mapping):
        raise RuleError("[service] must be a table")
    name = service.get("name", "planner")
    max_age = service.get("cache_max_age", 60)
    if not isinstance(name, str) or not isinstance(max_age, int) or max_age < 0:
        raise RuleError("service.name must be a string and service.cache_max_age an int >= 0")
    return ServiceConfig(
        name=name,
        ruleset=parse_ruleset(raw),
        auth=parse_auth(raw.get("auth")),
        cache_max_age=max_age,
    )


def load(path: Path) -> ServiceConfig:
    """Read and check a service's TOML file."""
    with path.open("rb") as handle:
        try:
            raw = tomllib.load(handle)
        except tomllib.TOMLDecodeError as exc:
            raise RuleError(f"{path}: {exc}") from exc
    try:
        return parse_config(raw)
    except RuleError as exc:
        raise RuleError(f"{path}: {exc}") from exc
