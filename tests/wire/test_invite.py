"""Invitation files (notes §1.11, errata 2 and 17)."""

from __future__ import annotations

import contextlib
import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from hypothesis import given
from hypothesis import strategies as st

from broadgauge.wire import ConfigError, Invite, Key, ServerEntry

from .tables import FUZZ, K1, K2, SERVER, keys, mostly, table, tables, values

K_IN, K_OUT = K1, K2  # the inner and outer keys of the invites written out below

NOTES_INVITE = f"""\
name = "portal"
url = "wss://portal.example.org"
zone = "default"
inner_key = {{ data = "{K_IN}" }}
outer_key = {{ data = "{K_OUT}" }}
"""

RUST_STYLE_INVITE = f"""\
name = "portal"
url = "https://portal.example.org/"
zone = "default"

[inner_key]
data = "{K_IN}"

[outer_key]
data = "{K_OUT}"
"""


def _fields(**overrides: Any) -> dict[str, Any]:
    """An invite table: the layout of a config's server table."""
    return table(SERVER, **overrides)


def test_notes_example_loads() -> None:
    invite = Invite.loads(NOTES_INVITE)
    assert invite.name == "portal"
    assert invite.url == "wss://portal.example.org"
    assert invite.zone == "default"
    assert invite.inner_key == Key.from_hex(K_IN)
    assert invite.outer_key == Key.from_hex(K_OUT)


def test_rust_subtable_form_loads_identically() -> None:
    assert Invite.loads(RUST_STYLE_INVITE) == Invite.loads(NOTES_INVITE)


def test_to_dict_shape() -> None:
    assert Invite.loads(NOTES_INVITE).to_dict() == {
        "name": "portal",
        "url": "wss://portal.example.org",
        "zone": "default",
        "inner_key": {"data": K_IN},
        "outer_key": {"data": K_OUT},
    }
    assert tomllib.loads(Invite.loads(NOTES_INVITE).dumps()) == tomllib.loads(NOTES_INVITE)


def test_save_load_round_trip(tmp_path: Path) -> None:
    invite = Invite(
        "portal", "ws://portal.internal:8040/", "remote>local", Key.generate(), Key.generate()
    )
    path = tmp_path / "invite_bridge_remote>local.toml"
    invite.save(path)
    loaded = Invite.load(path)
    assert loaded == invite
    assert loaded.inner_key == invite.inner_key and loaded.outer_key == invite.outer_key
    assert Invite.loads(invite.dumps()) == invite


@pytest.mark.parametrize(
    ("given_url", "canonical"),
    [
        ("https://portal.example.org/op/", "wss://portal.example.org"),
        ("http://portal.example.org:8040", "ws://portal.example.org:8040/"),
        ("http://portal.example.org:80/x", "ws://portal.example.org"),
        ("https://portal.example.org:8443/op", "wss://portal.example.org:8443/op"),
        ("wss://portal.example.org/", "wss://portal.example.org"),
        ("portal.example.org", "wss://portal.example.org"),
    ],
)
def test_url_is_canonicalised(given_url: str, canonical: str) -> None:
    invite = Invite.loads(tomli_w.dumps(_fields(url=given_url)))
    assert invite.url == canonical
    assert ServerEntry.from_invite(invite).url == canonical


def test_zone_may_contain_angle_brackets() -> None:
    assert Invite.from_dict(_fields(zone="remote>local")).zone == "remote>local"


def test_names_are_trimmed() -> None:
    invite = Invite.from_dict(_fields(name="  portal ", zone=" default "))
    assert (invite.name, invite.zone) == ("portal", "default")


@pytest.mark.parametrize("missing", ["name", "url", "zone", "inner_key", "outer_key"])
def test_missing_fields(missing: str) -> None:
    with pytest.raises(ConfigError, match=missing):
        Invite.from_dict(_fields(**{missing: None}))


@pytest.mark.parametrize(
    "overrides",
    [
        {"name": ""},
        {"name": "por.tal"},
        {"name": "a>b"},
        {"name": 3},
        {"zone": ""},
        {"zone": "a b"},
        {"zone": ["default"]},
        {"url": ""},
        {"url": 5},
        {"url": "http://[::1"},
        {"inner_key": K_IN},
        {"outer_key": {"data": "00" * 32}},
        {"outer_key": {"data": K_OUT[:-2]}},
        {"outer_key": {"data": K_OUT, "more": "x"}},
    ],
)
def test_bad_fields(overrides: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        Invite.from_dict(_fields(**overrides))


def test_bare_hex_key_hint() -> None:
    with pytest.raises(ConfigError, match=r"data = "):
        Invite.loads(NOTES_INVITE.replace(f'{{ data = "{K_IN}" }}', f'"{K_IN}"'))


def test_not_a_table() -> None:
    for value in ([], "x", None, 5):
        with pytest.raises(ConfigError):
            Invite.from_dict(value)


def test_repr_redacts_keys() -> None:
    invite = Invite.loads(NOTES_INVITE)
    for text in (repr(invite), str(invite), f"{invite}", f"{invite!r}"):
        assert K_IN not in text and K_OUT not in text
        assert "portal" in text
    # The dumped file, of course, does hold the keys.
    assert K_IN in invite.dumps() and K_OUT in invite.dumps()


# --- fuzzing ---------------------------------------------------------------------------------

_invite_documents = tables(
    {
        "name": mostly(st.sampled_from(["portal", "a-b_c", "ü"]), values),
        "url": mostly(st.sampled_from(["ws://h:1/", "https://h/x", "h", "ftp://h:21"]), values),
        "zone": mostly(st.sampled_from(["default", "a>b", "z"]), values),
        "inner_key": keys,
        "outer_key": keys,
    },
    {"extra": values},
)


@FUZZ
@given(st.text(max_size=400))
def test_fuzz_arbitrary_text(text: str) -> None:
    with contextlib.suppress(ConfigError):
        Invite.loads(text)


@FUZZ
@given(_invite_documents)
def test_fuzz_structured_documents(document: dict[str, Any]) -> None:
    try:
        invite = Invite.loads(tomli_w.dumps(document))
    except ConfigError:
        return
    if all(c.isprintable() and not c.isspace() for c in invite.url):  # see test_urls.py
        assert Invite.loads(invite.dumps()) == invite
