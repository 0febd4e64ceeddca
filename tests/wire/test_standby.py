"""The standby desk's bookkeeping, without sockets (the socket behaviour is in test_service)."""

from __future__ import annotations

import asyncio

import pytest

from broadgauge.wire import (
    Channel,
    ClientEntry,
    ClientHandshake,
    HandshakeError,
    IpAllow,
    Key,
    ServerEntry,
    ServerHandshake,
)
from broadgauge.wire.standby import MAX_STANDBYS, StandbyDesk


async def _alive(peer: object) -> bool:
    return True


def _yes() -> bool:
    return True


def test_only_one_owner_claims_a_free_slot_and_only_it_can_release_it() -> None:
    held: set[object] = set()
    desk = StandbyDesk(lambda peer: peer in held, _alive)
    first, second = object(), object()
    assert desk.claim("client@default", first)
    assert not desk.claim("client@default", second)  # held by the first claim
    desk.release("client@default", second)  # not its claim: nothing changes
    assert not desk.claim("client@default", second)
    desk.release("client@default", first)
    assert desk.claim("client@default", second)
    # A live link holds the slot even with no claim outstanding.
    desk.release("client@default", second)
    held.add("client@default")
    assert not desk.claim("client@default", first)
    assert desk.claim("other@default", first)  # slots are per name@zone


class _Silent:
    """A standby connection that never polls."""

    async def send(self, message: str) -> None:
        raise AssertionError("nothing should be sent")

    async def recv(self) -> str:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_more_than_max_standbys_are_refused_and_a_silent_one_times_out() -> None:
    desk = StandbyDesk(lambda peer: True, _alive)
    waiting = [
        asyncio.ensure_future(desk.hold(_Silent(), None, "p", timeout=5, is_current=_yes))  # type: ignore[arg-type]
        for _ in range(MAX_STANDBYS)
    ]
    await asyncio.sleep(0)
    assert desk.standbys("p") == MAX_STANDBYS
    with pytest.raises(HandshakeError) as refused:
        await desk.hold(_Silent(), None, "p", timeout=5, is_current=_yes)  # type: ignore[arg-type]
    assert refused.value.reason == "too-many-standbys"
    for task in waiting:
        task.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)
    assert desk.standbys("p") == 0
    with pytest.raises(TimeoutError):
        await desk.hold(_Silent(), None, "p", timeout=0.05, is_current=_yes)  # type: ignore[arg-type]
    assert desk.standbys("p") == 0


class _PollsThenFails:
    """A standby that polls once, then is gone before the promotion reaches it."""

    def __init__(self, poll: str) -> None:
        self.poll = poll

    async def send(self, message: str) -> None:
        raise ConnectionError("gone")

    async def recv(self) -> str:
        return self.poll


async def test_a_promotion_that_cannot_be_sent_gives_the_slot_back() -> None:
    client, server = _channels()
    desk = StandbyDesk(lambda peer: False, _alive)
    with pytest.raises(ConnectionError):
        await desk.hold(
            _PollsThenFails(client.seal_value({})), server, "p", timeout=5, is_current=_yes
        )
    assert desk.claim("p", object())  # the slot is free again
    assert desk.waiting_connections("p") == []


async def test_a_standby_whose_keys_were_replaced_is_never_promoted() -> None:
    client, server = _channels()
    desk = StandbyDesk(lambda peer: False, _alive)
    with pytest.raises(HandshakeError) as refused:
        await desk.hold(
            _PollsThenFails(client.seal_value({})), server, "p", timeout=5, is_current=lambda: False
        )
    assert refused.value.reason == "revoked"
    assert desk.claim("p", object())


def _channels() -> tuple[Channel, Channel]:
    """Both ends of an established channel (a handshake run in memory)."""
    inner, outer = Key.generate(), Key.generate()
    entry = ClientEntry("client", "default", IpAllow.parse("127.0.0.1"), inner, outer)
    invite_side = ServerEntry("server", "ws://127.0.0.1:1/", "default", inner, outer)
    client = ClientHandshake("client", invite_side)
    server = ServerHandshake("server", [entry], dict(client.headers))
    reply = client.receive(server.receive(client.start()))
    assert reply is not None
    client.receive(server.receive(reply))
    assert client.channel is not None and server.channel is not None
    return client.channel, server.channel
