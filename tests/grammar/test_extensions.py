"""Broadgauge's instructions beyond the reference's 64 (notebook servers)."""

from __future__ import annotations

import pytest

from broadgauge.grammar import EXTENSION_KEYWORDS, KEYWORDS, Command, GrammarError, Instruction
from broadgauge.grammar.extensions import StartNotebook, StopNotebook


def test_extensions_parse_render_and_stay_out_of_the_reference_set() -> None:
    for kind, text in (
        (StartNotebook, "start_notebook alice.physics.portal"),
        (StopNotebook, "stop_notebook alice.physics.portal"),
    ):
        parsed = Instruction.parse(text)
        assert isinstance(parsed, kind)
        assert str(parsed) == text
        assert str(parsed.user) == "alice.physics.portal"
    assert set(EXTENSION_KEYWORDS) == {"start_notebook", "stop_notebook"}
    assert not set(EXTENSION_KEYWORDS) & set(KEYWORDS)
    assert len(KEYWORDS) == 64


def test_extensions_need_a_user_and_pass_the_portal_check() -> None:
    with pytest.raises(GrammarError):
        Instruction.parse("start_notebook")
    with pytest.raises(GrammarError):
        Instruction.parse("start_notebook not-an-identifier")
    path = "portal.provider.notebooks.jupyter"
    assert Command.parse(f"{path} start_notebook a.b.portal", portal_check=True)
    with pytest.raises(GrammarError):
        Command.parse(f"{path} start_notebook a.b.other", portal_check=True)
