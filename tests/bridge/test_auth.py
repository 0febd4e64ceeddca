"""Signing, verification, nonces, rate limits and settings, without sockets."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from broadgauge.bridge.auth import (
    AuthError,
    MalformedRequest,
    NonceCache,
    SignedRequest,
    Verifier,
    canonical_string,
    format_date,
    sign,
)
from broadgauge.bridge.config import BridgeSettings, ClientFile
from broadgauge.bridge.limits import RateLimiter, TrustedProxies
from broadgauge.client import _protocol
from broadgauge.client.config import ClientConfig
from broadgauge.jobs.agent_type import AgentType
from broadgauge.runtime.config import AgentConfig
from broadgauge.wire import ConfigError, ServiceConfig

# The worked example of notes §6.1 (verified there against the official wheel's algorithm).
KEY = bytes(range(32))
DATE = "Mon, 01 Jan 2024 12:00:00 GMT"
NONCE = "123e4567-e89b-42d3-a456-426614174000"
BODY = b'{"command":"portal.provider.clusters.cluster add_user alice.proj.portal"}'
NOW = datetime(2024, 1, 1, 12, 0, 0, tzinfo=UTC).timestamp()
RUN_WITH_NONCE = "OpenPortal c03e138c3d3abdae89c8429cb15693cfbb025cb9a694e936b7b4857c34759550"
RUN_WITHOUT_NONCE = "OpenPortal 697942d5e65867a90c418233a5349a22e9aaadadf9364e734f1e0766c9a75e5b"
HEALTH = "OpenPortal ac0ac1c0490d3dca239e168ade51c220c262729ceb7372c772eee1d875cf647f"


def test_worked_example_is_reproduced_byte_for_byte() -> None:
    canonical = canonical_string("post", "run", DATE, BODY, NONCE)
    assert json.dumps(canonical, ensure_ascii=False) == (
        '"post\\napplication/json\\nMon, 01 Jan 2024 12:00:00 GMT\\nrun\\n'
        '{\\"command\\":\\"portal.provider.clusters.cluster add_user alice.proj.portal\\"}'
        '\\n123e4567-e89b-42d3-a456-426614174000"'
    )
    assert sign(KEY, "post", "run", DATE, BODY, NONCE) == RUN_WITH_NONCE
    assert sign(KEY, "POST", "run", DATE, BODY, None) == RUN_WITHOUT_NONCE
    assert sign(KEY, "get", "health", DATE, b"", NONCE) == HEALTH


def test_client_signs_identically() -> None:
    assert _protocol.sign(KEY, "post", "run", DATE, BODY, NONCE) == RUN_WITH_NONCE
    assert _protocol.sign(KEY, "get", "health", DATE, b"", NONCE) == HEALTH
    headers = _protocol.Request("post", "run", BODY).headers(KEY, NOW, NONCE)
    assert headers["Authorization"] == RUN_WITH_NONCE and headers["Date"] == DATE


def test_date_format() -> None:
    assert format_date(NOW) == DATE
    assert format_date(datetime(2024, 3, 5, 1, 2, 3, tzinfo=UTC)) == "Tue, 05 Mar 2024 01:02:03 GMT"


def request(authorization: str | None = RUN_WITH_NONCE, **changes: object) -> SignedRequest:
    fields: dict[str, object] = {
        "method": "post",
        "function": "run",
        "authorization": authorization,
        "date": DATE,
        "nonce": NONCE,
        "body": BODY,
    }
    fields.update(changes)
    return SignedRequest(**fields)  # type: ignore[arg-type]


def test_verifier_accepts_and_then_refuses_the_replay() -> None:
    verifier = Verifier(KEY)
    verifier.verify(request(), NOW + 1)
    with pytest.raises(AuthError, match="replay"):
        verifier.verify(request(), NOW + 2)
    # After 30 s the nonce is forgotten (the Date window protects the rest).
    later = format_date(NOW + 31)
    verifier.verify(request(sign(KEY, "post", "run", later, BODY, NONCE), date=later), NOW + 31)


def test_a_forged_request_does_not_record_its_nonce() -> None:
    verifier = Verifier(KEY)
    with pytest.raises(AuthError, match="invalid"):
        verifier.verify(request("OpenPortal " + "0" * 64), NOW)
    assert len(verifier.nonces) == 0
    verifier.verify(request(), NOW)


@pytest.mark.parametrize("skew", [-5.5, 5.5, 100])
def test_date_window(skew: float) -> None:
    with pytest.raises(AuthError, match="time window"):
        Verifier(KEY).verify(request(), NOW + skew)


def test_date_window_edges_accepted() -> None:
    Verifier(KEY).verify(request(), NOW + 5)
    Verifier(KEY).verify(request(), NOW - 5)


def test_the_canonical_rendering_of_another_date_form_is_signed() -> None:
    # "+0000" parses to the same moment; the signature covers the GMT rendering.
    Verifier(KEY).verify(request(date="Mon, 1 Jan 2024 12:00:00 +0000"), NOW)


@pytest.mark.parametrize(
    "changes",
    [
        {"authorization": None},
        {"date": None},
        {"date": "yesterday"},
        {"body": BODY + b" "},
        {"function": "status"},
        {"method": "get"},
        {"nonce": None},
    ],
)
def test_every_part_is_covered(changes: dict[str, object]) -> None:
    # A GET with the POST's body is refused for its shape (MalformedRequest, 400).
    with pytest.raises((AuthError, MalformedRequest)):
        Verifier(KEY).verify(request(**changes), NOW)  # type: ignore[arg-type]


def test_nonce_cache_purges_in_time_order() -> None:
    cache = NonceCache(ttl=30)
    cache.record("a", 0)
    cache.record("b", 10)
    assert cache.seen("a", 29) and not cache.seen("a", 30)
    assert len(cache) == 1 and cache.seen("b", 39)


def test_a_nonce_used_again_is_kept_from_its_last_use() -> None:
    cache = NonceCache(ttl=30)
    cache.record("a", 0)
    cache.record("b", 10)
    cache.record("a", 20)  # moves behind "b": purging still stops at the first fresh entry
    assert not cache.seen("b", 40) and cache.seen("a", 49)
    assert len(cache) == 1


def test_nonce_cache_keeps_at_most_its_capacity_oldest_out() -> None:
    cache = NonceCache(ttl=30, capacity=3)
    for index, nonce in enumerate("abcde"):
        cache.record(nonce, index)
    assert len(cache) == 3
    assert [cache.seen(nonce, 5) for nonce in "abcde"] == [False, False, True, True, True]


def test_rate_limiter_sliding_window() -> None:
    limiter = RateLimiter(limit=10, period=10)
    assert all(limiter.allow("ip", 0.5) for _ in range(10))
    assert not limiter.allow("ip", 0.6)
    assert limiter.allow("other", 0.6)
    # Just into the next window most of the previous one still counts.
    assert not limiter.allow("ip", 10.5)
    assert limiter.allow("ip", 19.9)  # ~1 of the previous 10 still in the window
    assert limiter.allow("ip", 30)  # two windows later: forgotten


def test_rate_limiter_bounds_its_memory() -> None:
    limiter = RateLimiter(limit=1, period=1, max_keys=10)
    for i in range(100):
        assert limiter.allow(f"k{i}", 0)
    assert len(limiter._windows) <= 10


def test_trusted_proxies() -> None:
    none = TrustedProxies()
    assert none.client_address("10.0.0.1", "203.0.113.1") == "10.0.0.1"
    proxies = TrustedProxies(["10.0.0.0/8"])
    assert proxies.client_address("10.0.0.1", "203.0.113.1") == "203.0.113.1"
    # A client cannot pick its bucket by prepending addresses.
    assert proxies.client_address("10.0.0.1", "1.2.3.4, 203.0.113.1, 10.0.0.2") == "203.0.113.1"
    assert proxies.client_address("192.0.2.1", "203.0.113.1") == "192.0.2.1"


def test_settings_round_trip_through_the_agent_config() -> None:
    config = AgentConfig(AgentType.BRIDGE, ServiceConfig.create("bridge", port=0))
    settings = BridgeSettings.generate(
        port=3001, signal_url="http://web/signal", trusted_proxies=("10.0.0.0/8",)
    )
    loaded = AgentConfig.loads(settings.store(config).dumps())
    assert BridgeSettings.of(loaded) == settings
    assert loaded.other["bridge"]["key"] == {"data": settings.key.hex()}
    with pytest.raises(ConfigError):
        BridgeSettings.of(config)
    with pytest.raises(ConfigError):
        BridgeSettings.from_table({"key": {"data": "abcd"}})


def test_non_http_signal_urls_are_dropped() -> None:
    table = {"key": {"data": KEY.hex()}, "signal_url": "ftp://x/", "notification_url": "x"}
    settings = BridgeSettings.from_table(table)
    assert settings.signal_url is None and settings.notification_url is None


def test_client_file_both_forms() -> None:
    text = ClientFile("http://h:3000", KEY).dumps()
    assert text == f'url = "http://h:3000/"\n\n[key]\ndata = "{KEY.hex()}"\n'
    assert ClientFile.loads(text) == ClientFile("http://h:3000/", KEY)
    inline = f'url = "http://h/api/"\nkey = {{ data = "{KEY.hex()}" }}\n'
    assert ClientConfig.loads(inline) == ClientConfig("http://h/api/", KEY)
    assert _protocol.Request.get("run").url("http://h/api/") == (
        "http://h/api/run?openportal-version=0.1"
    )
    assert _protocol.Request.get("run").url("http://h/api").startswith("http://h/run")


def test_security_settings_round_trip_and_are_checked() -> None:
    config = AgentConfig(AgentType.BRIDGE, ServiceConfig.create("bridge", port=0))
    settings = BridgeSettings.generate(max_offerings=50, allow_missing_nonce=True)
    loaded = BridgeSettings.of(AgentConfig.loads(settings.store(config).dumps()))
    assert loaded.max_offerings == 50 and loaded.allow_missing_nonce
    defaults = BridgeSettings.from_table({"key": {"data": KEY.hex()}})
    assert defaults.max_offerings == 10_000 and not defaults.allow_missing_nonce
    assert "allow_missing_nonce" not in defaults.to_table()
    for bad in ({"max_offerings": -1}, {"max_offerings": "many"}, {"allow_missing_nonce": 1}):
        with pytest.raises(ConfigError):
            BridgeSettings.from_table({"key": {"data": KEY.hex()}, **bad})
