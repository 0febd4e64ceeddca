"""Published planner rules and the two planner-rules wire commands (pure: no sockets)."""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broadgauge.jobs.commands import (
    PlannerRulesRequest,
    PlannerRulesResponse,
    decode_command,
    encode_command,
)
from broadgauge.jobs.errors import ProtocolError
from broadgauge.jobs.published import (
    MAX_DOCUMENT_BYTES,
    PublishedRules,
    accept_from_child,
    check_document,
)

from . import helpers as h

DOCUMENT: dict[str, Any] = {
    "site": {"name": "physics", "cores": 128},
    "rules": [{"match": "add_user", "action": "allow"}, {"match": "*", "action": "queue"}],
}


def _wire_entry(destination: object, document: object = None) -> str:
    entry = {"destination": destination, "document": {} if document is None else document}
    return json.dumps({"PlannerRulesResponse": {"published": [entry], "silent": []}})


# --- check_document -------------------------------------------------------------------------


def test_check_document_accepts_site_and_rules() -> None:
    assert check_document(DOCUMENT) is DOCUMENT
    assert check_document({"service": {"name": "planner"}, **DOCUMENT}) is not None
    assert check_document({}) == {}


@pytest.mark.parametrize("value", [None, [], ["site"], "site", 3, 2.5, True])
def test_check_document_rejects_anything_but_an_object(value: object) -> None:
    with pytest.raises(ProtocolError, match=r"^published: expected an object"):
        check_document(value, "published")


def test_check_document_rejects_unknown_tables_and_names_them() -> None:
    with pytest.raises(ProtocolError, match=r"document: unknown tables \['agents'\]"):
        check_document({**DOCUMENT, "agents": {"secret": "x"}})


def test_check_document_size_limit_is_inclusive() -> None:
    overhead = len('{"site":{"x":""}}')
    fits = {"site": {"x": "a" * (MAX_DOCUMENT_BYTES - overhead)}}
    assert check_document(fits) is fits
    too_big = {"site": {"x": "a" * (MAX_DOCUMENT_BYTES - overhead + 1)}}
    with pytest.raises(ProtocolError, match=rf"{MAX_DOCUMENT_BYTES + 1} bytes is over the"):
        check_document(too_big, "doc")


def test_a_huge_document_is_a_clear_protocol_error() -> None:
    rules = [{"match": f"rule-{i}", "action": "allow"} for i in range(20_000)]
    with pytest.raises(ProtocolError) as caught:
        check_document({"rules": rules})
    assert f"over the {MAX_DOCUMENT_BYTES} limit" in str(caught.value)


# --- PublishedRules -------------------------------------------------------------------------


def test_published_rules_json_round_trip() -> None:
    entry = PublishedRules("platform.instance", DOCUMENT)
    value = entry.to_json_value()
    assert value == {"destination": "platform.instance", "document": DOCUMENT}
    # Through real JSON text, as it travels.
    assert PublishedRules.from_json_value(json.loads(json.dumps(value)), "entry") == entry


def test_below_prefixes_the_destination_and_keeps_the_document() -> None:
    entry = PublishedRules("instance", DOCUMENT)
    above = entry.below("platform")
    assert above == PublishedRules("platform.instance", DOCUMENT)
    assert above.below("provider").destination == "provider.platform.instance"
    assert entry.destination == "instance"  # unchanged


@pytest.mark.parametrize(
    "destination",
    ["", ".", "...", "a..b", ".a", "a.", "a b", " a", "a. b", "a/b", "a.b c", "*"],
)
def test_bad_destinations_are_rejected(destination: str) -> None:
    with pytest.raises(ProtocolError, match=r"^entry\.destination: "):
        PublishedRules.from_json_value({"destination": destination, "document": {}}, "entry")


@pytest.mark.parametrize("destination", [None, 5, ["a"], {"a": 1}, True])
def test_non_string_destinations_are_rejected(destination: object) -> None:
    with pytest.raises(ProtocolError, match=r"^entry\.destination: expected a string"):
        PublishedRules.from_json_value({"destination": destination, "document": {}}, "entry")


def test_entry_needs_both_fields_and_a_valid_document() -> None:
    with pytest.raises(ProtocolError, match="missing field `document`"):
        PublishedRules.from_json_value({"destination": "a"}, "entry")
    with pytest.raises(ProtocolError, match="missing field `destination`"):
        PublishedRules.from_json_value({"document": {}}, "entry")
    with pytest.raises(ProtocolError, match=r"entry\.document: unknown tables"):
        PublishedRules.from_json_value({"destination": "a", "document": {"x": 1}}, "entry")
    with pytest.raises(ProtocolError, match=r"entry\.document: expected an object"):
        PublishedRules.from_json_value({"destination": "a", "document": []}, "entry")
    with pytest.raises(ProtocolError, match=r"entry: expected an object"):
        PublishedRules.from_json_value(["a", {}], "entry")


# --- accept_from_child ----------------------------------------------------------------------


def test_accept_from_child_keeps_only_the_childs_own_paths() -> None:
    entries = [
        PublishedRules("child", {"site": {}}),
        PublishedRules("other", {"site": {}}),
        PublishedRules("child.x", {"rules": []}),
        PublishedRules("childish.x", {"site": {}}),
        PublishedRules("childish", {"site": {}}),
        PublishedRules("x.child", {"site": {}}),
        PublishedRules("child.x.y", {"site": {}}),
    ]
    kept, refused = accept_from_child("child", entries)
    assert [e.destination for e in kept] == ["child", "child.x", "child.x.y"]
    assert kept[1].document == {"rules": []}
    assert refused == ["other", "childish.x", "childish", "x.child"]


def test_accept_from_child_with_nothing() -> None:
    assert accept_from_child("child", []) == ([], [])


# --- wire commands --------------------------------------------------------------------------


def test_request_exact_wire_form_and_round_trip() -> None:
    request = PlannerRulesRequest(("a",), 2000, "r1")
    text = encode_command(request)
    assert text == '{"PlannerRulesRequest":{"visited":["a"],"budget_ms":2000,"request_id":"r1"}}'
    assert decode_command(text) == request
    two = PlannerRulesRequest(("bridge", "portal"), 0)
    assert decode_command(encode_command(two)) == two


def test_request_fields_default() -> None:
    assert decode_command('{"PlannerRulesRequest":{}}') == PlannerRulesRequest((), 2000)
    assert decode_command('{"PlannerRulesRequest":{"budget_ms":7}}') == PlannerRulesRequest((), 7)


def test_response_exact_wire_form_and_round_trip() -> None:
    response = PlannerRulesResponse(
        (PublishedRules("instance", DOCUMENT), PublishedRules("instance.sub", {"site": {}})),
        ("instance.gone",),
        "r1",
    )
    text = encode_command(response)
    assert json.loads(text) == {
        "PlannerRulesResponse": {
            "published": [
                {"destination": "instance", "document": DOCUMENT},
                {"destination": "instance.sub", "document": {"site": {}}},
            ],
            "silent": ["instance.gone"],
            "request_id": "r1",
        }
    }
    assert decode_command(text) == response
    empty = PlannerRulesResponse()
    assert (
        encode_command(empty)
        == '{"PlannerRulesResponse":{"published":[],"silent":[],"request_id":""}}'
    )
    assert decode_command(encode_command(empty)) == empty
    assert decode_command('{"PlannerRulesResponse":{}}') == empty


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        (
            '{"PlannerRulesRequest":{"visited":[],"budget_ms":1,"budget_ms":2}}',
            r"PlannerRulesRequest: duplicate field `budget_ms`",
        ),
        ('{"PlannerRulesRequest":{"budget_ms":-1}}', r"PlannerRulesRequest\.budget_ms: "),
        ('{"PlannerRulesRequest":{"budget_ms":-0}}', r"PlannerRulesRequest\.budget_ms: "),
        ('{"PlannerRulesRequest":{"budget_ms":1.5}}', r"PlannerRulesRequest\.budget_ms: "),
        ('{"PlannerRulesRequest":{"budget_ms":true}}', r"PlannerRulesRequest\.budget_ms: "),
        ('{"PlannerRulesRequest":{"budget_ms":"5"}}', r"PlannerRulesRequest\.budget_ms: "),
        ('{"PlannerRulesRequest":{"budget_ms":600001}}', r"PlannerRulesRequest\.budget_ms: "),
        ('{"PlannerRulesRequest":{"budget_ms":1e400}}', r"invalid JSON"),
        ('{"PlannerRulesRequest":{"visited":"a"}}', r"PlannerRulesRequest\.visited: "),
        ('{"PlannerRulesRequest":{"visited":[1]}}', r"PlannerRulesRequest\.visited\[0\]: "),
        ('{"PlannerRulesRequest":[]}', r"PlannerRulesRequest: expected an object"),
        (
            '{"PlannerRulesResponse":{"published":{"destination":"a","document":{}}}}',
            r"PlannerRulesResponse\.published: expected an array, got object",
        ),
        (
            '{"PlannerRulesResponse":{"published":"a"}}',
            r"PlannerRulesResponse\.published: expected an array, got string",
        ),
        (
            '{"PlannerRulesResponse":{"published":null}}',
            r"PlannerRulesResponse\.published: expected an array, got null",
        ),
        (
            '{"PlannerRulesResponse":{"published":[],"published":[]}}',
            r"PlannerRulesResponse: duplicate field `published`",
        ),
        (
            '{"PlannerRulesResponse":{"published":[7]}}',
            r"PlannerRulesResponse\.published\[0\]: expected an object",
        ),
        (
            '{"PlannerRulesResponse":{"silent":"a"}}',
            r"PlannerRulesResponse\.silent: expected an array",
        ),
        (_wire_entry("a..b"), r"PlannerRulesResponse\.published\[0\]\.destination: "),
        (_wire_entry(""), r"PlannerRulesResponse\.published\[0\]\.destination: "),
        (_wire_entry("a b"), r"PlannerRulesResponse\.published\[0\]\.destination: "),
        (_wire_entry(".."), r"PlannerRulesResponse\.published\[0\]\.destination: "),
        (_wire_entry(3), r"PlannerRulesResponse\.published\[0\]\.destination: "),
        (
            _wire_entry("a", {"site": {}, "other": 1}),
            r"PlannerRulesResponse\.published\[0\]\.document: unknown tables",
        ),
        (
            _wire_entry("a", {"site": "x" * MAX_DOCUMENT_BYTES}),
            r"PlannerRulesResponse\.published\[0\]\.document: .* over the",
        ),
    ],
)
def test_malformed_planner_commands_are_protocol_errors(payload: str, fragment: str) -> None:
    with pytest.raises(ProtocolError, match=fragment):
        decode_command(payload)


def test_one_bad_entry_spoils_the_whole_response() -> None:
    good = {"destination": "instance", "document": DOCUMENT}
    bad = {"destination": "instance..x", "document": {}}
    payload = json.dumps({"PlannerRulesResponse": {"published": [good, bad]}})
    with pytest.raises(ProtocolError, match=r"published\[1\]\.destination"):
        decode_command(payload)


# Arbitrary bodies for both planner tags are fuzzed with every other tag in test_commands.py.


def _entries() -> st.SearchStrategy[Any]:
    names = st.sampled_from(["a", "b-1", "c_2", "", " ", ".", "a.b", "a..b", "é"])
    destination = names | st.lists(names, max_size=3).map(".".join) | h.json_values(2)
    document = st.dictionaries(
        st.sampled_from(["site", "rules", "service", "x"]), h.json_values(3)
    ) | h.json_values(3)
    entry = st.fixed_dictionaries({"destination": destination, "document": document})
    return entry | h.json_values(3)


@settings(max_examples=300)
@given(
    st.lists(_entries(), max_size=3),
    st.lists(st.text(max_size=5), max_size=2) | h.json_values(2),
)
def test_arbitrary_entries_only_raise_protocol_error(published: list[Any], silent: Any) -> None:
    payload = json.dumps({"PlannerRulesResponse": {"published": published, "silent": silent}})
    try:
        decoded = decode_command(payload)
    except ProtocolError as exc:
        assert str(exc).startswith("PlannerRulesResponse")
    else:
        assert isinstance(decoded, PlannerRulesResponse)
        assert len(decoded.published) == len(published)
        # What decodes re-encodes to something that decodes to the same value.
        assert decode_command(encode_command(decoded)) == decoded


@pytest.mark.parametrize(
    "value", [datetime.date(2024, 1, 1), datetime.time(12, 0), float("nan"), float("inf")]
)
def test_a_document_that_json_cannot_carry_is_refused_at_publish(value: object) -> None:
    # TOML has dates, times and nan/inf; the wire cannot carry them, so they are refused
    # when published rather than failing every answer that would carry them.
    document = {"site": {"value": value}}
    with pytest.raises(ProtocolError, match="not JSON-encodable"):
        check_document(document)
    # What can be published can always travel.
    travels = {"site": {"value": str(value)}}
    response = PlannerRulesResponse((PublishedRules("instance", check_document(travels)),))
    assert decode_command(encode_command(response)) == response
