"""Per-client rate limiting and client-address resolution (sans-I/O).

The reference limits 10,000 requests per 10 s per "client IP", but takes that IP from
``X-Forwarded-For`` from anyone and otherwise puts every caller in one bucket (notes §0
erratum 29).  Here the address is the socket peer, and ``X-Forwarded-For`` is honoured only
when the socket peer is one of the configured trusted proxies.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Final

__all__ = ["DEFAULT_LIMIT", "DEFAULT_PERIOD", "RateLimiter", "TrustedProxies"]

DEFAULT_LIMIT: Final = 10_000
DEFAULT_PERIOD: Final = 10.0

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrustedProxies:
    """The proxies whose ``X-Forwarded-For`` header names the real client."""

    def __init__(self, proxies: Iterable[str] = ()) -> None:
        self.networks: tuple[_Network, ...] = tuple(
            ipaddress.ip_network(p.strip(), strict=False) for p in proxies if p.strip()
        )

    def trusts(self, address: str) -> bool:
        """Whether ``address`` is a trusted proxy."""
        if not self.networks:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.networks)

    def client_address(self, peer: str | None, forwarded_for: str | None) -> str:
        """The address to account a request to.

        Behind trusted proxies the header is read right to left, skipping trusted hops, so a
        client cannot choose its bucket by prepending addresses of its own.
        """
        address = peer or "unknown"
        if forwarded_for is None or not self.trusts(address):
            return address
        hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
        for hop in reversed(hops):
            if not self.trusts(hop):
                return hop
        return hops[0] if hops else address


class RateLimiter:
    """At most ``limit`` requests per ``period`` seconds per key (a sliding-window estimate).

    Each key keeps the count of the current fixed window and of the previous one; the
    previous count is weighted by how much of it still overlaps the sliding window.  That is
    O(1) per request and never lets a burst at a window edge double the rate.
    """

    def __init__(
        self, limit: int = DEFAULT_LIMIT, period: float = DEFAULT_PERIOD, max_keys: int = 100_000
    ) -> None:
        if limit < 1 or period <= 0:
            raise ValueError("the rate limit needs limit >= 1 and period > 0")
        self.limit = limit
        self.period = period
        self.max_keys = max_keys
        # key -> (window index, count in that window, count in the window before)
        self._windows: dict[str, tuple[int, int, int]] = {}

    def allow(self, key: str, now: float) -> bool:
        """Count one request for ``key``; False if it exceeds the limit (then not counted)."""
        index = int(now // self.period)
        current, count, previous = self._windows.get(key, (index, 0, 0))
        if current != index:
            previous = count if current == index - 1 else 0
            count = 0
        elapsed = (now % self.period) / self.period
        estimate = previous * (1.0 - elapsed) + count
        if estimate + 1 > self.limit:
            self._windows[key] = (index, count, previous)
            return False
        if key not in self._windows and len(self._windows) >= self.max_keys:
            self._forget_stale(index)
        self._windows[key] = (index, count + 1, previous)
        return True

    def _forget_stale(self, index: int) -> None:
        stale = [k for k, (i, _, _) in self._windows.items() if i < index - 1]
        for key in stale:
            del self._windows[key]
        if len(self._windows) >= self.max_keys:
            # Still full of live keys: drop the oldest half rather than grow without bound.
            for key in list(self._windows)[: self.max_keys // 2]:
                del self._windows[key]
