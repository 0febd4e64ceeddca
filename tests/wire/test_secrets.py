"""Secrets at rest (notes §2.4, errata 14-15)."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from argon2.low_level import Type, hash_secret_raw

from broadgauge.wire import (
    ConfigError,
    EnvironmentEncryption,
    Key,
    ServiceConfig,
    SimpleEncryption,
    decrypt_secret,
    encrypt_secret,
    key_from_password,
)
from broadgauge.wire.envelope import seal
from broadgauge.wire.secrets import scheme_from_dict, scheme_to_dict

from .tables import SERVICE, load_service, table

ARGON2_VECTORS = {
    "password": "45d42ce3fe56f785f184ea88f65a0fd3a42be522502954e7b6450898b54a1e05",
    "portal": "b13ba2e21ce7f24954be9cb923b8925602283165f52bbb30e999394039bb1a7d",
    "freeipa": "25ab2dd9d0327be66f816b03d374099372392d306325e9e223cc64516ecf7385",
}
SECRET123_STORED = (
    "999999999999999999999999999999999999999999999999"
    "f4de263f0bb4a6f11616fb0f1dcfc2008da73ee64b7b8db1f8f4ba"
)


@pytest.mark.parametrize(("password", "expected"), sorted(ARGON2_VECTORS.items()))
def test_argon2_vectors(password: str, expected: str) -> None:
    assert key_from_password(password).to_table() == {"data": expected}


# The reference's Argon2 parameters, written out independently of broadgauge.wire.secrets.
REFERENCE_ARGON2: dict[str, Any] = {
    "salt": bytes.fromhex("3a7f1b4c5d6e2f8a9bacbdcedfeff001"),
    "time_cost": 3,
    "memory_cost": 8,
    "parallelism": 1,
    "hash_len": 32,
    "version": 0x13,
}


def test_argon2_parameters_are_the_reference_ones() -> None:
    raw = hash_secret_raw(b"portal", type=Type.I, **REFERENCE_ARGON2)
    assert key_from_password("portal").secret_bytes == raw
    # Argon2id with the same inputs differs: the variant matters.
    other = hash_secret_raw(b"portal", type=Type.ID, **REFERENCE_ARGON2)
    assert key_from_password("portal").secret_bytes != other


def test_kdf_is_deterministic_and_password_sensitive() -> None:
    assert key_from_password("x") == key_from_password("x")
    assert key_from_password("x") != key_from_password("X")
    assert key_from_password("pässwörd") == key_from_password("pässwörd")
    assert key_from_password("") != key_from_password(" ")


def test_secret123_vector() -> None:
    key = key_from_password("freeipa")
    stored = encrypt_secret("Secret123", key, nonce=b"\x99" * 24)
    assert stored == SECRET123_STORED
    assert len(stored) == 2 * (24 + 11 + 16) == 102
    assert decrypt_secret(SECRET123_STORED, key) == "Secret123"


@pytest.mark.parametrize(
    "value", ["", "x", "Secret123", "pässwörd 🔑", 'quote " and \\', "\n\t\x00", "x" * 10_000]
)
def test_round_trip_with_random_nonce(value: str) -> None:
    key = Key.generate()
    first = encrypt_secret(value, key)
    second = encrypt_secret(value, key)
    assert first != second  # a fresh nonce each time
    assert first[:48] != second[:48]
    plaintext_len = len(json.dumps(value, ensure_ascii=False).encode())
    assert len(first) == 2 * (24 + plaintext_len + 16)
    assert decrypt_secret(first, key) == value
    assert decrypt_secret(second, key) == value


def test_plaintext_is_the_json_string() -> None:
    key = Key.generate()
    nonce = os.urandom(24)
    expected = seal(key.secret_bytes, '"héllo"'.encode(), nonce).hex()
    assert encrypt_secret("héllo", key, nonce=nonce) == expected


def test_wrong_key_is_config_error() -> None:
    stored = encrypt_secret("Secret123", key_from_password("freeipa"))
    with pytest.raises(ConfigError, match="password"):
        decrypt_secret(stored, key_from_password("portal"))
    with pytest.raises(ConfigError):
        decrypt_secret(SECRET123_STORED, Key.generate())


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "zz",
        "abc",
        SECRET123_STORED[:-2],
        SECRET123_STORED[:80],
        SECRET123_STORED + "00",
        "0" + SECRET123_STORED[1:],
        SECRET123_STORED[:-1] + ("0" if SECRET123_STORED[-1] != "0" else "1"),
        "99" * 40,
    ],
)
def test_damaged_values_are_config_errors(stored: str) -> None:
    with pytest.raises(ConfigError):
        decrypt_secret(stored, key_from_password("freeipa"))


def test_every_flip_of_the_stored_value_is_rejected() -> None:
    key = key_from_password("freeipa")
    for pos in range(len(SECRET123_STORED)):
        digit = "0123456789abcdef"[(int(SECRET123_STORED[pos], 16) + 5) % 16]
        with pytest.raises(ConfigError):
            decrypt_secret(SECRET123_STORED[:pos] + digit + SECRET123_STORED[pos + 1 :], key)


@pytest.mark.parametrize(
    "plaintext", [b"123", b"null", b'["a"]', b'{"a":"b"}', b"not json", b"\xff"]
)
def test_non_string_plaintext_is_config_error(plaintext: bytes) -> None:
    key = Key.generate()
    stored = seal(key.secret_bytes, plaintext, os.urandom(24)).hex()
    with pytest.raises(ConfigError):
        decrypt_secret(stored, key)


# --- schemes -------------------------------------------------------------------------------


def test_environment_reads_the_named_variable() -> None:
    scheme = EnvironmentEncryption("OP_TEST_PASSWORD")
    assert scheme.password("freeipa", {"OP_TEST_PASSWORD": "s3cret", "OTHER": "x"}) == "s3cret"


def test_environment_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OP_TEST_PASSWORD_ENV", "from-env")
    assert EnvironmentEncryption("OP_TEST_PASSWORD_ENV").password("svc") == "from-env"
    monkeypatch.delenv("OP_TEST_PASSWORD_ENV")
    with pytest.raises(ConfigError, match="OP_TEST_PASSWORD_ENV"):
        EnvironmentEncryption("OP_TEST_PASSWORD_ENV").password("svc")


@pytest.mark.parametrize("environ", [{}, {"OTHER": "x"}, {"OP_TEST_PASSWORD": ""}])
def test_environment_unset_is_a_clear_error(environ: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="OP_TEST_PASSWORD") as info:
        EnvironmentEncryption("OP_TEST_PASSWORD").password("svc", environ)
    assert "environment variable" in str(info.value)


def test_simple_uses_the_agent_name() -> None:
    assert SimpleEncryption().password("freeipa") == "freeipa"
    assert SimpleEncryption().password("freeipa", {"freeipa": "ignored"}) == "freeipa"
    key = key_from_password(SimpleEncryption().password("freeipa"))
    assert key.to_table() == {"data": ARGON2_VECTORS["freeipa"]}
    assert decrypt_secret(SECRET123_STORED, key) == "Secret123"


def test_end_to_end_with_a_config() -> None:
    encryption = {"Environment": {"key": "OPENPORTAL_CONFIG_PASSWORD"}}
    cfg = load_service(table(SERVICE, name="freeipa", encryption=encryption))
    assert cfg.encryption is not None
    password = cfg.encryption.password(cfg.name, {"OPENPORTAL_CONFIG_PASSWORD": "portal"})
    key = key_from_password(password)
    assert key.to_table()["data"] == ARGON2_VECTORS["portal"]
    assert decrypt_secret(encrypt_secret("hunter2", key), key) == "hunter2"


@pytest.mark.parametrize(
    "scheme", [SimpleEncryption(), EnvironmentEncryption("X"), EnvironmentEncryption("A_B_1")]
)
def test_scheme_dict_round_trip(scheme: SimpleEncryption | EnvironmentEncryption) -> None:
    assert scheme_from_dict(scheme_to_dict(scheme)) == scheme
    cfg = ServiceConfig(name="svc", url="ws://h:1/", encryption=scheme)
    assert ServiceConfig.loads(cfg.dumps()).encryption == scheme


def test_scheme_toml_shapes() -> None:
    assert scheme_to_dict(SimpleEncryption()) == {"Simple": {}}
    assert scheme_to_dict(EnvironmentEncryption("VAR")) == {"Environment": {"key": "VAR"}}
    assert scheme_from_dict({"Environment": {"key": "VAR"}}) == EnvironmentEncryption("VAR")
    assert scheme_from_dict({"Simple": {}}) == SimpleEncryption()


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"Environment": {}},
        {"Environment": {"key": 5}},
        {"Environment": "VAR"},
        {"Environment": {"key": "A"}, "Simple": {}},
        {"environment": {"key": "A"}},
        {"Bogus": {}},
        "Simple",
        ["Simple"],
        None,
    ],
)
def test_bad_scheme_dicts(data: object) -> None:
    with pytest.raises(ConfigError):
        scheme_from_dict(data)
