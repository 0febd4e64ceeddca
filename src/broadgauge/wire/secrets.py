"""Secrets at rest: values encrypted with a key derived from a password (notes §2.4).

Two schemes, matching the reference's config TOML (``[service.encryption.Environment]`` with
``key = "VAR"``, or ``[service.encryption.Simple]``):

* ``Environment``: the password is the value of the named environment variable;
* ``Simple``: the password is the service's own name.  This only obfuscates; say so to users.

The key is Argon2i (v1.3, t=3, m=8 KiB, p=1, fixed salt) of the password, and a value is stored
as ``hex(nonce ‖ XChaCha20-Poly1305(key, JSON string))``, exactly as the reference does, so a
config written by either implementation can be read by the other.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from argon2.low_level import Type, hash_secret_raw

from broadgauge.wire.envelope import NONCE_SIZE, seal, unseal
from broadgauge.wire.errors import ConfigError, FrameError
from broadgauge.wire.keys import Key

_KDF_SALT = bytes.fromhex("3a7f1b4c5d6e2f8a9bacbdcedfeff001")


@dataclass(frozen=True)
class EnvironmentEncryption:
    """Derive the secrets key from the environment variable named ``variable``."""

    variable: str

    def password(self, service_name: str, environ: Mapping[str, str] | None = None) -> str:
        """Return the password, or raise :class:`ConfigError` if the variable is unset."""
        env = os.environ if environ is None else environ
        value = env.get(self.variable)
        if not value:
            raise ConfigError(f"environment variable {self.variable} must hold the config password")
        return value


@dataclass(frozen=True)
class SimpleEncryption:
    """Derive the secrets key from the service name (obfuscation, not protection)."""

    def password(self, service_name: str, environ: Mapping[str, str] | None = None) -> str:
        """Return the service name."""
        return service_name


EncryptionScheme = EnvironmentEncryption | SimpleEncryption


def scheme_from_dict(data: Any) -> EncryptionScheme:
    """Parse the externally tagged TOML form."""
    if not isinstance(data, dict) or len(data) != 1:
        raise ConfigError("encryption must be one table: Environment or Simple")
    ((tag, body),) = data.items()
    if tag == "Simple":
        return SimpleEncryption()
    if tag == "Environment":
        if not isinstance(body, dict) or not isinstance(body.get("key"), str):
            raise ConfigError('Environment encryption needs key = "<ENVIRONMENT VARIABLE>"')
        return EnvironmentEncryption(body["key"])
    raise ConfigError(f"unknown encryption scheme {tag!r}; use Environment or Simple")


def scheme_to_dict(scheme: EncryptionScheme) -> dict[str, Any]:
    """Render the externally tagged TOML form."""
    if isinstance(scheme, SimpleEncryption):
        return {"Simple": {}}
    return {"Environment": {"key": scheme.variable}}


def key_from_password(password: str) -> Key:
    """Derive the 32-byte secrets key with the reference's Argon2i parameters."""
    raw = hash_secret_raw(
        password.encode("utf-8"),
        _KDF_SALT,
        time_cost=3,
        memory_cost=8,
        parallelism=1,
        hash_len=32,
        type=Type.I,
        version=19,
    )
    return Key(raw)


def encrypt_secret(value: str, key: Key, *, nonce: bytes | None = None) -> str:
    """Encrypt a secret value for storage.  ``nonce`` is for test vectors only."""
    plaintext = json.dumps(value, ensure_ascii=False).encode("utf-8")
    return seal(key.secret_bytes, plaintext, nonce or os.urandom(NONCE_SIZE)).hex()


def decrypt_secret(stored: str, key: Key) -> str:
    """Decrypt a stored secret; raise :class:`ConfigError` if the key or data is wrong."""
    try:
        plaintext = unseal(key.secret_bytes, bytes.fromhex(stored))
        value = json.loads(plaintext)
    except (ValueError, FrameError):
        raise ConfigError("cannot decrypt secret: wrong password or damaged value") from None
    if not isinstance(value, str):
        raise ConfigError("cannot decrypt secret: the stored value is not a string")
    return value
