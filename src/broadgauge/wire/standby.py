"""High availability: a second connection for the same ``name@zone`` waits as a standby.

Two copies of an agent may run with the same keys, one as a hot spare.  As in the reference
(notes §1.6), the first connection a server registers for ``name@zone`` is the primary; a
later one finishes the handshake with ``client_is_secondary: true`` and polls the server
with ``{}`` once a second until the primary is gone, when the server promotes it.

Unlike the reference, which waits for 300 s of silence before giving up on a primary, the
server checks a quiet primary with a WebSocket ping whenever a standby polls: a primary
that does not answer within a few seconds (a half-open socket after a network fault) is
closed, so a reconnecting agent is not locked out by its own dead connection.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Protocol

from broadgauge.wire.errors import FrameError, HandshakeError
from broadgauge.wire.handshake import KEEPALIVE, PRIMARY, SECONDARY_CLIENT, Channel

log = logging.getLogger("broadgauge.wire")

#: Standbys one ``name@zone`` may have waiting at once (the reference's limit).
MAX_STANDBYS = 16
#: How often a standby client asks whether it has been promoted.
POLL_INTERVAL = 1.0


class _TextConnection(Protocol):
    async def send(self, message: str) -> None: ...

    async def recv(self) -> str | bytes: ...


async def recv_text(connection: _TextConnection) -> str:
    """The next frame of a connection not yet serving as a link (handshake, standby)."""
    frame = await connection.recv()
    if not isinstance(frame, str):
        raise HandshakeError("binary", "handshake and standby frames must be text")
    return frame


async def wait_for_promotion(
    connection: _TextConnection,
    channel: Channel,
    where: str,
    *,
    timeout: float,
    poll: float = POLL_INTERVAL,
) -> None:
    """Client side: poll until the server makes this connection its primary.

    Raises :class:`HandshakeError` if the server says it is itself a standby, or answers
    with anything but a standby status.
    """
    log.info("held as a standby by %s; waiting to be promoted", where)
    while True:
        await asyncio.sleep(poll)
        await connection.send(channel.seal_value({}))
        async with asyncio.timeout(timeout):
            frame = await recv_text(connection)
        try:
            status = channel.open_status(frame)
        except FrameError as exc:
            raise HandshakeError("bad-standby", f"{where}: {exc}") from None
        if status.server_is_secondary:
            raise HandshakeError("server-secondary", f"{where} says it is a standby server")
        if not status.client_is_secondary:
            log.info("promoted to primary by %s", where)
            return


class StandbyDesk:
    """Server side: who holds each ``name@zone``, and the standbys waiting behind it.

    ``is_held(peer)`` says whether a live link is registered for ``peer``;
    ``primary_alive(peer)`` checks that link and closes it if it does not answer.
    """

    def __init__(
        self,
        is_held: Callable[[object], bool],
        primary_alive: Callable[[object], Awaitable[bool]],
    ) -> None:
        self._is_held = is_held
        self._primary_alive = primary_alive
        self._claimed: dict[object, object] = {}
        self._waiting: Counter[object] = Counter()
        self._holding: dict[object, set[object]] = {}

    def claim(self, peer: object, owner: object) -> bool:
        """Reserve ``peer``'s primary slot for ``owner`` if it is free; False: hold as standby.

        Called synchronously (from the handshake), so two connections cannot both win.
        """
        if self._is_held(peer) or peer in self._claimed:
            return False
        self._claimed[peer] = owner
        return True

    def release(self, peer: object, owner: object) -> None:
        """``owner`` is done with ``peer``'s slot (only the owner's own claim is dropped)."""
        if self._claimed.get(peer) is owner:
            del self._claimed[peer]

    def standbys(self, peer: object) -> int:
        """How many standbys are waiting for ``peer``."""
        return self._waiting[peer]

    def waiting_connections(self, peer: object) -> list[object]:
        """The connections waiting as standbys for ``peer`` (to close when its keys change)."""
        return list(self._holding.get(peer, ()))

    async def hold(
        self,
        connection: _TextConnection,
        channel: Channel,
        peer: object,
        *,
        timeout: float,
        is_current: Callable[[], bool],
    ) -> None:
        """Answer a standby's polls until it can be promoted; return once it is.

        ``is_current()`` says whether the keys the standby proved are still configured; a
        standby whose keys were rotated or removed meanwhile is never promoted.  Raises
        :class:`HandshakeError` when too many standbys wait, the standby sends anything but
        polls (a ``KEEPALIVE`` is tolerated), or its keys are gone; ``TimeoutError`` when it
        stops polling.
        """
        if self._waiting[peer] >= MAX_STANDBYS:
            raise HandshakeError("too-many-standbys", f"{MAX_STANDBYS} standbys already wait")
        self._waiting[peer] += 1
        self._holding.setdefault(peer, set()).add(connection)
        log.info("%s connected again; held as a standby", peer)
        try:
            while True:
                async with asyncio.timeout(timeout):
                    frame = await recv_text(connection)
                try:
                    poll = channel.open(frame)
                except FrameError as exc:
                    raise HandshakeError("bad-standby", f"standby sent {exc}") from None
                if poll == KEEPALIVE:
                    continue  # sent by some clients on connecting; it asks for nothing
                if poll is not None:
                    raise HandshakeError("standby-message", "a standby may only poll")
                if not is_current():
                    raise HandshakeError("revoked", "the keys this standby used were replaced")
                if self._is_held(peer):
                    await self._primary_alive(peer)
                if self.claim(peer, connection):
                    try:
                        await connection.send(channel.seal_value(PRIMARY.to_json()))
                    except BaseException:
                        self.release(peer, connection)
                        raise
                    log.info("%s: standby promoted to primary", peer)
                    return
                await connection.send(channel.seal_value(SECONDARY_CLIENT.to_json()))
        finally:
            self._waiting[peer] -= 1
            if not self._waiting[peer]:
                del self._waiting[peer]
            holding = self._holding.get(peer)
            if holding is not None:
                holding.discard(connection)
                if not holding:
                    del self._holding[peer]
