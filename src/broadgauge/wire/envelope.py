"""The double envelope: how every paddington frame is sealed and opened (notes §1.2-§1.3).

A frame is ASCII hex text::

    hex(inner_info) ‖ hex(outer_info) ‖ hex(outer_nonce ‖ outer_ciphertext ‖ outer_tag)

Each layer seals a JSON document with XChaCha20-Poly1305 (IETF, no associated data, random
24-byte nonce) under a per-message key ``HKDF-SHA512(salt, base key, info, 32)``.  The inner
layer seals the JSON of the value; the outer layer seals the JSON string literal of the inner
blob's hex.  Salts are fixed for a connection; the two 32-byte infos are fresh for each frame.

This module is pure: no I/O, no clocks.  The AEAD is libsodium's (PyNaCl) and HKDF is
``cryptography``'s; we only arrange their inputs.
"""

from __future__ import annotations

import binascii
import hmac
import json
import os
from collections.abc import Callable
from json.encoder import encode_basestring as _encode_string
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

# PyNaCl's own cffi binding of libsodium, which its ``nacl.bindings`` wrappers call.  We call
# the two AEAD functions directly: the wrappers check types and format their error messages
# on every call, which cost more than the cipher itself for a frame of a few KiB.  Sizes are
# checked here instead (_check_sizes); the tests compare the output with the wrappers'.
from nacl._sodium import ffi as _ffi
from nacl._sodium import lib as _lib

from broadgauge.text import decoded_lone_surrogate
from broadgauge.wire.errors import FrameError
from broadgauge.wire.keys import Key

INFO_SIZE = 32
NONCE_SIZE = 24
TAG_SIZE = 16
#: Two 64-hex-digit infos plus at least one byte of sealed data (the reference's lower bound).
MIN_FRAME_CHARS = 130
_SHA512 = hashes.SHA512()
#: The string scanner json.loads uses (untyped in typeshed).
_scanstring: Callable[[str, int, bool], tuple[str, int]] = json.decoder.scanstring  # type: ignore[attr-defined]


class LayerKey:
    """One layer's base key bound to the connection salt.

    HKDF is extract-then-expand.  The extract step depends only on the salt and the base key,
    both fixed for a connection phase, so it is done once here and each message pays only for
    the expand step.  The output is identical to a full HKDF per message.
    """

    __slots__ = ("_prk",)

    def __init__(self, key: Key, salt: bytes) -> None:
        # RFC 5869 §2.2: PRK = HMAC-Hash(salt, IKM).
        self._prk = hmac.digest(salt, key.secret_bytes, "sha512")

    def message_key(self, info: bytes) -> bytes:
        """Derive the 32-byte key for the message carrying ``info``."""
        return HKDFExpand(_SHA512, 32, info).derive(self._prk)


_KEY_SIZE = 32
_NULL = _ffi.NULL
_encrypt = _lib.crypto_aead_xchacha20poly1305_ietf_encrypt
_decrypt = _lib.crypto_aead_xchacha20poly1305_ietf_decrypt
assert _lib.crypto_aead_xchacha20poly1305_ietf_abytes() == TAG_SIZE
assert _lib.crypto_aead_xchacha20poly1305_ietf_npubbytes() == NONCE_SIZE
assert _lib.crypto_aead_xchacha20poly1305_ietf_keybytes() == _KEY_SIZE


def _check_sizes(key: bytes, nonce: bytes) -> None:
    # libsodium reads exactly 32 and 24 bytes from these: anything else must not reach it.
    if len(key) != _KEY_SIZE or len(nonce) != NONCE_SIZE:
        raise TypeError(f"AEAD key of {len(key)} bytes or nonce of {len(nonce)} bytes")


def _seal(key: bytes, plaintext: bytes, nonce: bytes, head: bytes = b"") -> bytearray:
    """``head ‖ nonce ‖ ciphertext ‖ tag``, written once into a buffer of the final size."""
    _check_sizes(key, nonce)
    size = len(plaintext)
    start = len(head) + NONCE_SIZE
    blob = bytearray(start + size + TAG_SIZE)
    blob[:start] = head + nonce
    out = _ffi.from_buffer("unsigned char[]", blob) + start
    _encrypt(out, _NULL, plaintext, size, _NULL, 0, _NULL, nonce, key)
    return blob


def _unseal(key: bytes, blob: bytes | memoryview) -> bytearray:
    """Open ``nonce ‖ ciphertext ‖ tag`` into a buffer of the plaintext's size."""
    size = len(blob) - NONCE_SIZE - TAG_SIZE
    if size <= 0:
        raise FrameError("too-short", f"sealed blob of {len(blob)} bytes")
    if len(key) != _KEY_SIZE:
        raise TypeError(f"AEAD key of {len(key)} bytes")
    plaintext = bytearray(size)
    out = _ffi.from_buffer("unsigned char[]", plaintext)
    sealed = _ffi.from_buffer("unsigned char[]", blob)
    if _decrypt(out, _NULL, _NULL, sealed + NONCE_SIZE, size + TAG_SIZE, _NULL, 0, sealed, key):
        raise FrameError("bad-auth", "authentication failed")
    return plaintext


def seal(key: bytes, plaintext: bytes, nonce: bytes) -> bytes:
    """Return ``nonce ‖ ciphertext ‖ tag``."""
    return bytes(_seal(key, plaintext, nonce))


def unseal(key: bytes, blob: bytes) -> bytes:
    """Open ``nonce ‖ ciphertext ‖ tag``; raise :class:`FrameError` if it does not verify."""
    return bytes(_unseal(key, blob))


_RANDOMNESS = 2 * INFO_SIZE + 2 * NONCE_SIZE


def encode_frame(
    plaintext: bytes,
    inner: LayerKey,
    outer: LayerKey,
    *,
    randomness: bytes | None = None,
) -> str:
    """Seal ``plaintext`` (already the JSON of the value) into a frame.

    ``randomness`` (112 bytes: inner info, outer info, inner nonce, outer nonce) exists for
    test vectors only; normally it is drawn from the OS CSPRNG in one call.
    """
    rnd = randomness if randomness is not None else os.urandom(_RANDOMNESS)
    inner_blob = _seal(inner.message_key(rnd[:32]), plaintext, rnd[64:88])
    # The outer plaintext is the JSON string literal of the inner blob's hex.  Hex digits need
    # no escaping, so quoting by hand gives exactly what a JSON encoder would.
    outer_plaintext = b'"%b"' % binascii.b2a_hex(inner_blob)
    # The two infos go in front of the outer blob, so the frame is one buffer's hex.
    frame = _seal(outer.message_key(rnd[32:64]), outer_plaintext, rnd[88:112], head=rnd[:64])
    return frame.hex()


def decode_frame(frame: str, inner: LayerKey, outer: LayerKey) -> bytes:
    """Open a frame and return the inner plaintext (the JSON of the value).

    Raises :class:`FrameError` with a ``reason`` of ``too-short``, ``bad-hex``, ``bad-auth`` or
    ``bad-json`` (which includes a string holding a lone UTF-16 surrogate).
    """
    return bytes(decode_frame_buffer(frame, inner, outer))


def decode_frame_buffer(frame: str, inner: LayerKey, outer: LayerKey) -> bytearray:
    """:func:`decode_frame`, returning the plaintext in the buffer it was opened into (one
    copy fewer for a caller that only reads it)."""
    if len(frame) < MIN_FRAME_CHARS:
        raise FrameError("too-short", f"frame of {len(frame)} characters")
    try:
        # One pass over the whole frame; the sealed part is then read through a view.
        # Strict hex: bytes.fromhex would skip whitespace, letting one frame be spelt many ways.
        raw = binascii.a2b_hex(frame)
    except ValueError:
        raise FrameError("bad-hex", "frame is not hexadecimal") from None
    inner_blob = open_outer(raw[32:64], memoryview(raw)[64:], outer)
    return _unseal(inner.message_key(raw[:32]), inner_blob)


def split_frame(frame: str) -> tuple[bytes, bytes, bytes]:
    """Return the inner info, the outer info and the sealed outer blob of a frame."""
    if len(frame) < MIN_FRAME_CHARS:
        raise FrameError("too-short", f"frame of {len(frame)} characters")
    try:
        # Strict hex: bytes.fromhex would skip whitespace, letting one frame be spelt many ways.
        return (
            binascii.a2b_hex(frame[:64]),
            binascii.a2b_hex(frame[64:128]),
            binascii.a2b_hex(frame[128:]),
        )
    except ValueError:
        raise FrameError("bad-hex", "frame is not hexadecimal") from None


def open_outer(outer_info: bytes, outer_blob: bytes | memoryview, outer: LayerKey) -> bytes:
    """Open the outer layer and return the inner sealed blob."""
    data = _unseal(outer.message_key(outer_info), outer_blob)
    if len(data) >= 2 and data[0] == 0x22 and data[-1] == 0x22:
        # What every sender writes, a quoted run of hex digits, read in place.  Anything
        # else fails here and is judged below, with the same reasons as always.
        try:
            return binascii.a2b_hex(memoryview(data)[1:-1])
        except ValueError:
            pass
    inner_hex = _json_string(data)
    try:
        return binascii.a2b_hex(inner_hex)
    except ValueError:
        raise FrameError("bad-hex", "inner blob is not hexadecimal") from None


def open_inner(inner_info: bytes, inner_blob: bytes, inner: LayerKey) -> bytes:
    """Open the inner layer and return the plaintext."""
    return unseal(inner.message_key(inner_info), inner_blob)


def _json_string(data: bytes | bytearray) -> str:
    # Fast path for what every sender writes: a quoted run of hex digits.
    if len(data) >= 2 and data[0] == 0x22 and data[-1] == 0x22 and b"\\" not in data:
        try:
            return data[1:-1].decode("ascii")
        except UnicodeDecodeError:
            raise FrameError("bad-json", "outer layer is not ASCII") from None
    value = parse_json(data)
    if not isinstance(value, str):
        raise FrameError("bad-json", "outer layer does not hold a JSON string")
    return value


def parse_json(data: bytes | bytearray) -> Any:
    """Parse UTF-8 JSON, turning every failure into :class:`FrameError`.

    Every frame a peer sends passes here, handshake and payloads alike.  Besides malformed
    JSON this refuses a string holding a lone UTF-16 surrogate (``"\\ud800"``): serde_json
    refuses it, so the reference never accepts such a frame, and Python would decode it into
    a ``str`` that no UTF-8 encoder (SQLite, the next frame we send) can write back.
    """
    try:
        # Decode as UTF-8 ourselves: json.loads(bytes) would also take UTF-16 and UTF-32,
        # which the reference refuses and the surrogate check below would not see through.
        text = data.decode("utf-8")
        value = _json_loads(text)
    except (ValueError, RecursionError):
        raise FrameError("bad-json", "payload is not valid UTF-8 JSON") from None
    if decoded_lone_surrogate(text, value):
        raise FrameError("bad-json", "a string holds a lone UTF-16 surrogate")
    return value


def _json_loads(text: str) -> Any:
    # A payload is a JSON string: read it with the scanner json.loads itself would call for
    # one, without the decoder's whitespace passes.  Anything else, or a string followed by
    # more text, goes to json.loads, which judges it exactly as before.
    if text[:1] == '"':
        try:
            value, end = _scanstring(text, 1, True)
        except ValueError:
            pass
        else:
            if end == len(text):
                return value
    return json.loads(text)


def dump_json(value: Any) -> bytes:
    """Serialise like serde_json: compact separators, non-ASCII kept as UTF-8."""
    if isinstance(value, str):
        # What json.dumps returns for a string, without building an encoder for each call.
        return _encode_string(value).encode("utf-8")
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


#: How many of a connection's last frames :class:`ReplayGuard` remembers, unless told.
REPLAY_WINDOW = 4096


class ReplayGuard:
    """Remembers the outer nonces of the last ``window`` frames accepted on one connection.

    Frames replayed onto another connection already fail authentication (the salts differ).
    This catches a frame replayed onto the *same* connection, which the reference accepts.
    Memory is bounded: a replay older than ``window`` frames is not detected.

    Only frames that opened (or that we sealed) are remembered, so the nonce is known to be
    hex.  It is kept as a number: hex digits may be either case on the wire and the number
    is the same for both, and it takes about half the memory of its text.  The order is a
    ring in a plain list, grown as frames come, rather than a deque, which would allocate a
    64-slot block on every link before its first frame.
    """

    __slots__ = ("_next", "_order", "_seen", "_window")

    def __init__(self, window: int = REPLAY_WINDOW) -> None:
        if window < 0:
            raise ValueError(f"the replay window cannot be negative ({window}); 0 remembers none")
        self._window = window
        self._seen: set[int] = set()
        self._order: list[int] = []
        self._next = 0  # once the ring is full, the slot of the oldest nonce

    def check(self, frame: str) -> None:
        """Raise :class:`FrameError` (``replayed``) if this frame was seen recently."""
        nonce = _nonce_of(frame)
        if nonce in self._seen:
            raise FrameError("replayed", "frame was already seen on this connection")
        self._remember(nonce)

    def sent(self, frame: str) -> None:
        """Remember a frame we sent.

        Both directions of a link use the same keys and salts, so a frame we sent would open
        if an attacker reflected it back to us.  Remembering it makes that a replay.
        """
        self._remember(_nonce_of(frame))

    def _remember(self, nonce: int) -> None:
        order = self._order
        if len(order) < self._window:
            order.append(nonce)
        elif order:
            slot = self._next
            self._seen.discard(order[slot])
            order[slot] = nonce
            self._next = (slot + 1) % self._window
        else:
            return  # a window of 0 remembers nothing
        self._seen.add(nonce)


def _nonce_of(frame: str) -> int:
    # The outer nonce is the first 48 hex digits after the two 64-digit infos.
    return int(frame[128 : 128 + 2 * NONCE_SIZE], 16)
