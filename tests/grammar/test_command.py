"""Job commands: Unicode-whitespace tokenisation and the portal check (notes §4.1, §4.4)."""

from __future__ import annotations

import pytest

from broadgauge.grammar import Command, Destination, GrammarError, Instruction


def test_parse_and_render() -> None:
    command = Command.parse("portal.provider.clusters.cluster add_user alice.proj.portal")
    assert command.destination.agents == ("portal", "provider", "clusters", "cluster")
    assert command.instruction == Instruction.parse("add_user alice.proj.portal")
    assert command.keyword == "add_user"
    assert str(command) == "portal.provider.clusters.cluster add_user alice.proj.portal"


def test_unicode_whitespace_collapses() -> None:
    text = '\tportal.cluster\u00a0create_project  p.portal\n{"name":\u2003"a   b"}'
    command = Command.parse(text)
    assert str(command).startswith('portal.cluster create_project p.portal {"name":"a b",')


def test_python_only_whitespace_is_kept() -> None:
    # U+001F separates tokens for Python's str.split() but not for Rust.
    command = Command.parse("a.b get_projects x\x1fy")
    assert str(command) == "a.b get_projects x\x1fy"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "destination"),
        ("portal add_user a.b.portal", "destination"),
        ("portal.cluster", "instruction"),
        ("portal.cluster add_user a.b", "instruction"),
    ],
)
def test_errors(text: str, message: str) -> None:
    with pytest.raises(GrammarError, match=message):
        Command.parse(text)


@pytest.mark.parametrize(
    "text",
    [
        "portal.cluster add_user a.b.portal",
        "portal.cluster get_local_user_quotas a.b.portal:u:g",
        "portal.cluster set_local_limit p.portal:g 10",
        "portal.cluster create_project p.portal {}",
        "portal.cluster get_projects portal",
        "portal.cluster get_usage_reports portal",
        "portal.cluster block_user a.b.other",
        "portal.cluster get_awards other",
        "portal.cluster get_storage_reports other",
        "portal.cluster submit x.y add_user a.b.other",
        "portal.cluster sync_offerings a.b.c",
    ],
)
def test_portal_check_passes(text: str) -> None:
    assert Command.parse(text, portal_check=True) == Command.parse(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "bridge.portal.cluster add_user alice.proj.portal",
            "Invalid command 'bridge.portal.cluster add_user alice.proj.portal'. Commands "
            "involving user 'alice.proj.portal' can only be issued via the portal 'portal', "
            "not 'bridge'.",
        ),
        (
            "x.cluster  update_homedir a.b.portal /home",
            "Invalid command 'x.cluster  update_homedir a.b.portal /home'. Commands involving "
            "user 'a.b.portal' can only be issued via the portal 'portal', not 'x'.",
        ),
        (
            "x.cluster get_local_project_dirs p.portal:g",
            "Invalid command 'x.cluster get_local_project_dirs p.portal:g'. Commands involving "
            "project 'p.portal' can only be issued via the portal 'portal', not 'x'.",
        ),
        (
            "x.cluster get_projects portal",
            "Invalid command 'x.cluster get_projects portal'. Commands involving portal "
            "'portal' can only be issued via the portal 'portal', not 'x'.",
        ),
    ],
)
def test_portal_check_message(text: str, message: str) -> None:
    Command.parse(text)  # fine without the check
    with pytest.raises(GrammarError) as info:
        Command.parse(text, portal_check=True)
    assert str(info.value) == message


def test_check_uses_first_element_only() -> None:
    with pytest.raises(GrammarError):
        Command.parse("provider.portal add_user a.b.portal", portal_check=True)


def test_value_semantics() -> None:
    a = Command.parse("a.b  add_user x.y.z")
    b = Command(Destination.parse("a..b"), Instruction.parse("add_user x . y . z"))
    assert a == b and hash(a) == hash(b)
