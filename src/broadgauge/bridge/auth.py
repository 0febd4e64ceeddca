"""Bridge request signing and verification, byte-exact with OpenPortal 0.32.2 (notes §6.1).

Sans-I/O: nothing here touches a socket or a clock of its own; the caller passes ``now``.

The official client signs a *canonical string*::

    protocol "\\n" "application/json" "\\n" date "\\n" function ["\\n" body] ["\\n" nonce]

serialised as a JSON string literal (quotes and escapes included, non-ASCII kept as UTF-8),
with keyed BLAKE2b-256 under the 32-byte bridge key (not the HMAC-SHA512 its docs claim).

The reference accepts that string as it comes, which leaves it ambiguous: the body and
nonce lines are both optional, so a body ending in ``"\\n" + nonce`` signs exactly what a
request carrying that nonce in ``X-Nonce`` signs, and a body that is not UTF-8 is left out
of the string altogether.  :class:`Verifier` removes the ambiguity at its root:

* ``X-Nonce`` is required and must be a UUID in its 36-character form (no newline can hide
  in it), so the last line of the string is always the nonce;
* a ``GET`` may carry no body, so its string always ends ``function "\\n" nonce``;
* a body that is not UTF-8 is refused (:class:`MalformedRequest`) before anything is
  verified, so every byte of an accepted body is signed.

Nonce-less requests are accepted only when a site allows them for a client of its own
(``allow_missing_nonce``); each one is then replay-checked by its signature instead.
The reference records a nonce *before* checking the signature, so a forged request burns a
real client's nonce; :class:`Verifier` records it only after the signature verifies, and
compares signatures in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Final

__all__ = [
    "DATE_WINDOW",
    "NONCE_TTL",
    "AuthError",
    "MalformedRequest",
    "NonceCache",
    "Verifier",
    "canonical_string",
    "format_date",
    "parse_date",
    "sign",
]

SCHEME: Final = "OpenPortal "
#: A request's ``Date`` may differ from our clock by at most this many seconds.
DATE_WINDOW: Final = 5.0
#: A nonce may not be used twice within this many seconds.
NONCE_TTL: Final = 30.0


#: The one nonce form accepted: a UUID, 8-4-4-4-12 hex digits (the official client's form).
_NONCE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


class AuthError(Exception):
    """A request that must be refused with 401; the text is safe to show the caller."""


class MalformedRequest(Exception):
    """A request refused with 400 before its signature is checked; the text is safe to show."""


def format_date(when: datetime | float) -> str:
    """The ``Date`` form that is signed: ``Mon, 01 Jan 2024 12:00:00 GMT`` (UTC)."""
    moment = when if isinstance(when, datetime) else datetime.fromtimestamp(when, UTC)
    return moment.astimezone(UTC).strftime("%a, %d %b %Y %H:%M:%S GMT")


def parse_date(text: str) -> datetime:
    """Parse an RFC 2822 date into UTC; :class:`AuthError` if it is not one."""
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        raise AuthError("Invalid Date header") from None
    if moment.tzinfo is None:  # "-0000" means UTC with no known offset (RFC 2822 §3.3)
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def canonical_string(
    method: str, function: str, date: str, body: bytes = b"", nonce: str | None = None
) -> str:
    """The string the signature covers (lines joined by ``\\n``, no trailing newline).

    ``body`` must be UTF-8 (:class:`UnicodeDecodeError` otherwise): the reference silently
    leaves any other body out of the signature, which would let a signed request carry
    any such body.
    """
    parts = [method.lower(), "application/json", date, function]
    if body:
        parts.append(body.decode("utf-8"))
    if nonce is not None:
        parts.append(nonce)
    return "\n".join(parts)


def sign(  # noqa: PLR0917 - arguments in the order of the signed string
    key: bytes,
    method: str,
    function: str,
    date: str,
    body: bytes = b"",
    nonce: str | None = None,
) -> str:
    """The ``Authorization`` header value for one request."""
    message = json.dumps(canonical_string(method, function, date, body, nonce), ensure_ascii=False)
    tag = hashlib.blake2b(message.encode("utf-8"), key=key, digest_size=32).hexdigest()
    return SCHEME + tag


class NonceCache:
    """Nonces seen in the last :data:`NONCE_TTL` seconds.

    Entries are kept in insertion order, which is also time order, so purging stops at the
    first fresh entry: each request costs amortised O(1).  The order is an ``OrderedDict``'s
    linked list, not a plain dict's: a dict keeps the slots of the entries deleted from its
    front until it is resized, and finding its first entry steps over every one of them, so
    under steady load each purge cost time in proportion to the nonces already purged
    (about 100 µs a request with 10^5 nonces in the window).
    """

    def __init__(self, ttl: float = NONCE_TTL, capacity: int = 1_000_000) -> None:
        self.ttl = ttl
        self.capacity = capacity
        self._seen: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def _purge(self, now: float) -> None:
        seen = self._seen
        while seen:
            nonce, when = next(iter(seen.items()))
            if now - when < self.ttl and len(seen) <= self.capacity:
                break
            del seen[nonce]

    def seen(self, nonce: str, now: float) -> bool:
        """Whether ``nonce`` was recorded less than ``ttl`` seconds before ``now``."""
        self._purge(now)
        when = self._seen.get(nonce)
        return when is not None and now - when < self.ttl

    def record(self, nonce: str, now: float) -> None:
        """Remember ``nonce`` as used at ``now``."""
        self._seen[nonce] = now
        self._seen.move_to_end(nonce)
        self._purge(now)


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """What :class:`Verifier` needs from one HTTP request."""

    method: str
    function: str
    authorization: str | None
    date: str | None
    nonce: str | None
    body: bytes


class Verifier:
    """Checks requests in the reference's order, with the fixes described in the module doc.

    ``allow_missing_nonce`` accepts requests without ``X-Nonce`` (off by default; both the
    official client and ours always send one).  Then every request is also replay-checked
    by its signature: the same signed text is refused a second time within
    :data:`NONCE_TTL`, however its parts are re-arranged.  Two identical nonce-less calls in
    one second (same ``Date``) look alike, so the second of those is refused too.
    :attr:`unnonced` counts the nonce-less requests accepted.
    """

    def __init__(
        self,
        key: bytes,
        *,
        window: float = DATE_WINDOW,
        nonces: NonceCache | None = None,
        allow_missing_nonce: bool = False,
    ) -> None:
        self.key = key
        self.window = window
        self.nonces = nonces if nonces is not None else NonceCache()
        self.allow_missing_nonce = allow_missing_nonce
        self.unnonced = 0
        self._dates: dict[str, tuple[float, str]] = {}

    def _date(self, text: str) -> tuple[float, str]:
        # Every client in the same second sends the same Date: parse each text once.
        known = self._dates.get(text)
        if known is None:
            moment = parse_date(text)
            known = (moment.timestamp(), format_date(moment))
            if len(self._dates) >= 64:
                self._dates.clear()
            self._dates[text] = known
        return known

    @staticmethod
    def check_shape(request: SignedRequest) -> None:
        """Refuse what can never be verified unambiguously (:class:`MalformedRequest`, 400)."""
        if request.body and request.method.lower() == "get":
            raise MalformedRequest("a GET request must not have a body")
        try:
            request.body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedRequest(
                f"the request body is not valid UTF-8 (byte {exc.start})"
            ) from None

    def _replay_keys(self, request: SignedRequest) -> tuple[str, ...]:
        # Where nonce-less requests are allowed the signature must not be seen twice either,
        # whether or not the request had a nonce: otherwise a captured request could come
        # back once more with its nonce moved to the end of its body (the same signed text).
        signature = "signature:" + (request.authorization or "")
        nonce = request.nonce
        if nonce is None:
            if not self.allow_missing_nonce:
                raise AuthError("Missing X-Nonce header (a UUID, sent with every request)")
            return (signature,)
        if _NONCE.fullmatch(nonce) is None:
            raise AuthError("X-Nonce must be a UUID (8-4-4-4-12 hexadecimal digits)")
        return (nonce, signature) if self.allow_missing_nonce else (nonce,)

    def verify(self, request: SignedRequest, now: float) -> None:
        """Accept the request or raise :class:`AuthError` (or :class:`MalformedRequest`)."""
        self.check_shape(request)
        if request.authorization is None:
            raise AuthError("Missing Authorization header")
        if request.date is None:
            raise AuthError("Missing Date header")
        stamp, canonical_date = self._date(request.date)
        if abs(now - stamp) > self.window:
            raise AuthError("Date is outside acceptable time window")
        replay_keys = self._replay_keys(request)
        if any(self.nonces.seen(key, now) for key in replay_keys):
            raise AuthError("Nonce has already been used (replay attack)")
        expected = sign(
            self.key, request.method, request.function, canonical_date, request.body, request.nonce
        )
        if not hmac.compare_digest(
            expected.encode("utf-8"), request.authorization.encode("utf-8", "surrogateescape")
        ):
            raise AuthError("API key is invalid!")
        # Only now: a forged request must not burn a genuine client's nonce.
        for key in replay_keys:
            self.nonces.record(key, now)
        if request.nonce is None:
            self.unnonced += 1
