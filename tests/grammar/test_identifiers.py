"""Identifier and mapping parsing rules (notes §4.2)."""

from __future__ import annotations

import pytest

from broadgauge import grammar

from .cases import check_refused


class TestPortalIdentifier:
    def test_trimmed(self) -> None:
        assert str(grammar.PortalIdentifier.parse("  brics\t")) == "brics"

    def test_rust_whitespace_not_python_whitespace(self) -> None:
        # U+001F is whitespace to Python's str.strip but not to Rust's trim.
        assert grammar.PortalIdentifier.parse("p\x1f").portal == "p\x1f"
        assert grammar.PortalIdentifier.parse("\u3000p\u00a0").portal == "p"


class TestProjectIdentifier:
    def test_parts(self) -> None:
        project = grammar.ProjectIdentifier.parse("proj.portal")
        assert (project.project, project.portal) == ("proj", "portal")
        assert project.portal_identifier == grammar.PortalIdentifier("portal")

    def test_parts_are_trimmed_but_inner_spaces_kept(self) -> None:
        assert str(grammar.ProjectIdentifier.parse(" a b . portal ")) == "a b.portal"

    def test_case_sensitive(self) -> None:
        assert grammar.ProjectIdentifier.parse("P.portal") != grammar.ProjectIdentifier.parse(
            "p.portal"
        )


class TestUserIdentifier:
    def test_parts(self) -> None:
        user = grammar.UserIdentifier.parse("alice.proj.portal")
        assert (user.username, user.project, user.portal) == ("alice", "proj", "portal")
        assert user.project_identifier == grammar.ProjectIdentifier("proj", "portal")

    def test_components_trimmed(self) -> None:
        assert str(grammar.UserIdentifier.parse("a . b . c")) == "a.b.c"

    def test_constructor_validates(self) -> None:
        with pytest.raises(grammar.GrammarError):
            grammar.UserIdentifier("a.b", "c", "d")


class TestMappings:
    def test_project_mapping(self) -> None:
        mapping = grammar.ProjectMapping.parse("p.q: g ")
        assert str(mapping) == "p.q:g"
        assert mapping.local_group == "g"

    def test_user_mapping(self) -> None:
        mapping = grammar.UserMapping.parse("alice.proj.portal:alice.proj:portal.proj")
        assert mapping.local_user == "alice.proj"
        assert mapping.project_mapping == grammar.ProjectMapping.parse("proj.portal:portal.proj")
        assert str(mapping) == "alice.proj.portal:alice.proj:portal.proj"

    def test_error_names_the_offending_part(self) -> None:
        check_refused(grammar.ProjectMapping.parse, "p.portal:.bad", "local_group")
