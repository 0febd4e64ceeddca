"""The lean per-message and per-link paths give what the plain ones gave.

The AEAD is called in libsodium directly, JSON strings are written and read without building
an encoder or decoder, the replay guard keeps numbers in a ring, and a live link lets go of
what only its handshake needed.  Each is checked here against the library call it replaces.
"""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.bindings import (
    crypto_aead_xchacha20poly1305_ietf_decrypt,
    crypto_aead_xchacha20poly1305_ietf_encrypt,
)

from broadgauge.text import decoded_lone_surrogate
from broadgauge.wire import FrameError, Service
from broadgauge.wire.envelope import (
    LayerKey,
    ReplayGuard,
    decode_frame,
    decode_frame_buffer,
    dump_json,
    encode_frame,
    parse_json,
    seal,
    unseal,
)
from broadgauge.wire.keys import Key

from .conftest import make_client, running, wait_for_peer


@settings(max_examples=60)
@given(
    key=st.binary(min_size=32, max_size=32),
    nonce=st.binary(min_size=24, max_size=24),
    plaintext=st.binary(max_size=3000),
)
def test_seal_and_unseal_match_pynacl(key: bytes, nonce: bytes, plaintext: bytes) -> None:
    blob = seal(key, plaintext, nonce)
    assert blob == nonce + crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, None, nonce, key)
    if plaintext:
        assert unseal(key, blob) == plaintext
        assert crypto_aead_xchacha20poly1305_ietf_decrypt(blob[24:], None, nonce, key) == plaintext


def test_unseal_refuses_a_wrong_key_and_bad_sizes() -> None:
    key, nonce = os.urandom(32), os.urandom(24)
    blob = seal(key, b"payload", nonce)
    with pytest.raises(FrameError) as caught:
        unseal(os.urandom(32), blob)
    assert caught.value.reason == "bad-auth"
    with pytest.raises(TypeError):
        unseal(key[:16], blob)
    with pytest.raises(TypeError):
        seal(key, b"payload", nonce[:12])


def test_frame_is_the_hex_of_infos_and_outer_blob() -> None:
    inner = LayerKey(Key.generate(), os.urandom(32))
    outer = LayerKey(Key.generate(), os.urandom(32))
    rnd = os.urandom(112)
    frame = encode_frame(b'"x"', inner, outer, randomness=rnd)
    inner_blob = seal(inner.message_key(rnd[:32]), b'"x"', rnd[64:88])
    outer_blob = seal(
        outer.message_key(rnd[32:64]), b'"' + inner_blob.hex().encode() + b'"', rnd[88:]
    )
    assert frame == rnd[:32].hex() + rnd[32:64].hex() + outer_blob.hex()
    assert decode_frame(frame, inner, outer) == b'"x"'
    assert decode_frame_buffer(frame, inner, outer) == bytearray(b'"x"')


@given(st.text())
def test_dump_json_of_a_string_is_what_json_dumps_writes(text: str) -> None:
    try:
        expected = json.dumps(text, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        with pytest.raises(UnicodeEncodeError):
            dump_json(text)
        return
    assert dump_json(text) == expected


def _reference(data: bytes) -> tuple[object, ...]:
    """What parse_json answered before its string fast path."""
    try:
        text = data.decode("utf-8")
        value = json.loads(text)
    except ValueError:
        return ("bad-json",)
    if decoded_lone_surrogate(text, value):
        return ("bad-json",)
    return ("ok", value)


_JSONISH = st.one_of(
    st.text(),
    st.text().map(json.dumps),
    st.text().map(lambda t: json.dumps(t) + " "),
    st.text().map(lambda t: " " + json.dumps(t)),
    st.text().map(lambda t: json.dumps(t)[:-1]),
    st.text().map(lambda t: json.dumps(t) + '"'),
    st.text(alphabet='"\\u0123456789abcdefABCDEF\n\t ,:[]{}').map(lambda t: '"' + t),
)


@settings(max_examples=300)
@given(_JSONISH)
def test_parse_json_judges_strings_as_json_loads_does(text: str) -> None:
    data = text.encode("utf-8", "surrogatepass")
    got: tuple[object, ...]
    try:
        got = ("ok", parse_json(data))
    except FrameError as exc:
        got = (exc.reason,)
    assert repr(got) == repr(_reference(data))  # repr: NaN equals itself


def test_replay_guard_ring_remembers_exactly_the_last_window() -> None:
    inner = LayerKey(Key.generate(), os.urandom(32))
    outer = LayerKey(Key.generate(), os.urandom(32))
    frames = [encode_frame(b'"x"', inner, outer) for _ in range(11)]
    guard = ReplayGuard(window=4)
    for frame in frames:  # wraps the ring twice
        guard.check(frame)
    for old in frames[:7]:
        guard.check(old.upper())  # forgotten (in either spelling), so accepted again
    for recent in frames[3:7]:
        with pytest.raises(FrameError):
            guard.check(recent)
    nothing = ReplayGuard(window=0)
    nothing.check(frames[0])
    nothing.check(frames[0])


async def test_a_live_link_keeps_no_upgrade_headers(server: Service) -> None:
    async with running(server):
        client = make_client(server.add_client("client", "127.0.0.1"))
        async with running(client, listen=False):
            await wait_for_peer(client)
            await client.send("server", "hello")
            links = [*server._links.values(), *client._links.values()]
            assert len(links) == 2
            for link in links:
                for message in (link.connection.request, link.connection.response):
                    assert message is not None and not list(message.headers.raw_items())
