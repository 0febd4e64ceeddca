"""Proleptic Gregorian dates and UTC timestamps with chrono's range and syntax.

OpenPortal parses dates with Rust's chrono, whose years run from -262143 to
262142 (Python's ``datetime`` stops at 1..9999) and whose parser is lenient in
specific ways (``2024-1-5``, whitespace before numeric fields, ``+10000``).
This module re-implements just what the grammar needs: :class:`Date` (a
calendar day) and :class:`Timestamp` (an instant in UTC with nanoseconds and
chrono's leap-second representation).
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from functools import total_ordering

from ._text import rust_trim, rust_trim_start
from .errors import GrammarError

__all__ = ["MAX_YEAR", "MIN_YEAR", "Date", "Timestamp"]

MIN_YEAR = -262143
MAX_YEAR = 262142

_DAYS_IN_MONTH = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def is_leap(year: int) -> bool:
    """Proleptic Gregorian leap year rule (valid for negative years too)."""
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def days_in_month(year: int, month: int) -> int:
    """Number of days of ``month`` in ``year``."""
    if month == 2 and is_leap(year):
        return 29
    return _DAYS_IN_MONTH[month - 1]


def days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 (H. Hinnant's algorithm, any year)."""
    y = year - (1 if month <= 2 else 0)
    era = y // 400
    yoe = y - era * 400
    mp = (month + 9) % 12
    doy = (153 * mp + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def civil_from_days(days: int) -> tuple[int, int, int]:
    """Inverse of :func:`days_from_civil`."""
    z = days + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    return (y + (1 if m <= 2 else 0), m, d)


def _format_year(year: int) -> str:
    # chrono's %Y: four digits inside 0..=9999, otherwise an explicit sign.
    if 0 <= year <= 9999:
        return f"{year:04d}"
    return f"{year:+05d}"


class _Scanner:
    """A cursor over text implementing chrono's numeric/literal items."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def rest(self) -> str:
        return self.text[self.pos :]

    def skip_space(self) -> None:
        rest = self.rest()
        self.pos += len(rest) - len(rust_trim_start(rest))

    def digits(self, minimum: int, maximum: int) -> int | None:
        start = self.pos
        while (
            self.pos < len(self.text)
            and self.pos - start < maximum
            and "0" <= self.text[self.pos] <= "9"
        ):
            self.pos += 1
        if self.pos - start < minimum:
            return None
        return int(self.text[start : self.pos])

    def number(self, width: int) -> int | None:
        """An unsigned numeric field (leading whitespace skipped, like chrono)."""
        self.skip_space()
        return self.digits(1, width)

    def year(self) -> int | None:
        """chrono's signed year: up to 4 digits, or any digits after a sign."""
        self.skip_space()
        if self.rest().startswith(("+", "-")):
            negative = self.text[self.pos] == "-"
            self.pos += 1
            value = self.digits(1, 10**6)
            if value is None:
                return None
            return -value if negative else value
        return self.digits(1, 4)

    def literal(self, char: str) -> bool:
        if self.rest().startswith(char):
            self.pos += len(char)
            return True
        return False


def _valid_ymd(year: int, month: int, day: int) -> bool:
    return (
        MIN_YEAR <= year <= MAX_YEAR and 1 <= month <= 12 and 1 <= day <= days_in_month(year, month)
    )


def _scan_ymd(scanner: _Scanner, space_between: bool) -> tuple[int, int, int] | None:
    year = scanner.year()
    if year is None:
        return None
    numbers = [year]
    for _ in range(2):  # "-" month, then "-" day
        if space_between:
            scanner.skip_space()
        if not scanner.literal("-"):
            return None
        number = scanner.number(2)
        if number is None:
            return None
        numbers.append(number)
    year, month, day = numbers
    return (year, month, day)


@total_ordering
@dataclass(frozen=True, slots=True)
class Date:
    """A calendar day in chrono's proleptic Gregorian range."""

    year: int
    month: int
    day: int

    def __post_init__(self) -> None:
        if not _valid_ymd(self.year, self.month, self.day):
            raise GrammarError(f"Invalid date {self.year}-{self.month}-{self.day}")

    @classmethod
    def parse(cls, text: str) -> Date:
        """Parse a trimmed ``%Y-%m-%d`` the way OpenPortal's ``Date::parse`` does.

        Accepts ``2024-1-5``, ``+10000-01-01`` and whitespace before the month
        and day numbers (chrono quirks); rejects trailing characters.
        """
        trimmed = rust_trim(text)
        if not trimmed:
            raise GrammarError(f"Invalid Date - cannot be empty {text!r}")
        scanner = _Scanner(trimmed)
        ymd = _scan_ymd(scanner, space_between=False)
        if ymd is None or scanner.rest() or not _valid_ymd(*ymd):
            raise GrammarError(f"Invalid Date - date cannot be parsed from {text!r}")
        return cls(*ymd)

    @classmethod
    def from_python(cls, value: _dt.date) -> Date:
        """Convert from :class:`datetime.date`."""
        return cls(value.year, value.month, value.day)

    @classmethod
    def from_ordinal_days(cls, days: int) -> Date:
        """The date ``days`` after 1970-01-01."""
        return cls(*civil_from_days(days))

    def to_python(self) -> _dt.date:
        """Convert to :class:`datetime.date` (only for years 1..9999)."""
        return _dt.date(self.year, self.month, self.day)

    @property
    def days(self) -> int:
        """Days since 1970-01-01."""
        return days_from_civil(self.year, self.month, self.day)

    def add_days(self, count: int) -> Date:
        """The date ``count`` days later (or earlier when negative)."""
        return Date.from_ordinal_days(self.days + count)

    @property
    def weekday(self) -> int:
        """Monday = 0 ... Sunday = 6."""
        return (self.days + 3) % 7

    def __str__(self) -> str:
        return f"{_format_year(self.year)}-{self.month:02d}-{self.day:02d}"

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Date):
            return NotImplemented
        return (self.year, self.month, self.day) < (other.year, other.month, other.day)


@total_ordering
@dataclass(frozen=True, slots=True)
class Timestamp:
    """An instant in UTC as chrono's ``DateTime<Utc>`` represents it.

    ``nanosecond`` may reach 1_999_999_999 to represent a leap second, exactly
    like chrono (``23:59:60`` is stored as second 59 plus a second of nanos).
    """

    date: Date
    hour: int
    minute: int
    second: int
    nanosecond: int = 0

    def __post_init__(self) -> None:
        if not (
            0 <= self.hour <= 23
            and 0 <= self.minute <= 59
            and 0 <= self.second <= 59
            and 0 <= self.nanosecond < 2_000_000_000
        ):
            raise GrammarError("Invalid timestamp components")

    @classmethod
    def parse(cls, text: str) -> Timestamp:
        """Parse RFC 3339 with chrono's relaxed rules and convert to UTC.

        Accepted: ``T``/``t``/space separator, whitespace between fields,
        optional fraction (extra digits beyond 9 ignored), second ``60``,
        offsets ``Z``/``z``/``UTC``/``+hh:mm``/``+hhmm``; trailing whitespace.
        """
        error = GrammarError(f"Invalid timestamp {text!r}")
        scanner = _Scanner(text)
        ymd = _scan_ymd(scanner, space_between=True)
        if ymd is None:
            raise error
        rest = scanner.rest()
        if not rest or rest[0] not in "Tt ":
            raise error
        scanner.pos += 1
        hour = scanner.number(2)
        scanner.skip_space()
        if hour is None or not scanner.literal(":"):
            raise error
        minute = scanner.number(2)
        scanner.skip_space()
        if minute is None or not scanner.literal(":"):
            raise error
        second = scanner.number(2)
        if second is None:
            raise error
        nanos = 0
        if scanner.literal("."):
            start = scanner.pos
            frac = scanner.digits(1, 10**6)
            if frac is None:
                raise error
            digits = scanner.text[start : scanner.pos][:9]
            nanos = int(digits.ljust(9, "0"))
        scanner.skip_space()
        offset = _scan_offset(scanner)
        if offset is None:
            raise error
        scanner.skip_space()
        if scanner.rest():
            raise error
        if not _valid_ymd(*ymd) or hour > 23 or minute > 59 or second > 60:
            raise error
        if second == 60:
            second, nanos = 59, nanos + 1_000_000_000
        total = (days_from_civil(*ymd) * 86400 + hour * 3600 + minute * 60 + second) - offset
        days, secs = divmod(total, 86400)
        year, month, day = civil_from_days(days)
        if not _valid_ymd(year, month, day):
            raise error
        return cls(Date(year, month, day), secs // 3600, secs // 60 % 60, secs % 60, nanos)

    @classmethod
    def from_python(cls, value: _dt.datetime) -> Timestamp:
        """Convert an aware or naive-UTC :class:`datetime.datetime`."""
        if value.tzinfo is not None:
            value = value.astimezone(_dt.UTC)
        return cls(
            Date(value.year, value.month, value.day),
            value.hour,
            value.minute,
            value.second,
            value.microsecond * 1000,
        )

    def _key(self) -> tuple[int, int]:
        seconds = self.date.days * 86400 + self.hour * 3600 + self.minute * 60 + self.second
        return (seconds, self.nanosecond)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Timestamp):
            return NotImplemented
        return self._key() < other._key()

    def __str__(self) -> str:
        """chrono's serde form: ``YYYY-MM-DDTHH:MM:SS[.fff|.ffffff|.fffffffff]Z``."""
        second = self.second
        nanos = self.nanosecond
        if nanos >= 1_000_000_000:
            second += 1
            nanos -= 1_000_000_000
        if nanos == 0:
            frac = ""
        elif nanos % 1_000_000 == 0:
            frac = f".{nanos // 1_000_000:03d}"
        elif nanos % 1000 == 0:
            frac = f".{nanos // 1000:06d}"
        else:
            frac = f".{nanos:09d}"
        return f"{self.date}T{self.hour:02d}:{self.minute:02d}:{second:02d}{frac}Z"


def _scan_offset(scanner: _Scanner) -> int | None:
    """Offset in seconds east of UTC, or ``None`` when unparseable."""
    rest = scanner.rest()
    if rest[:1] in ("Z", "z"):
        scanner.pos += 1
        return 0
    if rest[:3].upper() == "UTC":
        scanner.pos += 3
        return 0
    if rest[:1] not in ("+", "-"):
        return None
    sign = -1 if rest[0] == "-" else 1
    scanner.pos += 1
    hours = scanner.digits(2, 2)
    if hours is None:
        return None
    scanner.skip_space()
    scanner.literal(":")
    scanner.skip_space()
    minutes = scanner.digits(2, 2)
    if minutes is None or minutes > 59:
        return None
    seconds = hours * 3600 + minutes * 60
    if seconds >= 86400:
        return None
    return sign * seconds
