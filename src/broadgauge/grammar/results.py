"""Job results: the ``result`` / ``result_type`` pair of a finished job.

A completed job stores ``result`` = the JSON text of the value and
``result_type`` = the Rust type name (notes §3.8), e.g. ``("\\"a.p.portal:a.p:
portal.p\\"", "UserMapping")``.  ``None`` results have ``result`` null; error
results carry plain text under ``result_type`` ``"Error"``.

:func:`encode_result` picks the type name from the Python value (pass
``result_type`` for the ambiguous cases: an empty list, or ``StorageUsage``
versus ``StorageSize``); :func:`decode_result` is driven by the type name and
applies serde's rules (an unknown name is an error).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import identifiers
from ._serde import bool_value, string_value
from ._text import JsonSyntaxError, is_array, json_dumps, json_loads
from .award import AwardDetails, ProjectTemplate
from .calendar import Date
from .destination import Destination, Destinations
from .errors import GrammarError
from .reports import (
    DailyProjectUsageReport,
    ProjectStorageReport,
    ProjectUsageReport,
    StorageReport,
    UsageReport,
    decode_quota_map,
    encode_quota_map,
)
from .values import DateRange, Quota, QuotaLimit, StorageSize, Usage, Volume

__all__ = [
    "RESULT_TYPES",
    "ResultError",
    "decode_result",
    "encode_result",
]


@dataclass(frozen=True, slots=True)
class ResultError:
    """The error text of a job that finished in state ``Error``."""

    message: str


@dataclass(frozen=True)
class _Codec:
    """How one result type maps between Python values and JSON values."""

    py_type: type
    encode: Callable[[Any], Any]
    decode: Callable[[Any], Any]


def _text_codec(py_type: Any) -> _Codec:
    """Values serialised as their display string and read back with the type's ``parse``."""
    return _Codec(py_type, str, lambda v: py_type.parse(string_value(v, py_type.__name__)))


def _json_codec(py_type: Any) -> _Codec:
    """Values with ``to_json_value``/``from_json_value``."""
    return _Codec(py_type, lambda v: v.to_json_value(), py_type.from_json_value)


def _vec(codec: _Codec) -> _Codec:
    def decode(value: Any) -> list[Any]:
        if not is_array(value):
            raise GrammarError("expected a JSON array")
        return [codec.decode(item) for item in value]

    return _Codec(list, lambda items: [codec.encode(item) for item in items], decode)


def _string(value: Any) -> str:
    return string_value(value, "String")


_SCALARS: dict[str, _Codec] = {
    "String": _Codec(str, str, _string),
    "bool": _Codec(bool, bool, lambda v: bool_value(v, "bool")),
    "UserIdentifier": _text_codec(identifiers.UserIdentifier),
    "ProjectIdentifier": _text_codec(identifiers.ProjectIdentifier),
    "PortalIdentifier": _text_codec(identifiers.PortalIdentifier),
    "UserMapping": _text_codec(identifiers.UserMapping),
    "ProjectMapping": _text_codec(identifiers.ProjectMapping),
    "ProjectDetails": _json_codec(AwardDetails),
    "ProjectTemplate": _text_codec(ProjectTemplate),
    "Usage": _json_codec(Usage),
    "Date": _text_codec(Date),
    "DateRange": _text_codec(DateRange),
    "UsageReport": _json_codec(UsageReport),
    "ProjectUsageReport": _json_codec(ProjectUsageReport),
    "DailyProjectUsageReport": _json_codec(DailyProjectUsageReport),
    "StorageReport": _json_codec(StorageReport),
    "ProjectStorageReport": _json_codec(ProjectStorageReport),
    "Quota": _json_codec(Quota),
    "QuotaLimit": _json_codec(QuotaLimit),
    "StorageSize": _json_codec(StorageSize),
    # A StorageUsage is a transparent wrapper of StorageSize in Rust.
    "StorageUsage": _json_codec(StorageSize),
    # Rust's Volume deserialises as a bare string without validation.
    "Volume": _Codec(Volume, str, lambda v: Volume(string_value(v, "Volume"))),
    "Destination": _text_codec(Destination),
}

#: result types that have no ``Vec<...>`` form
_NO_VEC = ("bool", "ProjectTemplate")

RESULT_TYPES: dict[str, _Codec] = {
    **_SCALARS,
    **{f"Vec<{name}>": _vec(codec) for name, codec in _SCALARS.items() if name not in _NO_VEC},
    "HashMap<Volume, Quota>": _Codec(dict, encode_quota_map, decode_quota_map),
    "Destinations": _json_codec(Destinations),
}

# Which name ``encode_result`` picks for a Python type: every type but the
# containers, and a StorageSize is never called by its alias "StorageUsage".
_BY_TYPE: tuple[tuple[type, str], ...] = tuple(
    (codec.py_type, name)
    for name, codec in RESULT_TYPES.items()
    if codec.py_type not in (list, dict) and name != "StorageUsage"
)


def _type_name(value: Any) -> str:
    if isinstance(value, dict):
        return "HashMap<Volume, Quota>"
    if isinstance(value, list):
        if not value:
            raise GrammarError("cannot infer the result type of an empty list; pass result_type")
        return f"Vec<{_type_name(value[0])}>"
    for py_type, name in _BY_TYPE:
        if isinstance(value, py_type):
            return name
    raise GrammarError(f"no OpenPortal result type for {type(value).__name__}")


def encode_result(value: object, result_type: str | None = None) -> tuple[str | None, str]:
    """Encode a job result as ``(result JSON text or None, result_type)``.

    ``None`` encodes as ``(None, "None")`` and :class:`ResultError` as
    ``(message, "Error")`` (plain text, not JSON).
    """
    if value is None and result_type in (None, "None"):
        return None, "None"
    if isinstance(value, ResultError) and result_type in (None, "Error"):
        return value.message, "Error"
    name = result_type if result_type is not None else _type_name(value)
    codec = RESULT_TYPES.get(name)
    if codec is None:
        raise GrammarError(f"Unknown result type: {name}")
    if name.startswith("Vec<"):
        item_type = RESULT_TYPES[name[4:-1]].py_type
        if not isinstance(value, list) or not all(isinstance(v, item_type) for v in value):
            raise GrammarError(f"value is not a {name}")
    elif name == "HashMap<Volume, Quota>":
        if not isinstance(value, dict) or not all(
            isinstance(k, Volume) and isinstance(v, Quota) for k, v in value.items()
        ):
            raise GrammarError("value is not a HashMap<Volume, Quota>")
    elif not isinstance(value, codec.py_type) or (
        codec.py_type is not bool and isinstance(value, bool)
    ):
        raise GrammarError(f"value is not a {name}")
    return json_dumps(codec.encode(value)), name


def decode_result(result: str | None, result_type: str) -> object:
    """Decode a finished job's ``result`` according to its ``result_type``.

    ``"None"`` gives ``None``; ``"Error"`` gives :class:`ResultError`; any other
    name must be known and ``result`` must hold matching JSON.
    """
    if result_type == "None":
        return None
    if result_type == "Error":
        return ResultError("" if result is None else result)
    codec = RESULT_TYPES.get(result_type)
    if codec is None:
        raise GrammarError(f"Unknown result type: {result_type}")
    if result is None:
        raise GrammarError(f"No result available for result type {result_type}")
    try:
        value = json_loads(result)
    except JsonSyntaxError as exc:
        raise GrammarError(f"Invalid {result_type} result JSON: {exc}") from None
    return codec.decode(value)
