"""Hypothesis strategies for OpenPortal instruction strings and result values.

``instruction_texts()`` draws a keyword (all 64 plus the 3 aliases), builds
realistic arguments for it and then, a third of the time, mutates the text
(character edits, token drops/duplication, case changes, odd whitespace), so
both accepted and rejected inputs are exercised.
"""

from __future__ import annotations

import json
import string
from typing import Any

from hypothesis import strategies as st

from broadgauge.grammar import KEYWORDS

# --- identifiers -------------------------------------------------------------------

_NAME_CHARS = string.ascii_lowercase + string.digits + "-_"
_ODD_CHARS = " \t\u00a0\u3000\x1f\x85.:/[],é{}\"'*@"

names = st.text(_NAME_CHARS, min_size=1, max_size=8)
odd_names = st.text(_NAME_CHARS + _ODD_CHARS + "ABC", min_size=0, max_size=8)
any_name = st.one_of(*([names] * 8), odd_names)

portal = any_name
project = st.builds(lambda p, q: f"{p}.{q}", any_name, any_name)
user = st.builds(lambda u, p, q: f"{u}.{p}.{q}", any_name, any_name, any_name)
local = st.one_of(*([names] * 4), st.sampled_from([".bad", "bad/", "/x", "a.b", " g ", "", "x y"]))
project_mapping = st.builds(lambda p, g: f"{p}:{g}", project, local)
user_mapping = st.builds(lambda u, lu, g: f"{u}:{lu}:{g}", user, local, local)
volume = st.one_of(st.sampled_from(["home", "scratch", "projects", "data-1"]), any_name)

agent = st.one_of(names, st.sampled_from(["portal", "provider", "clusters", "cluster"]))
destination = st.one_of(
    st.lists(agent, min_size=2, max_size=5).map(".".join),
    st.lists(st.one_of(agent, st.just("")), min_size=0, max_size=5).map(".".join),
)
destinations = st.one_of(
    st.lists(destination, max_size=4).map(lambda ds: "[" + ", ".join(ds) + "]"),
    st.lists(destination, max_size=4).map(",".join),
    st.lists(destination, max_size=3).map(lambda ds: "[" + ",".join(ds)),
    st.lists(destination, max_size=3).map(lambda ds: ", ".join(ds) + "]"),
)

# --- values ---------------------------------------------------------------------------

_UNITS = ["B", "KB", "MB", "GB", "TB", "PB", "bytes", "kilobytes", "gigabytes", "tb", "Gb"]
_BAD_UNITS = ["GiB", "", "G", "XB", "e3GB", "-GB"]
number = st.one_of(
    st.integers(0, 10**6).map(str),
    st.floats(0, 1e6, allow_nan=False).map(lambda f: f"{f:.3f}"),
    st.sampled_from(["0", "1.", ".5", "1.005", "1.125", "1024", "1048576", "1099511627777"]),
    st.integers(0, 2**70).map(str),
)
quota = st.one_of(
    st.builds(
        lambda n, sep, u: f"{n}{sep}{u}",
        number,
        st.sampled_from(["", " ", "  "]),
        st.sampled_from(_UNITS),
    ),
    st.builds(lambda u, n: f"{u}{n}", st.sampled_from(_UNITS), number),
    st.sampled_from(["unlimited", "UNLIMITED", "Unlimited", "1,5GB", "-5GB", "1.2.3GB"]),
    st.builds(lambda n, u: f"{n}{u}", number, st.sampled_from(_BAD_UNITS)),
)
_USAGE_UNITS = ["", "s", "seconds", "m", "minute", "h", "hours", "HOURS", "d", "days", "weeks"]
usage = st.builds(
    lambda n, u, junk: " ".join(x for x in (n, u, junk) if x),
    st.one_of(st.integers(0, 2**64 + 5).map(str), st.sampled_from(["+5", "-1", "1.5", "x", ""])),
    st.sampled_from(_USAGE_UNITS),
    st.sampled_from(["", "", "extra"]),
)
date = st.one_of(
    st.dates().map(lambda d: d.isoformat()),
    st.builds(
        lambda y, m, d: f"{y}-{m}-{d}",
        st.integers(-300000, 300000),
        st.integers(0, 13),
        st.integers(0, 32),
    ),
    st.sampled_from(["2024-1-5", "+10000-01-01", "2024-02-30", "2023-02-29", "2024-02-29"]),
)
named_range = st.sampled_from(
    [
        "today",
        "TODAY",
        "yesterday",
        "tomorrow",
        "this_day",
        "this_week",
        "last_week",
        "this_month",
        "Last_Month",
        "this_year",
        "last_year",
        "next_week",
    ]
)
date_range = st.one_of(
    named_range,
    date,
    st.builds(lambda a, b: f"{a}:{b}", date, date),
    st.builds(lambda a, b, c: f"{a}:{b}:{c}", date, date, date),
)
path = st.one_of(
    st.sampled_from(["/home/alice", "/data/users/proj/alice.proj", "relative", "/"]),
    st.text(_NAME_CHARS + "/.", min_size=0, max_size=12),
)

# --- award details --------------------------------------------------------------------

_TIMESTAMPS = [
    "2024-01-01T00:00:00Z",
    "2024-01-01T00:00:00.5Z",
    "2024-06-30T12:34:56.123456+02:00",
    "2024-01-01 00:00:00z",
    "2016-12-31T23:59:60Z",
    "2024-01-01T00:00Z",
    "not a time",
]
_URLS = [
    "https://example.org/award/1",
    "http://x.org",
    "mailto:someone",
    "",
    "notaurl",
    "http://",
    "https://a b",
]
_DOMAINS = ["example.org", "*.ac.uk", "a@b.org", "*.*.x", "bad_domain", "-x.org", "x.org."]
_ALLOCATIONS = [
    "1000 node hours",
    "5 NHR",
    "10 gpu hour",
    "2.5 TB",
    "none",
    "No Allocation",
    "1e21 cpuhr",
    "-1 x",
    "5",
    "NaN bhr",
    "0.1 corehr",
]


def _link() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.none(),
        st.fixed_dictionaries(
            {}, optional={"id": st.one_of(st.none(), names), "url": st.sampled_from(_URLS)}
        ),
        st.tuples(st.one_of(st.none(), names), st.sampled_from(_URLS)).map(list),
    )


_note = st.fixed_dictionaries(
    {
        "timestamp": st.sampled_from(_TIMESTAMPS),
        "author": names,
        "text": st.text(max_size=10),
    }
)

award_fields: dict[str, st.SearchStrategy[Any]] = {
    "name": st.one_of(st.none(), st.text(max_size=10), st.integers()),
    "template": st.one_of(st.none(), names, st.sampled_from(["gpu cluster", " cpu ", "a.b"])),
    "key": st.one_of(st.none(), st.text(max_size=6)),
    "description": st.one_of(st.none(), st.text(max_size=20)),
    "members": st.one_of(
        st.none(),
        st.dictionaries(st.emails(), st.sampled_from(["pi", "member", ""]), max_size=3),
    ),
    "start_date": st.one_of(st.none(), date),
    "end_date": st.one_of(st.none(), date),
    "allocation": st.one_of(st.none(), st.sampled_from(_ALLOCATIONS)),
    "breakdown": st.dictionaries(names, st.text(max_size=5), max_size=3),
    "award": _link(),
    "call": _link(),
    "project_link": _link(),
    "renewal": _link(),
    "notes": st.lists(_note, max_size=2),
    "earliest_approve": st.one_of(st.none(), st.sampled_from(_TIMESTAMPS)),
    "membership_control": st.one_of(
        st.none(), st.sampled_from(["open", "members_only", "roles_only", "locked", "Open"])
    ),
    "allowed_domains": st.one_of(st.none(), st.lists(st.sampled_from(_DOMAINS), max_size=3)),
    "unknown_field": st.one_of(st.integers(), st.lists(st.integers(), max_size=2)),
}


@st.composite
def award_json(draw: st.DrawFn) -> str:
    """A JSON object with a random subset of AwardDetails fields."""
    chosen = draw(st.lists(st.sampled_from(sorted(award_fields)), unique=True, max_size=7))
    value = {name: draw(award_fields[name]) for name in chosen}
    separators = draw(st.sampled_from([(",", ":"), (", ", ": ")]))
    return json.dumps(value, separators=separators, ensure_ascii=draw(st.booleans()))


# --- instructions ---------------------------------------------------------------------

_SHAPES: dict[str, list[st.SearchStrategy[str]]] = {}


def _shape(keywords: str, *args: st.SearchStrategy[str]) -> None:
    for keyword in keywords.split():
        _SHAPES[keyword] = list(args)


optional_range = st.one_of(st.just(""), date_range)
_shape(
    "get_project get_award add_project remove_project get_users block_project "
    "unblock_project is_blocked_project get_project_mapping is_existing_project "
    "get_project_dirs get_limit get_project_quotas",
    project,
)
_shape("get_projects get_awards list_awards", portal)
_shape(
    "add_user remove_user block_user unblock_user is_blocked_user get_user_mapping "
    "is_protected_user is_existing_user get_home_dir get_user_dirs get_user_quotas",
    user,
)
_shape(
    "add_local_project remove_local_project get_local_limit get_local_project_dirs "
    "get_local_project_quotas",
    project_mapping,
)
_shape(
    "add_local_user remove_local_user get_local_home_dir get_local_user_dirs get_local_user_quotas",
    user_mapping,
)
_shape("get_local_usage_report get_local_storage_report", project_mapping, optional_range)
_shape("get_storage_report get_usage_report", project, optional_range)
_shape("get_storage_reports get_usage_reports", portal, optional_range)
_shape("set_local_limit", project_mapping, usage)
_shape("set_limit", project, usage)
_shape("clear_project_quota get_project_quota", project, volume)
_shape("set_project_quota", project, volume, quota)
_shape("clear_user_quota get_user_quota", user, volume)
_shape("set_user_quota", user, volume, quota)
_shape("clear_local_project_quota get_local_project_quota", project_mapping, volume)
_shape("set_local_project_quota", project_mapping, volume, quota)
_shape("clear_local_user_quota get_local_user_quota", user_mapping, volume)
_shape("set_local_user_quota", user_mapping, volume, quota)
_shape("update_homedir", user, path)
_shape("sync_offerings add_offerings remove_offerings", destinations)
_shape("get_offerings", st.sampled_from(["", "", "junk"]))
_shape("create_project create_award update_project update_award", project, award_json())

ALL_KEYWORDS = [*sorted(_SHAPES), "submit"]
assert set(KEYWORDS) <= set(ALL_KEYWORDS)


@st.composite
def plain_instruction(draw: st.DrawFn, keyword: str | None = None) -> str:
    """A well-formed-looking instruction (without ``submit``)."""
    if keyword is None:
        keyword = draw(st.sampled_from(sorted(_SHAPES)))
    args = [draw(arg) for arg in _SHAPES[keyword]]
    return " ".join([keyword, *args]).rstrip(" ") if args else keyword


@st.composite
def valid_instruction(draw: st.DrawFn) -> str:
    """Any keyword including ``submit`` (whose payload is another instruction)."""
    if draw(st.integers(0, 15)) == 0:
        return f"submit {draw(destination)} {draw(plain_instruction())}"
    return draw(plain_instruction())


_WS = [" ", "  ", "\t", "\u00a0", "\n", "\x1f", "\u2003"]


@st.composite
def mutate(draw: st.DrawFn, text: str) -> str:
    """Apply one to three random edits to ``text``."""
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.integers(0, 7))
        tokens = text.split(" ")
        if op == 0 and text:
            i = draw(st.integers(0, len(text) - 1))
            text = text[:i] + text[i + 1 :]
        elif op == 1:
            i = draw(st.integers(0, len(text)))
            ch = draw(st.sampled_from(list(_ODD_CHARS) + _WS + ["x", "0", "{", "}"]))
            text = text[:i] + ch + text[i:]
        elif op == 2 and len(tokens) > 1:
            del tokens[draw(st.integers(1, len(tokens) - 1))]
            text = " ".join(tokens)
        elif op == 3:
            tokens.append(draw(st.sampled_from(["extra", "", "today", "10", "h"])))
            text = " ".join(tokens)
        elif op == 4:
            text = text.upper() if draw(st.booleans()) else text.swapcase()
        elif op == 5:
            text = text[: draw(st.integers(0, len(text)))]
        elif op == 6:
            i = draw(st.integers(0, len(text)))
            text = text[:i] + draw(st.sampled_from(_WS)) + text[i:]
        else:
            text = " " + text if draw(st.booleans()) else text + " "
    return text


@st.composite
def instruction_texts(draw: st.DrawFn) -> str:
    """Well-formed instructions, a third of them mutated."""
    text = draw(valid_instruction())
    if draw(st.integers(0, 2)) == 0:
        text = draw(mutate(text))
    return text


@st.composite
def command_texts(draw: st.DrawFn) -> str:
    """``<destination><whitespace><instruction>`` with varied whitespace."""
    dest = draw(destination)
    instruction = draw(instruction_texts())
    spaced = instruction.replace(" ", draw(st.sampled_from(_WS)))
    return draw(st.sampled_from(["", " ", "\t"])) + dest + draw(st.sampled_from(_WS)) + spaced
