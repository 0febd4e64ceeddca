"""Hostile text in incoming frames: lone surrogates and control characters.

JSON can spell a lone UTF-16 surrogate (``"\\ud800"``); Python decodes it into a ``str`` that
no UTF-8 encoder can write back, so a job holding one could reach a board, fail to save and
then break the next ``Sync``.  A Rust ``String`` cannot hold one, so the reference never
accepts such text.  Text is now refused where it enters, at two levels:

* the wire (:func:`broadgauge.wire.envelope.parse_json`, which every frame passes): a frame
  whose JSON holds a lone surrogate is a rejected frame (``bad-json``), counted and logged;
* the jobs layer (:func:`broadgauge.jobs._json.loads`, under ``decode_command`` and every
  other decoder): a payload whose JSON holds one anywhere is an unreadable command, logged.

Both look closer only when the text has a ``\\u`` escape, and a valid pair
(``"\\ud83d\\ude00"``) is one character, accepted.  Control characters are legal in a Rust
``String``: escaped ones pass the wire and are judged where they are used (a back end refuses
``add_user`` for a name holding one, naming it); raw ones are invalid JSON, refused.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection

from broadgauge.demo import PROJECT, Network
from broadgauge.grammar import GrammarError
from broadgauge.jobs import (
    ErrorCommand,
    Job,
    Notification,
    ProtocolError,
    Status,
    Update,
    decode_command,
    encode_command,
)
from broadgauge.jobs import _json as jobs_json
from broadgauge.runtime.agent import JobFailed
from broadgauge.wire import Channel, FrameError, Key
from broadgauge.wire.envelope import LayerKey, encode_frame, parse_json
from tests.jobs import helpers
from tests.jobs.agent_helpers import eventually
from tests.security.conftest import still_provisions
from tests.wire.conftest import raw_link

HIGH, LOW = "\\ud83d", "\\ude00"  # the escapes of one valid pair (an emoji)

#: JSON texts that decode to a lone surrogate somewhere.
LONE: list[str] = [
    '"\\ud800"',  # a high surrogate alone
    '"\\udfff"',  # a low surrogate alone
    '"x\\uDBFFy"',  # upper-case hex
    '"\\uDc00"',  # mixed case
    f'"{LOW}{HIGH}"',  # a pair the wrong way round
    f'"{HIGH}x{LOW}"',  # split by another character
    f'"{HIGH}\\\\{LOW}"',  # high, then an escaped backslash
    '{"\\ud800":1}',  # in a key
    '{"a":[1,{"b":["ok","\\udc00"]}]}',  # deep inside
]

#: JSON texts with surrogate escapes that decode to valid text.
VALID: list[str] = [
    f'"{HIGH}{LOW}"',
    '"\\uD83D\\uDE00"',  # the same pair in upper case
    '"\\\\ud800"',  # an escaped backslash, then the letters "ud800"
    '"\\u00e9\\u0000\\u001f"',  # other escapes, control characters included
    '{"\\\\udfff":"\\\\\\\\ud800"}',
]


# --------------------------------------------------------------------------- the wire


def _layers() -> tuple[LayerKey, LayerKey]:
    return LayerKey(Key.generate(), os.urandom(32)), LayerKey(Key.generate(), os.urandom(32))


@pytest.mark.parametrize("text", LONE)
def test_the_wire_refuses_a_lone_surrogate_anywhere_in_a_frame(text: str) -> None:
    with pytest.raises(FrameError) as refused:
        parse_json(text.encode())
    assert refused.value.reason == "bad-json"
    assert "surrogate" in str(refused.value)


@pytest.mark.parametrize("text", VALID)
def test_the_wire_accepts_valid_escapes(text: str) -> None:
    assert parse_json(text.encode()) == json.loads(text)


def test_a_channel_refuses_a_payload_holding_a_lone_surrogate() -> None:
    inner, outer = _layers()
    receiver = Channel(inner, outer)
    frame = encode_frame(b'"{\\"Error\\":{\\"error\\":\\"\\ud800\\"}}"', inner, outer)
    with pytest.raises(FrameError) as refused:
        receiver.open(frame)
    assert refused.value.reason == "bad-json"
    # The payload may carry JSON that escapes a surrogate: that is the jobs layer's to judge.
    nested = encode_frame(b'"{\\"Error\\":{\\"error\\":\\"\\\\ud800\\"}}"', inner, outer)
    assert receiver.open(nested) == '{"Error":{"error":"\\ud800"}}'


def test_the_wire_reads_only_utf8() -> None:
    # json.loads(bytes) would take UTF-16, through which a surrogate escape would pass unseen.
    for data in ('"\\ud800"'.encode("utf-16-le"), '"ok"'.encode("utf-16"), b'\xef\xbb\xbf"ok"'):
        with pytest.raises(FrameError):
            parse_json(data)


def test_raw_control_characters_are_invalid_json_and_escaped_ones_are_text() -> None:
    for data in (b'"a\x00b"', b'"a\x01b"', b'"\n"', b'{"k\x1f":1}'):
        with pytest.raises(FrameError):
            parse_json(data)
    assert parse_json(b'"\\u0000\\u0007\\t\\u007f"') == "\x00\x07\t\x7f"


# --------------------------------------------------------------------- the jobs layer

_PUT = encode_command(Update(helpers.job()))


def _payloads_with(escape: str) -> list[str]:
    """Commands holding ``escape`` (JSON-escaped text) where each decoder meets text."""
    return [
        _PUT.replace("add_user alice", f"add_user {escape}alice"),  # a job's command
        _PUT.replace('"result":null', f'"result":"{escape}"'),  # a job's result
        _PUT.replace('{"job":', f'{{"extra":"{escape}","job":', 1),  # a field we ignore
        _PUT.replace('{"job":', f'{{"{escape}":0,"job":', 1),  # a key
        f'{{"Register":{{"agent":"Portal","engine":"{escape}","version":"0.32.2"}}}}',
        f'{{"Error":{{"error":"{escape}"}}}}',
        f'{{"Restart":{{"restart_type":"soft","destination":"a{escape}"}}}}',
        f'{{"HealthCheck":{{"visited":["{escape}"]}}}}',
        # A Broadgauge extension whose document is kept opaque: only the root check sees it.
        f'{{"PlannerRulesResponse":{{"published":[{{"destination":"i",'
        f'"document":{{"site":{{"name":"{escape}"}}}}}}],"request_id":"r"}}}}',
    ]


@pytest.mark.parametrize("payload", _payloads_with("\\ud800") + _payloads_with("\\uDFFF"))
def test_a_command_holding_a_lone_surrogate_is_unreadable(payload: str) -> None:
    with pytest.raises(ProtocolError, match="surrogate"):
        decode_command(payload)


@pytest.mark.parametrize("payload", _payloads_with(HIGH + LOW))
def test_a_command_holding_a_valid_pair_is_read(payload: str) -> None:
    command = decode_command(payload)
    assert decode_command(encode_command(command)) == command


def test_an_escaped_backslash_is_not_a_surrogate() -> None:
    command = decode_command('{"Error":{"error":"\\\\ud800"}}')
    assert command == ErrorCommand("\\ud800")


def test_a_raw_surrogate_in_a_payload_string_is_refused() -> None:
    # Only a str that never was UTF-8 can hold one; the wire never hands such a payload on.
    with pytest.raises(ProtocolError, match="surrogate"):
        decode_command('{"Error":{"error":"\ud800"}}')


def test_instruction_and_notification_text_holding_a_lone_surrogate_is_refused() -> None:
    with pytest.raises(GrammarError, match="surrogate"):
        Job.parse("portal.instance add_user \ud800u.p.portal", now=helpers.T0)
    with pytest.raises(GrammarError, match="surrogate"):
        Notification.parse("portal.instance user_added \udc00u.p.portal")
    # A valid astral character is text like any other (the grammar judges it).
    assert Job.parse("portal.instance add_user \U0001f600.p.portal", now=helpers.T0)


# -------------------------------------------------------------------------- properties

_SURROGATE_CHARS = st.integers(0xD800, 0xDFFF).map(chr)
_TEXTS = st.lists(st.one_of(st.characters(), _SURROGATE_CHARS), max_size=6).map("".join)
_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63) | _TEXTS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXTS, inner, max_size=4),
    max_leaves=12,
)


def _holds_surrogate(value: Any) -> bool:
    """The reference answer, the obvious way."""
    if isinstance(value, str):
        return any(0xD800 <= ord(ch) <= 0xDFFF for ch in value)
    if isinstance(value, list):
        return any(_holds_surrogate(item) for item in value)
    if isinstance(value, dict):
        return any(_holds_surrogate(k) or _holds_surrogate(v) for k, v in value.items())
    return False


# A \uXXXX escape, not an escaped backslash followed by "uXXXX".
_ESCAPE = re.compile(r"(?<!\\)((?:\\\\)*)\\u([0-9a-f]{4})")


def _escaped(value: Any, upper: bool) -> str:
    """``value`` as ASCII JSON: every non-ASCII character, surrogates too, is escaped."""
    text = json.dumps(value)
    if upper:
        text = _ESCAPE.sub(lambda m: m[1] + "\\u" + m[2].upper(), text)
    return text


@settings(max_examples=300)
@given(_VALUES, st.booleans())
def test_any_json_is_refused_exactly_when_it_decodes_to_a_lone_surrogate(
    value: Any, upper: bool
) -> None:
    text = _escaped(value, upper)
    lone = _holds_surrogate(json.loads(text))
    try:
        decoded = parse_json(text.encode())
    except FrameError:
        assert lone
    else:
        assert not lone
        assert decoded == json.loads(text)
    try:
        jobs_json.loads(text, "document")
    except ProtocolError:
        assert lone
    else:
        assert not lone


@settings(max_examples=200)
@given(_VALUES)
def test_a_str_holding_raw_surrogates_is_refused_by_the_jobs_decoder(value: Any) -> None:
    text = json.dumps(value, ensure_ascii=False)  # surrogates stay raw: they never pair up
    refused = False
    try:
        jobs_json.loads(text, "document")
    except ProtocolError:
        refused = True
    assert refused == _holds_surrogate(value)


@settings(max_examples=200)
@given(_VALUES)
def test_json_inside_a_payload_is_judged_by_the_jobs_layer_not_the_wire(value: Any) -> None:
    payload = json.dumps(value)  # ASCII: the wire sees only escaped backslashes
    assert parse_json(json.dumps(payload).encode()) == payload
    refused = False
    try:
        jobs_json.loads(payload, "command")
    except ProtocolError:
        refused = True
    assert refused == _holds_surrogate(json.loads(payload))


@settings(max_examples=200)
@given(st.text())
def test_valid_text_crosses_a_channel_and_a_command_unchanged(text: str) -> None:
    inner, outer = _layers()
    sender, receiver = Channel(inner, outer), Channel(inner, outer)
    assert receiver.open(sender.seal(text)) == text
    job = helpers.job(state=Status.RUNNING).complete_with(text, now=helpers.T0 + 1)
    command = Update(job)
    assert decode_command(receiver.open(sender.seal(encode_command(command))) or "") == command


# ----------------------------------------------------------------- a running network


@asynccontextmanager
async def intruder(network: Network, name: str = "intruder") -> AsyncIterator[Channel]:
    """A client the portal agent admits (it holds keys), which then misbehaves."""
    invite = network.agents["portal"].service.add_client(name, "127.0.0.1")
    async with raw_link(invite, name) as (ws, channel):
        _sockets[channel] = ws
        yield channel


_sockets: dict[Channel, ClientConnection] = {}


async def send_plaintext(channel: Channel, plaintext: bytes) -> None:
    """Seal any bytes, as a peer that does not use a JSON encoder could."""
    # The channel's layer keys are private: a well-behaved sender never needs them.
    await _sockets[channel].send(encode_frame(plaintext, channel._inner, channel._outer))


async def send_payload(channel: Channel, payload: str) -> None:
    await _sockets[channel].send(channel.seal(payload))


async def test_frames_holding_lone_surrogates_are_refused_and_the_network_serves_on(
    network: Network, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    portal = network.agents["portal"]
    rejected = portal.service.stats.frames_rejected["bad-json"]
    async with intruder(network) as channel:
        # The wire: the payload string itself holds the surrogate.
        for text in LONE:
            await send_plaintext(channel, text.encode())
        await send_plaintext(channel, b'"a\x01b"')  # a raw control character: not JSON
        # The jobs layer: the payload is fine text, the command in it is not.
        for payload in _payloads_with("\\ud800"):
            await send_payload(channel, payload)
        await send_plaintext(channel, b'"\\u0000"')  # a valid payload, but not a command
        # Last, a command that is fine: once it is read, everything before it was too.
        await send_plaintext(channel, b'"{\\"Error\\":{\\"error\\":\\"done \\ud83d\\ude00\\"}}"')
        await eventually(lambda: "reported an error: done \U0001f600" in caplog.text, 10)

    refused = portal.service.stats.frames_rejected["bad-json"] - rejected
    assert refused == len(LONE) + 1
    assert caplog.text.count("rejected a frame from intruder") == refused
    unreadable = caplog.text.count("unreadable command from intruder")
    assert unreadable == len(_payloads_with("\\ud800")) + 1
    assert all(not b.jobs() for p, b in portal.boards_by_peer() if p.name == "intruder")
    await still_provisions(network)


async def test_control_characters_in_a_user_name_are_refused_by_name(network: Network) -> None:
    # Legal in a Rust String, so every hop carries the job; the back end refuses it by name.
    for name in ("ctl\x00a", "ctl\x07b", "ctl\x1fc", "ctl\x7fd"):
        with pytest.raises(JobFailed) as failed:
            await network.submit(f"add_user {name}.{PROJECT}")
        # Refused naming the user (the back end's wording is its own).
        assert "ctl" in (failed.value.job.error_message or "")
    await still_provisions(network)
