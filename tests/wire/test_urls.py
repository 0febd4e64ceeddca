"""Canonical WebSocket URLs, as the reference writes them into invites (notes §1.1)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broadgauge.wire import ConfigError
from broadgauge.wire.urls import canonical_websocket_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        # Scheme mapping.
        ("http://h:8040", "ws://h:8040/"),
        ("https://h:8443", "wss://h:8443/"),
        ("ws://h:8040/", "ws://h:8040/"),
        ("wss://h:8443/x", "wss://h:8443/x"),
        ("ftp://h:2121/x", "wss://h:2121/x"),
        ("foo://h", "wss://h"),
        ("h", "wss://h"),
        ("h:8040", "wss://h:8040/"),
        ("HTTP://H.Example.ORG:8040/Path", "ws://h.example.org:8040/Path"),
        # A default port (given or implied) drops the path.
        ("https://h/op/", "wss://h"),
        ("https://h:443/op/", "wss://h"),
        ("http://h", "ws://h"),
        ("http://h/", "ws://h"),
        ("http://h:80/x/y", "ws://h"),
        ("ws://h/path", "ws://h"),
        ("wss://h:443", "wss://h"),
        ("ftp://h:443/x", "wss://h"),  # unknown → wss, whose default is 443
        # A non-default port keeps the path, or adds "/".
        ("http://h:8040/a/b/", "ws://h:8040/a/b/"),
        ("http://h:443/x", "ws://h:443/x"),
        ("https://h:80/x", "wss://h:80/x"),
        ("ws://h:1", "ws://h:1/"),
        ("http://h:0", "ws://h:0/"),
        ("http://h:65535/z", "ws://h:65535/z"),
        # Query, fragment and userinfo are not part of the canonical form.
        ("http://h:81/p?q=1#frag", "ws://h:81/p"),
        ("http://user:pw@h:81/p", "ws://h:81/p"),
        # Whitespace around the URL is ignored.
        ("  https://h:8443/x \n", "wss://h:8443/x"),
        # IPv6 literals keep their brackets.
        ("http://[::1]:8040/x", "ws://[::1]:8040/x"),
        ("http://[::1]:8040", "ws://[::1]:8040/"),
        ("https://[2001:db8::1]/op", "wss://[2001:db8::1]"),
        ("ws://[2001:DB8::1]:80/", "ws://[2001:db8::1]"),
        # IPv4 literals.
        ("http://127.0.0.1:8044", "ws://127.0.0.1:8044/"),
        ("https://10.0.0.1", "wss://10.0.0.1"),
    ],
)
def test_canonical_urls(url: str, expected: str) -> None:
    assert canonical_websocket_url(url) == expected
    # The canonical form is a fixed point.
    assert canonical_websocket_url(expected) == expected


@pytest.mark.parametrize(
    "url",
    [
        "",
        "   ",
        "\n",
        "http://",
        "ws://:80",
        "https:///path",
        "http://h:99999/",
        "http://h:-1/",
        "http://h:abc/",
        "http://h:8o8o/",
        "http://[::1",
        "http://[not-ipv6]:80/",
    ],
)
def test_bad_urls(url: str) -> None:
    with pytest.raises(ConfigError):
        canonical_websocket_url(url)


def test_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        canonical_websocket_url("")


_hosts = st.one_of(
    st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?(\.[a-z]{2,5}){0,2}", fullmatch=True),
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(lambda a: f"[{a}]"),
)
_schemes = st.sampled_from(["http", "https", "ws", "wss", "HTTP", "Wss", "ftp", "tcp"])
_paths = st.from_regex(r"(/[A-Za-z0-9._~-]{0,6}){0,3}", fullmatch=True)


@settings(max_examples=300, deadline=None)
@given(_schemes, _hosts, st.one_of(st.none(), st.integers(0, 65535)), _paths)
def test_generated_urls(scheme: str, host: str, port: int | None, path: str) -> None:
    url = f"{scheme}://{host}" + ("" if port is None else f":{port}") + path
    result = canonical_websocket_url(url)
    expected_scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(
        scheme.lower(), "wss"
    )
    default = 80 if expected_scheme == "ws" else 443
    assert result.startswith(f"{expected_scheme}://")
    if port is None or port == default:
        assert result == f"{expected_scheme}://{host.lower()}"
    else:
        assert result == f"{expected_scheme}://{host.lower()}:{port}{path or '/'}"
    assert canonical_websocket_url(result) == result


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60) | st.builds(lambda s, t: f"{s}://{t}", _schemes, st.text(max_size=40)))
def test_arbitrary_text_only_raises_config_error(text: str) -> None:
    try:
        result = canonical_websocket_url(text)
    except ConfigError:
        return
    assert result.startswith(("ws://", "wss://"))
    # Known gap (reported, not fixed): whitespace or control characters inside the host or at
    # the end of the path survive one pass and are trimmed by the next, so only clean results
    # are fixed points.
    if all(c.isprintable() and not c.isspace() for c in result):
        assert canonical_websocket_url(result) == result


def test_whitespace_inside_host_is_rejected() -> None:
    # Rust's url crate refuses such a host; today we return "wss://0\x85", which the next
    # pass trims to "wss://0".
    with pytest.raises(ConfigError):
        canonical_websocket_url("0\x85#")
