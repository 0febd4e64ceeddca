"""Canonical WebSocket URLs as the reference writes them into invites (notes §1.1)."""

from __future__ import annotations

from urllib.parse import urlsplit

from broadgauge.wire.errors import ConfigError

_DEFAULT_PORTS = {"ws": 80, "wss": 443}
_SCHEMES = {"http": "ws", "ws": "ws", "https": "wss", "wss": "wss"}


def canonical_websocket_url(url: str) -> str:
    """Return ``url`` in the reference's canonical form.

    ``http`` becomes ``ws`` and ``https`` becomes ``wss``; an unknown scheme becomes ``wss``.
    When the port is the scheme's default the path is dropped (``https://h/op/`` gives
    ``wss://h``); otherwise the result is ``scheme://host:port`` plus the path, or ``/``.
    """
    text = url.strip()
    if not text:
        raise ConfigError("the URL is empty")
    if any(c.isspace() or not c.isprintable() for c in text):
        # urlsplit would quietly keep or drop these, so the stored URL would not be stable.
        raise ConfigError(f"the URL {url!r} contains whitespace or control characters")
    if "://" not in text:
        text = "wss://" + text
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"invalid URL {url!r}: {exc}") from None
    host = parts.hostname
    if not host:
        raise ConfigError(f"invalid URL {url!r}: no host")
    scheme = _SCHEMES.get(parts.scheme.lower(), "wss")
    if ":" in host:
        host = f"[{host}]"
    default_port = _DEFAULT_PORTS[scheme]
    if port is None or port == default_port:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}{parts.path or '/'}"
