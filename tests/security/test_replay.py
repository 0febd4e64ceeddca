"""Replay: a captured request, re-sent as it is or re-shaped, is refused.

The signed string is ``method \\n application/json \\n date \\n function [\\n body] [\\n nonce]``.
A captured request can be re-sent unchanged, or re-shaped so that the same string (and so the
same signature) comes out of other parts: the nonce moved into the body, the body moved into
the nonce, a body added to a GET.  Each must be refused, by the pure verifier and by the
running bridge, and the bridge keeps serving.
"""

from __future__ import annotations

import logging
import uuid

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from broadgauge.bridge import auth
from broadgauge.demo import Network
from tests.bridge.signing import signed

from .conftest import message, still_provisions

KEY = bytes(range(32))
NOW = 1_704_110_400.0  # Mon, 01 Jan 2024 12:00:00 GMT
DATE = auth.format_date(NOW)


def captured(method: str, function: str, body: bytes, nonce: str | None) -> auth.SignedRequest:
    """A genuine request, as an eavesdropper would have seen it."""
    return auth.SignedRequest(
        method, function, auth.sign(KEY, method, function, DATE, body, nonce), DATE, nonce, body
    )


def reshaped(original: auth.SignedRequest) -> list[auth.SignedRequest]:
    """Every other (body, nonce) split of the original's signed string, same signature."""
    canonical = auth.canonical_string(
        original.method, original.function, DATE, original.body, original.nonce
    )
    head = f"{original.method.lower()}\napplication/json\n{DATE}\n{original.function}"
    rest = canonical[len(head) :]  # "" or "\n" + body and/or nonce lines
    variants: list[tuple[bytes, str | None]] = []
    if rest:
        tail = rest[1:]
        # All of it as the body with no nonce, or split at any newline into body + nonce.
        variants.append((tail.encode(), None))
        for index, char in enumerate(tail):
            if char == "\n":
                variants.append((tail[:index].encode(), tail[index + 1 :]))
        variants.append((b"", tail))  # all of it as the nonce
    found = []
    for body, nonce in variants:
        if (body, nonce) == (original.body, original.nonce):
            continue
        if (
            auth.canonical_string(original.method, original.function, DATE, body, nonce)
            == canonical
        ):
            found.append(
                auth.SignedRequest(
                    original.method, original.function, original.authorization, DATE, nonce, body
                )
            )
    return found


def assert_refused(verifier: auth.Verifier, request: auth.SignedRequest) -> None:
    with pytest.raises((auth.AuthError, auth.MalformedRequest)):
        verifier.verify(request, NOW)


json_text = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)


@given(
    lenient=st.booleans(),
    method=st.sampled_from(["get", "post"]),
    function=st.sampled_from(["run", "status", "health", "fetch_jobs", "add_offerings"]),
    body=st.one_of(st.just(""), st.text(max_size=60), json_text.map(str)),
    nonce=st.uuids().map(str),
)
def test_no_reshaping_of_a_captured_request_is_accepted(
    lenient: bool, method: str, function: str, body: str, nonce: str
) -> None:
    # Also where a site accepts nonce-less requests: the signature is then not reusable.
    verifier = auth.Verifier(KEY, allow_missing_nonce=lenient)
    payload = body.encode("utf-8", "surrogatepass") if method == "post" else b""
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError:
        payload = b"{}"
    original = captured(method, function, payload, nonce)
    verifier.verify(original, NOW)
    assert_refused(verifier, original)  # as it was
    for variant in reshaped(original):
        assert_refused(verifier, variant)


@given(nonce=st.uuids().map(str))
def test_a_get_nonce_moved_into_a_body_is_refused(nonce: str) -> None:
    # The attack found against the reference: the same signed string, no X-Nonce header.
    verifier = auth.Verifier(KEY, allow_missing_nonce=True)
    original = captured("get", "fetch_jobs", b"", nonce)
    verifier.verify(original, NOW)
    moved = auth.SignedRequest(
        "get", "fetch_jobs", original.authorization, DATE, None, nonce.encode("ascii")
    )
    with pytest.raises(auth.MalformedRequest, match="GET request must not have a body"):
        verifier.verify(moved, NOW)


def test_a_post_nonce_moved_into_the_body_is_refused() -> None:
    body = b'{"command":"portal.provider get_portal"}'
    nonce = str(uuid.uuid4())
    original = captured("post", "run", body, nonce)
    moved = auth.SignedRequest(
        "post", "run", original.authorization, DATE, None, body + b"\n" + nonce.encode()
    )
    with pytest.raises(auth.AuthError, match="Missing X-Nonce"):
        auth.Verifier(KEY).verify(moved, NOW)
    # Allowed for an old client, the re-shaped request is a replay of the signature.
    lenient = auth.Verifier(KEY, allow_missing_nonce=True)
    lenient.verify(moved, NOW)
    with pytest.raises(auth.AuthError, match="replay"):
        lenient.verify(moved, NOW)


@pytest.mark.parametrize(
    "nonce",
    [
        "",
        "not-a-uuid",
        "123e4567e89b42d3a456426614174000",
        "{123e4567-e89b-42d3-a456-426614174000}",
        "123e4567-e89b-42d3-a456-426614174000\n",
        "123e4567-e89b-42d3-a456-42661417400g",
    ],
)
def test_a_nonce_that_is_not_a_uuid_is_refused(nonce: str) -> None:
    request = captured("get", "health", b"", nonce)
    with pytest.raises(auth.AuthError, match="UUID"):
        auth.Verifier(KEY).verify(request, NOW)


def test_a_nonce_less_request_is_refused_unless_allowed() -> None:
    request = captured("get", "health", b"", None)
    with pytest.raises(auth.AuthError, match="Missing X-Nonce"):
        auth.Verifier(KEY).verify(request, NOW)
    lenient = auth.Verifier(KEY, allow_missing_nonce=True)
    lenient.verify(request, NOW)
    assert lenient.unnonced == 1
    # The signature stands in for the nonce: the very same request is a replay ...
    with pytest.raises(auth.AuthError, match="replay"):
        lenient.verify(request, NOW + 1)
    # ... and so is one forged under a wrong key: it records nothing.
    forged = auth.SignedRequest("get", "health", "OpenPortal " + "0" * 64, DATE, None, b"")
    with pytest.raises(auth.AuthError, match="invalid"):
        lenient.verify(forged, NOW)
    assert lenient.unnonced == 1


@pytest.mark.parametrize("body", [b"\xff", b'{"command":"\xc3("}', b"\xed\xa0\x80", b"\x80abc"])
def test_a_body_that_is_not_utf8_is_refused_before_verifying(body: bytes) -> None:
    # The reference leaves such a body out of the signature: it could be swapped freely.
    unsigned = auth.sign(KEY, "post", "run", DATE, b"", "123e4567-e89b-42d3-a456-426614174000")
    request = auth.SignedRequest(
        "post", "run", unsigned, DATE, "123e4567-e89b-42d3-a456-426614174000", body
    )
    with pytest.raises(auth.MalformedRequest, match="not valid UTF-8"):
        auth.Verifier(KEY).verify(request, NOW)
    with pytest.raises(UnicodeDecodeError):
        auth.canonical_string("post", "run", DATE, body)


# --- against the running bridge ---------------------------------------------------------------


async def test_replays_against_the_bridge(network: Network, http: httpx.AsyncClient) -> None:
    bridge = network.bridge
    key, url = bridge.settings.key, bridge.url
    nonce = str(uuid.uuid4())
    headers = signed(key, "get", "fetch_jobs", nonce=nonce)
    assert (await http.get(f"{url}fetch_jobs", headers=headers)).status_code == 200
    again = await http.get(f"{url}fetch_jobs", headers=headers)
    assert again.status_code == 401 and "replay" in message(again)
    # The same signature with the nonce moved into a GET body and the header dropped.
    del headers["X-Nonce"]
    moved = await http.request("GET", f"{url}fetch_jobs", headers=headers, content=nonce)
    assert moved.status_code == 400 and "must not have a body" in message(moved)
    # No nonce at all.
    bare = signed(key, "get", "fetch_jobs", nonce=None)
    refused = await http.get(f"{url}fetch_jobs", headers=bare)
    assert refused.status_code == 401 and "Missing X-Nonce" in message(refused)
    await still_provisions(network)


async def test_nonce_less_requests_when_a_site_allows_them(
    network: Network, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    bridge = network.bridge
    bridge.api.verifier.allow_missing_nonce = True
    key, url = bridge.settings.key, bridge.url
    headers = signed(key, "get", "get_portal", nonce=None)
    with caplog.at_level(logging.WARNING, logger="broadgauge.bridge.http"):
        first = await http.get(f"{url}get_portal", headers=headers)
    assert first.status_code == 200 and first.json() == "portal"
    assert any("without X-Nonce" in record.getMessage() for record in caplog.records)
    again = await http.get(f"{url}get_portal", headers=headers)
    assert again.status_code == 401 and "replay" in message(again)
    await still_provisions(network)


@pytest.mark.parametrize("method", ["get", "post"])
async def test_non_utf8_bodies_against_the_bridge(
    network: Network, http: httpx.AsyncClient, method: str
) -> None:
    bridge = network.bridge
    function = "fetch_jobs" if method == "get" else "run"
    body = b'{"command":"\xff"}'
    headers = signed(bridge.settings.key, method, function, nonce=str(uuid.uuid4()))
    reply = await http.request(
        method.upper(), f"{bridge.url}{function}", headers=headers, content=body
    )
    assert reply.status_code == 400
    assert "UTF-8" in message(reply) or "must not have a body" in message(reply)
    await still_provisions(network)
