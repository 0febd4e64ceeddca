"""Keys: redaction, the ``{data = hex}`` table form, validation, equality, salt masking."""

from __future__ import annotations

import ipaddress

import pytest

from broadgauge.wire import ClientEntry, ConfigError, Invite, IpAllow, Key, ServerEntry
from broadgauge.wire.config import ServiceConfig
from broadgauge.wire.keys import KEY_SIZE, xor_with_key

HEX_A = "5b1c0e0d9a7f2e4c8b3a6d5e1f0a9c8b7e6d5c4b3a2f1e0d9c8b7a6f5e4d3c2b"
HEX_B = "c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7"


def _leaks(text: str, *hexes: str) -> bool:
    return any(h in text or h.upper() in text for h in hexes)


# --- redaction -------------------------------------------------------------------------------


def test_repr_and_str_are_redacted() -> None:
    key = Key.from_hex(HEX_A)
    for text in (repr(key), str(key), f"{key}", f"{key!r}", "%s" % (key,), format(key)):  # noqa: UP031
        assert not _leaks(text, HEX_A)
        assert "redacted" in text
    assert not _leaks(repr([key, {"k": key}]), HEX_A)


def test_key_has_no_instance_dict_to_dump() -> None:
    key = Key.from_hex(HEX_A)
    assert not hasattr(key, "__dict__")


def test_dataclasses_holding_keys_do_not_leak() -> None:
    inner, outer = Key.from_hex(HEX_A), Key.from_hex(HEX_B)
    invite = Invite("portal", "wss://portal.example.org", "default", inner, outer)
    client = ClientEntry("bridge", "default", IpAllow.parse("10.1.2.3"), inner, outer)
    server = ServerEntry("portal", "wss://portal.example.org", "default", inner, outer)
    config = ServiceConfig(
        name="portal", url="ws://localhost:8040/", clients=(client,), servers=(server,)
    )
    for obj in (invite, client, server, config):
        for text in (repr(obj), str(obj), f"{obj}", f"{obj!r}"):
            assert not _leaks(text, HEX_A, HEX_B), type(obj).__name__
    # The invite still says who it is for.
    assert "portal" in repr(invite)
    assert "redacted" in repr(invite)


def test_exception_messages_do_not_leak_a_bad_key() -> None:
    # A key that fails validation (here: wrong length) is not echoed back in the error.
    bad = HEX_A[:-2]
    with pytest.raises(ConfigError) as info:
        Key.from_hex(bad)
    assert bad not in str(info.value)


# --- the table form ------------------------------------------------------------------------


def test_to_table_is_lowercase_hex_data() -> None:
    key = Key(bytes(range(1, 33)))
    assert key.to_table() == {"data": bytes(range(1, 33)).hex()}
    assert key.to_table()["data"] == key.to_table()["data"].lower()
    assert Key.from_table(key.to_table()) == key


def test_from_table_accepts_uppercase_hex_and_normalises() -> None:
    key = Key.from_table({"data": HEX_A.upper()})
    assert key.to_table() == {"data": HEX_A}
    assert key.secret_bytes == bytes.fromhex(HEX_A)


def test_bare_hex_string_gets_a_helpful_error() -> None:
    with pytest.raises(ConfigError, match=r"data = "):
        Key.from_table(HEX_A)


@pytest.mark.parametrize(
    "value",
    [
        {"data": HEX_A, "extra": "x"},
        {"Data": HEX_A},
        {},
        {"data": 5},
        {"data": None},
        {"data": [HEX_A]},
        [HEX_A],
        None,
        42,
        b"\x01" * 32,
    ],
)
def test_from_table_rejects_other_shapes(value: object) -> None:
    with pytest.raises(ConfigError):
        Key.from_table(value)


@pytest.mark.parametrize(
    "text",
    [
        "00" * 32,  # all zero
        "0" * 64,
        HEX_A[:-1],  # 63 digits
        HEX_A[:-2],  # 31 bytes
        HEX_A + "0",  # 65 digits
        HEX_A + "00",  # 33 bytes
        "",
        "g" + HEX_A[1:],  # non-hex
        "zz" * 32,
        "é" + HEX_A[1:],  # non-ASCII
        " " + HEX_A[1:],  # whitespace would shrink the key
        "11 " * 21 + "1",  # 64 characters, but fewer than 32 bytes
    ],
)
def test_from_hex_rejects_bad_keys(text: str) -> None:
    with pytest.raises(ConfigError):
        Key.from_hex(text)
    with pytest.raises(ConfigError):
        Key.from_table({"data": text})


@pytest.mark.parametrize("size", [0, 1, 16, 31, 33, 64])
def test_constructor_rejects_wrong_sizes(size: int) -> None:
    with pytest.raises(ConfigError):
        Key(b"\x01" * size)


def test_constructor_rejects_all_zero() -> None:
    with pytest.raises(ConfigError, match="zero"):
        Key(bytes(KEY_SIZE))
    # The hex and table forms say why, too (not "must be hexadecimal").
    with pytest.raises(ConfigError, match="zero"):
        Key.from_hex("00" * 32)
    with pytest.raises(ConfigError, match="zero"):
        Key.from_table({"data": "00" * 32})
    # One non-zero byte is enough.
    assert Key(bytes(31) + b"\x01").secret_bytes == bytes(31) + b"\x01"


def test_config_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        Key.from_hex("nope")


# --- equality ------------------------------------------------------------------------------


def test_equality_and_hash() -> None:
    a1, a2, b = Key.from_hex(HEX_A), Key.from_hex(HEX_A.upper()), Key.from_hex(HEX_B)
    assert a1 == a2
    assert hash(a1) == hash(a2)
    assert a1 != b
    assert (a1 == b) is False
    assert len({a1, a2, b}) == 2
    # Never equal to the raw bytes or the hex it was made from.
    assert a1 != bytes.fromhex(HEX_A)
    assert a1 != HEX_A
    assert a1 != {"data": HEX_A}
    assert a1.__eq__(HEX_A) is NotImplemented


def test_generate_gives_distinct_valid_keys() -> None:
    keys = {Key.generate() for _ in range(50)}
    assert len(keys) == 50
    for key in keys:
        assert len(key.secret_bytes) == KEY_SIZE
        assert Key.from_table(key.to_table()) == key


def test_secret_bytes_is_immutable_copy() -> None:
    raw = bytearray(bytes.fromhex(HEX_A))
    key = Key(bytes(raw))
    raw[0] ^= 0xFF
    assert key.secret_bytes == bytes.fromhex(HEX_A)
    assert isinstance(key.secret_bytes, bytes)


# --- salt masking --------------------------------------------------------------------------


def test_xor_with_key_is_an_involution() -> None:
    key = Key.from_hex(HEX_A)
    salt = bytes(range(32))
    masked = xor_with_key(salt, key)
    assert masked != salt
    assert xor_with_key(masked, key) == salt
    assert masked == bytes(a ^ b for a, b in zip(salt, bytes.fromhex(HEX_A), strict=True))


def test_xor_with_key_known_values() -> None:
    # Notes §1.3: 0x33 ⊕ 0x22 = 0x11 and 0x44 ⊕ 0x11 = 0x55.
    assert xor_with_key(b"\x33" * 32, Key(b"\x22" * 32)) == b"\x11" * 32
    assert xor_with_key(b"\x44" * 32, Key(b"\x11" * 32)) == b"\x55" * 32


def test_xor_with_key_zips_like_the_reference() -> None:
    key = Key.from_hex(HEX_A)
    assert xor_with_key(b"", key) == b""
    assert len(xor_with_key(b"\x00" * 5, key)) == 5
    assert xor_with_key(b"\x00" * 5, key) == bytes.fromhex(HEX_A)[:5]
    # A longer salt is cut to the key length.
    assert len(xor_with_key(b"\x00" * 40, key)) == 32


def test_entries_compare_keys_by_value() -> None:
    # Two entries holding equal keys are equal; swapping the keys makes them differ.
    inner, outer = Key.from_hex(HEX_A), Key.from_hex(HEX_B)
    ip = IpAllow(ipaddress.ip_network("10.0.0.1"), False)
    assert ClientEntry("x", "default", ip, inner, outer) == ClientEntry(
        "x", "default", ip, Key.from_hex(HEX_A), Key.from_hex(HEX_B)
    )
    assert ClientEntry("x", "default", ip, inner, outer) != ClientEntry(
        "x", "default", ip, outer, inner
    )
