"""Jobs that name the same identifier or destination share one parsed value.

A board keeps finished jobs until they expire, and under load they are most of an agent's
memory; every sub-job of an ``add_user`` names the same user.  Sharing must not change what
is parsed, nor let a bad text through because a good one was seen before.
"""

from __future__ import annotations

import pytest

from broadgauge.grammar import Command, GrammarError

USER = "ada.physics.brics"


def test_instructions_naming_one_user_share_its_identifier() -> None:
    first = Command.parse(f"cluster.account add_user {USER}")
    second = Command.parse(f"cluster.account is_protected_user {USER}")
    mapping = Command.parse(f"cluster.account add_local_user {USER}:ada_phys:physics")

    assert first.instruction.user is second.instruction.user  # type: ignore[attr-defined]
    assert mapping.instruction.mapping.user == first.instruction.user  # type: ignore[attr-defined]
    assert first.destination is second.destination
    assert str(first) == f"cluster.account add_user {USER}"


def test_shared_values_are_equal_to_fresh_ones() -> None:
    from broadgauge.grammar import UserIdentifier

    command = Command.parse(f"cluster.account add_user {USER}")
    assert command.instruction.user == UserIdentifier("ada", "physics", "brics")  # type: ignore[attr-defined]


@pytest.mark.parametrize("text", ["ada..brics", "ada.physics", " .physics.brics"])
def test_a_bad_identifier_is_refused_every_time(text: str) -> None:
    Command.parse(f"cluster.account add_user {USER}")
    for _ in range(2):
        with pytest.raises(GrammarError, match="add_user failed to parse user"):
            Command.parse(f"cluster.account add_user {text}")


def test_a_bad_destination_is_refused_every_time() -> None:
    for _ in range(2):
        with pytest.raises(GrammarError, match="Could not parse destination"):
            Command.parse(f"cluster add_user {USER}")
