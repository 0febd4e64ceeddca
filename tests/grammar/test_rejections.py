"""Inputs every parser must refuse, and refuse with :class:`GrammarError` only.

One table for the whole grammar: each row names a parser and a text it must
reject (malformed syntax, out-of-range values, and the inputs that make the
Rust parser panic).  The modules' own tests cover what the parsers accept.
"""

from __future__ import annotations

import pytest

from broadgauge.grammar import (
    Allocation,
    AwardDetails,
    DateRange,
    Destination,
    Destinations,
    DomainPattern,
    Instruction,
    Notification,
    PortalIdentifier,
    ProjectIdentifier,
    ProjectMapping,
    StorageSize,
    Timestamp,
    Usage,
    UserIdentifier,
    UserMapping,
    Volume,
)
from broadgauge.grammar.calendar import Date

from .cases import RUST_PANICS, Parser, check_refused, each

REJECTED = [
    # identifiers and mappings (notes §4.2)
    *each(PortalIdentifier.parse, ["", "   ", "my portal", "a.b"]),
    *each(ProjectIdentifier.parse, ["portal", "a.b.c", ".portal", "proj.", " . ", ""]),
    *each(UserIdentifier.parse, ["a.b", "a.b.c.d", "a..c", ".b.c", "a.b. "]),
    # local names may not start or end with "." or "/", nor be empty
    *each(
        ProjectMapping.parse,
        ["p.portal:.bad", "p.portal:bad.", "p.portal:/g", "p.portal:g/", "p.portal: ", "p"],
    ),
    *each(
        UserMapping.parse,
        ["a.b.c:u", "a.b.c:u:g:x", "a.b.c::g", "a.b.c:.u:g", "a.b.c:u:g/", "a.b:u:g"],
    ),
    # values and dates
    *each(Volume.parse, ["", "  ", "my vol"]),
    *each(StorageSize.parse, ["1024", "5GiB", "1e3GB", "-5GB", "1,5GB", ".GB", "1.2.3GB"]),
    *each(Usage.parse, ["", "ten", "-1", "1.5", "10 fortnights", "18446744073709551616"]),
    *each(
        DateRange.parse,
        ["", "2024-02-30", "2024-01-05:", "a:b", "2024-01-01:2024-01-02:2024-01-03", "next_week"],
    ),
    *each(
        Date.parse,
        ["-0001-02-29", "99999-01-01", "02024-01-01", "2024-001-05", "+262143-01-01", "2024- 1"],
    ),
    *each(
        Timestamp.parse,
        [
            "2024-01-01T00:00Z",
            "2024-01-01T00:00:00+01",
            "2024-01-01T00:00:00+24:00",
            "2024-01-01T24:00:00Z",
            "2024-01-01T00:00:00.Z",
            "2024-01-01",
            "2024-01-01T00:00:00",
            "2024-01-01T00:00:00Zjunk",
        ],
    ),
    # award details and their fields (notes §4.2, erratum 20)
    *each(
        AwardDetails.parse,
        [
            "[]",
            "null",
            '{"name":"x","name":"y"}',
            '{"name":1}',
            '{"notes":null}',
            '{"notes":{}}',
            '{"breakdown":null}',
            '{"members":{"a":1}}',
            '{"template":"gpu.x"}',
            '{"start_date":"2024-02-30"}',
            '{"allocation":"5"}',
            '{"allocation":"-1 nhr"}',
            '{"award":{"url":"notaurl"}}',
            '{"award":{"id":"x","id":"y"}}',
            '{"allowed_domains":["*.*.x"]}',
            '{"allowed_domains":{}}',
            '{"membership_control":"Open"}',
            '{"name":"\\ud800"}',
            '{"\\ud800":1}',
            '{"x":NaN}',
            '{"name":"x"} trailing',
            '{"name":"x",}',
        ],
    ),
    *each(Allocation.parse, ["", "5", "-inf x", "1_000 x", "0x10 x", "five x"]),
    *each(
        DomainPattern.parse,
        ["", "*", "*.", "a.*.com", "-a.com", "a_b.com", " a.com", "a@b@c", "é@x.org"],
    ),
    # destinations need two agents; a list needs valid members (notes §3.7)
    *each(Destination.parse, ["", "...", "portal", ".portal."]),
    *each(Destinations.parse, ["[a.b, c]"]),
    # notifications (notes §3.9)
    *each(
        Notification.parse,
        [
            "a.b forward x",
            "a user_added x.y.z",
            "a.b user_added",
            "a.b user_added x.y",
            "a.b project_added x.y.z",
            " a.b user_added x.y.z",
            "a.b\tuser_added x.y.z",
            "a.b",
        ],
    ),
    # the Rust parser aborts on these; we raise
    *each(Instruction.parse, [*RUST_PANICS, "submit a.b", "update_project p.portal"]),
]


@pytest.mark.parametrize(("parse", "text"), REJECTED)
def test_rejected(parse: Parser, text: str) -> None:
    check_refused(parse, text)
