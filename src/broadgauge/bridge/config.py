"""The bridge's settings (the ``[bridge]`` table, notes §2.2) and the client file.

The agent config keeps the table in :attr:`AgentConfig.other`, so it round-trips unchanged::

    [bridge]
    url = "http://portal-web.internal:3000/"   # base URL the client file names
    ip = "127.0.0.1"                            # where the HTTP API listens
    port = 3000
    key = { data = "<64 hex>" }                  # the API signing key
    signal_url = "http://portal-web.internal/signal"              # optional
    notification_url = "http://portal-web.internal/notification"  # optional
    trusted_proxies = ["10.0.0.0/8"]             # optional: whose X-Forwarded-For to believe
    max_body = 1048576                           # optional: request body limit in bytes
    max_offerings = 10000                        # optional: offerings per request and in all
    allow_missing_nonce = false                  # optional: accept requests without X-Nonce

The client file, read by ``openportal.load_config`` and :func:`broadgauge.client.load_config`,
holds exactly ``url`` and ``key = { data = … }``.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import tomli_w

from broadgauge.runtime.config import AgentConfig
from broadgauge.wire import ConfigError
from broadgauge.wire.files import parse_toml, read_text_file, write_private

__all__ = [
    "DEFAULT_MAX_BODY",
    "DEFAULT_MAX_OFFERINGS",
    "BridgeSettings",
    "ClientFile",
    "http_url_or_none",
]

DEFAULT_MAX_BODY: Final = 1024 * 1024
#: Offerings one request may name, and the bridge may hold.  A site offers a resource to each
#: partner portal it federates with: tens, perhaps hundreds.  The cap keeps one signed request
#: from making the bridge parse and hold an unbounded list (a 1 MiB body names over 100,000).
DEFAULT_MAX_OFFERINGS: Final = 10_000
DEFAULT_URL: Final = "http://localhost:3000"
DEFAULT_SIGNAL_URL: Final = "http://localhost/signal"
DEFAULT_NOTIFICATION_URL: Final = "http://localhost/notification"


def _key_from(value: object, where: str) -> bytes:
    if isinstance(value, Mapping):
        value = value.get("data")
    if not isinstance(value, str):
        raise ConfigError(f'{where}: key must be {{ data = "<64 hex>" }}')
    try:
        key = bytes.fromhex(value)
    except ValueError:
        raise ConfigError(f"{where}: key is not hexadecimal") from None
    if len(key) != 32:
        raise ConfigError(f"{where}: key must be 32 bytes (64 hex digits)")
    return key


def http_url_or_none(url: str | None) -> str | None:
    """``url`` if it is http(s), else None (the reference drops other schemes at init)."""
    if not url:
        return None
    return url if urlsplit(url).scheme in ("http", "https") else None


@dataclass(frozen=True)
class BridgeSettings:
    """How the bridge's HTTP API is reached and secured."""

    key: bytes
    url: str = DEFAULT_URL
    ip: str = "127.0.0.1"
    port: int = 3000
    signal_url: str | None = None
    notification_url: str | None = None
    trusted_proxies: tuple[str, ...] = ()
    max_body: int = DEFAULT_MAX_BODY
    max_offerings: int = DEFAULT_MAX_OFFERINGS
    allow_missing_nonce: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def generate(cls, **changes: Any) -> BridgeSettings:
        """Settings with a fresh random key."""
        return cls(key=secrets.token_bytes(32), **changes)

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> BridgeSettings:
        """Read a ``[bridge]`` table; :class:`ConfigError` names what is wrong."""
        known = {
            "url",
            "ip",
            "port",
            "key",
            "signal_url",
            "notification_url",
            "trusted_proxies",
            "max_body",
            "max_offerings",
            "allow_missing_nonce",
        }
        if "key" not in table:
            raise ConfigError("[bridge] has no key; run `broadgauge bridge bridge --regenerate`")
        port = table.get("port", 3000)
        max_body = table.get("max_body", DEFAULT_MAX_BODY)
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise ConfigError("[bridge] port must be a port number")
        if not isinstance(max_body, int) or max_body < 1:
            raise ConfigError("[bridge] max_body must be a positive number of bytes")
        max_offerings = table.get("max_offerings", DEFAULT_MAX_OFFERINGS)
        if (
            not isinstance(max_offerings, int)
            or isinstance(max_offerings, bool)
            or max_offerings < 0
        ):
            raise ConfigError("[bridge] max_offerings must be a number of offerings (0 or more)")
        allow_missing_nonce = table.get("allow_missing_nonce", False)
        if not isinstance(allow_missing_nonce, bool):
            raise ConfigError("[bridge] allow_missing_nonce must be true or false")
        proxies = table.get("trusted_proxies", [])
        if not isinstance(proxies, list) or not all(isinstance(p, str) for p in proxies):
            raise ConfigError("[bridge] trusted_proxies must be a list of addresses or CIDRs")
        texts = {}
        for name in ("url", "ip", "signal_url", "notification_url"):
            value = table.get(name)
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"[bridge] {name} must be a string")
            texts[name] = value
        return cls(
            key=_key_from(table["key"], "[bridge]"),
            url=texts["url"] or DEFAULT_URL,
            ip=texts["ip"] or "127.0.0.1",
            port=port,
            signal_url=http_url_or_none(texts["signal_url"]),
            notification_url=http_url_or_none(texts["notification_url"]),
            trusted_proxies=tuple(proxies),
            max_body=max_body,
            max_offerings=max_offerings,
            allow_missing_nonce=allow_missing_nonce,
            extra={k: v for k, v in table.items() if k not in known},
        )

    def to_table(self) -> dict[str, Any]:
        """The ``[bridge]`` table (optional settings omitted when unset)."""
        table: dict[str, Any] = {
            **self.extra,
            "url": self.url,
            "ip": self.ip,
            "port": self.port,
            "key": {"data": self.key.hex()},
        }
        if self.signal_url:
            table["signal_url"] = self.signal_url
        if self.notification_url:
            table["notification_url"] = self.notification_url
        if self.trusted_proxies:
            table["trusted_proxies"] = list(self.trusted_proxies)
        if self.max_body != DEFAULT_MAX_BODY:
            table["max_body"] = self.max_body
        if self.max_offerings != DEFAULT_MAX_OFFERINGS:
            table["max_offerings"] = self.max_offerings
        if self.allow_missing_nonce:
            table["allow_missing_nonce"] = True
        return table

    @classmethod
    def of(cls, config: AgentConfig) -> BridgeSettings:
        """The settings in ``config``'s ``[bridge]`` table."""
        table = config.other.get("bridge")
        if not isinstance(table, Mapping):
            raise ConfigError(
                "the config has no [bridge] table; create it with `broadgauge bridge init`"
            )
        return cls.from_table(table)

    def store(self, config: AgentConfig) -> AgentConfig:
        """``config`` with its ``[bridge]`` table replaced by these settings."""
        return replace(config, other={**config.other, "bridge": self.to_table()})

    def with_new_key(self) -> BridgeSettings:
        """The same settings under a fresh key (every client file must be rewritten)."""
        return replace(self, key=secrets.token_bytes(32))

    def client_file(self) -> ClientFile:
        """What a portal developer needs to call this bridge."""
        return ClientFile(self.url, self.key)


@dataclass(frozen=True)
class ClientFile:
    """The client's config: the bridge's base URL and the signing key."""

    url: str
    key: bytes

    def dumps(self) -> str:
        """TOML as the Rust writer emits it (a trailing ``/`` keeps a URL path when joined)."""
        url = self.url if self.url.endswith("/") else self.url + "/"
        return tomli_w.dumps({"url": url, "key": {"data": self.key.hex()}})

    @classmethod
    def loads(cls, text: str) -> ClientFile:
        """Parse a client file (``key = { data = … }`` or a ``[key]`` table)."""
        document = parse_toml(text, "client file")
        url = document.get("url")
        if not isinstance(url, str) or not url:
            raise ConfigError("client file has no url")
        return cls(url, _key_from(document.get("key"), "client file"))

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write with mode 0600: the key lets anyone act as the portal."""
        write_private(Path(path), self.dumps())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ClientFile:
        """Read a client file."""
        return cls.loads(read_text_file(path, "client file"))
