"""The client's side of the bridge protocol, without I/O: signing, bodies, replies.

Shared by the blocking client (:mod:`broadgauge.client.sync`) and :class:`AsyncClient`.
The signing matches the official wheel byte for byte (notes §6.1): keyed BLAKE2b-256 over
the JSON-quoted canonical string.  It is repeated here rather than imported from the bridge
because the client must not depend on the server (both sit in the same layer).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import urljoin

from broadgauge.grammar import Destination

__all__ = [
    "RETRY_DELAYS",
    "BridgeError",
    "Request",
    "decode",
    "destinations_body",
    "poll_schedule",
    "sign",
]

#: Waits before each retry of a 429 (the official client's schedule).
RETRY_DELAYS: Final = (0.1, 0.2, 0.4, 0.8, 1.6)
VERSION_QUERY: Final = "openportal-version=0.1"


class BridgeError(OSError):
    """The bridge refused or failed a call (an ``OSError``, as the official client raises)."""

    def __init__(self, function: str, status: int | None, message: str) -> None:
        where = f"status {status}" if status is not None else "no response"
        super().__init__(f"Could not call function: {function} ({where}): {message}")
        self.function = function
        self.status = status
        self.message = message


def sign(  # noqa: PLR0917 - arguments in the order of the signed string
    key: bytes, method: str, function: str, date: str, body: bytes, nonce: str | None
) -> str:
    """``Authorization`` header value (see :mod:`broadgauge.bridge.auth` for the rules)."""
    parts = [method.lower(), "application/json", date, function]
    if body:
        parts.append(body.decode("utf-8"))
    if nonce is not None:
        parts.append(nonce)
    message = json.dumps("\n".join(parts), ensure_ascii=False).encode("utf-8")
    return "OpenPortal " + hashlib.blake2b(message, key=key, digest_size=32).hexdigest()


def http_date(now: float) -> str:
    """The signed ``Date`` form."""
    return datetime.fromtimestamp(now, UTC).strftime("%a, %d %b %Y %H:%M:%S GMT")


@dataclass(frozen=True)
class Request:
    """One call, ready to be signed afresh for each attempt."""

    method: str
    function: str
    body: bytes = b""

    @classmethod
    def get(cls, function: str) -> Request:
        return cls("get", function)

    @classmethod
    def post(cls, function: str, value: object) -> Request:
        # Serialised once: the signature covers exactly these bytes.
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
        return cls("post", function, text.encode("utf-8"))

    @classmethod
    def post_raw(cls, function: str, body: str) -> Request:
        return cls("post", function, body.encode("utf-8"))

    def url(self, base: str) -> str:
        """WHATWG-style join, as the official client (``http://h/api`` + ``run`` → ``/run``)."""
        return f"{urljoin(base, self.function)}?{VERSION_QUERY}"

    def attempt(self, base: str, key: bytes, now: float) -> dict[str, Any]:
        """One attempt, freshly signed, as keyword arguments of ``httpx``'s ``request``."""
        return {
            "method": self.method.upper(),
            "url": self.url(base),
            "content": self.body or None,
            "headers": self.headers(key, now),
        }

    def headers(self, key: bytes, now: float, nonce: str | None = None) -> dict[str, str]:
        """Fresh ``Date``, ``X-Nonce`` and signature for one attempt."""
        date = http_date(now)
        nonce = nonce or str(uuid.uuid4())
        headers = {
            "Accept": "application/json",
            "Date": date,
            "X-Nonce": nonce,
            "Authorization": sign(key, self.method, self.function, date, self.body, nonce),
        }
        if self.method == "post":
            headers["Content-Type"] = "application/json"
        return headers


def poll_schedule(max_ms: int, now: float) -> tuple[float, float | None]:
    """Seconds between polls, and the ``time.monotonic()`` deadline (``None``: wait forever),
    of a wait of ``max_ms`` (negative: forever) that starts at ``now``."""
    if max_ms < 0:
        return 0.1, None
    return min(max(max_ms / 10, 1), 100) / 1000, now + max_ms / 1000


def decode(function: str, status: int, text: str) -> Any:
    """The JSON value of a 2xx reply; :class:`BridgeError` otherwise."""
    if not 200 <= status < 300:
        try:
            message = json.loads(text).get("message", text)
        except (ValueError, AttributeError):
            message = text
        raise BridgeError(function, status, str(message))
    try:
        return json.loads(text)
    except ValueError as exc:
        raise BridgeError(function, status, f"reply is not JSON: {exc}") from None


def destinations_body(offerings: Iterable[str | Destination]) -> list[str]:
    """De-duplicated destination strings, first occurrences in order (each checked by the
    grammar)."""
    return list(
        dict.fromkeys(
            str(item if isinstance(item, Destination) else Destination.parse(item))
            for item in offerings
        )
    )
