"""Rust-compatible text helpers: whitespace, f64 display and serde-like JSON."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broadgauge.grammar._text import (
    JsonSyntaxError,
    Pairs,
    format_f64,
    json_dumps,
    json_loads,
    parse_rust_f64,
    parse_rust_u64,
    rust_split_whitespace,
    rust_trim,
)


def test_whitespace_sets() -> None:
    assert rust_trim("\u3000x\u0085") == "x"
    assert rust_trim("\x1fx") == "\x1fx"
    assert rust_split_whitespace(" a\t\u00a0b\x1fc ") == ["a", "b\x1fc"]


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1000.0, "1000"),
        (1e21, "1000000000000000000000"),
        (1e-7, "0.0000001"),
        (0.1, "0.1"),
        (1.5, "1.5"),
        (-0.0, "-0"),
        (0.0, "0"),
        (123456789012345678901234567890.0, "123456789012345680000000000000"),
        (math.nan, "NaN"),
        (math.inf, "inf"),
        (-math.inf, "-inf"),
        (5e-324, "0." + "0" * 323 + "5"),
    ],
)
def test_format_f64(value: float, text: str) -> None:
    assert format_f64(value) == text


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_format_f64_round_trips(value: float) -> None:
    text = format_f64(value)
    assert "e" not in text
    assert float(text) == value


def test_rust_number_parsing() -> None:
    assert parse_rust_f64("1.") == 1.0
    assert parse_rust_f64("Infinity") == math.inf
    assert parse_rust_f64("1_000") is None
    assert parse_rust_f64(" 1") is None
    assert parse_rust_u64("+7") == 7
    assert parse_rust_u64("18446744073709551616") is None
    assert parse_rust_u64("٣") is None


def test_json_objects_keep_duplicates() -> None:
    value = json_loads('{"a":1,"a":[true,null],"b":{}}')
    assert isinstance(value, Pairs)
    assert list(value) == [("a", 1), ("a", [True, None]), ("b", Pairs())]


@pytest.mark.parametrize(
    "text",
    ["NaN", '{"a":Infinity}', "[1,]", '{"a":1,}', "01", "1 2", '"\\x"', "", "tru", '{"a" 1}'],
)
def test_json_rejections(text: str) -> None:
    with pytest.raises(JsonSyntaxError):
        json_loads(text)


def test_json_deep_nesting_and_big_numbers() -> None:
    deep = json_loads("[" * 5000 + "]" * 5000)
    assert isinstance(deep, list)
    assert json_loads("1" * 5000) == float("inf")
    assert json_loads("-0") == 0


def test_json_dumps_matches_serde() -> None:
    assert json_dumps({"a": "é\x01/\x7f", "b": [1, None]}) == '{"a":"é\\u0001/\x7f","b":[1,null]}'
