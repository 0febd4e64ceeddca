"""AwardDetails (ProjectDetails) JSON canonicalisation and merge (notes §4.2, erratum 20)."""

from __future__ import annotations

import json

import pytest

from broadgauge.grammar import (
    Allocation,
    AwardDetails,
    DomainPattern,
    GrammarError,
    Link,
    MembershipControl,
    Note,
    ProjectTemplate,
    Timestamp,
)

from .cases import EMPTY_DETAILS


def canonical(text: str) -> str:
    return AwardDetails.parse(text).to_json()


def test_empty_object_has_nine_nulls_and_notes() -> None:
    assert canonical("{}") == EMPTY_DETAILS
    assert str(AwardDetails()) == EMPTY_DETAILS


def test_members_sorted_and_allocation_canonical() -> None:
    text = '{"allocation":"1000 node hours","members":{"b@x.org":"pi","a@x.org":"member"}}'
    value = json.loads(canonical(text))
    assert list(value["members"]) == ["a@x.org", "b@x.org"]
    assert value["allocation"] == "1000 NHR"


def test_full_key_order() -> None:
    text = json.dumps(
        {
            "allowed_domains": ["*.ac.uk"],
            "membership_control": "locked",
            "earliest_approve": "2024-01-01T00:00:00Z",
            "notes": [{"timestamp": "2024-01-01T00:00:00Z", "author": "a", "text": "t"}],
            "renewal": {"url": "https://x.org/r"},
            "project_link": {"id": "p"},
            "call": {"id": "c"},
            "award": {"id": "EP/X/1", "url": "https://x.org/a"},
            "breakdown": {"z": "1", "a": "2"},
            "allocation": "5 TB",
            "end_date": "2025-1-1",
            "start_date": "2024-01-01",
            "members": {"a@x.org": "pi"},
            "description": "d",
            "key": "k",
            "template": " gpu ",
            "name": "n",
            "ignored": [1, {"x": None}],
        }
    )
    value = json.loads(canonical(text))
    assert list(value) == [
        "name",
        "template",
        "key",
        "description",
        "members",
        "start_date",
        "end_date",
        "allocation",
        "breakdown",
        "award",
        "call",
        "project_link",
        "renewal",
        "notes",
        "earliest_approve",
        "membership_control",
        "allowed_domains",
    ]
    assert value["template"] == "gpu"
    assert value["end_date"] == "2025-01-01"
    assert value["allocation"] == "5 tb"
    assert list(value["breakdown"]) == ["a", "z"]


def test_optional_members_omitted_or_kept() -> None:
    assert '"breakdown"' not in canonical('{"breakdown":{}}')
    assert '"members":{}' in canonical('{"members":{}}')
    assert '"allowed_domains":[]' in canonical('{"allowed_domains":[]}')
    assert '"award":{}' in canonical('{"award":{}}')
    assert '"award":{"id":"x"}' in canonical('{"award":["x",null]}')
    assert '"membership_control":"open"' in canonical('{"membership_control":{"open":null}}')


def test_serde_leniencies_kept() -> None:
    # repeated unknown keys, lone surrogates in ignored values and any nesting
    # depth inside ignored values are all accepted by serde_json
    assert canonical('{"x":1,"x":2}') == EMPTY_DETAILS
    assert canonical('{"x":"\\udc00"}') == EMPTY_DETAILS
    assert canonical('{"x":' + "[" * 3000 + "]" * 3000 + "}") == EMPTY_DETAILS
    # maps keep the last duplicate
    assert '"members":{"a":"2"}' in canonical('{"members":{"a":"1","a":"2"}}')


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("none", "No allocation"),
        ("No Allocation", "No allocation"),
        ("1e21 Node  Hours", "1000000000000000000000 NHR"),
        ("1e-7 x", "0.0000001 x"),
        ("NaN x", "NaN x"),
        ("infinity x", "inf x"),
        ("-0 nhr", "-0 NHR"),
        ("1. x", "1 x"),
        (".5 GPU Hour", "0.5 GPUHR"),
        ("0.1 GB", "0.1 gb"),
        ("3 core hours", "3 COREHR"),
        ("2 gbhr", "2 GBHR"),
        ("7 Billing Hours", "7 BHR"),
        ("1 CPU hour", "1 CPUHR"),
    ],
)
def test_allocation(text: str, shown: str) -> None:
    assert str(Allocation.parse(text)) == shown


def test_domain_patterns() -> None:
    wildcard = DomainPattern.parse("*.example.com")
    assert wildcard.matches("a.b.EXAMPLE.com")
    assert not wildcard.matches("example.com")
    exact = DomainPattern.parse("example.com")
    assert exact.matches("Example.COM") and not exact.matches("a.example.com")
    email = DomainPattern.parse("a+b@x.org")
    assert email.is_email and email.matches_email("A+B@X.org") and not email.matches("x.org")


def test_allowed_domains_checks() -> None:
    details = AwardDetails.parse('{"allowed_domains":["*.ac.uk","boss@corp.com"]}')
    assert details.is_email_allowed("x@bristol.ac.uk")
    assert details.is_email_allowed("boss@corp.com")
    assert not details.is_email_allowed("other@corp.com")
    assert not AwardDetails.parse('{"allowed_domains":[]}').is_domain_allowed("x.org")
    assert AwardDetails().is_domain_allowed("anything.org")


def test_links_and_notes() -> None:
    assert Link.from_json_value({"url": ""}).to_json_value() == {"url": ""}
    with pytest.raises(GrammarError):
        Link.from_json_value({"url": "http://"})
    note = Note.from_json_value(["2024-01-01T01:00:00+01:00", "a", "t"])
    assert note.to_json_value()["timestamp"] == "2024-01-01T00:00:00Z"


def test_membership_control() -> None:
    assert MembershipControl.from_json_value("roles_only").can_change_roles
    assert not MembershipControl.LOCKED.can_change_membership
    assert MembershipControl.MEMBERS_ONLY.can_change_membership


def test_value_semantics() -> None:
    a = AwardDetails.parse('{"members":{"b":"1","a":"2"}}')
    b = AwardDetails.build(members={"a": "2", "b": "1"})
    assert a == b and hash(a) == hash(b)
    assert a.members_dict() == {"a": "2", "b": "1"}


class TestMerge:
    def test_set_fields_override(self) -> None:
        base = AwardDetails.parse('{"name":"old","description":"keep","members":{"a":"pi"}}')
        update = AwardDetails.parse('{"name":"new","members":{"b":"member"}}')
        merged = base.merge(update)
        assert merged.name == "new"
        assert merged.description == "keep"
        assert merged.members_dict() == {"b": "member"}

    def test_breakdown_notes_and_domains_are_combined(self) -> None:
        base = AwardDetails.parse(
            '{"breakdown":{"a":"1","b":"2"},"allowed_domains":["x.org"],'
            '"notes":[{"timestamp":"2024-02-01T00:00:00Z","author":"a","text":"late"}]}'
        )
        update = AwardDetails.parse(
            '{"breakdown":{"b":"3"},"allowed_domains":["y.org","x.org"],'
            '"notes":[{"timestamp":"2024-01-01T00:00:00Z","author":"b","text":"early"},'
            '{"timestamp":"2024-02-01T00:00:00Z","author":"a","text":"late"}]}'
        )
        merged = base.merge(update)
        assert merged.breakdown_dict() == {"a": "1", "b": "3"}
        assert [d.pattern for d in merged.allowed_domains or ()] == ["x.org", "y.org"]
        assert [n.text for n in merged.notes] == ["early", "late"]

    def test_templates_must_agree(self) -> None:
        gpu = AwardDetails(template=ProjectTemplate("gpu"))
        assert AwardDetails().merge(gpu).template == ProjectTemplate("gpu")
        assert gpu.merge(AwardDetails()).template == ProjectTemplate("gpu")
        with pytest.raises(GrammarError, match="templates"):
            gpu.merge(AwardDetails(template=ProjectTemplate("cpu")))

    def test_unset_fields_do_not_clear(self) -> None:
        stamp = Timestamp.parse("2024-01-01T00:00:00Z")
        base = AwardDetails(earliest_approve=stamp, membership_control=MembershipControl.LOCKED)
        merged = base.merge(AwardDetails(name="x"))
        assert merged.earliest_approve == stamp
        assert merged.membership_control is MembershipControl.LOCKED
