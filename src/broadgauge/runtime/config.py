"""An agent's config file: its type, its service, and string extras (notes §2.1, §2.4).

The layout is OpenPortal's, so an operator can move a config between implementations::

    agent = "Instance"

    [service]
    name = "instance"
    ...

    [extras]
    freeipa-password = "<hex of an encrypted secret>"

Unknown top-level keys (for example a filesystem agent's volume tables) are kept and written
back unchanged, so saving a config never loses what another tool put there.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import tomli_w

from broadgauge.jobs.agent_type import AgentType
from broadgauge.runtime.logs import remember_secret
from broadgauge.wire import ConfigError, ServiceConfig, Timers, decrypt_secret, encrypt_secret
from broadgauge.wire import key_from_password as _key_from_password
from broadgauge.wire.files import parse_toml, read_text_file, write_private


@dataclass(frozen=True)
class AgentConfig:
    """What an agent process needs at start: who it is, its peers, and its settings."""

    agent: AgentType
    service: ServiceConfig
    extras: Mapping[str, str] = field(default_factory=dict)
    other: Mapping[str, Any] = field(default_factory=dict)

    # --- extras and secrets ------------------------------------------------------------

    def extra(self, key: str, default: str | None = None) -> str | None:
        """A plain extra setting, or ``default``."""
        return self.extras.get(key, default)

    def with_extra(self, key: str, value: str) -> AgentConfig:
        """Set a plain extra setting."""
        return replace(self, extras={**self.extras, key: value})

    def with_secret(
        self, key: str, value: str, environ: Mapping[str, str] | None = None
    ) -> AgentConfig:
        """Store ``value`` encrypted under the service's encryption scheme."""
        scheme = self.service.encryption
        if scheme is None:
            raise ConfigError("set an encryption scheme before storing secrets")
        password = scheme.password(self.service.name, environ)
        return self.with_extra(key, encrypt_secret(value, _key_from_password(password)))

    def secret(self, key: str, environ: Mapping[str, str] | None = None) -> str:
        """Decrypt the secret ``key``; raise :class:`ConfigError` with the reason if it fails."""
        stored = self.extras.get(key)
        if stored is None:
            raise ConfigError(f"no secret called {key}")
        scheme = self.service.encryption
        if scheme is None:
            raise ConfigError(f"secret {key} cannot be read: no encryption scheme is set")
        password = scheme.password(self.service.name, environ)
        value = decrypt_secret(stored, _key_from_password(password))
        remember_secret(value)  # never in a log line, whatever logs it
        return value

    # --- timers --------------------------------------------------------------------------

    def timers(self) -> Timers:
        """The protocol timers: the defaults, changed by an optional ``[timers]`` table.

        Keys are :class:`~broadgauge.wire.Timers` fields in seconds, e.g.
        ``reconnect_max = 30``.  A Broadgauge addition; OpenPortal ignores the table.
        """
        table = self.other.get("timers", {})
        if not isinstance(table, Mapping):
            raise ConfigError("[timers] must be a table")
        known = set(Timers.__dataclass_fields__)
        unknown = set(table) - known
        if unknown:
            raise ConfigError(
                f"[timers] has unknown keys {sorted(unknown)}; known: {sorted(known)}"
            )
        values: dict[str, float] = {}
        for key, value in table.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ConfigError(f"timers.{key} must be a number of seconds > 0")
            values[key] = float(value)
        timers = replace(Timers(), **values)
        if timers.reconnect_initial > timers.reconnect_max:
            raise ConfigError("timers.reconnect_initial must not exceed timers.reconnect_max")
        return timers

    # --- TOML --------------------------------------------------------------------------

    @classmethod
    def loads(cls, text: str) -> AgentConfig:
        """Parse an agent config document."""
        document = parse_toml(text, "config")
        if "agent" not in document:
            raise ConfigError('config has no agent = "<type>" key')
        try:
            agent = AgentType.from_wire(document["agent"])
        except ValueError as exc:
            raise ConfigError(f"agent: {exc}") from None
        service = ServiceConfig.from_document(document)
        extras = document.get("extras", {})
        if not isinstance(extras, dict) or not all(isinstance(v, str) for v in extras.values()):
            raise ConfigError("[extras] must map names to strings")
        other = {k: v for k, v in document.items() if k not in ("agent", "service", "extras")}
        return cls(agent, service, extras, other)

    def dumps(self) -> str:
        """Render the document."""
        document: dict[str, Any] = {"agent": self.agent.value, "service": self.service.to_toml()}
        document.update(self.other)
        document["extras"] = dict(self.extras)
        return tomli_w.dumps(document)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> AgentConfig:
        """Read a config file."""
        return cls.loads(read_text_file(path, "config"))

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the config with mode 0600 (it holds keys)."""
        write_private(Path(path), self.dumps())
