"""The double envelope (notes §1.2-§1.4): test vector, round trips, tampering, replays, fuzzing."""

from __future__ import annotations

import json
import os

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broadgauge.wire import FrameError, Key, ServerEntry
from broadgauge.wire.envelope import (
    MIN_FRAME_CHARS,
    LayerKey,
    ReplayGuard,
    decode_frame,
    dump_json,
    encode_frame,
    parse_json,
    seal,
    unseal,
)
from broadgauge.wire.handshake import (
    INNER_SALT_HEADER,
    OUTER_SALT_HEADER,
    Channel,
    ClientHandshake,
)
from broadgauge.wire.keys import xor_with_key

# --- notes §1.3 test vector ------------------------------------------------------------------

VEC_INNER_KEY = Key(b"\x11" * 32)
VEC_OUTER_KEY = Key(b"\x22" * 32)
VEC_INNER_SALT = b"\x33" * 32
VEC_OUTER_SALT = b"\x44" * 32
VEC_INNER_INFO = b"\x55" * 32
VEC_OUTER_INFO = b"\x66" * 32
VEC_INNER_NONCE = b"\x77" * 24
VEC_OUTER_NONCE = b"\x88" * 24
VEC_K_IN = "5de26604bec1dcb0e30d145d14c23d33f20d3828376627e09557850043f0417c"
VEC_K_OUT = "c82e571d428f1dc20d2080485bb8223e387e8903f1aa8421b4d0859641974e37"
VEC_INNER_BLOB = "77" * 24 + "a5379a9feb6ead0e9897b2879a8e1f8ba149ee7d3a6ea285a37fa5"
VEC_OUTER_CT = (
    "a920530666c91157b07039f574859bd3ec81be13aa57c787b5622189948d5ddf2f9fd83cc9cecd351c649be4"
    "4a15bb2fd08bf1e000953b8ef61fa0eb22c03d5abd8e6d4de94ad857fe7fa3b48339fe903a05ec08fd25e921"
    "90a88a7776fd84b9e7a1f4441d2f79dc46cecc670ca8219e61be199db7a7b495"
)
VEC_FRAME = "5" * 64 + "6" * 64 + "8" * 48 + VEC_OUTER_CT
VEC_RANDOMNESS = VEC_INNER_INFO + VEC_OUTER_INFO + VEC_INNER_NONCE + VEC_OUTER_NONCE


def _vector_layers() -> tuple[LayerKey, LayerKey]:
    return LayerKey(VEC_INNER_KEY, VEC_INNER_SALT), LayerKey(VEC_OUTER_KEY, VEC_OUTER_SALT)


def test_vector_message_keys() -> None:
    inner, outer = _vector_layers()
    assert inner.message_key(VEC_INNER_INFO).hex() == VEC_K_IN
    assert outer.message_key(VEC_OUTER_INFO).hex() == VEC_K_OUT


def test_vector_inner_blob() -> None:
    blob = seal(bytes.fromhex(VEC_K_IN), b'"KEEPALIVE"', VEC_INNER_NONCE)
    assert len(blob) == 51
    assert blob.hex() == VEC_INNER_BLOB


def test_vector_frame_exact() -> None:
    assert len(VEC_FRAME) == 416
    inner, outer = _vector_layers()
    frame = encode_frame(dump_json("KEEPALIVE"), inner, outer, randomness=VEC_RANDOMNESS)
    assert frame == VEC_FRAME


def test_vector_frame_decodes() -> None:
    inner, outer = _vector_layers()
    assert decode_frame(VEC_FRAME, inner, outer) == b'"KEEPALIVE"'
    # The outer layer holds the JSON string literal of the inner blob's hex.
    outer_plain = unseal(bytes.fromhex(VEC_K_OUT), bytes.fromhex(VEC_FRAME[128:]))
    assert outer_plain == b'"' + VEC_INNER_BLOB.encode() + b'"'
    assert json.loads(outer_plain) == VEC_INNER_BLOB
    assert Channel(inner, outer).open(VEC_FRAME) == "KEEPALIVE"


def test_vector_salt_headers_use_crossed_psks() -> None:
    assert xor_with_key(VEC_INNER_SALT, VEC_OUTER_KEY).hex() == "11" * 32
    assert xor_with_key(VEC_OUTER_SALT, VEC_INNER_KEY).hex() == "55" * 32
    draws = iter([VEC_INNER_SALT, VEC_OUTER_SALT, b"\x99" * 32])
    entry = ServerEntry("portal", "ws://portal:8040/", "default", VEC_INNER_KEY, VEC_OUTER_KEY)
    hs = ClientHandshake("bridge", entry, random_bytes=lambda n: next(draws))
    assert hs.headers == {INNER_SALT_HEADER: "11" * 32, OUTER_SALT_HEADER: "55" * 32}


# --- HKDF ------------------------------------------------------------------------------------


@pytest.mark.parametrize("salt_len", [0, 1, 16, 32, 64, 200])
def test_layer_key_equals_full_hkdf(salt_len: int) -> None:
    key = Key.generate()
    salt = os.urandom(salt_len)
    layer = LayerKey(key, salt)
    for _ in range(5):
        info = os.urandom(32)
        expected = HKDF(hashes.SHA512(), 32, salt, info).derive(key.secret_bytes)
        assert layer.message_key(info) == expected


def test_message_keys_depend_on_every_input() -> None:
    key, other = Key.generate(), Key.generate()
    salt, info = os.urandom(32), os.urandom(32)
    base = LayerKey(key, salt).message_key(info)
    assert LayerKey(other, salt).message_key(info) != base
    assert LayerKey(key, os.urandom(32)).message_key(info) != base
    assert LayerKey(key, salt).message_key(os.urandom(32)) != base
    assert LayerKey(key, salt).message_key(info) == base


# --- round trips -------------------------------------------------------------------------------


def _layers() -> tuple[LayerKey, LayerKey]:
    return LayerKey(Key.generate(), os.urandom(32)), LayerKey(Key.generate(), os.urandom(32))


PAYLOADS = [
    "",
    "x",
    "KEEPALIVE",
    "héllo wörld",
    "日本語のテキスト",
    "emoji 🚀🔑",
    'quotes " and \\ backslashes',
    "control \x00\x01\x1f\x7f chars",
    "line\nseparator\u2028paragraph\u2029",
    '{"Register":{"agent":"Bridge","engine":"templemeads","version":"0.32.2"}}',
    "a" * 100,
    "b" * 1000,
    "é" * 5000,
    "z" * 65537,
    "🚀" * 100_000,
]


@pytest.mark.parametrize("payload", PAYLOADS, ids=lambda p: f"len{len(p)}")
def test_frame_round_trip(payload: str) -> None:
    inner, outer = _layers()
    frame = encode_frame(dump_json(payload), inner, outer)
    assert frame.isascii()
    assert frame == frame.lower()
    plaintext = dump_json(payload)
    # 2 infos + outer nonce/tag + JSON-quoted hex of (inner nonce, ciphertext, tag).
    assert len(frame) == 128 + 2 * (24 + 16 + 2 + 2 * (24 + len(plaintext) + 16))
    assert decode_frame(frame, inner, outer) == plaintext
    assert parse_json(decode_frame(frame, inner, outer)) == payload


def test_frames_are_randomised() -> None:
    inner, outer = _layers()
    frames = {encode_frame(b'"same"', inner, outer) for _ in range(20)}
    assert len(frames) == 20
    for frame in frames:
        assert decode_frame(frame, inner, outer) == b'"same"'


def test_round_trip_objects() -> None:
    inner, outer = _layers()
    value = {"a": [1, 2, {"b": None}], "é": "ü", "n": 1.5}
    assert parse_json(decode_frame(encode_frame(dump_json(value), inner, outer), inner, outer)) == (
        value
    )


def test_dump_json_matches_serde_style() -> None:
    assert dump_json({"a": 1, "b": [1, 2]}) == b'{"a":1,"b":[1,2]}'
    assert dump_json("é") == '"é"'.encode()
    assert dump_json("KEEPALIVE") == b'"KEEPALIVE"'


@settings(max_examples=150, deadline=None)
@given(st.text())
def test_channel_round_trip_property(payload: str) -> None:
    inner, outer = _layers()
    assert Channel(inner, outer).open(Channel(inner, outer).seal(payload)) == payload


# --- tamper detection ------------------------------------------------------------------------

HEX = "0123456789abcdef"


def _flip(frame: str, pos: int, step: int) -> str:
    digit = HEX[(int(frame[pos], 16) + step) % 16]
    return frame[:pos] + digit + frame[pos + 1 :]


def test_every_single_character_flip_is_detected() -> None:
    inner, outer = _layers()
    frame = encode_frame(dump_json("secret payload"), inner, outer)
    assert decode_frame(frame, inner, outer) == b'"secret payload"'
    checked = 0
    for pos in range(len(frame)):
        for step in (1, 8, 15):
            tampered = _flip(frame, pos, step)
            assert tampered != frame and tampered.lower() != frame
            with pytest.raises(FrameError) as info:
                decode_frame(tampered, inner, outer)
            assert info.value.reason == "bad-auth", (pos, step)
            checked += 1
    assert checked == 3 * len(frame)


def test_every_flip_of_the_vector_frame_is_detected() -> None:
    inner, outer = _vector_layers()
    for pos in range(len(VEC_FRAME)):
        with pytest.raises(FrameError) as info:
            decode_frame(_flip(VEC_FRAME, pos, 1), inner, outer)
        assert info.value.reason == "bad-auth"


def test_every_flip_is_rejected_by_a_channel() -> None:
    inner, outer = _layers()
    frame = Channel(inner, outer).seal("payload")
    receiver = Channel(inner, outer)
    for pos in range(len(frame)):
        with pytest.raises(FrameError):
            receiver.open(_flip(frame, pos, 7))
    # None of the failures poisoned the replay guard: the genuine frame still opens.
    assert receiver.open(frame) == "payload"


def _reason(frame: str, inner: LayerKey, outer: LayerKey) -> str:
    with pytest.raises(FrameError) as info:
        decode_frame(frame, inner, outer)
    return info.value.reason


def test_wrong_keys_and_salts_fail_authentication() -> None:
    inner_key, outer_key = Key.generate(), Key.generate()
    inner_salt, outer_salt = os.urandom(32), os.urandom(32)
    inner, outer = LayerKey(inner_key, inner_salt), LayerKey(outer_key, outer_salt)
    frame = encode_frame(b'"x"', inner, outer)
    assert decode_frame(frame, inner, outer) == b'"x"'
    other = Key.generate()
    assert _reason(frame, LayerKey(other, inner_salt), outer) == "bad-auth"  # wrong inner key
    assert _reason(frame, inner, LayerKey(other, outer_salt)) == "bad-auth"  # wrong outer key
    assert _reason(frame, LayerKey(inner_key, os.urandom(32)), outer) == "bad-auth"
    assert _reason(frame, inner, LayerKey(outer_key, os.urandom(32))) == "bad-auth"
    # Swapped layers.
    assert _reason(frame, outer, inner) == "bad-auth"
    assert _reason(frame, LayerKey(outer_key, inner_salt), LayerKey(inner_key, outer_salt)) == (
        "bad-auth"
    )


def test_frame_from_another_connection_is_rejected() -> None:
    # Same pre-shared keys, different connection salts: a frame recorded on connection A
    # and replayed onto connection B fails authentication.
    inner_key, outer_key = Key.generate(), Key.generate()
    salts_a = (os.urandom(32), os.urandom(32))
    salts_b = (os.urandom(32), os.urandom(32))
    channel_a = Channel(LayerKey(inner_key, salts_a[0]), LayerKey(outer_key, salts_a[1]))
    channel_b = Channel(LayerKey(inner_key, salts_b[0]), LayerKey(outer_key, salts_b[1]))
    frame = channel_a.seal("transfer 100")
    with pytest.raises(FrameError) as info:
        channel_b.open(frame)
    assert info.value.reason == "bad-auth"
    peer_of_b = Channel(LayerKey(inner_key, salts_b[0]), LayerKey(outer_key, salts_b[1]))
    assert peer_of_b.open(channel_b.seal("ok")) == "ok"
    # Only one salt differing is enough.
    channel_c = Channel(LayerKey(inner_key, salts_a[0]), LayerKey(outer_key, salts_b[1]))
    with pytest.raises(FrameError):
        channel_c.open(frame)


@pytest.mark.parametrize("length", [0, 1, 64, 127, 128, 129])
def test_short_frames_rejected(length: int) -> None:
    inner, outer = _layers()
    frame = encode_frame(b'"x"', inner, outer)
    assert len(frame[:length]) < MIN_FRAME_CHARS
    assert _reason(frame[:length], inner, outer) == "too-short"


def test_truncations_all_rejected() -> None:
    inner, outer = _layers()
    frame = encode_frame(b'"hello"', inner, outer)
    for length in range(len(frame)):
        reason = _reason(frame[:length], inner, outer)
        if length < MIN_FRAME_CHARS:
            assert reason == "too-short"
        elif length % 2:
            assert reason == "bad-hex"
        elif length <= 128 + 2 * 40:
            assert reason == "too-short"  # the outer blob cannot hold nonce and tag
        else:
            assert reason == "bad-auth"


def test_non_hex_and_odd_length_rejected() -> None:
    inner, outer = _layers()
    frame = encode_frame(b'"x"', inner, outer)
    for pos in (0, 63, 64, 127, 128, 200, len(frame) - 1):
        for char in "gZ-é\x00":
            bad = frame[:pos] + char + frame[pos + 1 :]
            assert _reason(bad, inner, outer) == "bad-hex"
    assert _reason(frame + "a", inner, outer) == "bad-hex"
    assert _reason(frame[:-1], inner, outer) == "bad-hex"
    assert _reason("x" * 400, inner, outer) == "bad-hex"


def test_whitespace_is_not_hex() -> None:
    # bytes.fromhex() would skip the space and decode the same bytes; frames must be strict.
    inner, outer = _layers()
    frame = encode_frame(b'"x"', inner, outer)
    for pos in (2, 66, 130, 176, 300):
        for space in (" ", "\n", "\t"):
            assert _reason(frame[:pos] + space + frame[pos:], inner, outer) == "bad-hex"
    assert _reason(frame + "  ", inner, outer) == "bad-hex"
    assert _reason(" " + frame[:-1], inner, outer) == "bad-hex"


def test_uppercase_hex_is_accepted() -> None:
    # Rust's hex crate accepts either case, so we do too.
    inner, outer = _layers()
    frame = encode_frame(b'"x"', inner, outer)
    assert decode_frame(frame.upper(), inner, outer) == b'"x"'


def test_authenticated_but_malformed_layers() -> None:
    inner, outer = _layers()
    info = os.urandom(64)

    def frame_with_outer_plaintext(plaintext: bytes) -> str:
        blob = seal(outer.message_key(info[32:]), plaintext, os.urandom(24))
        return info.hex() + blob.hex()

    def reason(plaintext: bytes) -> str:
        with pytest.raises(FrameError) as exc:
            decode_frame(frame_with_outer_plaintext(plaintext), inner, outer)
        return exc.value.reason

    assert reason(b"123") == "bad-json"  # not a JSON string
    assert reason(b"not json") == "bad-json"
    assert reason(b'"\xff\xfe"') == "bad-json"  # quoted but not ASCII
    assert reason(b'"zz"') == "bad-hex"  # a string, but not hex
    assert reason(b'"' + os.urandom(60).hex().encode() + b'"') == "bad-auth"
    assert reason(b'"ab"') == "too-short"
    # An escaped but otherwise valid JSON string is accepted on the slow path.
    inner_blob = seal(inner.message_key(info[:32]), b'"ok"', os.urandom(24)).hex()
    escaped = json.dumps(inner_blob).replace("a", "\\u0061").encode()
    assert decode_frame(frame_with_outer_plaintext(escaped), inner, outer) == b'"ok"'


def test_unseal_rejects_short_blobs() -> None:
    key = os.urandom(32)
    for size in (0, 24, 40):
        with pytest.raises(FrameError) as info:
            unseal(key, os.urandom(size))
        assert info.value.reason == "too-short"
    with pytest.raises(FrameError) as info:
        unseal(key, os.urandom(41))
    assert info.value.reason == "bad-auth"


def test_parse_json_failures_are_frame_errors() -> None:
    for data in (b"", b"{", b"\xff", b"[" * 100_000, b'{"a":}'):
        with pytest.raises(FrameError) as info:
            parse_json(data)
        assert info.value.reason == "bad-json"


# --- replay guard ----------------------------------------------------------------------------


def test_replay_guard_rejects_a_repeat() -> None:
    inner, outer = _layers()
    guard = ReplayGuard()
    frame = encode_frame(b'"x"', inner, outer)
    guard.check(frame)
    with pytest.raises(FrameError) as info:
        guard.check(frame)
    assert info.value.reason == "replayed"
    with pytest.raises(FrameError):
        guard.check(frame.upper())
    guard.check(encode_frame(b'"x"', inner, outer))  # same payload, new frame: fine


def test_replay_guard_forgets_after_its_window() -> None:
    inner, outer = _layers()
    guard = ReplayGuard(window=3)
    frames = [encode_frame(b'"x"', inner, outer) for _ in range(5)]
    for frame in frames[:3]:
        guard.check(frame)
    for frame in frames[:3]:
        with pytest.raises(FrameError):
            guard.check(frame)
    guard.check(frames[3])  # pushes frames[0] out of the window
    guard.check(frames[0])  # forgotten, so accepted again (and now remembered)
    with pytest.raises(FrameError):
        guard.check(frames[0])
    # frames[1] was pushed out by frames[0]'s re-admission.
    guard.check(frames[1])
    with pytest.raises(FrameError):
        guard.check(frames[3])


def test_channel_rejects_replays_in_any_spelling() -> None:
    inner, outer = _layers()
    sender, receiver = Channel(inner, outer), Channel(inner, outer)
    frame = sender.seal("pay 10")
    assert receiver.open(frame) == "pay 10"
    for variant in (frame, frame.upper(), frame[:140] + frame[140:150].upper() + frame[150:]):
        with pytest.raises(FrameError) as info:
            receiver.open(variant)
        assert info.value.reason == "replayed"
    # A frame with whitespace inserted between byte pairs is not a new spelling either.
    with pytest.raises(FrameError):
        receiver.open(frame[:130] + " " + frame[130:])
    assert receiver.open(sender.seal("pay 10")) == "pay 10"


def test_channel_replay_window() -> None:
    inner, outer = _layers()
    sender, receiver = Channel(inner, outer), Channel(inner, outer, replay_window=2)
    frames = [sender.seal(str(i)) for i in range(3)]
    for i, frame in enumerate(frames):
        assert receiver.open(frame) == str(i)
    assert receiver.open(frames[0]) == "0"  # beyond the window of 2
    with pytest.raises(FrameError):
        receiver.open(frames[2])


@pytest.mark.parametrize("window", [-1, -4096])
def test_a_replay_window_cannot_be_negative(window: int) -> None:
    with pytest.raises(ValueError, match="cannot be negative"):
        ReplayGuard(window)


def test_channel_standby_poll_and_bad_payloads() -> None:
    inner, outer = _layers()
    sender, receiver = Channel(inner, outer), Channel(inner, outer)
    assert receiver.open(sender.seal_value({})) is None
    assert Channel.standby_answer() == {"server_is_secondary": False, "client_is_secondary": False}
    answer = sender.seal_value(Channel.standby_answer())
    with pytest.raises(FrameError) as info:
        receiver.open(answer)
    assert info.value.reason == "bad-payload"
    for value in (None, 0, 1.5, True, [], ["x"], {"a": 1}, {"": None}):
        with pytest.raises(FrameError) as info:
            receiver.open(sender.seal_value(value))
        assert info.value.reason == "bad-payload"
    assert receiver.open(sender.seal_value("{}")) == "{}"


# --- fuzzing ---------------------------------------------------------------------------------

_FUZZ_INNER, _FUZZ_OUTER = _layers()
_FUZZ_FRAME = encode_frame(dump_json("fuzz me"), _FUZZ_INNER, _FUZZ_OUTER)
_HEXISH = st.text(alphabet="0123456789abcdefABCDEF", min_size=0, max_size=600)
_NEAR_HEX = st.text(alphabet='0123456789abcdefABCDEFgxz \n\t"{}é\x00', max_size=600)
_FUZZ_SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def _only_frame_errors(text: str) -> None:
    try:
        result = decode_frame(text, _FUZZ_INNER, _FUZZ_OUTER)
    except FrameError:
        return
    # Only a spelling of the genuine frame may open.
    assert text.lower() == _FUZZ_FRAME
    assert result == b'"fuzz me"'


@_FUZZ_SETTINGS
@given(st.text(max_size=1000))
def test_fuzz_decode_arbitrary_text(text: str) -> None:
    _only_frame_errors(text)


@_FUZZ_SETTINGS
@given(st.one_of(_HEXISH, _NEAR_HEX))
def test_fuzz_decode_hexish(text: str) -> None:
    _only_frame_errors(text)


@st.composite
def _mutated_frames(draw: st.DrawFn) -> str:
    frame = _FUZZ_FRAME
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["replace", "insert", "delete", "truncate", "extend", "swap"]))
        pos = draw(st.integers(0, max(len(frame) - 1, 0)))
        if op == "replace" and frame:
            frame = frame[:pos] + draw(st.characters()) + frame[pos + 1 :]
        elif op == "insert":
            frame = frame[:pos] + draw(st.text(min_size=1, max_size=4)) + frame[pos:]
        elif op == "delete":
            frame = frame[:pos] + frame[pos + draw(st.integers(1, 8)) :]
        elif op == "truncate":
            frame = frame[:pos]
        elif op == "extend":
            frame += draw(st.one_of(_HEXISH, st.text(max_size=20)))
        elif op == "swap" and len(frame) > 1:
            other = draw(st.integers(0, len(frame) - 1))
            chars = list(frame)
            chars[pos], chars[other] = chars[other], chars[pos]
            frame = "".join(chars)
    return frame


@_FUZZ_SETTINGS
@given(_mutated_frames())
def test_fuzz_decode_mutated_frames(text: str) -> None:
    _only_frame_errors(text)


@_FUZZ_SETTINGS
@given(st.one_of(st.text(max_size=1000), _HEXISH, _mutated_frames()))
def test_fuzz_channel_open(text: str) -> None:
    channel = Channel(_FUZZ_INNER, _FUZZ_OUTER)
    try:
        result = channel.open(text)
    except FrameError:
        return
    assert text.lower() == _FUZZ_FRAME
    assert result == "fuzz me"
