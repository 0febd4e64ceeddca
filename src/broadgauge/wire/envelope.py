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
from collections import deque
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand
from nacl.bindings import (
    crypto_aead_xchacha20poly1305_ietf_decrypt as _aead_open,
)
from nacl.bindings import (
    crypto_aead_xchacha20poly1305_ietf_encrypt as _aead_seal,
)
from nacl.exceptions import CryptoError

from broadgauge.text import decoded_lone_surrogate
from broadgauge.wire.errors import FrameError
from broadgauge.wire.keys import Key

INFO_SIZE = 32
NONCE_SIZE = 24
TAG_SIZE = 16
#: Two 64-hex-digit infos plus at least one byte of sealed data (the reference's lower bound).
MIN_FRAME_CHARS = 130
_SHA512 = hashes.SHA512()


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


def seal(key: bytes, plaintext: bytes, nonce: bytes) -> bytes:
    """Return ``nonce ‖ ciphertext ‖ tag``."""
    return nonce + _aead_seal(plaintext, None, nonce, key)


def unseal(key: bytes, blob: bytes) -> bytes:
    """Open ``nonce ‖ ciphertext ‖ tag``; raise :class:`FrameError` if it does not verify."""
    if len(blob) <= NONCE_SIZE + TAG_SIZE:
        raise FrameError("too-short", f"sealed blob of {len(blob)} bytes")
    try:
        return bytes(_aead_open(blob[NONCE_SIZE:], None, blob[:NONCE_SIZE], key))
    except CryptoError:
        raise FrameError("bad-auth", "authentication failed") from None


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
    rnd = randomness if randomness is not None else os.urandom(2 * INFO_SIZE + 2 * NONCE_SIZE)
    inner_info = rnd[:32]
    outer_info = rnd[32:64]
    inner_blob = seal(inner.message_key(inner_info), plaintext, rnd[64:88])
    # The outer plaintext is the JSON string literal of the inner blob's hex.  Hex digits need
    # no escaping, so quoting by hand gives exactly what a JSON encoder would.
    outer_plaintext = b'"' + inner_blob.hex().encode("ascii") + b'"'
    outer_blob = seal(outer.message_key(outer_info), outer_plaintext, rnd[88:112])
    return inner_info.hex() + outer_info.hex() + outer_blob.hex()


def decode_frame(frame: str, inner: LayerKey, outer: LayerKey) -> bytes:
    """Open a frame and return the inner plaintext (the JSON of the value).

    Raises :class:`FrameError` with a ``reason`` of ``too-short``, ``bad-hex``, ``bad-auth`` or
    ``bad-json`` (which includes a string holding a lone UTF-16 surrogate).
    """
    inner_info, outer_info, outer_blob = split_frame(frame)
    return open_inner(inner_info, open_outer(outer_info, outer_blob, outer), inner)


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


def open_outer(outer_info: bytes, outer_blob: bytes, outer: LayerKey) -> bytes:
    """Open the outer layer and return the inner sealed blob."""
    inner_hex = _json_string(unseal(outer.message_key(outer_info), outer_blob))
    try:
        return binascii.a2b_hex(inner_hex)
    except ValueError:
        raise FrameError("bad-hex", "inner blob is not hexadecimal") from None


def open_inner(inner_info: bytes, inner_blob: bytes, inner: LayerKey) -> bytes:
    """Open the inner layer and return the plaintext."""
    return unseal(inner.message_key(inner_info), inner_blob)


def _json_string(data: bytes) -> str:
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


def parse_json(data: bytes) -> Any:
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
        value = json.loads(text)
    except (ValueError, RecursionError):
        raise FrameError("bad-json", "payload is not valid UTF-8 JSON") from None
    if decoded_lone_surrogate(text, value):
        raise FrameError("bad-json", "a string holds a lone UTF-16 surrogate")
    return value


def dump_json(value: Any) -> bytes:
    """Serialise like serde_json: compact separators, non-ASCII kept as UTF-8."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class ReplayGuard:
    """Remembers the outer nonces of the last ``window`` frames accepted on one connection.

    Frames replayed onto another connection already fail authentication (the salts differ).
    This catches a frame replayed onto the *same* connection, which the reference accepts.
    Memory is bounded: a replay older than ``window`` frames is not detected.
    """

    __slots__ = ("_order", "_seen", "_window")

    def __init__(self, window: int = 4096) -> None:
        self._window = window
        self._seen: set[str] = set()
        self._order: deque[str] = deque()

    def check(self, frame: str) -> None:
        """Raise :class:`FrameError` (``replayed``) if this frame was seen recently."""
        # The outer nonce is the first 48 hex digits after the two infos; hex digits may be
        # either case on the wire, so fold them or an upper-cased replay would pass.
        nonce = frame[128 : 128 + 2 * NONCE_SIZE].lower()
        if nonce in self._seen:
            raise FrameError("replayed", "frame was already seen on this connection")
        self._remember(nonce)

    def sent(self, frame: str) -> None:
        """Remember a frame we sent.

        Both directions of a link use the same keys and salts, so a frame we sent would open
        if an attacker reflected it back to us.  Remembering it makes that a replay.
        """
        self._remember(frame[128 : 128 + 2 * NONCE_SIZE])

    def _remember(self, nonce: str) -> None:
        self._seen.add(nonce)
        self._order.append(nonce)
        if len(self._order) > self._window:
            self._seen.discard(self._order.popleft())
