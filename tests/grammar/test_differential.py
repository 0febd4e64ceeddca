"""Differential tests: our grammar against the official ``openportal`` wheel.

The wheel runs in a subprocess worker (it aborts the interpreter on a few
inputs).  For every generated string: if the wheel accepts it, our canonical
text must be byte-identical; if it rejects it or crashes, we must raise
:class:`GrammarError` - and never anything else.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broadgauge.grammar import AwardDetails, Command, GrammarError, Instruction

from . import strategies as gs
from .cases import RUST_PANICS, check_against, examples
from .oracle import Oracle


def check_instruction(oracle: Oracle, text: str) -> None:
    """Compare one instruction string with the oracle."""
    check_against(oracle.instruction(text), lambda: Instruction.parse(text), text)


def check_command(oracle: Oracle, text: str) -> None:
    """Compare one job command string with the oracle's Job deserialisation."""
    check_against(oracle.command(text), lambda: Command.parse(text), text)


@examples(2500)
@given(text=gs.instruction_texts())
def test_instructions_match_oracle(oracle: Oracle, text: str) -> None:
    check_instruction(oracle, text)


@pytest.mark.parametrize("keyword", gs.ALL_KEYWORDS)
@examples(30)
@given(data=st.data())
def test_every_keyword_matches_oracle(oracle: Oracle, keyword: str, data: st.DataObject) -> None:
    if keyword == "submit":
        text = f"submit {data.draw(gs.destination)} {data.draw(gs.plain_instruction())}"
    else:
        text = data.draw(gs.plain_instruction(keyword))
    check_instruction(oracle, text)


@examples(500)
@given(text=gs.award_json(), keyword=st.sampled_from(["create_project", "update_award"]))
def test_award_details_match_oracle(oracle: Oracle, text: str, keyword: str) -> None:
    check_instruction(oracle, f"{keyword} p.portal {text}")


@examples(300)
@given(base=gs.award_json(), other=gs.award_json())
def test_award_merge_matches_oracle(oracle: Oracle, base: str, other: str) -> None:
    try:
        ours_base, ours_other = AwardDetails.parse(base), AwardDetails.parse(other)
    except GrammarError:
        return
    answer = oracle.merge(base, other)
    check_against(answer, lambda: ours_base.merge(ours_other).to_json(), f"{base} + {other}")


@examples(800)
@given(text=gs.command_texts())
def test_commands_match_oracle(oracle: Oracle, text: str) -> None:
    check_command(oracle, text)


@examples(400)
@given(text=st.text(max_size=40))
def test_arbitrary_text_never_crashes(oracle: Oracle, text: str) -> None:
    check_instruction(oracle, text)


@pytest.mark.parametrize("text", RUST_PANICS)
def test_oracle_panics_are_grammar_errors(oracle: Oracle, text: str) -> None:
    answer = oracle.instruction(text)
    assert answer.crashed, "the wheel no longer aborts on this input"
    with pytest.raises(GrammarError):
        Instruction.parse(text)
    # the worker restarts transparently after a crash
    assert oracle.instruction("get_offerings").value == "get_offerings"


def _edge_cases() -> list[str]:
    path = Path(__file__).with_name("edge_cases.jsonl")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("text", _edge_cases())
def test_curated_edge_cases_match_oracle(oracle: Oracle, text: str) -> None:
    """Hand-picked corner cases (chrono dates, serde quirks, URLs, whitespace ...)."""
    check_instruction(oracle, text)
