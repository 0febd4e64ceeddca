"""Invitation files (notes §1.11, errata 2 and 17)."""

from __future__ import annotations

import contextlib
import os
import stat
import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broadgauge.wire import ConfigError, Invite, Key, ServerEntry

K_IN = "5b1c0e0d9a7f2e4c8b3a6d5e1f0a9c8b7e6d5c4b3a2f1e0d9c8b7a6f5e4d3c2b"
K_OUT = "c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7"

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
    base: dict[str, Any] = {
        "name": "portal",
        "url": "wss://portal.example.org",
        "zone": "default",
        "inner_key": {"data": K_IN},
        "outer_key": {"data": K_OUT},
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


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


def test_saved_file_is_0600(tmp_path: Path) -> None:
    path = tmp_path / "deeper" / "invite_bridge_default.toml"
    Invite.loads(NOTES_INVITE).save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # Overwriting a looser existing file tightens it.
    os.chmod(path, 0o644)
    Invite.loads(NOTES_INVITE).save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["invite_bridge_default.toml"]


def test_saved_file_is_0600_despite_stale_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "invite_bridge_default.toml"
    stale = tmp_path / ".invite_bridge_default.toml.tmp"
    stale.write_text("junk")
    os.chmod(stale, 0o644)
    Invite.loads(NOTES_INVITE).save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert Invite.load(path) == Invite.loads(NOTES_INVITE)
    assert not stale.exists()


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


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        Invite.load(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"\xc3\x28")
    with pytest.raises(ConfigError):
        Invite.load(bad)
    with pytest.raises(ConfigError):
        Invite.loads("name = ")
    with pytest.raises(ConfigError):
        Invite.loads("x = " + "{ a = " * 3000)


def test_repr_redacts_keys() -> None:
    invite = Invite.loads(NOTES_INVITE)
    for text in (repr(invite), str(invite), f"{invite}", f"{invite!r}"):
        assert K_IN not in text and K_OUT not in text
        assert "portal" in text
    # The dumped file, of course, does hold the keys.
    assert K_IN in invite.dumps() and K_OUT in invite.dumps()


# --- fuzzing ---------------------------------------------------------------------------------

_values = st.recursive(
    st.one_of(st.text(max_size=10), st.integers(), st.booleans(), st.floats(), st.dates()),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=5,
)


def _mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.sampled_from(range(8)).flatmap(lambda i: bad if i == 7 else good)


_keys = _mostly(
    st.binary(min_size=32, max_size=32).filter(any).map(lambda b: {"data": b.hex()}),
    st.one_of(
        st.text(alphabet="0123456789abcdef", max_size=70).map(lambda t: {"data": t}), _values
    ),
)


@st.composite
def _invite_documents(draw: st.DrawFn) -> dict[str, Any]:
    document = {
        "name": draw(_mostly(st.sampled_from(["portal", "a-b_c", "ü"]), _values)),
        "url": draw(
            _mostly(st.sampled_from(["ws://h:1/", "https://h/x", "h", "ftp://h:21"]), _values)
        ),
        "zone": draw(_mostly(st.sampled_from(["default", "a>b", "z"]), _values)),
        "inner_key": draw(_keys),
        "outer_key": draw(_keys),
    }
    if draw(st.booleans()):
        document["extra"] = draw(_values)
    for key in draw(_mostly(st.just(set()), st.sets(st.sampled_from(list(document))))):
        document.pop(key, None)
    return document


_FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_FUZZ
@given(st.text(max_size=400))
def test_fuzz_arbitrary_text(text: str) -> None:
    with contextlib.suppress(ConfigError):
        Invite.loads(text)


@_FUZZ
@given(_invite_documents())
def test_fuzz_structured_documents(document: dict[str, Any]) -> None:
    try:
        invite = Invite.loads(tomli_w.dumps(document))
    except ConfigError:
        return
    if all(c.isprintable() and not c.isspace() for c in invite.url):  # see test_urls.py
        assert Invite.loads(invite.dumps()) == invite
