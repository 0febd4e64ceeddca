"""The console's login rules, without HTTP: passwords, login rate limits, sessions and CSRF.

* Passwords are Argon2id hashes (argon2-cffi's defaults) kept in the bridge config's
  ``[console] users`` table; :func:`hash_password` makes one.
* :class:`LoginLimiter` counts failed logins per user name and per client address in a
  sliding window, so neither guessing one operator's password nor spraying many names from
  one address goes fast.
* :class:`SessionStore` keeps sessions in memory under random 256-bit ids.  The cookie holds
  the id and an HMAC of it under a key made at start, so a forged or altered cookie is told
  apart from an unknown or expired one (and logged as such) before any lookup.  Sessions end
  after an idle time and after an absolute lifetime; a restart of the bridge ends them all.
* CSRF: the login form carries a signed token bound to a random cookie (double submit);
  forms shown to a signed-in operator carry the session's own token.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

__all__ = [
    "CookieProblem",
    "LoginLimiter",
    "PasswordBook",
    "Session",
    "SessionStore",
    "hash_password",
]

_HASHER = PasswordHasher()
#: Verified when the user name is unknown, so a wrong name costs as long as a wrong password.
_DUMMY_HASH = _HASHER.hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    """An Argon2id hash of ``password`` for ``[console] users``."""
    return _HASHER.hash(password)


class PasswordBook:
    """Local operator accounts: user name to Argon2 hash."""

    def __init__(self, users: Mapping[str, str]) -> None:
        self.users = dict(users)

    def verify(self, name: str, password: str) -> bool:
        """Whether ``password`` is ``name``'s (always one Argon2 verification)."""
        stored = self.users.get(name)
        try:
            return _HASHER.verify(stored or _DUMMY_HASH, password) and stored is not None
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False


@dataclass
class LoginLimiter:
    """Failed logins allowed per user name and per client address within ``window`` seconds."""

    per_user: int = 5
    per_address: int = 20
    window: float = 300.0
    clock: Callable[[], float] = time.monotonic
    _failures: dict[str, deque[float]] = field(default_factory=dict)

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._failures.get(key)
        if times is None:
            return deque()
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[key]
        return times

    def retry_after(self, user: str, address: str) -> float:
        """Seconds until a login for ``user`` from ``address`` may be tried (0: now)."""
        now = self.clock()
        waits = [0.0]
        for key, limit in ((f"user:{user}", self.per_user), (f"addr:{address}", self.per_address)):
            times = self._recent(key, now)
            if len(times) >= limit:
                waits.append(times[len(times) - limit] + self.window - now)
        return max(waits)

    def failed(self, user: str, address: str) -> None:
        """Count a failed login for both keys."""
        now = self.clock()
        for key in (f"user:{user}", f"addr:{address}"):
            times = self._failures.setdefault(key, deque())
            times.append(now)
            # A bounded memory per key: only the last ``limit`` failures decide anything.
            while len(times) > max(self.per_user, self.per_address):
                times.popleft()
        if len(self._failures) > 100_000:
            # Many addresses each failing once: forget the oldest keys first.
            for key in list(self._failures)[:10_000]:
                del self._failures[key]

    def succeeded(self, user: str) -> None:
        """A right password clears the user's count (not the address's)."""
        self._failures.pop(f"user:{user}", None)


class CookieProblem(Enum):
    """Why a session cookie was not accepted (logged, never shown in detail)."""

    MISSING = "no session cookie"
    FORGED = "forged or altered session cookie"
    UNKNOWN = "unknown session (logged out, or the bridge restarted)"
    EXPIRED = "expired session"


@dataclass
class Session:
    """One signed-in operator."""

    id: str
    user: str
    method: str  # "password" or "oidc"
    created: float
    last_seen: float
    csrf: str


class SessionStore:
    """Sessions in memory, by random id, with an idle timeout and an absolute lifetime."""

    def __init__(
        self,
        *,
        idle: float = 1800.0,
        lifetime: float = 12 * 3600.0,
        capacity: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.idle = idle
        self.lifetime = lifetime
        self.capacity = capacity
        self.clock = clock
        self._key = secrets.token_bytes(32)
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        #: Ids of sessions that ended by expiry, to log "expired" rather than "unknown".
        self._expired: OrderedDict[str, None] = OrderedDict()

    def _sign(self, text: str) -> str:
        return hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()[:32]

    def create(self, user: str, method: str) -> tuple[Session, str]:
        """A new session and the cookie value naming it."""
        now = self.clock()
        session = Session(
            secrets.token_urlsafe(32), user, method, now, now, secrets.token_urlsafe(24)
        )
        self._sessions[session.id] = session
        while len(self._sessions) > self.capacity:
            self._sessions.popitem(last=False)
        return session, f"{session.id}.{self._sign(session.id)}"

    def lookup(self, cookie: str | None) -> Session | CookieProblem:
        """The live session ``cookie`` names (its idle time restarted), or why there is none."""
        if not cookie:
            return CookieProblem.MISSING
        sid, _, signature = cookie.rpartition(".")
        if not sid or not hmac.compare_digest(signature, self._sign(sid)):
            return CookieProblem.FORGED
        session = self._sessions.get(sid)
        if session is None:
            return CookieProblem.EXPIRED if sid in self._expired else CookieProblem.UNKNOWN
        now = self.clock()
        if now - session.last_seen > self.idle or now - session.created > self.lifetime:
            self.end(sid, expired=True)
            return CookieProblem.EXPIRED
        session.last_seen = now
        self._sessions.move_to_end(sid)
        return session

    def end(self, sid: str, *, expired: bool = False) -> None:
        """Forget a session (logout, or expiry)."""
        self._sessions.pop(sid, None)
        if expired:
            self._expired[sid] = None
            while len(self._expired) > self.capacity:
                self._expired.popitem(last=False)

    def __len__(self) -> int:
        return len(self._sessions)

    # --- CSRF for the login form -------------------------------------------------------

    def login_token(self, nonce: str) -> str:
        """The form token for a login form whose browser holds ``nonce`` in a cookie."""
        return f"{nonce}.{self._sign('login:' + nonce)}"

    def check_login_token(self, token: str | None, nonce: str | None) -> bool:
        """Whether ``token`` is the one :meth:`login_token` made for ``nonce``."""
        if not token or not nonce:
            return False
        return hmac.compare_digest(token, self.login_token(nonce))
