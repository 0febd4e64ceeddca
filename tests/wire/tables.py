"""TOML tables for the config, invite and secrets tests: written out, and drawn by hypothesis."""

from __future__ import annotations

import datetime as dt
from typing import Any

import tomli_w
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from broadgauge.wire import ServiceConfig

K1 = "5b1c0e0d9a7f2e4c8b3a6d5e1f0a9c8b7e6d5c4b3a2f1e0d9c8b7a6f5e4d3c2b"
K2 = "c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7"
K3 = "0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20"
K4 = "f0e0d0c0b0a090807060504030201000f1e1d1c1b1a191817161514131211101"
K5 = "aa" * 32
K6 = "bb" * 32

#: A minimal valid ``[service]`` table.
SERVICE: dict[str, Any] = {
    "name": "portal",
    "url": "ws://localhost:8040",
    "ip": "127.0.0.1",
    "port": 8040,
    "servers": [],
    "clients": [],
}
#: A ``[[service.clients]]`` table.
CLIENT: dict[str, Any] = {
    "name": "bridge",
    "zone": "default",
    "ip": {"IP": "10.0.0.1"},
    "inner_key": {"data": K1},
    "outer_key": {"data": K2},
}
#: A ``[[service.servers]]`` table, which is also the layout of an invite.
SERVER: dict[str, Any] = {
    "name": "up",
    "url": "ws://up:8040/",
    "zone": "default",
    "inner_key": {"data": K3},
    "outer_key": {"data": K4},
}


def table(base: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    """``base`` with ``overrides`` applied; an override of ``None`` leaves the key out."""
    merged = {**base, **overrides}
    return {k: v for k, v in merged.items() if v is not None}


def load_service(service: dict[str, Any]) -> ServiceConfig:
    """Load an agent config document holding the ``[service]`` table ``service``."""
    return ServiceConfig.loads(tomli_w.dumps({"agent": "Portal", "service": service}))


# --- hypothesis ------------------------------------------------------------------------------

FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

_scalars = st.one_of(
    st.text(max_size=12),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.booleans(),
    st.floats(),
    st.dates(),
    st.datetimes(min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 31)),
    st.times(),
)
#: Any value TOML can hold.
values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=5,
)


def mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Usually a valid value, sometimes junk, so that whole documents often load."""
    return st.sampled_from(range(12)).flatmap(lambda i: bad if i == 11 else good)


#: Key tables, now and then a malformed one.
keys = mostly(
    st.binary(min_size=32, max_size=32).filter(any).map(lambda b: {"data": b.hex()}),
    st.one_of(
        st.text(alphabet="0123456789abcdefABCDEF", min_size=60, max_size=68).map(
            lambda t: {"data": t}
        ),
        st.just({"data": "00" * 32}),
        st.binary(min_size=32, max_size=32).map(lambda b: b.hex()),
        values,
    ),
)


@st.composite
def tables(
    draw: st.DrawFn,
    fields: dict[str, st.SearchStrategy[Any]],
    optional: dict[str, st.SearchStrategy[Any]] | None = None,
) -> dict[str, Any]:
    """A table of ``fields`` and about half the ``optional`` ones, now and then missing some."""
    drawn = {key: draw(strategy) for key, strategy in fields.items()}
    for key, strategy in (optional or {}).items():
        if draw(st.booleans()):
            drawn[key] = draw(strategy)
    dropped = mostly(st.just(frozenset()), st.frozensets(st.sampled_from(list(drawn)), max_size=2))
    for key in draw(dropped):
        del drawn[key]
    return drawn
