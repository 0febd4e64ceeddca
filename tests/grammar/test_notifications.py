"""Notification events: text and JSON forms, checked against the wheel."""

from __future__ import annotations

import json
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broadgauge.grammar import (
    Destination,
    EventKind,
    GrammarError,
    Notification,
    NotificationEvent,
    ProjectIdentifier,
    UserIdentifier,
)

from . import strategies as gs
from .cases import check_against, examples
from .oracle import Oracle

KEYWORDS = [kind.keyword for kind in EventKind]


def test_text_form() -> None:
    note = Notification.parse("cluster.clusters.provider.portal user_added  alice.p.portal ")
    assert str(note) == "cluster.clusters.provider.portal user_added alice.p.portal"
    assert note.event.kind is EventKind.USER_ADDED
    assert note.event.subject == UserIdentifier("alice", "p", "portal")


def test_json_form_is_externally_tagged() -> None:
    event = NotificationEvent(EventKind.AWARD_CHANGED, ProjectIdentifier("p", "portal"))
    note = Notification(Destination.parse("a.b"), event, uuid.UUID(int=1))
    inner = Notification(Destination.parse("c.d"), event, uuid.UUID(int=2))
    forward = Notification(note.destination, NotificationEvent(EventKind.FORWARD, inner), note.id)
    assert json.loads(note.to_json()) == {
        "id": "00000000-0000-0000-0000-000000000001",
        "destination": "a.b",
        "event": {"AwardChanged": "p.portal"},
    }
    assert Notification.from_json(forward.to_json()) == forward
    assert str(forward) == "a.b forward [c.d award_changed p.portal]"


def test_subject_type_checked() -> None:
    with pytest.raises(TypeError):
        NotificationEvent(EventKind.USER_ADDED, ProjectIdentifier("p", "q"))


@examples(300)
@given(
    dest=gs.destination,
    keyword=st.sampled_from([*KEYWORDS, "nope"]),
    subject=st.one_of(gs.user, gs.project),
    sep=st.sampled_from([" ", "  ", "\t", ""]),
)
def test_text_matches_oracle(
    oracle: Oracle, dest: str, keyword: str, subject: str, sep: str
) -> None:
    text = f"{dest}{sep}{keyword} {subject}"
    answer = oracle.notification(text)
    if answer.ok:
        parsed = Notification.parse(text)
        assert str(parsed) == answer.value
        # and the JSON form decodes in the wheel
        again = oracle.notification_json(parsed.to_json())
        assert again.ok and json.loads(again.value) == parsed.to_json_value()
    else:
        with pytest.raises(GrammarError):
            Notification.parse(text)


@pytest.mark.parametrize(
    "identifier",
    [
        "3F0C0000-0000-4000-8000-000000000000",
        "{3f0c0000-0000-4000-8000-000000000000}",
        "urn:uuid:3f0c0000-0000-4000-8000-000000000000",
        "3f0c0000000040008000000000000000",
        "3f0c-0000-0000-4000-8000-000000000000",
        "not-a-uuid",
    ],
)
def test_uuid_forms_match_oracle(oracle: Oracle, identifier: str) -> None:
    text = json.dumps({"id": identifier, "destination": "a.b", "event": {"UserAdded": "x.y.z"}})
    answer = oracle.notification_json(text)
    check_against(answer, lambda: Notification.from_json(text).to_json(), text)
