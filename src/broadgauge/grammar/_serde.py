"""Helpers that decode parsed JSON with serde-derive semantics.

serde's derived ``Deserialize`` for a struct accepts a JSON object (unknown
keys ignored, a repeated *known* key is an error, missing ``Option`` fields are
``None``) and also a JSON array holding the fields positionally (where only
``#[serde(default)]`` fields may be missing at the end).  Maps, in contrast,
keep the last value of a repeated key.
"""

from __future__ import annotations

from typing import Any

from broadgauge.text import has_lone_surrogate

from ._text import U64_MAX, Pairs, is_array
from .errors import GrammarError

__all__ = ["map_value", "string_value", "struct_fields", "u64_value"]


def struct_fields(
    value: Any,
    type_name: str,
    fields: tuple[str, ...],
    *,
    required: tuple[str, ...] = (),
    defaults: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Collect the known fields of a struct given as object or array.

    ``required``: fields that must be present in the object form (non-Option
    fields without a default).  ``defaults``: fields that may be missing in the
    array form.  Returns only the fields actually present.
    """
    found: dict[str, Any] = {}
    if isinstance(value, dict):  # accept plain dicts from Python callers
        value = Pairs(value.items())
    if isinstance(value, Pairs):
        for key, item in value:
            if has_lone_surrogate(key):
                raise GrammarError(f"{type_name}: lone surrogate in a field name")
            if key in fields:
                if key in found:
                    raise GrammarError(f"{type_name}: duplicate field {key!r}")
                found[key] = item
        for name in required:
            if name not in found:
                raise GrammarError(f"{type_name}: missing field {name!r}")
        return found
    if is_array(value):
        if len(value) > len(fields):
            raise GrammarError(f"{type_name}: too many elements ({len(value)})")
        for index, name in enumerate(fields):
            if index < len(value):
                found[name] = value[index]
            elif name not in defaults:
                raise GrammarError(
                    f"{type_name}: invalid length {len(value)}, expected {len(fields)} elements"
                )
        return found
    raise GrammarError(f"{type_name}: expected a JSON object")


def string_value(value: Any, what: str) -> str:
    """A JSON string, else an error naming ``what``."""
    if not isinstance(value, str):
        raise GrammarError(f"{what}: expected a string")
    if has_lone_surrogate(value):
        raise GrammarError(f"{what}: lone surrogate in string")
    return value


def optional_string(value: Any, what: str) -> str | None:
    """``null`` or a JSON string."""
    return None if value is None else string_value(value, what)


def u64_value(value: Any, what: str) -> int:
    """A JSON integer in u64 range."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= U64_MAX:
        raise GrammarError(f"{what}: expected an unsigned 64-bit integer")
    return value


def map_value(value: Any, what: str) -> list[tuple[str, Any]]:
    """The members of a JSON object treated as a map (last duplicate wins)."""
    if isinstance(value, dict):
        return list(value.items())
    if not isinstance(value, Pairs):
        raise GrammarError(f"{what}: expected a JSON object")
    merged: dict[str, Any] = {}
    for key, item in value:
        merged[key] = item
    return list(merged.items())


def string_map(value: Any, what: str) -> dict[str, str]:
    """A JSON object of string values (last duplicate wins)."""
    return {
        string_value(key, f"{what} key"): string_value(item, f"{what}[{key!r}]")
        for key, item in map_value(value, what)
    }


def bool_value(value: Any, what: str) -> bool:
    """A JSON boolean."""
    if not isinstance(value, bool):
        raise GrammarError(f"{what}: expected a boolean")
    return value
