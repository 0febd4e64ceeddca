"""The console's login rules without HTTP: Argon2, rate limits, sessions and CSRF tokens."""

from __future__ import annotations

import pytest

from broadgauge.bridge.console.auth import (
    CookieProblem,
    LoginLimiter,
    PasswordBook,
    Session,
    SessionStore,
    hash_password,
)
from broadgauge.bridge.console.settings import ConsoleSettings
from broadgauge.wire import ConfigError

from .conftest import HASH, PASSWORD


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_argon2_verifies_the_right_password_only() -> None:
    book = PasswordBook({"ops": HASH})
    assert HASH.startswith("$argon2id$")
    assert book.verify("ops", PASSWORD)
    assert not book.verify("ops", PASSWORD + "x")
    assert not book.verify("nobody", PASSWORD)
    assert not PasswordBook({"ops": "$argon2id$not-a-hash"}).verify("ops", PASSWORD)


def test_each_hash_is_salted() -> None:
    assert hash_password("same") != hash_password("same")


def test_failed_logins_are_limited_per_user_and_per_address() -> None:
    clock = Clock()
    limiter = LoginLimiter(per_user=3, per_address=5, window=60, clock=clock)
    for _ in range(3):
        assert limiter.retry_after("ops", "10.0.0.1") == 0
        limiter.failed("ops", "10.0.0.1")
    assert limiter.retry_after("ops", "10.0.0.1") > 0
    # The same user from elsewhere is limited too: the user's password is what is guessed.
    assert limiter.retry_after("ops", "10.0.0.2") > 0
    # Another user from the first address still may, until the address's own limit.
    assert limiter.retry_after("eve", "10.0.0.1") == 0
    limiter.failed("eve", "10.0.0.1")
    limiter.failed("mallory", "10.0.0.1")
    assert limiter.retry_after("trent", "10.0.0.1") > 0
    clock.now += 61
    assert limiter.retry_after("ops", "10.0.0.1") == 0


def test_a_right_password_clears_the_users_count() -> None:
    limiter = LoginLimiter(per_user=2, clock=Clock())
    limiter.failed("ops", "a")
    limiter.succeeded("ops")
    limiter.failed("ops", "a")
    assert limiter.retry_after("ops", "b") == 0


def test_sessions_by_cookie() -> None:
    store = SessionStore(clock=Clock())
    session, cookie = store.create("ops", "password")
    found = store.lookup(cookie)
    assert isinstance(found, Session) and found.user == "ops"
    assert store.lookup(None) is CookieProblem.MISSING
    store.end(session.id)
    assert store.lookup(cookie) is CookieProblem.UNKNOWN


@pytest.mark.parametrize(
    "tamper",
    [
        lambda c: c[:-1] + ("0" if c[-1] != "0" else "1"),  # signature changed
        lambda c: "A" + c[1:],  # id changed
        lambda c: c.split(".")[0],  # signature dropped
        lambda c: "forged.0123456789abcdef0123456789abcdef",
        lambda c: c + "." + c,
    ],
)
def test_tampered_cookies_are_forged(tamper: object) -> None:
    store = SessionStore(clock=Clock())
    _, cookie = store.create("ops", "password")
    assert callable(tamper)
    assert store.lookup(tamper(cookie)) is CookieProblem.FORGED


def test_a_cookie_from_another_bridge_is_forged() -> None:
    _, cookie = SessionStore().create("ops", "password")
    assert SessionStore().lookup(cookie) is CookieProblem.FORGED


def test_sessions_expire_when_idle_and_at_their_lifetime() -> None:
    clock = Clock()
    store = SessionStore(idle=60, lifetime=300, clock=clock)
    _, cookie = store.create("ops", "password")
    clock.now += 59
    assert isinstance(store.lookup(cookie), Session)  # use restarts the idle time
    clock.now += 59
    assert isinstance(store.lookup(cookie), Session)
    clock.now += 61
    assert store.lookup(cookie) is CookieProblem.EXPIRED
    assert store.lookup(cookie) is CookieProblem.EXPIRED  # remembered as expired
    _, busy = store.create("ops", "password")
    for _ in range(6):
        clock.now += 55
        store.lookup(busy)
    assert store.lookup(busy) is CookieProblem.EXPIRED  # past the lifetime, however busy


def test_login_csrf_tokens_are_bound_to_the_browsers_nonce() -> None:
    store = SessionStore()
    token = store.login_token("nonce-a")
    assert store.check_login_token(token, "nonce-a")
    assert not store.check_login_token(token, "nonce-b")
    assert not store.check_login_token(None, "nonce-a")
    assert not store.check_login_token(token, None)
    assert not store.check_login_token(token[:-1] + "x", "nonce-a")
    assert not SessionStore().check_login_token(token, "nonce-a")


def test_settings_round_trip_and_refuse_plain_passwords() -> None:
    settings = ConsoleSettings().with_user("ops", HASH)
    assert ConsoleSettings.from_table(settings.to_table()) == settings
    with pytest.raises(ConfigError, match="argon2"):
        ConsoleSettings.from_table({"users": {"ops": "hunter2"}})
    with pytest.raises(ConfigError, match="secure_cookie"):
        ConsoleSettings.from_table({"secure_cookie": "yes"})
    assert ConsoleSettings.from_table({}).users == {}


@pytest.mark.parametrize(
    "bad", ["ops.example.org", "ftp://ops.example.org", "https://", "https://h/?a=1", 7]
)
def test_public_url_must_be_an_http_address(bad: object) -> None:
    with pytest.raises(ConfigError, match="public_url"):
        ConsoleSettings.from_table({"public_url": bad})


def test_public_url_round_trips_without_its_trailing_slash() -> None:
    settings = ConsoleSettings.from_table({"public_url": "https://ops.example.org/site/"})
    assert settings.public_url == "https://ops.example.org/site"
    assert ConsoleSettings.from_table(settings.to_table()) == settings
