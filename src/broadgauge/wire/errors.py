"""Exceptions raised by the wire layer."""

from __future__ import annotations


class WireError(Exception):
    """Base class of every error raised by :mod:`broadgauge.wire`."""


class ConfigError(WireError, ValueError):
    """A service config, invite or key is malformed or inconsistent."""


class FrameError(WireError):
    """A frame could not be decoded: bad length, bad hex, failed authentication or bad JSON.

    ``reason`` is a short machine-readable label used for counting rejections.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class HandshakeError(WireError):
    """The peer failed authentication or broke the handshake sequence.

    ``reason`` is a short label (``no-matching-key``, ``wrong-zone``, ``wrong-name``, ...).
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class KeysRefused(HandshakeError):
    """The server closed the connection on our first handshake frame: it refused our keys.

    That frame is the first one sealed with the link's keys, and a server closes the
    connection on it only when none of its keys opens it, which after a working link almost
    always means that the server's operator rotated the keys and ours are stale.
    """

    def __init__(self, detail: str) -> None:
        super().__init__("keys-refused", detail)


class PeerNotConnected(WireError):
    """A message was sent to a peer that has no live connection."""


class MessageTooLarge(WireError, ValueError):
    """An outgoing message would exceed the configured maximum frame size."""
