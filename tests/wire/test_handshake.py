"""The sans-I/O handshake (notes §1.4-§1.6), driven by passing frames between two objects."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broadgauge import OPENPORTAL_VERSION
from broadgauge.wire import (
    Channel,
    ClientEntry,
    ClientHandshake,
    FrameError,
    HandshakeError,
    IpAllow,
    Key,
    PeerDetails,
    ServerEntry,
    ServerHandshake,
)
from broadgauge.wire.envelope import LayerKey, decode_frame, dump_json, encode_frame
from broadgauge.wire.handshake import (
    INNER_SALT_HEADER,
    OUTER_SALT_HEADER,
    StandbyStatus,
    check_salt_headers,
    unmask_salts,
)
from broadgauge.wire.keys import xor_with_key

NOT_SECONDARY = {"server_is_secondary": False, "client_is_secondary": False}


@dataclass
class Link:
    """Both ends' view of one configured link: the server's client entry and the invite."""

    client_entry: ClientEntry
    server_entry: ServerEntry
    client_name: str = "bridge"
    server_name: str = "portal"


def make_link(
    client_name: str = "bridge", server_name: str = "portal", zone: str = "default"
) -> Link:
    inner, outer = Key.generate(), Key.generate()
    return Link(
        ClientEntry(client_name, zone, IpAllow.parse("127.0.0.1"), inner, outer),
        ServerEntry(server_name, "ws://portal.example.org:8040/", zone, inner, outer),
        client_name,
        server_name,
    )


def draws(*chunks: bytes) -> Callable[[int], bytes]:
    """A deterministic random_bytes that hands out the given chunks in order."""
    it: Iterator[bytes] = iter(chunks)

    def take(n: int) -> bytes:
        chunk = next(it)
        assert len(chunk) == n
        return chunk

    return take


def run(
    client: ClientHandshake, server: ServerHandshake
) -> tuple[str, str, str, str]:  # the four frames
    f1 = client.start()
    f2 = server.receive(f1)
    f3 = client.receive(f2)
    assert f3 is not None
    f4 = server.receive(f3)
    assert client.receive(f4) is None
    return f1, f2, f3, f4


def pair(link: Link, *, client_name: str | None = None) -> tuple[ClientHandshake, ServerHandshake]:
    client = ClientHandshake(client_name or link.client_name, link.server_entry)
    server = ServerHandshake(link.server_name, [link.client_entry], dict(client.headers))
    return client, server


def _client_at_step_3(
    link: Link, *, client_name: str | None = None
) -> tuple[ClientHandshake, ServerHandshake, str]:
    """Run the handshake up to the client's third frame (its PeerDetails), not yet received."""
    client, server = pair(link, client_name=client_name)
    f3 = client.receive(server.receive(client.start()))
    assert f3 is not None
    return client, server, f3


def reason_of(call: Callable[[], Any]) -> str:
    with pytest.raises(HandshakeError) as info:
        call()
    return info.value.reason


# --- success -------------------------------------------------------------------------------


def test_success_and_traffic_both_ways() -> None:
    link = make_link()
    client, server = pair(link)
    assert not server.done
    run(client, server)
    assert server.done
    assert client.channel is not None and server.channel is not None
    assert server.client == link.client_entry
    for payload in ("KEEPALIVE", "héllo 🚀", "", "x" * 50_000):
        assert server.channel.open(client.channel.seal(payload)) == payload
        assert client.channel.open(server.channel.seal(payload)) == payload
    # Standby poll and its answer travel too.
    assert server.channel.open(client.channel.seal_value({})) is None


def test_peer_details_contents() -> None:
    link = make_link(client_name="bridge", server_name="portal", zone="remote>local")
    client, server = pair(link)
    run(client, server)
    assert server.peer == PeerDetails("bridge", "remote>local", 2)
    assert client.peer == PeerDetails("portal", "remote>local", 2)


def test_exact_wire_objects_and_keys_of_every_step() -> None:
    """Decrypt each handshake frame with the keys §1.5 says it is sealed under."""
    link = make_link(zone="zone_a")
    inner_psk, outer_psk = link.server_entry.inner_key, link.server_entry.outer_key
    inner_salt, outer_salt = os.urandom(32), os.urandom(32)
    client_outer_session, server_inner_session = os.urandom(32), os.urandom(32)
    client = ClientHandshake(
        "bridge",
        link.server_entry,
        random_bytes=draws(inner_salt, outer_salt, client_outer_session),
    )
    assert client.headers == {
        INNER_SALT_HEADER: xor_with_key(inner_salt, outer_psk).hex(),
        OUTER_SALT_HEADER: xor_with_key(outer_salt, inner_psk).hex(),
    }
    server = ServerHandshake(
        "portal",
        [link.client_entry],
        dict(client.headers),
        random_bytes=draws(server_inner_session),
    )
    f1, f2, f3, f4 = run(client, server)

    def opened(frame: str, inner_key: bytes, outer_key: bytes) -> Any:
        plain = decode_frame(
            frame,
            LayerKey(Key(inner_key), inner_salt),
            LayerKey(Key(outer_key), outer_salt),
        )
        return json.loads(plain)

    psk_i, psk_o = inner_psk.secret_bytes, outer_psk.secret_bytes
    assert opened(f1, psk_i, psk_o) == {
        "session_key": {"data": client_outer_session.hex()},
        "engine": "paddington",
        "version": OPENPORTAL_VERSION,
    }
    assert opened(f2, psk_i, client_outer_session) == {
        "session_key": {"data": server_inner_session.hex()},
        "engine": "paddington",
        "version": "0.32.2",
    }
    with pytest.raises(FrameError):  # f2 is not under the outer PSK
        opened(f2, psk_i, psk_o)
    assert opened(f3, server_inner_session, client_outer_session) == {
        "name": "bridge",
        "zone": "zone_a",
        "version": 2,
        "standby_status": NOT_SECONDARY,
    }
    assert opened(f4, server_inner_session, client_outer_session) == {
        "name": "portal",
        "zone": "zone_a",
        "version": 2,
        "standby_status": NOT_SECONDARY,
    }
    # Traffic after the handshake: session keys with the same two connection salts.
    assert client.channel is not None
    frame = client.channel.seal("KEEPALIVE")
    assert opened(frame, server_inner_session, client_outer_session) == "KEEPALIVE"


def test_server_picks_the_right_candidate() -> None:
    links = [make_link(client_name=f"c{i}") for i in range(5)]
    for target in range(5):
        link = links[target]
        client = ClientHandshake(link.client_name, link.server_entry)
        server = ServerHandshake("portal", [lk.client_entry for lk in links], client.headers)
        run(client, server)
        assert server.client is link.client_entry
        assert server.peer == PeerDetails(f"c{target}", "default", 2)


def test_first_candidate_with_matching_keys_wins() -> None:
    link = make_link(client_name="first")
    twin = replace(link.client_entry, name="second")
    client = ClientHandshake("first", link.server_entry)
    server = ServerHandshake("portal", [link.client_entry, twin], client.headers)
    run(client, server)
    assert server.client is link.client_entry
    # The other way round, the twin wins and the client's name no longer matches.
    client = ClientHandshake("first", link.server_entry)
    server = ServerHandshake("portal", [twin, link.client_entry], client.headers)
    f2 = server.receive(client.start())
    assert server.client is twin
    f3 = client.receive(f2)
    assert f3 is not None
    assert reason_of(lambda: server.receive(f3)) == "wrong-name"


def test_independent_connections_use_independent_salts_and_keys() -> None:
    link = make_link()
    c1, s1 = pair(link)
    c2, s2 = pair(link)
    run(c1, s1)
    run(c2, s2)
    assert c1.headers != c2.headers
    assert c1.channel is not None and s2.channel is not None
    with pytest.raises(FrameError) as info:
        s2.channel.open(c1.channel.seal("for connection 1"))
    assert info.value.reason == "bad-auth"


# --- rejections ----------------------------------------------------------------------------


def _wrong_inner_key(entry: ServerEntry) -> ServerEntry:
    return replace(entry, inner_key=Key.generate())


def _wrong_outer_key(entry: ServerEntry) -> ServerEntry:
    return replace(entry, outer_key=Key.generate())


def _swapped_keys(entry: ServerEntry) -> ServerEntry:
    return replace(entry, inner_key=entry.outer_key, outer_key=entry.inner_key)


@pytest.mark.parametrize("spoil", [_wrong_inner_key, _wrong_outer_key, _swapped_keys])
def test_wrong_keys_are_no_matching_key(spoil: Callable[[ServerEntry], ServerEntry]) -> None:
    link = make_link()
    client = ClientHandshake("bridge", spoil(link.server_entry))
    server = ServerHandshake("portal", [link.client_entry], client.headers)
    assert reason_of(lambda: server.receive(client.start())) == "no-matching-key"
    assert server.client is None and server.channel is None and not server.done


def test_no_candidates_is_no_matching_key() -> None:
    link = make_link()
    client = ClientHandshake("bridge", link.server_entry)
    server = ServerHandshake("portal", [], client.headers)
    assert reason_of(lambda: server.receive(client.start())) == "no-matching-key"


def _tamper(value: str) -> str:
    return ("0" if value[0] != "0" else "1") + value[1:]


@pytest.mark.parametrize(
    ("header", "reasons"),
    [
        # The outer salt is what every candidate's outer layer is tried under.
        (OUTER_SALT_HEADER, {"no-matching-key"}),
        # The outer layer opens, so the caller is identified; its inner layer then fails.
        # Whether that is reported as no-matching-key or bad-frame depends on whether the
        # server tries the remaining candidates, which it need not: the outer layer already
        # proved the keys.
        (INNER_SALT_HEADER, {"no-matching-key", "bad-frame"}),
    ],
)
def test_a_tampered_salt_header_is_rejected(header: str, reasons: set[str]) -> None:
    link = make_link()
    client = ClientHandshake("bridge", link.server_entry)
    headers = dict(client.headers)
    headers[header] = _tamper(headers[header])
    server = ServerHandshake("portal", [link.client_entry], headers)
    assert reason_of(lambda: server.receive(client.start())) in reasons
    assert server.client is None and server.channel is None and not server.done


def test_wrong_zone() -> None:
    link = make_link(zone="default")
    link.server_entry = replace(link.server_entry, zone="elsewhere")
    _, server, f3 = _client_at_step_3(link)
    assert reason_of(lambda: server.receive(f3)) == "wrong-zone"
    assert server.channel is None and server.peer is None and not server.done


def test_client_claims_another_name() -> None:
    link = make_link(client_name="bridge")
    _, server, f3 = _client_at_step_3(link, client_name="impostor")
    assert reason_of(lambda: server.receive(f3)) == "wrong-name"
    assert server.channel is None and not server.done


def test_server_claims_another_name() -> None:
    link = make_link(server_name="portal")
    link.server_name = "not-the-portal"
    client, server, f3 = _client_at_step_3(link)
    f4 = server.receive(f3)
    assert reason_of(lambda: client.receive(f4)) == "wrong-name"
    assert client.channel is None and client.peer is None


def _details(name: str, zone: str, version: Any) -> bytes:
    return dump_json(
        {"name": name, "zone": zone, "version": version, "standby_status": NOT_SECONDARY}
    )


@pytest.mark.parametrize("version", [1, 3, 0, -2, 2**40])
def test_client_with_wrong_protocol_version(version: int) -> None:
    link = make_link()
    client, server, _ = _client_at_step_3(link)
    forged = encode_frame(_details("bridge", "default", version), *client._session_layers())
    assert reason_of(lambda: server.receive(forged)) == "wrong-version"
    assert not server.done


@pytest.mark.parametrize("version", [1, 3])
def test_server_with_wrong_protocol_version(version: int) -> None:
    link = make_link()
    client, server, f3 = _client_at_step_3(link)
    server.receive(f3)
    assert server._layers is not None
    forged = encode_frame(_details("portal", "default", version), *server._layers)
    assert reason_of(lambda: client.receive(forged)) == "wrong-version"
    assert client.channel is None


def test_server_reply_with_wrong_zone() -> None:
    link = make_link()
    client, server, f3 = _client_at_step_3(link)
    server.receive(f3)
    assert server._layers is not None
    forged = encode_frame(_details("portal", "other", 2), *server._layers)
    assert reason_of(lambda: client.receive(forged)) == "wrong-zone"


@pytest.mark.parametrize(
    "body",
    [
        {"name": "bridge", "zone": "default", "version": "2"},
        {"name": "bridge", "zone": "default", "version": True},
        {"name": "bridge", "zone": "default", "version": 2.0},
        {"name": "bridge", "zone": "default"},
        {"name": "bridge", "version": 2},
        {"zone": "default", "version": 2},
        {"name": 5, "zone": "default", "version": 2},
        ["bridge", "default", 2],
        "bridge",
        None,
    ],
)
def test_malformed_peer_details(body: Any) -> None:
    link = make_link()
    client, server, _ = _client_at_step_3(link)
    forged = encode_frame(dump_json(body), *client._session_layers())
    assert reason_of(lambda: server.receive(forged)) == "bad-peer-details"


def test_a_server_that_already_holds_the_client_makes_it_a_standby() -> None:
    link = make_link()
    client = ClientHandshake(link.client_name, link.server_entry)
    asked: list[tuple[str, str]] = []

    def claim(name: str, zone: str) -> bool:
        asked.append((name, zone))
        return False  # the name is taken: hold this connection as a standby

    server = ServerHandshake(
        link.server_name, [link.client_entry], dict(client.headers), claim=claim
    )
    run(client, server)
    assert asked == [("bridge", "default")]
    assert server.client_is_secondary
    assert client.peer is not None
    assert client.peer.standby == StandbyStatus(client_is_secondary=True)
    assert not client.peer.standby.is_primary
    # The standby's poll and the server's answer, over the established channel.
    assert client.channel is not None and server.channel is not None
    assert server.channel.open(client.channel.seal_value({})) is None
    answer = server.channel.seal_value(StandbyStatus(client_is_secondary=True).to_json())
    assert client.channel.open_status(answer) == StandbyStatus(client_is_secondary=True)


def test_a_server_with_the_slot_free_keeps_the_client_primary() -> None:
    link = make_link()
    client = ClientHandshake(link.client_name, link.server_entry)
    server = ServerHandshake(
        link.server_name, [link.client_entry], dict(client.headers), claim=lambda n, z: True
    )
    run(client, server)
    assert not server.client_is_secondary
    assert client.peer is not None and client.peer.standby.is_primary


@pytest.mark.parametrize(
    "status", [None, [], "primary", {"server_is_secondary": 0, "client_is_secondary": False}]
)
def test_malformed_standby_status(status: Any) -> None:
    body = {"name": "a", "zone": "b", "version": 2, "standby_status": status}
    assert reason_of(lambda: PeerDetails.from_json(body)) == "bad-peer-details"


def test_a_standby_answer_that_is_not_a_status_is_a_frame_error() -> None:
    link = make_link()
    client, server = pair(link)
    run(client, server)
    assert client.channel is not None and server.channel is not None
    for value in ("KEEPALIVE", {}, {"server_is_secondary": "no"}):
        with pytest.raises(FrameError):
            client.channel.open_status(server.channel.seal_value(value))


def test_peer_details_json_round_trip() -> None:
    details = PeerDetails("a", "b<c", 2)
    assert details.to_json() == {
        "name": "a",
        "zone": "b<c",
        "version": 2,
        "standby_status": NOT_SECONDARY,
    }
    assert PeerDetails.from_json(details.to_json()) == details
    assert PeerDetails.from_json({"name": "a", "zone": "b", "version": 7}).version == 7


@pytest.mark.parametrize(
    "body",
    [
        {"engine": "paddington", "version": "0.32.2"},
        {"session_key": "ab" * 32},
        {"session_key": {"data": "00" * 32}},
        {"session_key": {"data": "ab" * 31}},
        {"session_key": {"data": "zz" * 32}},
        {"session_key": None},
        [],
        "hello",
    ],
)
def test_bad_first_frame_body(body: Any) -> None:
    link = make_link()
    inner_salt, outer_salt = os.urandom(32), os.urandom(32)
    entry = link.server_entry
    headers = {
        INNER_SALT_HEADER: xor_with_key(inner_salt, entry.outer_key).hex(),
        OUTER_SALT_HEADER: xor_with_key(outer_salt, entry.inner_key).hex(),
    }
    frame = encode_frame(
        dump_json(body),
        LayerKey(entry.inner_key, inner_salt),
        LayerKey(entry.outer_key, outer_salt),
    )
    server = ServerHandshake("portal", [link.client_entry], headers)
    assert reason_of(lambda: server.receive(frame)) == "bad-handshake"
    assert not server.done and server.channel is None


def test_bad_server_reply_body() -> None:
    link = make_link()
    entry = link.server_entry
    salts = (os.urandom(32), os.urandom(32))
    session = Key.generate()
    client = ClientHandshake(
        "bridge", entry, random_bytes=draws(salts[0], salts[1], session.secret_bytes)
    )
    client.start()
    reply = encode_frame(
        dump_json({"session_key": {"data": "00" * 32}}),
        LayerKey(entry.inner_key, salts[0]),
        LayerKey(session, salts[1]),
    )
    assert reason_of(lambda: client.receive(reply)) == "bad-handshake"


def test_garbage_frames_become_bad_frame() -> None:
    link = make_link()
    client, server = pair(link)
    assert reason_of(lambda: server.receive("zz" * 100)) == "bad-frame"
    client.start()
    assert reason_of(lambda: client.receive("short")) == "bad-frame"


@pytest.mark.parametrize("missing", [INNER_SALT_HEADER, OUTER_SALT_HEADER])
def test_missing_salt_header(missing: str) -> None:
    link = make_link()
    client = ClientHandshake("bridge", link.server_entry)
    headers: dict[str, str | None] = dict(client.headers)
    del headers[missing]
    assert reason_of(lambda: ServerHandshake("portal", [link.client_entry], headers)) == (
        "missing-salt"
    )
    headers[missing] = None
    assert reason_of(lambda: check_salt_headers(headers)) == "missing-salt"
    assert reason_of(lambda: check_salt_headers({})) == "missing-salt"


@pytest.mark.parametrize(
    "value", ["", "zz" * 32, "ab" * 31, "ab" * 33, "abc", "é" * 64, "ab" * 31 + "g0"]
)
@pytest.mark.parametrize("header", [INNER_SALT_HEADER, OUTER_SALT_HEADER])
def test_malformed_salt_header(header: str, value: str) -> None:
    link = make_link()
    client = ClientHandshake("bridge", link.server_entry)
    headers: dict[str, str | None] = dict(client.headers)
    headers[header] = value
    assert reason_of(lambda: ServerHandshake("portal", [link.client_entry], headers)) == "bad-salt"


def test_unmask_salts_inverts_the_client_mask() -> None:
    link = make_link()
    salts = (os.urandom(32), os.urandom(32))
    client = ClientHandshake(
        "bridge", link.server_entry, random_bytes=draws(salts[0], salts[1], os.urandom(32))
    )
    assert unmask_salts(client.headers, link.client_entry) == salts
    # Uppercase hex is the same salt.
    upper = {k: v.upper() for k, v in client.headers.items()}
    assert unmask_salts(check_salt_headers(dict(upper)), link.client_entry) == salts


# --- ordering ------------------------------------------------------------------------------


def test_client_receive_before_start_is_out_of_order() -> None:
    link = make_link()
    client, _ = pair(link)
    other, other_server = pair(link)
    f2 = other_server.receive(other.start())  # a genuine step-2 frame, but we never started
    assert reason_of(lambda: client.receive(f2)) == "out-of-order"


def test_client_start_twice_is_out_of_order() -> None:
    link = make_link()
    client, _ = pair(link)
    client.start()
    assert reason_of(client.start) == "out-of-order"


def test_server_frame_after_done_is_out_of_order() -> None:
    link = make_link()
    client, server = pair(link)
    _, _, f3, _ = run(client, server)
    assert reason_of(lambda: server.receive(f3)) == "out-of-order"
    assert client.channel is not None
    assert reason_of(lambda: server.receive(client.channel.seal("KEEPALIVE"))) == "out-of-order"


def test_client_frame_after_done_is_out_of_order() -> None:
    link = make_link()
    client, server = pair(link)
    _, _, _, f4 = run(client, server)
    assert reason_of(lambda: client.receive(f4)) == "out-of-order"


def test_first_frame_replayed_as_step_three() -> None:
    link = make_link()
    client, server = pair(link)
    f1 = client.start()
    f2 = server.receive(f1)
    assert reason_of(lambda: server.receive(f1)) == "bad-frame"
    # A failed machine stays failed, even for the genuine step-3 frame.
    f3 = client.receive(f2)
    assert f3 is not None
    assert reason_of(lambda: server.receive(f3)) == "out-of-order"
    assert not server.done and server.channel is None


def test_server_reply_replayed_as_step_four() -> None:
    link = make_link()
    client, server = pair(link)
    f2 = server.receive(client.start())
    client.receive(f2)
    assert reason_of(lambda: client.receive(f2)) == "bad-frame"
    assert reason_of(lambda: client.receive(f2)) == "out-of-order"


def test_failed_server_stays_failed() -> None:
    link = make_link()
    _, server, f3 = _client_at_step_3(link, client_name="impostor")
    assert reason_of(lambda: server.receive(f3)) == "wrong-name"
    assert reason_of(lambda: server.receive(f3)) == "out-of-order"
    assert not server.done


def test_frame_of_one_handshake_fed_to_another() -> None:
    link = make_link()
    _, _, f3_from_1 = _client_at_step_3(link)
    c2, s2 = pair(link)
    s2.receive(c2.start())
    assert reason_of(lambda: s2.receive(f3_from_1)) == "bad-frame"


def test_frame_for_connection_one_cannot_start_connection_two() -> None:
    link = make_link()
    c1, _ = pair(link)
    c2, s2 = pair(link)
    assert c1.headers != c2.headers
    assert reason_of(lambda: s2.receive(c1.start())) == "no-matching-key"


# --- channels after the handshake ----------------------------------------------------------


def _established() -> tuple[Channel, Channel]:
    link = make_link()
    client, server = pair(link)
    run(client, server)
    assert client.channel is not None and server.channel is not None
    return client.channel, server.channel


def test_channel_answers_a_standby_poll() -> None:
    client_ch, server_ch = _established()
    assert server_ch.open(client_ch.seal_value({})) is None
    answer = server_ch.seal_value(Channel.standby_answer())
    assert json.loads(decode_frame(answer, client_ch._inner, client_ch._outer)) == NOT_SECONDARY


@pytest.mark.parametrize("value", [None, 2, [], [1], {"a": 1}, NOT_SECONDARY, True])
def test_channel_rejects_non_string_payloads(value: Any) -> None:
    client_ch, server_ch = _established()
    with pytest.raises(FrameError) as info:
        server_ch.open(client_ch.seal_value(value))
    assert info.value.reason == "bad-payload"
    # The channel is still usable.
    assert server_ch.open(client_ch.seal("ok")) == "ok"


def test_channel_rejects_a_replayed_frame() -> None:
    client_ch, server_ch = _established()
    frame = client_ch.seal("Put job")
    assert server_ch.open(frame) == "Put job"
    with pytest.raises(FrameError) as info:
        server_ch.open(frame)
    assert info.value.reason == "replayed"
    with pytest.raises(FrameError):
        server_ch.open(frame.upper())
    assert server_ch.open(client_ch.seal("Put job")) == "Put job"


def test_channel_rejects_its_own_frame_reflected_back() -> None:
    # The protocol seals both directions under the same session keys and salts, so a frame
    # the client sent can be bounced back to it and opens as if the server had sent it.
    client_ch, _ = _established()
    frame = client_ch.seal("Put job")
    with pytest.raises(FrameError):
        client_ch.open(frame)


def test_handshake_frames_do_not_open_on_the_channel() -> None:
    link = make_link()
    client, server = pair(link)
    f1, f2, f3, _ = run(client, server)
    assert client.channel is not None and server.channel is not None
    for frame in (f1, f2):
        with pytest.raises(FrameError):
            server.channel.open(frame)
    # f3/f4 are under the session keys but hold objects, not payload strings.
    with pytest.raises(FrameError) as info:
        server.channel.open(f3)
    assert info.value.reason == "bad-payload"


# --- fuzzing -------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=600) | st.text(alphabet="0123456789abcdef", max_size=600))
def test_fuzz_server_first_frame(text: str) -> None:
    _, server = pair(make_link())
    with pytest.raises(HandshakeError):
        server.receive(text)


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=600) | st.text(alphabet="0123456789abcdef", max_size=600))
def test_fuzz_client_second_frame(text: str) -> None:
    link = make_link()
    client = ClientHandshake("bridge", link.server_entry)
    client.start()
    with pytest.raises(HandshakeError):
        client.receive(text)


_salt_values = st.one_of(
    st.none(),
    st.text(max_size=80),
    st.binary(max_size=40).map(bytes.hex),
    st.binary(min_size=32, max_size=32).map(bytes.hex),
)


@settings(max_examples=200, deadline=None)
@given(
    st.fixed_dictionaries(
        {}, optional={INNER_SALT_HEADER: _salt_values, OUTER_SALT_HEADER: _salt_values}
    )
)
def test_fuzz_salt_headers(headers: dict[str, str | None]) -> None:
    try:
        checked = check_salt_headers(headers)
    except HandshakeError as exc:
        assert exc.reason in {"missing-salt", "bad-salt"}
        return
    assert set(checked) == {INNER_SALT_HEADER, OUTER_SALT_HEADER}
    assert all(len(bytes.fromhex(v)) == 32 for v in checked.values())
