"""Symmetric keys and connection salts.

A :class:`Key` is 32 random bytes.  On disk and on the wire OpenPortal writes every key as a
one-field table ``{ data = "<64 lowercase hex>" }`` (notes §0.2), so that is the only form
:meth:`Key.from_table` accepts.  A key never appears in ``repr`` or ``str``: logs and tracebacks
must not leak it.
"""

from __future__ import annotations

import hmac
import os
from typing import Any

from broadgauge.wire.errors import ConfigError

KEY_SIZE = 32


class Key:
    """A 32-byte secret key whose representation is always redacted."""

    __slots__ = ("_data",)

    def __init__(self, data: bytes) -> None:
        if len(data) != KEY_SIZE:
            raise ConfigError(f"a key must be {KEY_SIZE} bytes, not {len(data)}")
        if not any(data):
            # The reference refuses all-zero keys on load; they are never the output of a CSPRNG.
            raise ConfigError("a key must not be all zeros")
        self._data = bytes(data)

    @classmethod
    def generate(cls) -> Key:
        """Return a fresh key from the operating system's CSPRNG."""
        return cls(os.urandom(KEY_SIZE))

    @classmethod
    def from_hex(cls, text: str) -> Key:
        """Parse 64 hex digits."""
        if len(text) != 2 * KEY_SIZE:
            raise ConfigError(f"a key must be {2 * KEY_SIZE} hex digits, not {len(text)}")
        try:
            data = bytes.fromhex(text)
        except ValueError:
            raise ConfigError("a key must be hexadecimal") from None
        return cls(data)

    @classmethod
    def from_table(cls, value: Any) -> Key:
        """Parse the ``{data = "<hex>"}`` form used in TOML and JSON."""
        if isinstance(value, str):
            raise ConfigError('keys are written as tables: key = { data = "<64 hex digits>" }')
        if (
            not isinstance(value, dict)
            or set(value) != {"data"}
            or not isinstance(value["data"], str)
        ):
            raise ConfigError('a key must be a table with exactly one string field, "data"')
        return cls.from_hex(value["data"])

    def to_table(self) -> dict[str, str]:
        """Return the ``{"data": "<hex>"}`` form."""
        return {"data": self._data.hex()}

    @property
    def secret_bytes(self) -> bytes:
        """The raw key.  Named so that every use of the secret is easy to find."""
        return self._data

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Key):
            return NotImplemented
        return hmac.compare_digest(self._data, other._data)

    def __hash__(self) -> int:
        return hash(self._data)

    def __repr__(self) -> str:
        return "Key(<redacted>)"

    __str__ = __repr__


def xor_with_key(salt: bytes, key: Key) -> bytes:
    """Mask (or unmask) a salt with a key, byte by byte.

    Like the reference this zips the two, so a salt shorter than the key stays short.
    """
    size = min(len(salt), KEY_SIZE)
    masked = int.from_bytes(salt[:size], "big") ^ int.from_bytes(key.secret_bytes[:size], "big")
    return masked.to_bytes(size, "big")
