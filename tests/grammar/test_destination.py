"""Destination routing helpers and the Destinations list forms (notes §3.7, §4.2)."""

from __future__ import annotations

import pytest

from broadgauge.grammar import Destination, Destinations, GrammarError, Position


class TestDestination:
    def test_empty_segments_dropped(self) -> None:
        assert Destination.parse("a..b.").agents == ("a", "b")
        assert str(Destination.parse(".portal.provider.")) == "portal.provider"

    def test_agents_not_trimmed(self) -> None:
        # Rust's Destination::parse does not trim segments.
        assert Destination.parse("a. b").agents == ("a", " b")

    def test_first_last_reverse(self) -> None:
        dest = Destination.parse("portal.provider.clusters.cluster")
        assert (dest.first, dest.second, dest.last) == ("portal", "provider", "cluster")
        assert str(dest.reverse()) == "cluster.clusters.provider.portal"

    @pytest.mark.parametrize(
        ("me", "sender", "expected"),
        [
            ("cluster", "clusters", Position.DESTINATION),
            ("provider", "portal", Position.DOWNSTREAM),
            ("clusters", "provider", Position.DOWNSTREAM),
            ("provider", "clusters", Position.UPSTREAM),
            ("portal", "provider", Position.UPSTREAM),
            ("provider", "provider", Position.ERROR),
            ("stranger", "portal", Position.ERROR),
            ("provider", "stranger", Position.ERROR),
            ("cluster", "stranger", Position.ERROR),
        ],
    )
    def test_position(self, me: str, sender: str, expected: Position) -> None:
        dest = Destination.parse("portal.provider.clusters.cluster")
        assert dest.position(me, sender) is expected

    def test_first_occurrence_is_used(self) -> None:
        dest = Destination.parse("a.b.a.c")
        assert dest.next("a") == "b"
        assert dest.previous("a") is None
        assert dest.position("a", "b") is Position.UPSTREAM
        assert dest.position("c", "a") is Position.DESTINATION

    def test_next_previous(self) -> None:
        dest = Destination.parse("portal.provider.cluster")
        assert dest.next("portal") == "provider"
        assert dest.next("cluster") is None
        assert dest.previous("cluster") == "provider"
        assert dest.previous("portal") is None
        assert dest.next("nobody") is None

    def test_value_semantics(self) -> None:
        assert Destination.parse("a.b") == Destination.parse("a..b")
        assert len({Destination.parse("a.b"), Destination.of(["a", "b"])}) == 1


class TestDestinations:
    @pytest.mark.parametrize(
        ("text", "canonical"),
        [
            ("[]", "[]"),
            ("", "[]"),
            (" [ ] ", "[]"),
            ("[a.b.c]", "a.b.c"),
            ("a.b.c", "a.b.c"),
            ("a.b.c,d.e.f", "[a.b.c, d.e.f]"),
            ("[a.b.c, d.e.f,a.b.c]", "[a.b.c, d.e.f]"),
            ("[ , a.b , ]", "a.b"),
            ("a.b]", "a.b"),
        ],
    )
    def test_text_forms(self, text: str, canonical: str) -> None:
        assert str(Destinations.parse(text)) == canonical

    def test_bracket_quirk(self) -> None:
        # '[' without ']' is not stripped, so the first agent is named "[a".
        assert Destinations.parse("[a.b")[0].agents == ("[a", "b")

    def test_json_form_keeps_duplicates(self) -> None:
        decoded = Destinations.from_json_value(["a.b", "a.b"])
        assert len(decoded) == 2
        assert decoded.to_json_value() == ["a.b", "a.b"]
        with pytest.raises(GrammarError):
            Destinations.from_json_value("a.b")

    def test_add_and_remove(self) -> None:
        base = Destinations.parse("a.b.c,d.e.f")
        added = base.add(Destinations.parse("d.e.f,g.h.i"))
        assert str(added) == "[a.b.c, d.e.f, g.h.i]"
        assert str(added.remove(Destinations.parse("a.b.c"))) == "[d.e.f, g.h.i]"
        assert Destination.parse("a.b.c") in base
