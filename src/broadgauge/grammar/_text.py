"""Low-level text helpers that reproduce Rust ``str`` semantics.

OpenPortal is written in Rust; its parsers use ``str::trim``,
``str::split_whitespace`` and ``f64``'s ``Display``.  Python's equivalents differ
in small ways (for example Python treats U+001C..U+001F as whitespace, Rust does
not), so every parser in this package goes through these helpers instead.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

__all__ = [
    "RUST_WHITESPACE",
    "ascii_lower",
    "format_f64",
    "json_dumps",
    "parse_rust_f64",
    "parse_rust_u64",
    "rust_split_whitespace",
    "rust_trim",
    "rust_trim_start",
]

# The Unicode ``White_Space`` property, which is what Rust's
# ``char::is_whitespace`` (and therefore ``trim``/``split_whitespace``) uses.
RUST_WHITESPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680"
    "\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
)
_WS_RUN = re.compile("[" + re.escape(RUST_WHITESPACE) + "]+")

U64_MAX = 2**64 - 1


def rust_trim(text: str) -> str:
    """Trim leading and trailing whitespace exactly as Rust's ``str::trim``."""
    return text.strip(RUST_WHITESPACE)


def rust_trim_start(text: str) -> str:
    """Trim leading whitespace exactly as Rust's ``str::trim_start``."""
    return text.lstrip(RUST_WHITESPACE)


def rust_split_whitespace(text: str) -> list[str]:
    """Split on runs of Unicode whitespace, like Rust's ``split_whitespace``."""
    return [part for part in _WS_RUN.split(text) if part]


def ascii_lower(text: str) -> str:
    """Lowercase ASCII letters only (Rust ``to_ascii_lowercase``)."""
    return text.translate(_ASCII_LOWER)


_ASCII_LOWER = {code: code + 32 for code in range(ord("A"), ord("Z") + 1)}

# Rust's ``f64::from_str`` grammar: optional sign, then inf/infinity/nan (any
# case) or a decimal number with optional exponent.  Unlike Python's float() it
# accepts no underscores and no surrounding whitespace.
_F64 = re.compile(
    r"[+-]?(?:(?i:inf|infinity|nan)|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)\Z"
)
_U64 = re.compile(r"\+?[0-9]+\Z")


def parse_rust_f64(text: str) -> float | None:
    """Parse like Rust's ``str::parse::<f64>()``; ``None`` when Rust would fail."""
    if not _F64.match(text):
        return None
    return float(text)


def parse_rust_u64(text: str) -> int | None:
    """Parse like Rust's ``str::parse::<u64>()``; ``None`` when Rust would fail."""
    if not _U64.match(text):
        return None
    value = int(text)
    return value if value <= U64_MAX else None


def f64_to_u64(value: float) -> int:
    """Rust's saturating ``f64 as u64`` cast (NaN -> 0, negative -> 0)."""
    if math.isnan(value) or value <= 0:
        return 0
    if math.isinf(value) or value >= 2.0**64:
        return U64_MAX
    return int(value)


def format_f64(value: float) -> str:
    """Render a float like Rust's ``f64`` ``Display``.

    Rust prints the shortest digits that round-trip (as Python's ``repr``) but
    never uses exponent notation and drops a trailing ``.0``:
    ``1000.0 -> "1000"``, ``1e21 -> "1000000000000000000000"``, ``1e-7 ->
    "0.0000001"``, NaN -> ``"NaN"``, infinity -> ``"inf"``.
    """
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    sign = "-" if math.copysign(1.0, value) < 0 else ""
    text = repr(abs(value))
    mantissa, _, exp_text = text.partition("e")
    exponent = int(exp_text) if exp_text else 0
    int_part, _, frac_part = mantissa.partition(".")
    if frac_part == "0":
        frac_part = ""
    digits = (int_part + frac_part).lstrip("0")
    # position of the decimal point relative to the start of ``digits``
    point = len(int_part) + exponent - (len(int_part + frac_part) - len(digits))
    if not digits:
        return sign + "0"
    if point <= 0:
        return sign + "0." + "0" * (-point) + digits
    if point >= len(digits):
        return sign + digits + "0" * (point - len(digits))
    return sign + digits[:point] + "." + digits[point:]


def json_dumps(value: Any) -> str:
    """Serialise compactly with serde_json's escaping (non-ASCII left as is)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


class JsonSyntaxError(Exception):
    """Raised by :func:`json_loads` for text serde_json would reject."""


class Pairs(list[tuple[str, Any]]):
    """A JSON object as the ordered list of its members (duplicates kept)."""


def is_array(value: Any) -> bool:
    """True for a parsed JSON array (``Pairs`` is a list too, but an object)."""
    return isinstance(value, list) and not isinstance(value, Pairs)


_JSON_WS = " \t\n\r"
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?")
_LITERALS = {"true": True, "false": False, "null": None}


def _number(text: str) -> int | float:
    if "." in text or "e" in text or "E" in text:
        return float(text)
    # Integers far outside u64 are only ever rejected later; avoid Python's
    # int() digit limit by handing them over as a float.
    if len(text) > 40:
        return float(text)
    return int(text)


def json_loads(text: str) -> Any:
    """Parse JSON text with serde_json's strictness, without recursion.

    Objects come back as :class:`Pairs` so callers can apply serde's duplicate
    rules (struct fields: error; maps: last wins).  Like serde_json this
    rejects ``NaN``/``Infinity``, trailing commas and trailing garbage, and
    (because ignored fields are skipped iteratively in Rust) accepts any
    nesting depth.  Lone surrogates are left in strings; the typed decoders
    reject them where serde_json would.
    """
    pos = 0
    length = len(text)
    # each frame: [container, pending_key]; containers are list or Pairs
    stack: list[tuple[list[Any], list[str | None]]] = []
    result: Any = None

    def skip(i: int) -> int:
        while i < length and text[i] in _JSON_WS:
            i += 1
        return i

    def fail(message: str) -> JsonSyntaxError:
        return JsonSyntaxError(f"{message} at offset {pos}")

    def read_key() -> str:
        """Read ``"key" :`` at ``pos``, leaving ``pos`` after the colon."""
        nonlocal pos
        if pos >= length or text[pos] != '"':
            raise fail("expected a key")
        key, pos = _scan_string(text, pos + 1)
        pos = skip(pos)
        if pos >= length or text[pos] != ":":
            raise fail("expected ':'")
        pos += 1
        return key

    def attach(value: Any) -> bool:
        """Add a finished value to the open container; True if it is the document."""
        if not stack:
            return True
        frame, pending = stack[-1]
        if isinstance(frame, Pairs):
            key = pending[0]
            assert key is not None
            frame.append((key, value))
        else:
            frame.append(value)
        return False

    expect_value = True
    while True:
        pos = skip(pos)
        if expect_value:
            if pos >= length:
                raise fail("EOF while parsing a value")
            ch = text[pos]
            value: Any
            if ch == "{":
                pos = skip(pos + 1)
                container: list[Any] = Pairs()
                if pos < length and text[pos] == "}":
                    pos += 1
                    value = container
                else:
                    stack.append((container, [read_key()]))
                    continue
            elif ch == "[":
                pos = skip(pos + 1)
                if pos < length and text[pos] == "]":
                    pos += 1
                    value = []
                else:
                    stack.append(([], [None]))
                    continue
            elif ch == '"':
                value, pos = _scan_string(text, pos + 1)
            elif ch == "-" or "0" <= ch <= "9":
                match = _NUMBER.match(text, pos)
                if match is None:
                    raise fail("invalid number")
                value = _number(match.group(0))
                pos = match.end()
            else:
                for literal, literal_value in _LITERALS.items():
                    if text.startswith(literal, pos):
                        value = literal_value
                        pos += len(literal)
                        break
                else:
                    raise fail("expected value")
            if attach(value):
                result = value
                break
            expect_value = False
            continue
        # after a value inside a container: ',' or the closing bracket
        frame, pending = stack[-1]
        closing = "}" if isinstance(frame, Pairs) else "]"
        if pos < length and text[pos] == ",":
            pos = skip(pos + 1)
            if isinstance(frame, Pairs):
                pending[0] = read_key()
            expect_value = True
            continue
        if pos < length and text[pos] == closing:
            pos += 1
            stack.pop()
            if attach(frame):
                result = frame
                break
            continue
        raise fail(f"expected ',' or {closing!r}")
    pos = skip(pos)
    if pos != length:
        raise fail("trailing characters")
    return result


def _scan_string(text: str, start: int) -> tuple[str, int]:
    try:
        return json.decoder.scanstring(text, start, True)  # type: ignore[attr-defined,no-any-return]
    except json.JSONDecodeError as exc:
        raise JsonSyntaxError(exc.msg) from None
