"""Tables shared by the grammar tests, and the checks run over them."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from broadgauge.grammar import GrammarError

from .oracle import Answer

Parser = Callable[[str], object]

#: ``AwardDetails()`` as canonical JSON: nine nulls, no notes, no domain list
EMPTY_DETAILS = (
    '{"name":null,"template":null,"key":null,"description":null,"members":null,'
    '"start_date":null,"end_date":null,"allocation":null,"notes":[],"allowed_domains":null}'
)

#: Inputs that abort the Rust parser (panic = "abort"): we must reject them cleanly.
RUST_PANICS = [
    "submit",
    "create_project",
    "create_award",
    "update_project",
    "update_award",
    "create_project p.portal",
    "create_award p.portal",
]


def examples(count: int) -> settings:
    """Hypothesis settings for tests that ask the oracle (a subprocess): no deadline."""
    return settings(
        max_examples=count,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


def each(parse: Parser, rows: Iterable[str | tuple[str, ...]]) -> list[Any]:
    """One ``pytest.param(parse, *row)`` per row, its id naming the parser and the row."""
    name = getattr(parse, "__qualname__", "parse").removesuffix(".parse")
    params = []
    for row in rows:
        values = row if isinstance(row, tuple) else (row,)
        params.append(pytest.param(parse, *values, id=f"{name}-{values[0]!r}"))
    return params


def check_refused(parse: Parser, text: str, match: str | None = None) -> None:
    """``parse(text)`` raises :class:`GrammarError` (whose message contains ``match``)."""
    with pytest.raises(GrammarError, match=None if match is None else re.escape(match)):
        parse(text)


def check_against(answer: Answer, parse: Callable[[], object], text: str) -> None:
    """The wheel's canonical text where it accepted ``text``, else a :class:`GrammarError`."""
    if answer.ok:
        assert str(parse()) == answer.value, text
    else:
        with pytest.raises(GrammarError):
            parse()
