"""The wire Service over real loopback sockets: admission, traffic, limits and recovery."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from broadgauge.wire import (
    Invite,
    Key,
    Limits,
    MessageTooLarge,
    PeerId,
    PeerNotConnected,
    Service,
    ServiceConfig,
    Timers,
)
from broadgauge.wire.handshake import (
    INNER_SALT_HEADER,
    OUTER_SALT_HEADER,
    Channel,
    StandbyStatus,
)

from .conftest import (
    FAST,
    Inbox,
    eventually,
    inviting,
    make_client,
    make_server,
    open_link,
    raw_link,
    running,
    wait_for_peer,
)


async def test_payloads_flow_both_ways(server: Service) -> None:
    async with running(server):
        server_inbox = Inbox(server)
        client = make_client(server.add_client("client", "127.0.0.1"))
        client_inbox = Inbox(client)
        async with running(client, listen=False):
            await wait_for_peer(client)
            await client.send("server", "ping ✓")
            message = await server_inbox.next()
            assert (message.peer.name, message.peer.zone, message.payload) == (
                "client",
                "default",
                "ping ✓",
            )
            await server.send("client", "pong")
            assert (await client_inbox.next()).payload == "pong"
    assert server.stats.connections_accepted == 1
    assert server.stats.frames_rejected == {}


def _tampered(invite, **changes):  # type: ignore[no-untyped-def]
    return replace(invite, **changes)


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("inner-key", "no-matching-key"),
        ("outer-key", "no-matching-key"),
        ("zone", "wrong-zone"),
        ("name", "wrong-name"),
        ("rotated", "no-matching-key"),
    ],
)
async def test_bad_clients_are_refused_while_good_ones_connect(
    server: Service, case: str, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="broadgauge.wire")
    async with running(server):
        good_invite = server.add_client("good", "127.0.0.1")
        bad_invite = server.add_client("client", "127.0.0.1")
        bad_name = "client"
        if case == "inner-key":
            bad_invite = replace(bad_invite, inner_key=Key.generate())
        elif case == "outer-key":
            bad_invite = replace(bad_invite, outer_key=Key.generate())
        elif case == "zone":
            bad_invite = replace(bad_invite, zone="elsewhere")
        elif case == "name":
            bad_name = "impostor"
        elif case == "rotated":
            server.rotate_client("client")

        bad = make_client(bad_invite, name=bad_name)
        good = make_client(good_invite, name="good")
        inbox = Inbox(server)
        async with running(bad, listen=False), running(good, listen=False):
            await eventually(lambda: server.stats.connections_rejected[reason] >= 2)
            await wait_for_peer(good)
            await good.send("server", "still serving")
            assert (await inbox.next()).payload == "still serving"
            assert bad.connected_peers() == []
            assert [p.name for p in server.connected_peers()] == ["good"]
    refusals = [r.getMessage() for r in caplog.records if "refused connection" in r.getMessage()]
    assert refusals and all("127.0.0.1" in text and reason in text for text in refusals)


async def _refused_upgrade(url: str, headers: dict[str, str] | None = None) -> int:
    """The HTTP status with which the server refuses a WebSocket upgrade to ``url``."""
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url, additional_headers=headers):
            pass
    return refused.value.response.status_code


async def test_ip_outside_the_allowed_range_is_refused_before_any_crypto(
    server: Service,
) -> None:
    async with running(server):
        outside = server.add_client("outside", "10.0.0.0/8")
        assert await _refused_upgrade(outside.url) == 403
        blocked = make_client(outside, name="outside")
        async with running(blocked, listen=False):
            await eventually(lambda: server.stats.connections_rejected["ip-not-allowed"] >= 3)
        # Once another entry admits loopback, the outside client gets past the address check,
        # but its keys are never tried from here: only entries allowed from 127.0.0.1 are.
        inside = server.add_client("inside", "127.0.0.0/8")
        blocked = make_client(outside, name="outside")
        allowed = make_client(inside, name="inside")
        async with running(blocked, listen=False), running(allowed, listen=False):
            await wait_for_peer(allowed)
            await eventually(lambda: server.stats.connections_rejected["no-matching-key"] >= 2)
        assert blocked.connected_peers() == []


async def test_rotation_issues_a_new_invite_that_works_and_drops_the_old_link(
    server: Service,
) -> None:
    async with inviting(server) as old_invite:
        client = make_client(old_invite)
        async with running(client, listen=False):
            await wait_for_peer(client)
            new_invite = server.rotate_client("client")
            assert new_invite.inner_key != old_invite.inner_key
            await eventually(lambda: client.connected_peers() == [])
            await eventually(lambda: server.stats.connections_rejected["no-matching-key"] >= 1)
            client.add_server(new_invite)
            await wait_for_peer(client)


async def test_proxy_header_supplies_the_caller_address() -> None:
    config = replace(ServiceConfig.create("server", port=0), proxy_header="X-Real-IP")
    server = Service(config, timers=FAST)
    async with running(server):
        invite = server.add_client("client", "192.0.2.0/24")
        salts = {INNER_SALT_HEADER: "00" * 32, OUTER_SALT_HEADER: "00" * 32}
        for value, status in [("203.0.113.9", 403), ("192.0.2.1, 10.0.0.1", 403)]:
            assert await _refused_upgrade(invite.url, {"X-Real-IP": value, **salts}) == status
        assert server.stats.connections_rejected["ip-not-allowed"] == 1
        assert server.stats.connections_rejected["bad-address"] == 1
        # An allowed proxy address passes admission; the handshake is then what fails.
        async with connect(
            invite.url, additional_headers={"X-Real-IP": "192.0.2.1", **salts}
        ) as ws:
            await ws.send("ab" * 100)
            with pytest.raises(ConnectionClosed):
                await ws.recv()
        await eventually(lambda: server.stats.connections_rejected["bad-frame"] == 1)


async def test_missing_salt_headers_are_a_bad_request(server: Service) -> None:
    async with inviting(server) as invite:
        assert await _refused_upgrade(invite.url) == 400
        assert server.stats.connections_rejected["missing-salt"] == 1


async def test_malformed_frames_are_skipped_counted_and_the_link_survives(
    server: Service,
) -> None:
    async with running(server):
        inbox = Inbox(server)
        invite = server.add_client("client", "127.0.0.1")
        async with raw_link(invite) as (ws, channel):
            good = channel.seal("first")
            await ws.send(good)
            assert (await inbox.next()).payload == "first"
            tampered = good[:200] + ("0" if good[200] != "0" else "1") + good[201:]
            await ws.send("not a frame at all")  # too short
            await ws.send("zz" * 100)  # not hex
            await ws.send(tampered)  # fails authentication
            await ws.send(good)  # replayed on the same connection
            await ws.send(b"\x00binary")
            await ws.send(channel.seal_value({"unexpected": "object"}))
            await ws.send(channel.seal("second"))
            assert (await inbox.next()).payload == "second"
        assert dict(server.stats.frames_rejected) == {
            "too-short": 1,
            "bad-hex": 1,
            "bad-auth": 1,
            "replayed": 1,
            "binary": 1,
            "bad-payload": 1,
        }


@pytest.mark.parametrize(("window", "refused"), [(2, 1), (3, 2)])
async def test_the_replay_window_of_the_limits_is_the_links(window: int, refused: int) -> None:
    """A frame sent again within the last ``replay_window`` frames is refused; one sent
    again after that many others is not remembered (the memory bound the operator chose)."""
    server = make_server(limits=Limits(replay_window=window))
    async with running(server):
        inbox = Inbox(server)
        invite = server.add_client("client", "127.0.0.1")
        async with raw_link(invite) as (ws, channel):
            frames = [channel.seal(f"job {i}") for i in range(3)]
            for frame in frames:
                await ws.send(frame)
            for frame in (frames[0], frames[2]):  # 3 frames and 1 frame back
                await ws.send(frame)
            await ws.send(channel.seal("last"))
            payloads = [(await inbox.next()).payload for _ in range(6 - refused)]
        assert payloads[:3] == ["job 0", "job 1", "job 2"]
        assert payloads[-1] == "last"
        assert server.stats.frames_rejected["replayed"] == refused


async def test_a_standby_poll_gets_a_standby_status(server: Service) -> None:
    async with inviting(server) as invite, raw_link(invite) as (ws, channel):
        await ws.send(channel.seal_value({}))
        from broadgauge.wire.envelope import parse_json

        # Reach into the channel's layers the way a peer would open the answer.
        answer = parse_json(
            __import__("broadgauge.wire.envelope", fromlist=["decode_frame"]).decode_frame(
                str(await ws.recv()), channel._inner, channel._outer
            )
        )
        assert answer == {"server_is_secondary": False, "client_is_secondary": False}


async def test_oversized_frames_close_only_that_link(caplog: pytest.LogCaptureFixture) -> None:
    server = make_server(limits=Limits(max_frame=4096))
    async with inviting(server) as invite:
        async with raw_link(invite) as (ws, channel):
            await ws.send(channel.seal("x" * 4000))
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        await eventually(lambda: server.stats.frames_rejected["oversized"] == 1)
        client = make_client(invite, limits=Limits(max_frame=4096))
        inbox = Inbox(server)
        async with running(client, listen=False):
            await wait_for_peer(client)
            await client.send("server", "small")
            assert (await inbox.next()).payload == "small"
            with pytest.raises(MessageTooLarge):
                await client.send("server", "y" * 4000)


async def test_handler_errors_are_counted_and_do_not_drop_the_link(server: Service) -> None:
    received: list[str] = []

    async def fragile(message):  # type: ignore[no-untyped-def]
        if message.payload == "boom":
            raise RuntimeError("handler bug")
        received.append(message.payload)

    server.on_message(fragile)
    async with running(server):
        client = make_client(server.add_client("client", "127.0.0.1"))
        async with running(client, listen=False):
            await wait_for_peer(client)
            await client.send("server", "boom")
            await client.send("server", "after")
            await eventually(lambda: received == ["after"])
    assert server.stats.handler_errors == 1


async def test_client_reconnects_after_the_server_restarts() -> None:
    first = make_server()
    await first.start()
    invite = first.add_client("client", "127.0.0.1")
    config = first.config
    client = make_client(invite)
    connects: list[str] = []

    async def on_connected(peer):  # type: ignore[no-untyped-def]
        connects.append(str(peer))

    client.on_connected(on_connected)
    async with running(client, listen=False):
        await wait_for_peer(client)
        await first.stop()
        await eventually(lambda: client.connected_peers() == [])
        second = Service(config, timers=FAST)  # same keys, same port
        inbox = Inbox(second)
        async with running(second):
            await wait_for_peer(client, timeout=5)
            await client.send("server", "back again")
            assert (await inbox.next()).payload == "back again"
    assert connects == ["server@default", "server@default"]


async def test_watchdog_closes_a_silent_peer() -> None:
    timers = replace(FAST, watchdog_tick=0.05, inactivity=0.3, keepalive=60)
    server = make_server(timers=timers)
    async with inviting(server) as invite:
        async with raw_link(invite) as (ws, _channel):
            await eventually(lambda: len(server.connected_peers()) == 1)
            # Say nothing.  The TCP connection stays open; only the watchdog can notice.
            with pytest.raises(ConnectionClosed):
                async with asyncio.timeout(3):
                    await ws.recv()
        await eventually(lambda: server.connected_peers() == [])
        assert server.stats.watchdog_closures == 1


async def test_keepalive_ping_pong_keeps_a_quiet_link_alive() -> None:
    timers = replace(FAST, watchdog_tick=0.05, inactivity=0.5, keepalive=0.1)
    server = make_server(timers=timers)
    async with running(server):
        client = make_client(server.add_client("client", "127.0.0.1"), timers=timers)
        async with running(client, listen=False):
            await wait_for_peer(client)
            await asyncio.sleep(1.5)  # three inactivity periods with no application traffic
            assert [p.name for p in server.connected_peers()] == ["client"]
    assert server.stats.watchdog_closures == 0
    assert client.stats.watchdog_closures == 0


async def test_polite_disconnect_and_unknown_peers(server: Service) -> None:
    async with running(server):
        client = make_client(server.add_client("client", "127.0.0.1"))
        async with running(client, listen=False):
            await wait_for_peer(client)
            with pytest.raises(PeerNotConnected):
                await client.send("nobody", "hello")
            await server.disconnect("client")
            await eventually(lambda: client.connected_peers() == [])
            # The client still holds the server entry, so it dials again by itself.
            await wait_for_peer(client)


@asynccontextmanager
async def _primary_and_standby(
    server: Service, invite: Invite
) -> AsyncIterator[
    tuple[tuple[ClientConnection, Channel], tuple[ClientConnection, Channel, StandbyStatus]]
]:
    """A link made by hand, then a second handshake by hand for the name the server now holds.

    Yields the primary's connection and channel, and the second connection's, with the
    standby status the server gave it.
    """
    async with raw_link(invite) as primary:
        await eventually(lambda: len(server.connected_peers()) == 1)
        second_ws, second, standby = await open_link(invite)
        try:
            yield primary, (second_ws, second, standby)
        finally:
            await second_ws.close()


async def test_a_second_connection_waits_as_a_standby_until_the_primary_goes(
    server: Service,
) -> None:
    async with inviting(server) as invite:
        inbox = Inbox(server)
        async with _primary_and_standby(server, invite) as (
            (first_ws, first),
            (second_ws, second, standby),
        ):
            assert standby == StandbyStatus(client_is_secondary=True)
            # The primary keeps the link; the standby is told to keep waiting.
            await first_ws.send(first.seal("from the primary"))
            assert (await inbox.next()).payload == "from the primary"
            await second_ws.send(second.seal_value({}))
            assert second.open_status(str(await second_ws.recv())) == standby
            await first_ws.close()
            await eventually(lambda: not server.connected_peers())
            await second_ws.send(second.seal_value({}))
            assert second.open_status(str(await second_ws.recv())).is_primary
            await second_ws.send(second.seal("from the promoted standby"))
            assert (await inbox.next()).payload == "from the promoted standby"
            assert server.connected_peers() == [PeerId("client", "default")]


async def test_a_standby_may_only_poll(server: Service) -> None:
    async with inviting(server) as invite:
        inbox = Inbox(server)
        async with _primary_and_standby(server, invite) as (
            (first_ws, first),
            (second_ws, second, _),
        ):
            await second_ws.send(second.seal("a message from a standby"))
            with pytest.raises(ConnectionClosed):
                async with asyncio.timeout(3):
                    await second_ws.recv()
            # The primary is untouched, and the standby's message was never delivered.
            await first_ws.send(first.seal("still here"))
            assert (await inbox.next()).payload == "still here"
    assert server.stats.connections_rejected["standby-message"] == 1


@pytest.mark.parametrize("change", ["rotate", "remove"])
async def test_changing_a_clients_keys_also_closes_its_standbys(
    server: Service, change: str
) -> None:
    async with inviting(server) as invite:
        inbox = Inbox(server)
        async with _primary_and_standby(server, invite) as ((first_ws, _), (second_ws, second, _)):
            await second_ws.send(second.seal_value({}))
            assert not second.open_status(str(await second_ws.recv())).is_primary
            if change == "rotate":
                server.rotate_client("client")
            else:
                server.remove_client("client")
            for ws in (first_ws, second_ws):
                with pytest.raises(ConnectionClosed):
                    async with asyncio.timeout(3):
                        while True:  # the standby's last poll may still be answered
                            await ws.recv()
            await eventually(lambda: not server.connected_peers())
            assert inbox.queue.empty()  # nothing sent with the old keys got through


async def _pong_never_comes() -> asyncio.Future[float]:
    return asyncio.get_running_loop().create_future()


async def _ping_never_sent() -> asyncio.Future[float]:
    await asyncio.Event().wait()  # a full send buffer that never drains
    raise AssertionError("unreachable")


@pytest.mark.parametrize("ping", [_pong_never_comes, _ping_never_sent])
async def test_a_half_open_primary_is_cut_for_its_standby(
    server: Service,
    monkeypatch: pytest.MonkeyPatch,
    ping: Callable[[], Awaitable[asyncio.Future[float]]],
) -> None:
    monkeypatch.setattr("broadgauge.wire.service.PRIMARY_PING_TIMEOUT", 0.2)
    async with (
        inviting(server) as invite,
        _primary_and_standby(server, invite) as (_, (second_ws, second, _)),
    ):
        # A half-open primary: quiet for a while, and its ping goes unanswered.
        link = server._links[PeerId("client", "default")]
        link.last_activity -= 60
        monkeypatch.setattr(link.connection, "ping", ping)
        promoted = False
        async with asyncio.timeout(5):
            while not promoted:
                await second_ws.send(second.seal_value({}))
                promoted = second.open_status(str(await second_ws.recv())).is_primary
        assert server._links[PeerId("client", "default")] is not link


async def test_a_hot_spare_agent_takes_over_when_the_primary_stops(server: Service) -> None:
    async with inviting(server) as invite:
        inbox = Inbox(server)
        primary, spare = make_client(invite), make_client(invite)
        spare_inbox = Inbox(spare)
        await primary.start(listen=False)
        try:
            await primary.wait_for_peer("server")
            await spare.start(listen=False)
            peer = PeerId("client", "default")
            await eventually(lambda: server._standby.standbys(peer) == 1, timeout=5)
            assert spare.connected_peers() == []
            await primary.send("server", "from the primary")
            assert (await inbox.next()).payload == "from the primary"
            await primary.stop()
            await wait_for_peer(spare, timeout=10)
            await spare.send("server", "from the spare")
            assert (await inbox.next()).payload == "from the spare"
            await server.send("client", "to whoever is primary")
            assert (await spare_inbox.next()).payload == "to whoever is primary"
        finally:
            await primary.stop()
            await spare.stop()


async def test_reconnect_backoff_is_capped() -> None:
    timers = Timers(reconnect_initial=0.02, reconnect_max=0.08, handshake=1.0)
    server = make_server()
    async with running(server):
        invite = server.add_client("client", "127.0.0.1")
    # The server is gone: the client keeps retrying at no more than the cap.
    client = make_client(invite, timers=timers)
    attempts: list[float] = []
    original = client._dial_once

    async def counting(entry):  # type: ignore[no-untyped-def]
        attempts.append(asyncio.get_running_loop().time())
        return await original(entry)

    client._dial_once = counting  # type: ignore[method-assign]
    async with running(client, listen=False):
        await eventually(lambda: len(attempts) >= 8, timeout=5)
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert max(gaps) < 0.5
    assert gaps[-1] >= 0.04 * 0.9  # reached the cap's lower jitter bound
