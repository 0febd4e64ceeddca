"""Value types used as instruction arguments and results.

* :class:`Volume` - a storage volume name.
* :class:`StorageSize` (and its result alias :class:`StorageUsage`) - a byte
  count with OpenPortal's lossy human display (``100.00 GB``).
* :class:`QuotaLimit` - ``unlimited`` or a :class:`StorageSize`.
* :class:`Quota` - a limit plus optional usage (result value only).
* :class:`Usage` - compute time in whole seconds.
* :class:`DateRange` - two inclusive dates; named ranges (``this_week`` ...)
  are resolved when parsed, in the local time zone, with Monday-based weeks.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from typing import Any, ClassVar

from ._serde import struct_fields, u64_value
from ._text import (
    U64_MAX,
    ascii_lower,
    f64_to_u64,
    parse_rust_u64,
    rust_split_whitespace,
    rust_trim,
)
from .calendar import Date, days_in_month
from .errors import GrammarError

__all__ = [
    "Date",
    "DateRange",
    "Quota",
    "QuotaLimit",
    "StorageSize",
    "StorageUsage",
    "Usage",
    "Volume",
]

KIB = 1024
MIB = 1024**2
GIB = 1024**3
TIB = 1024**4
PIB = 1024**5

_UNIT_FACTORS: dict[str, float] = {
    "B": 1.0,
    "KB": 1024.0,
    "MB": 1_048_576.0,
    "GB": 1_073_741_824.0,
    "TB": 1_099_511_627_776.0,
    "PB": 1_125_899_906_842_624.0,
    "BYTES": 1.0,
    "KILOBYTES": 1024.0,
    "MEGABYTES": 1_048_576.0,
    "GIGABYTES": 1_073_741_824.0,
    "TERABYTES": 1_099_511_627_776.0,
    "PETABYTES": 1_125_899_906_842_624.0,
}


@dataclass(frozen=True, slots=True)
class Volume:
    """The name of a storage volume (``home``, ``scratch`` ...)."""

    name: str

    @classmethod
    def parse(cls, text: str) -> Volume:
        """Trimmed, non-empty, no ASCII space."""
        name = rust_trim(text)
        if not name:
            raise GrammarError("Volume name cannot be empty")
        if " " in name:
            raise GrammarError(f"Volume name {name!r} cannot contain spaces")
        return cls(name)

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True, slots=True, order=True)
class StorageSize:
    """A number of bytes (0 .. 2**64-1)."""

    bytes: int

    def __post_init__(self) -> None:
        if not 0 <= self.bytes <= U64_MAX:
            raise GrammarError(f"Storage size out of range: {self.bytes}")

    @classmethod
    def parse(cls, text: str) -> StorageSize:
        """Parse ``100GB``, ``2 tb``, ``GB100``, ``0.5 KB``... (binary units).

        Rust quirk: every ASCII digit and ``.`` anywhere in the text forms the
        number and everything else (trimmed) the unit, so ``GB100`` is 100 GB.
        The byte count is the float product truncated to an integer.
        """
        quantity = rust_trim(text).upper()
        number_text = "".join(ch for ch in quantity if "0" <= ch <= "9" or ch == ".")
        unit = rust_trim("".join(ch for ch in quantity if not ("0" <= ch <= "9" or ch == ".")))
        number = _parse_number(number_text)
        if number is None:
            raise GrammarError(f"Failed to parse {number_text!r} as a number in {text!r}")
        factor = _UNIT_FACTORS.get(unit)
        if factor is None:
            raise GrammarError(f"Unknown unit {unit!r} in {text!r}")
        return cls(f64_to_u64(number * factor))

    def __str__(self) -> str:
        # Upper bounds are inclusive (1024 B, 1024.00 KB ...); Python's ".2f"
        # rounds the exact binary value half-to-even, as Rust's "{:.2}" does.
        n = self.bytes
        if n <= KIB:
            return f"{n} B"
        if n <= MIB:
            return f"{n / 1024.0:.2f} KB"
        if n <= GIB:
            return f"{n / 1_048_576.0:.2f} MB"
        if n <= TIB:
            return f"{n / 1_073_741_824.0:.2f} GB"
        if n <= PIB:
            return f"{n / 1_099_511_627_776.0:.2f} TB"
        return f"{n / 1_125_899_906_842_624.0:.2f} PB"

    def to_json_value(self) -> str:
        """JSON form: the display string."""
        return str(self)

    @classmethod
    def from_json_value(cls, value: Any) -> StorageSize:
        """Decode a display string or a non-negative integer byte count."""
        if isinstance(value, bool):
            raise GrammarError("StorageSize must be a string or an integer")
        if isinstance(value, int):
            if value < 0:
                raise GrammarError("storage size cannot be negative")
            return cls(value)
        if isinstance(value, str):
            return cls.parse(value)
        raise GrammarError("StorageSize must be a string or an integer")


def _parse_number(text: str) -> float | None:
    # ``text`` holds only ASCII digits and dots; Rust's f64 parser accepts
    # "1.", ".5" and "1.5" but not "." or "1.2.3".
    if not text or text == "." or text.count(".") > 1:
        return None
    return float(text)


# A storage usage is serialised exactly like a size (serde "transparent").
StorageUsage = StorageSize


@dataclass(frozen=True, slots=True)
class QuotaLimit:
    """A quota limit: a size, or unlimited when ``size`` is ``None``."""

    size: StorageSize | None

    UNLIMITED: ClassVar[QuotaLimit]

    @property
    def is_unlimited(self) -> bool:
        """True for the unlimited quota."""
        return self.size is None

    @classmethod
    def parse(cls, text: str) -> QuotaLimit:
        """Parse ``unlimited`` (any case) or a size; inner whitespace is removed."""
        trimmed = rust_trim(text)
        if not trimmed:
            raise GrammarError("Quota limit cannot be empty")
        if trimmed.isascii() and trimmed.lower() == "unlimited":
            return cls(None)
        return cls(StorageSize.parse("".join(rust_split_whitespace(trimmed))))

    @classmethod
    def of_bytes(cls, count: int) -> QuotaLimit:
        """A limited quota of ``count`` bytes."""
        return cls(StorageSize(count))

    def __str__(self) -> str:
        return "unlimited" if self.size is None else str(self.size)

    def to_json_value(self) -> str:
        """JSON form: the display string."""
        return str(self)

    @classmethod
    def from_json_value(cls, value: Any) -> QuotaLimit:
        """Decode the JSON string form."""
        if not isinstance(value, str):
            raise GrammarError("QuotaLimit must be a JSON string")
        return cls.parse(value)


QuotaLimit.UNLIMITED = QuotaLimit(None)


@dataclass(frozen=True, slots=True)
class Quota:
    """A quota limit and, when known, the storage used."""

    limit: QuotaLimit
    usage: StorageSize | None = None

    @property
    def percentage_used(self) -> float | None:
        """Usage as a percentage of a non-zero limited quota."""
        if self.limit.size is None or self.usage is None or self.limit.size.bytes == 0:
            return None
        return self.usage.bytes / self.limit.size.bytes * 100.0

    def __str__(self) -> str:
        if self.usage is None:
            return str(self.limit)
        if self.limit.size is None:
            return f"{self.usage} / unlimited"
        percentage = self.percentage_used
        if percentage is None:
            return f"{self.usage} / {self.limit}"
        return f"{self.usage} / {self.limit} | {percentage:.1f}%"

    def to_json_value(self) -> dict[str, str]:
        """``{"limit": ..., "usage": ...}`` with ``usage`` omitted when unknown."""
        value = {"limit": str(self.limit)}
        if self.usage is not None:
            value["usage"] = str(self.usage)
        return value

    @classmethod
    def from_json_value(cls, value: Any) -> Quota:
        """Decode the JSON object (or serde's positional array) form."""
        fields = struct_fields(value, "Quota", ("limit", "usage"), required=("limit",))
        limit = QuotaLimit.from_json_value(fields["limit"])
        usage_value = fields.get("usage")
        usage = None if usage_value is None else StorageSize.from_json_value(usage_value)
        return cls(limit, usage)


@dataclass(frozen=True, slots=True, order=True)
class Usage:
    """Compute time in whole seconds (u64)."""

    seconds: int

    def __post_init__(self) -> None:
        if not 0 <= self.seconds <= U64_MAX:
            raise GrammarError(f"Usage out of range: {self.seconds}")

    _UNITS: ClassVar[dict[str, int]] = {
        "seconds": 1,
        "second": 1,
        "s": 1,
        "minutes": 60,
        "minute": 60,
        "m": 60,
        "hours": 3600,
        "hour": 3600,
        "h": 3600,
        "days": 86400,
        "day": 86400,
        "d": 86400,
    }

    @classmethod
    def parse(cls, text: str) -> Usage:
        """Parse ``<u64> [unit]``; tokens after the unit are ignored.

        Rust multiplies with wrapping u64 arithmetic (release build), so we
        reduce modulo 2**64 as well.
        """
        parts = rust_split_whitespace(text)
        if not parts:
            raise GrammarError(f"Usage {text!r}: no duration found")
        factor = 1
        if len(parts) > 1:
            unit = cls._UNITS.get(ascii_lower(parts[1]))
            if unit is None:
                raise GrammarError(
                    f"Usage {text!r}: unit {parts[1]!r} should be seconds, minutes, hours or days"
                )
            factor = unit
        count = parse_rust_u64(parts[0])
        if count is None:
            raise GrammarError(f"Usage {text!r}: {parts[0]!r} is not a whole number of seconds")
        return cls((count * factor) % 2**64)

    def __str__(self) -> str:
        return str(self.seconds)

    def describe(self) -> str:
        """Human text as Rust's ``Display`` (``1.500 hours``, ``59 seconds``)."""
        s = self.seconds

        def unit(value: float, singular: str, plural: str) -> str:
            word = singular if abs(value - 1.0) < 0.0005 else plural
            return f"{value:.3f} {word}"

        if s < 60:
            return f"{s} {'second' if s == 1 else 'seconds'}"
        if s / 60.0 < 60.0:
            return unit(s / 60.0, "minute", "minutes")
        if s / 3600.0 < 24.0:
            return unit(s / 3600.0, "hour", "hours")
        if s / 86400.0 < 7.0:
            return unit(s / 86400.0, "day", "days")
        if s / 604800.0 < 4.5:
            return unit(s / 604800.0, "week", "weeks")
        if s / 2628000.0 < 12.0:
            return unit(s / 2628000.0, "month", "months")
        return unit(s / 31536000.0, "year", "years")

    def to_json_value(self) -> dict[str, int]:
        """``{"seconds": N}``."""
        return {"seconds": self.seconds}

    @classmethod
    def from_json_value(cls, value: Any) -> Usage:
        """Decode ``{"seconds": N}`` (or serde's positional ``[N]``)."""
        fields = struct_fields(value, "Usage", ("seconds",), required=("seconds",))
        return cls(u64_value(fields["seconds"], "Usage.seconds"))


def _today(today: _dt.date | None) -> Date:
    # chrono::Local::now() - the parsing host's local date.
    return Date.from_python(today if today is not None else _dt.date.today())


def _week(day: Date) -> tuple[Date, Date]:
    start = day.add_days(-day.weekday)
    return start, start.add_days(6)


def _month(day: Date) -> tuple[Date, Date]:
    return (
        Date(day.year, day.month, 1),
        Date(day.year, day.month, days_in_month(day.year, day.month)),
    )


def _year(day: Date) -> tuple[Date, Date]:
    return Date(day.year, 1, 1), Date(day.year, 12, 31)


def _named_range(name: str, today: Date) -> tuple[Date, Date] | None:
    if name in ("today", "this_day"):
        return today, today
    if name == "yesterday":
        day = today.add_days(-1)
        return day, day
    if name == "tomorrow":
        day = today.add_days(1)
        return day, day
    if name == "this_week":
        return _week(today)
    if name == "last_week":
        return _week(today.add_days(-7))
    if name == "this_month":
        return _month(today)
    if name == "last_month":
        return _month(Date(today.year, today.month, 1).add_days(-1))
    if name == "this_year":
        return _year(today)
    if name == "last_year":
        return _year(Date(today.year - 1, 1, 1))
    return None


@dataclass(frozen=True, slots=True)
class DateRange:
    """An inclusive range of dates; ``start > end`` is kept as written."""

    start: Date
    end: Date

    NAMED: ClassVar[tuple[str, ...]] = (
        "yesterday",
        "today",
        "this_day",
        "tomorrow",
        "this_week",
        "last_week",
        "this_month",
        "last_month",
        "this_year",
        "last_year",
    )

    @classmethod
    def parse(cls, text: str, *, today: _dt.date | None = None) -> DateRange:
        """Parse ``d1:d2``, ``d`` or a named range (case-insensitive).

        Named ranges resolve against ``today`` (default: the local date now).
        """
        lowered = rust_trim(text).lower()
        if not lowered:
            raise GrammarError(f"Invalid DateRange - cannot be empty {text!r}")
        named = _named_range(lowered, _today(today)) if lowered in cls.NAMED else None
        if named is not None:
            return cls(*named)
        parts = lowered.split(":")
        if len(parts) == 1:
            parts = [parts[0], parts[0]]
        elif len(parts) != 2:
            raise GrammarError(
                f"Invalid DateRange - must contain two dates, separated by a colon {text!r}"
            )
        return cls(Date.parse(parts[0]), Date.parse(parts[1]))

    @classmethod
    def of(cls, start: _dt.date | Date, end: _dt.date | Date) -> DateRange:
        """Build a range from two dates (kept in the given order)."""
        s = start if isinstance(start, Date) else Date.from_python(start)
        e = end if isinstance(end, Date) else Date.from_python(end)
        return cls(s, e)

    def days(self) -> list[Date]:
        """Every date from start to end inclusive (empty when start > end)."""
        return [self.start.add_days(i) for i in range(self.end.days - self.start.days + 1)]

    def __str__(self) -> str:
        return f"{self.start}:{self.end}"

    def to_json_value(self) -> str:
        """JSON form: the display string."""
        return str(self)


def parse_date(text: str) -> Date:
    """Parse a single date as ``Date::parse`` does (trimmed ``%Y-%m-%d``)."""
    return Date.parse(text)
