"""Identifier and mapping parsing rules (notes §4.2)."""

from __future__ import annotations

import pytest

from broadgauge.grammar import (
    GrammarError,
    PortalIdentifier,
    ProjectIdentifier,
    ProjectMapping,
    UserIdentifier,
    UserMapping,
)

from .cases import check_refused


class TestPortalIdentifier:
    def test_trimmed(self) -> None:
        assert str(PortalIdentifier.parse("  brics\t")) == "brics"

    def test_rust_whitespace_not_python_whitespace(self) -> None:
        # U+001F is whitespace to Python's str.strip but not to Rust's trim.
        assert PortalIdentifier.parse("p\x1f").portal == "p\x1f"
        assert PortalIdentifier.parse("\u3000p\u00a0").portal == "p"


class TestProjectIdentifier:
    def test_parts(self) -> None:
        project = ProjectIdentifier.parse("proj.portal")
        assert (project.project, project.portal) == ("proj", "portal")
        assert project.portal_identifier == PortalIdentifier("portal")

    def test_parts_are_trimmed_but_inner_spaces_kept(self) -> None:
        assert str(ProjectIdentifier.parse(" a b . portal ")) == "a b.portal"

    def test_case_sensitive(self) -> None:
        assert ProjectIdentifier.parse("P.portal") != ProjectIdentifier.parse("p.portal")


class TestUserIdentifier:
    def test_parts(self) -> None:
        user = UserIdentifier.parse("alice.proj.portal")
        assert (user.username, user.project, user.portal) == ("alice", "proj", "portal")
        assert user.project_identifier == ProjectIdentifier("proj", "portal")

    def test_components_trimmed(self) -> None:
        assert str(UserIdentifier.parse("a . b . c")) == "a.b.c"

    def test_constructor_validates(self) -> None:
        with pytest.raises(GrammarError):
            UserIdentifier("a.b", "c", "d")


class TestMappings:
    def test_project_mapping(self) -> None:
        mapping = ProjectMapping.parse("p.q: g ")
        assert str(mapping) == "p.q:g"
        assert mapping.local_group == "g"

    def test_user_mapping(self) -> None:
        mapping = UserMapping.parse("alice.proj.portal:alice.proj:portal.proj")
        assert mapping.local_user == "alice.proj"
        assert mapping.project_mapping == ProjectMapping.parse("proj.portal:portal.proj")
        assert str(mapping) == "alice.proj.portal:alice.proj:portal.proj"

    def test_error_names_the_offending_part(self) -> None:
        check_refused(ProjectMapping.parse, "p.portal:.bad", "local_group")
