"""Shared helpers for wire tests that use real sockets on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
from websockets.asyncio.client import ClientConnection, connect

from broadgauge.wire import (
    Channel,
    ClientHandshake,
    Invite,
    Limits,
    Message,
    ServerEntry,
    Service,
    ServiceConfig,
    Timers,
)
from broadgauge.wire.handshake import StandbyStatus

FAST = Timers(reconnect_initial=0.05, reconnect_max=0.2, handshake=2.0, close=1.0)


class Inbox:
    """Collects the messages a service receives."""

    def __init__(self, service: Service) -> None:
        self.queue: asyncio.Queue[Message] = asyncio.Queue()
        service.on_message(self.queue.put)

    async def next(self, timeout: float = 3.0) -> Message:
        async with asyncio.timeout(timeout):
            return await self.queue.get()


async def eventually(predicate: Callable[[], bool], timeout: float = 3.0) -> None:
    """Wait until ``predicate()`` holds, polling the event loop."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


async def wait_for_peer(service: Service, peer: str = "server", timeout: float = 3.0) -> None:
    """Wait until ``service`` has a live link to ``peer``."""
    async with asyncio.timeout(timeout):
        await service.wait_for_peer(peer)


@asynccontextmanager
async def running(service: Service, *, listen: bool = True) -> AsyncIterator[Service]:
    await service.start(listen=listen)
    try:
        yield service
    finally:
        await service.stop()


@asynccontextmanager
async def inviting(server: Service, client: str = "client") -> AsyncIterator[Invite]:
    """Run ``server`` with ``client`` invited from loopback; yield the client's invite."""
    async with running(server):
        yield server.add_client(client, "127.0.0.1")


def make_server(name: str = "server", timers: Timers = FAST, **kwargs: object) -> Service:
    return Service(ServiceConfig.create(name, port=0), timers=timers, **kwargs)  # type: ignore[arg-type]


def make_client(
    invite: Invite, name: str = "client", timers: Timers = FAST, limits: Limits | None = None
) -> Service:
    client = Service(ServiceConfig.create(name, port=0), timers=timers, limits=limits)
    client.add_server(invite)
    return client


async def open_link(
    invite: Invite, name: str = "client"
) -> tuple[ClientConnection, Channel, StandbyStatus]:
    """Complete a handshake by hand: the connection, its channel and the server's standby status.

    The caller closes the connection.
    """
    handshake = ClientHandshake(name, ServerEntry.from_invite(invite))
    ws = await connect(invite.url, additional_headers=handshake.headers)
    try:
        await ws.send(handshake.start())
        reply = handshake.receive(str(await ws.recv()))
        assert reply is not None
        await ws.send(reply)
        assert handshake.receive(str(await ws.recv())) is None
        assert handshake.channel is not None and handshake.peer is not None
    except BaseException:
        await ws.close()
        raise
    return ws, handshake.channel, handshake.peer.standby


@asynccontextmanager
async def raw_link(
    invite: Invite, name: str = "client"
) -> AsyncIterator[tuple[ClientConnection, Channel]]:
    """Complete a handshake by hand, so a test can then misbehave on the wire."""
    ws, channel, _ = await open_link(invite, name)
    try:
        yield ws, channel
    finally:
        await ws.close()


@pytest.fixture
def server() -> Service:
    return make_server()
