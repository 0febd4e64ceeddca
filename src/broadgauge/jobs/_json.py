"""Strict JSON reading and Rust-compatible JSON writing for the jobs layer.

Python's :mod:`json` is more permissive than ``serde_json`` in ways that matter
for a wire-compatible peer, so every decode in this package goes through
:func:`loads` and the typed field readers below:

* ``NaN``/``Infinity`` and out-of-range floats (``1e400``) are rejected
  (``serde_json`` refuses them; Python would produce ``nan``/``inf``);
* ``-0`` is a *float* for ``serde_json`` (its integer path only yields negative
  values below zero), so an integer field holding ``-0`` is rejected just like
  in Rust;
* duplicate keys are recorded, so a struct reader can reject a duplicated
  *known* field (serde: "duplicate field `id`") while tolerating duplicated
  unknown keys, which serde ignores;
* ``bool`` is never accepted where an integer is expected (Python's ``True`` is
  an ``int``);
* a document holding a lone surrogate anywhere (legal as a ``\\ud800`` escape in
  Python, refused by Rust when decoding a ``String``, and never written by a Rust peer)
  is refused whole by :func:`loads`, and the typed readers refuse one in a ``str``
  handed to them.

:func:`dumps` writes compact JSON with raw UTF-8 and ``serde_json``'s escaping
(short escapes for ``\\b \\f \\n \\r \\t``, lowercase ``\\u00XX`` for other
control characters), which is exactly what :func:`json.dumps` does with
``ensure_ascii=False``.
"""

from __future__ import annotations

import enum
import functools
import json
import math
from collections.abc import Callable
from typing import Any, Final, NoReturn, Self, TypeVar

from broadgauge.text import decoded_lone_surrogate, has_lone_surrogate

from .errors import ProtocolError

__all__ = [
    "JsonObject",
    "WireEnum",
    "dumps",
    "loads",
]

#: Bounds of Rust integer types used on the wire.
U64_MAX: Final = 2**64 - 1
I64_MIN: Final = -(2**63)
I64_MAX: Final = 2**63 - 1

_T = TypeVar("_T")


_NO_KEYS: Final[frozenset[str]] = frozenset()


class JsonObject(dict[str, Any]):
    """A decoded JSON object that remembers which keys occurred more than once."""

    __slots__ = ("duplicate_keys",)

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        super().__init__(pairs)
        if len(self) == len(pairs):  # the common case: every key once, nothing to find
            self.duplicate_keys: frozenset[str] = _NO_KEYS
            return
        seen: set[str] = set()
        dups: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                dups.add(key)
            seen.add(key)
        self.duplicate_keys = frozenset(dups)


#: Integers of at most this many characters are shared (see :func:`same_int`); longer ones
#: are rare and are not kept.
SHARED_INT_DIGITS: Final = 20


def _parse_int(text: str) -> int | float:
    # serde_json parses "-0" through its float path (see module docstring).
    if text == "-0":
        return -0.0
    if len(text) <= SHARED_INT_DIGITS:
        return same_int(int(text))
    return int(text)


@functools.lru_cache(maxsize=4096, typed=True)
def same_int(value: int) -> int:
    """``value``, as one object for every equal value while it is recent.

    A board holds thousands of jobs whose timestamps fall in the same few seconds, and an
    int that large is an object of 32 bytes: three per job, most of them equal.
    """
    return value


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number out of range: {text}")
    return value


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not valid JSON")


#: One strict decoder for every document: ``json.loads`` with these hooks would build a new
#: decoder (and its scanner) for each call.
_DECODER: Final = json.JSONDecoder(
    object_pairs_hook=JsonObject,
    parse_int=_parse_int,
    parse_float=_parse_float,
    parse_constant=_reject_constant,
)


def loads(text: str | bytes, what: str, error: type[ProtocolError] = ProtocolError) -> Any:
    """Parse ``text`` as one strict JSON document; ``what`` names it in errors."""
    if isinstance(text, bytes | bytearray):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise error(f"{what}: not valid UTF-8 ({exc.reason})") from None
    if not isinstance(text, str):
        raise error(f"{what}: expected a JSON string, got {type(text).__name__}")
    try:
        value = _DECODER.decode(text)
    except RecursionError:
        raise error(f"{what}: JSON nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError is a ValueError
        raise error(f"{what}: invalid JSON: {exc}") from None
    if _decodes_to_surrogate(text, value):
        raise error(f"{what}: a string contains a lone UTF-16 surrogate")
    return value


#: One encoder for every document: ``json.dumps`` with these options would build one per call.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def dumps(value: Any) -> str:
    """Compact JSON, raw UTF-8, serde_json escaping; key order as given."""
    return _ENCODER.encode(value)


def _decodes_to_surrogate(text: str, value: object) -> bool:
    """Whether ``value``, decoded from ``text``, holds a lone surrogate anywhere.

    serde_json refuses a lone surrogate wherever it decodes a ``String`` (it skips one only
    in a field it ignores), and a Rust peer cannot write one, so a genuine peer never sends
    a document holding one: the whole document is refused, not just the fields we keep.  A
    raw surrogate in ``text`` (only possible in a ``str`` that never was UTF-8) is always
    lone, and ``isascii`` answers for most texts in constant time.
    """
    return has_lone_surrogate(text) or decoded_lone_surrogate(text, value)


#: JSON-flavoured type names, in the order they are tried (``bool`` before ``int``, of which
#: it is a subclass).
_TYPE_NAMES: Final = (
    (type(None), "null"),
    (bool, "boolean"),
    (int, "integer"),
    (float, "float"),
    (str, "string"),
    (list, "array"),
    (dict, "object"),
)


def type_name(value: object) -> str:
    """JSON-flavoured name of a decoded value's type, for error messages."""
    return next(
        (name for kind, name in _TYPE_NAMES if isinstance(value, kind)), type(value).__name__
    )


class Reader:
    """Typed access to the fields of one JSON object, with path-qualified errors.

    Unknown keys are ignored (serde's default without ``deny_unknown_fields``);
    a known key that occurs twice is an error, as in serde.
    """

    __slots__ = ("_error", "_obj", "path")

    def __init__(
        self,
        value: object,
        path: str,
        known: frozenset[str] | set[str],
        error: type[ProtocolError] = ProtocolError,
    ) -> None:
        self._error = error
        self.path = path
        if not isinstance(value, dict):
            self.fail(f"expected an object, got {type_name(value)}")
        self._obj: dict[str, Any] = value
        dups: frozenset[str] = getattr(value, "duplicate_keys", frozenset()) & frozenset(known)
        if dups:
            self.fail(f"duplicate field `{sorted(dups)[0]}`")

    def fail(self, message: str, key: str | None = None) -> NoReturn:
        """Raise the reader's error type for ``path[.key]``."""
        where = f"{self.path}.{key}" if key is not None else self.path
        raise self._error(f"{where}: {message}")

    def has(self, key: str) -> bool:
        """Whether ``key`` is present (even if null)."""
        return key in self._obj

    def raw(self, key: str) -> Any:
        """The raw value of a required field."""
        if key not in self._obj:
            self.fail(f"missing field `{key}`")
        return self._obj[key]

    def sub(self, key: str) -> str:
        """The error path of a nested value."""
        return f"{self.path}.{key}"

    def text(self, key: str, *, default: str | None = None) -> str:
        """A required string field (or ``default`` when absent and given)."""
        if key not in self._obj and default is not None:
            return default
        value = self.raw(key)
        # The same checks as check_text; the error path is only built when one fails.
        if type(value) is str and (value.isascii() or not has_lone_surrogate(value)):
            return value
        return check_text(value, self.sub(key), self._error)

    def opt_text(self, key: str) -> str | None:
        """An optional string field: absent or ``null`` give ``None``."""
        value = self._obj.get(key)
        if value is None:
            return None
        return check_text(value, self.sub(key), self._error)

    def integer(self, key: str, lo: int, hi: int, kind: str) -> int:
        """A required integer field within ``[lo, hi]``."""
        value = self.raw(key)
        if type(value) is int and lo <= value <= hi:  # check_int's checks, without the path
            return value
        return check_int(value, self.sub(key), (lo, hi), kind, self._error)

    def u64(self, key: str) -> int:
        """A required unsigned 64-bit integer (also used for Rust ``usize``)."""
        return self.integer(key, 0, U64_MAX, "an unsigned 64-bit integer")

    def i64(self, key: str) -> int:
        """A required signed 64-bit integer."""
        return self.integer(key, I64_MIN, I64_MAX, "a signed 64-bit integer")

    def number(self, key: str) -> float:
        """A required finite number (Rust ``f32``/``f64`` accept JSON integers too)."""
        value = self.raw(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(f"expected a number, got {type_name(value)}", key)
        return float(value)

    def boolean(self, key: str) -> bool:
        """A required boolean."""
        value = self.raw(key)
        if not isinstance(value, bool):
            self.fail(f"expected a boolean, got {type_name(value)}", key)
        return value

    def array(self, key: str, *, default_empty: bool = False) -> list[Any]:
        """A required array (or ``[]`` when absent and ``default_empty``)."""
        if default_empty and key not in self._obj:
            return []
        value = self.raw(key)
        if not isinstance(value, list):
            self.fail(f"expected an array, got {type_name(value)}", key)
        return value

    def text_list(self, key: str, *, default_empty: bool = False) -> list[str]:
        """An array of strings."""
        items = self.array(key, default_empty=default_empty)
        return [
            check_text(item, f"{self.sub(key)}[{i}]", self._error) for i, item in enumerate(items)
        ]

    def mapping(self, key: str, *, default_empty: bool = False) -> dict[str, Any]:
        """A JSON object used as a map (duplicate keys: last wins, as serde maps)."""
        if default_empty and key not in self._obj:
            return {}
        value = self.raw(key)
        if not isinstance(value, dict):
            self.fail(f"expected an object, got {type_name(value)}", key)
        return value

    def convert(self, key: str, parse: Callable[[Any, str], _T]) -> _T:
        """Decode a nested value with ``parse(value, path)``."""
        return parse(self.raw(key), self.sub(key))


def check_text(value: object, path: str, error: type[ProtocolError] = ProtocolError) -> str:
    """``value`` as a string that can be written back as UTF-8."""
    if not isinstance(value, str):
        raise error(f"{path}: expected a string, got {type_name(value)}")
    if has_lone_surrogate(value):
        raise error(f"{path}: string contains a lone UTF-16 surrogate")
    return value


def check_int(
    value: object,
    path: str,
    bounds: tuple[int, int],
    kind: str,
    error: type[ProtocolError] = ProtocolError,
) -> int:
    """``value`` as an integer within inclusive ``bounds`` (floats and booleans refused)."""
    lo, hi = bounds
    if isinstance(value, bool) or not isinstance(value, int):
        raise error(f"{path}: expected {kind}, got {type_name(value)} {value!r}")
    if not lo <= value <= hi:
        raise error(f"{path}: expected {kind}, got out-of-range {value}")
    return value


class WireEnum(enum.Enum):
    """A Rust enum of unit variants: ``value`` is the exact wire spelling (capitalised).

    ``str()`` gives the wire form and :attr:`display` Rust's lowercase ``Display`` form.
    """

    def __str__(self) -> str:
        return str(self.value)

    @property
    def display(self) -> str:
        """Rust's lowercase ``Display`` form, for human-facing text."""
        return str(self.value).lower()

    @classmethod
    def from_wire(cls, value: object) -> Self:
        """Decode the exact wire spelling; anything else raises ``ValueError``.

        serde would also take the map form ``{"Pending": null}``; no Rust writer produces
        it, so only the string is accepted.
        """
        if isinstance(value, str):
            try:
                return cls(value)
            except ValueError:
                pass
        expected = ", ".join(f"`{member.value}`" for member in cls)
        raise ValueError(f"unknown variant {value!r}, expected one of {expected}")
