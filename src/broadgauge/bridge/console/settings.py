"""The ``[console]`` table of a bridge's config::

    [console]
    enabled = true                      # optional (default true): serve /console/ at all
    users = { ops = "$argon2id$v=19$..." }   # local operators: name = Argon2 hash
    oidc_subjects = ["a1b2c3"]          # optional: OIDC subjects (sub) allowed to log in
    session_minutes = 30                # optional: idle time before a session ends
    refresh_seconds = 5                 # optional: how often open pages poll for changes
    secure_cookie = "auto"              # optional: "auto" (when the request is https), true, false
    public_url = "https://ops.example.org"  # optional: the bridge's address as browsers see it

``public_url`` is what the OIDC provider sends the browser back to (``<public_url>/console/
auth/callback``, to register at the provider).  Behind a TLS-terminating proxy the request's
own scheme and host are the proxy's view of the bridge, not the browser's, so set it there;
without it the callback address is built from the request.

``broadgauge bridge console-user --add NAME`` writes ``users``.  OIDC login uses the
provider of the network planner served beside the bridge (its ``[auth]``); without one, only
local accounts can log in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from broadgauge.runtime.config import AgentConfig
from broadgauge.wire import ConfigError

__all__ = ["ConsoleSettings"]

_KNOWN = {
    "enabled",
    "users",
    "oidc_subjects",
    "session_minutes",
    "refresh_seconds",
    "secure_cookie",
    "public_url",
}


@dataclass(frozen=True)
class ConsoleSettings:
    """Who may log in to the console, and how its sessions and pages behave."""

    enabled: bool = True
    users: Mapping[str, str] = field(default_factory=dict)
    oidc_subjects: tuple[str, ...] = ()
    session_minutes: float = 30.0
    refresh_seconds: float = 5.0
    secure_cookie: bool | None = None  # None: when the request came over https
    public_url: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> ConsoleSettings:
        """Read a ``[console]`` table; :class:`ConfigError` names what is wrong."""
        enabled = table.get("enabled", True)
        if not isinstance(enabled, bool):
            raise ConfigError("[console] enabled must be true or false")
        users = table.get("users", {})
        if not isinstance(users, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) and v.startswith("$argon2")
            for k, v in users.items()
        ):
            raise ConfigError(
                '[console] users must be { name = "<argon2 hash>" }; '
                "add one with `broadgauge bridge console-user --add NAME`"
            )
        subjects = table.get("oidc_subjects", [])
        if not isinstance(subjects, list) or not all(isinstance(s, str) for s in subjects):
            raise ConfigError("[console] oidc_subjects must be a list of subject strings")
        numbers: dict[str, float] = {}
        for key, default in (("session_minutes", 30.0), ("refresh_seconds", 5.0)):
            value = table.get(key, default)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ConfigError(f"[console] {key} must be a positive number")
            numbers[key] = float(value)
        secure = table.get("secure_cookie", "auto")
        if secure not in ("auto", True, False):
            raise ConfigError('[console] secure_cookie must be "auto", true or false')
        public_url = table.get("public_url")
        if public_url is not None and (
            not isinstance(public_url, str)
            or urlsplit(public_url).scheme not in ("http", "https")
            or not urlsplit(public_url).netloc
            or urlsplit(public_url).query
            or urlsplit(public_url).fragment
        ):
            raise ConfigError(
                '[console] public_url must be an http(s) address such as "https://ops.example.org"'
            )
        return cls(
            enabled=enabled,
            users=dict(users),
            oidc_subjects=tuple(subjects),
            session_minutes=numbers["session_minutes"],
            refresh_seconds=numbers["refresh_seconds"],
            secure_cookie=None if secure == "auto" else bool(secure),
            public_url=public_url.rstrip("/") if public_url else None,
            extra={k: v for k, v in table.items() if k not in _KNOWN},
        )

    @classmethod
    def of(cls, config: AgentConfig) -> ConsoleSettings:
        """The settings in ``config``'s ``[console]`` table (defaults when it has none)."""
        table = config.other.get("console", {})
        if not isinstance(table, Mapping):
            raise ConfigError("[console] must be a table")
        return cls.from_table(table)

    def to_table(self) -> dict[str, Any]:
        """The ``[console]`` table (defaults omitted)."""
        table: dict[str, Any] = {**self.extra, "users": dict(self.users)}
        if not self.enabled:
            table["enabled"] = False
        if self.oidc_subjects:
            table["oidc_subjects"] = list(self.oidc_subjects)
        if self.session_minutes != 30.0:
            table["session_minutes"] = self.session_minutes
        if self.refresh_seconds != 5.0:
            table["refresh_seconds"] = self.refresh_seconds
        if self.secure_cookie is not None:
            table["secure_cookie"] = self.secure_cookie
        if self.public_url is not None:
            table["public_url"] = self.public_url
        return table

    def with_user(self, name: str, password_hash: str) -> ConsoleSettings:
        """These settings with ``name`` added (or its password replaced)."""
        return replace(self, users={**self.users, name: password_hash})

    def without_user(self, name: str) -> ConsoleSettings:
        """These settings without ``name``."""
        return replace(self, users={k: v for k, v in self.users.items() if k != name})

    def store(self, config: AgentConfig) -> AgentConfig:
        """``config`` with its ``[console]`` table replaced by these settings."""
        return replace(config, other={**config.other, "console": self.to_table()})
