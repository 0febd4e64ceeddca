"""Counters of what a service accepted and rejected, for logs, tests and metrics."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class WireStats:
    """Running totals for one service.  Reasons are short labels such as ``bad-auth``."""

    connections_accepted: int = 0
    connections_rejected: Counter[str] = field(default_factory=Counter)
    frames_rejected: Counter[str] = field(default_factory=Counter)
    messages_received: int = 0
    messages_sent: int = 0
    handler_errors: int = 0
    watchdog_closures: int = 0
    #: every frame read on a live link (keepalives too), and the bytes of those read and sent
    frames_received: int = 0
    bytes_received: int = 0
    bytes_sent: int = 0
    #: links established, by ``name@zone`` (more than one: the peer reconnected)
    links_opened: Counter[str] = field(default_factory=Counter)
    #: ``name@zone`` of the servers that hold our connection as a standby right now
    held_as_standby: set[str] = field(default_factory=set)

    def snapshot(self) -> dict[str, object]:
        """A plain-dict copy, safe to serialise."""
        return {
            "connections_accepted": self.connections_accepted,
            "connections_rejected": dict(self.connections_rejected),
            "frames_rejected": dict(self.frames_rejected),
            "messages_received": self.messages_received,
            "messages_sent": self.messages_sent,
            "handler_errors": self.handler_errors,
            "watchdog_closures": self.watchdog_closures,
        }
