"""Volumes, storage sizes, quotas, usage and dates (notes §4.2)."""

from __future__ import annotations

import datetime as dt

import pytest

from broadgauge.grammar import (
    DateRange,
    GrammarError,
    Quota,
    QuotaLimit,
    StorageSize,
    Timestamp,
    Usage,
    Volume,
)
from broadgauge.grammar.calendar import Date

from .cases import Parser, each

MONDAY = dt.date(2026, 11, 23)

#: (parser, text, canonical display)
SHOWN = [
    # binary units; Rust's "{:.2}" rounds the exact binary value half-to-even
    *each(
        StorageSize.parse,
        [
            ("100GB", "100.00 GB"),
            ("1TB", "1024.00 GB"),
            ("2 tb", "2.00 TB"),
            ("GB100", "100.00 GB"),
            ("1025B", "1.00 KB"),
            ("1024B", "1024 B"),
            ("0B", "0 B"),
            ("1048576B", "1024.00 KB"),
            ("1099511627777B", "1.00 TB"),
            ("1.125GB", "1.12 GB"),
            ("1.005GB", "1.00 GB"),
            ("0.001KB", "1 B"),
            ("2000PB", "2000.00 PB"),
            ("5 gigabytes", "5.00 GB"),
            (".5KB", "512 B"),
            ("1.KB", "1024 B"),
        ],
    ),
    # chrono's lenient date syntax and its full year range
    *each(
        Date.parse,
        [
            ("+10000-01-01", "+10000-01-01"),
            ("0000-01-01", "0000-01-01"),
            ("-0004-02-29", "-0004-02-29"),
            ("+2024-01-01", "2024-01-01"),
            ("1-1-1", "0001-01-01"),
            ("2024-\t1-05", "2024-01-05"),
            ("+262142-12-31", "+262142-12-31"),
            ("-262143-01-01", "-262143-01-01"),
        ],
    ),
    # chrono's RFC 3339 forms, converted to UTC
    *each(
        Timestamp.parse,
        [
            ("2024-01-01T00:00:00+01:00", "2023-12-31T23:00:00Z"),
            ("2024-01-01T00:00:00.5Z", "2024-01-01T00:00:00.500Z"),
            ("2024-01-01T00:00:00.1234Z", "2024-01-01T00:00:00.123400Z"),
            ("2024-01-01T00:00:00.123456789123Z", "2024-01-01T00:00:00.123456789Z"),
            ("2024-01-01 00:00:00z", "2024-01-01T00:00:00Z"),
            ("2024-01-01T00:00:00-0130", "2024-01-01T01:30:00Z"),
            ("2024-01-01T00:00:00UTC", "2024-01-01T00:00:00Z"),
            ("2016-12-31T23:59:60Z", "2016-12-31T23:59:60Z"),
            ("0001-01-01T00:00:00+01:00", "0000-12-31T23:00:00Z"),
            (" 2024 -01-01T00 :00:00 Z ", "2024-01-01T00:00:00Z"),
        ],
    ),
]


@pytest.mark.parametrize(("parse", "text", "shown"), SHOWN)
def test_canonical_display(parse: Parser, text: str, shown: str) -> None:
    assert str(parse(text)) == shown


class TestVolume:
    def test_trimmed(self) -> None:
        assert str(Volume.parse(" scratch ")) == "scratch"


class TestStorageSize:
    def test_unknown_unit_is_named(self) -> None:
        with pytest.raises(GrammarError, match="Unknown unit ''"):
            StorageSize.parse("1024")

    def test_saturates_like_rust_cast(self) -> None:
        assert StorageSize.parse("99999999999999999999999PB").bytes == 2**64 - 1
        assert str(StorageSize(2**64 - 1)) == "16384.00 PB"

    def test_json_accepts_integer_bytes(self) -> None:
        assert StorageSize.from_json_value(1536) == StorageSize(1536)
        assert StorageSize.from_json_value("1.50 KB") == StorageSize(1536)
        for bad in (-1, 1.5, True, None):
            with pytest.raises(GrammarError):
                StorageSize.from_json_value(bad)


class TestQuota:
    def test_limit_forms(self) -> None:
        assert str(QuotaLimit.parse("UNLIMITED")) == "unlimited"
        assert QuotaLimit.parse(" unlimited ").is_unlimited
        assert str(QuotaLimit.parse("1 0 0 G B")) == "100.00 GB"
        with pytest.raises(GrammarError):
            QuotaLimit.parse("")

    def test_display_with_usage(self) -> None:
        quota = Quota(QuotaLimit.parse("100GB"), StorageSize.parse("1.5GB"))
        assert str(quota) == "1.50 GB / 100.00 GB | 1.5%"
        assert str(Quota(QuotaLimit.UNLIMITED, StorageSize(10))) == "10 B / unlimited"
        assert str(Quota(QuotaLimit.of_bytes(0), StorageSize(10))) == "10 B / 0 B"
        assert str(Quota(QuotaLimit.UNLIMITED)) == "unlimited"

    def test_json(self) -> None:
        quota = Quota(QuotaLimit.parse("100GB"), StorageSize.parse("1.5GB"))
        assert quota.to_json_value() == {"limit": "100.00 GB", "usage": "1.50 GB"}
        assert Quota(QuotaLimit.UNLIMITED).to_json_value() == {"limit": "unlimited"}
        assert Quota.from_json_value(quota.to_json_value()) == quota


class TestUsage:
    @pytest.mark.parametrize(
        ("text", "seconds"),
        [
            ("10", 10),
            ("10 hours", 36000),
            ("10 h extra junk", 36000),
            ("2 D", 172800),
            ("3 Minutes", 180),
            ("+5 s", 5),
            ("\t7\u00a0m", 420),
        ],
    )
    def test_parse(self, text: str, seconds: int) -> None:
        assert Usage.parse(text).seconds == seconds

    def test_wraps_like_release_rust(self) -> None:
        assert Usage.parse("18446744073709551615 h").seconds == 18446744073709548016

    @pytest.mark.parametrize(
        ("seconds", "text"),
        [(1, "1 second"), (59, "59 seconds"), (60, "1.000 minute"), (5400, "1.500 hours")],
    )
    def test_describe(self, seconds: int, text: str) -> None:
        assert Usage(seconds).describe() == text


class TestDateRange:
    @pytest.mark.parametrize(
        ("name", "expected"),
        [
            ("today", "2026-11-23:2026-11-23"),
            ("TODAY", "2026-11-23:2026-11-23"),
            ("this_day", "2026-11-23:2026-11-23"),
            ("yesterday", "2026-11-22:2026-11-22"),
            ("tomorrow", "2026-11-24:2026-11-24"),
            ("this_week", "2026-11-23:2026-11-29"),
            ("last_week", "2026-11-16:2026-11-22"),
            ("this_month", "2026-11-01:2026-11-30"),
            ("last_month", "2026-10-01:2026-10-31"),
            ("This_Year", "2026-01-01:2026-12-31"),
            ("last_year", "2025-01-01:2025-12-31"),
        ],
    )
    def test_named_ranges(self, name: str, expected: str) -> None:
        assert str(DateRange.parse(name, today=MONDAY)) == expected

    def test_weeks_start_on_monday(self) -> None:
        sunday = dt.date(2026, 11, 29)
        assert str(DateRange.parse("this_week", today=sunday)) == "2026-11-23:2026-11-29"
        assert str(DateRange.parse("last_week", today=sunday)) == "2026-11-16:2026-11-22"

    def test_month_and_year_boundaries(self) -> None:
        jan = dt.date(2024, 1, 15)
        assert str(DateRange.parse("last_month", today=jan)) == "2023-12-01:2023-12-31"
        march = dt.date(2024, 3, 1)
        assert str(DateRange.parse("last_month", today=march)) == "2024-02-01:2024-02-29"
        assert str(DateRange.parse("yesterday", today=march)) == "2024-02-29:2024-02-29"

    def test_explicit_ranges(self) -> None:
        assert str(DateRange.parse("2024-1-5")) == "2024-01-05:2024-01-05"
        # start > end is kept as written
        assert str(DateRange.parse("2024-03-05:2024-03-01")) == "2024-03-05:2024-03-01"

    def test_days(self) -> None:
        days = DateRange.parse("2024-02-28:2024-03-01").days()
        assert [str(d) for d in days] == ["2024-02-28", "2024-02-29", "2024-03-01"]


class TestChronoDates:
    def test_weekday_and_arithmetic(self) -> None:
        monday = Date.from_python(MONDAY)
        assert monday.weekday == 0
        assert monday.add_days(-1).weekday == 6
        assert monday.add_days(40).to_python() == MONDAY + dt.timedelta(days=40)


class TestTimestamp:
    def test_ordering(self) -> None:
        early = Timestamp.parse("2024-01-01T00:00:00Z")
        late = Timestamp.parse("2024-01-01T00:00:00.1Z")
        assert early < late
