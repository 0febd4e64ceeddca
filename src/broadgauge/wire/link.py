"""An established link, from the end of its handshake until it closes.

:class:`Link` is one live, authenticated connection; :class:`LiveLinks` serves every link of a
service the same way, whichever side dialled: it registers the link in the peer registry's
table, reads and opens frames and hands payloads to the message handler, seals and sends
payloads, answers the keepalive ping-pong and standby polls, closes a link that has gone
silent (the watchdog), and tells the service's handlers when a peer comes and goes.  A frame
that fails to open is skipped and counted; the link stays up.  A link can also be asked
whether it still answers (:meth:`Link.answers_ping`), so that a standby can replace a
half-open primary.  The vocabulary the service is configured with (:class:`Timers`,
:class:`Limits`) and hands its handlers (:class:`Message`) is defined here too, at the bottom
of the socket modules, so that each of them can use it.

It is separate from :mod:`~broadgauge.wire.connection`, which turns sockets into links
(listening, admission, dialling, the handshakes, the standby wait), because from here on both
sides behave alike and nothing about how the link was made matters: the two meet in one call,
:meth:`LiveLinks.serve`, with the connection, the channel and the authenticated peer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode

from broadgauge.wire.envelope import REPLAY_WINDOW
from broadgauge.wire.errors import FrameError, MessageTooLarge, PeerNotConnected
from broadgauge.wire.handshake import KEEPALIVE, Channel
from broadgauge.wire.peers import PeerId, PeerRegistry
from broadgauge.wire.stats import WireStats

log = logging.getLogger("broadgauge.wire")

_Connection = ServerConnection | ClientConnection


@dataclass(frozen=True)
class Message:
    """A payload received from an authenticated peer.

    The sender is the peer the connection authenticated as; nothing inside the payload is
    trusted to say who sent it.
    """

    peer: PeerId
    payload: str


@dataclass(frozen=True)
class Timers:
    """Protocol timers, in seconds.  Defaults are the reference's, except reconnection.

    The reference redials every 5 s; we back off exponentially from ``reconnect_initial`` to
    ``reconnect_max`` with jitter, so a fleet of clients does not stampede a restarted server.
    The cap is 8 s (each redial 4-8 s after the last once backed off): a healed link is back,
    and its first job through, within about 10 s, at no more dialling than the reference's.
    """

    keepalive: float = 23.0
    watchdog_tick: float = 27.0
    inactivity: float = 300.0
    handshake: float = 10.0
    reconnect_initial: float = 0.5
    reconnect_max: float = 8.0
    close: float = 5.0


@dataclass(frozen=True)
class Limits:
    """Resource bounds for each connection.

    ``max_frame`` is in characters of the (hex) frame text: a payload of N bytes needs about
    4N + 300 characters.  A larger incoming frame closes the link with code 1009 (the
    transport cannot skip it without reading it).  ``max_queue`` bounds the frames buffered
    per connection while the handler is busy; beyond it the reader stops and TCP pushes back.
    ``replay_window`` is how many of a connection's last frames are remembered to refuse one
    sent again (:class:`~broadgauge.wire.envelope.ReplayGuard`).
    """

    max_frame: int = 16 * 1024 * 1024
    max_queue: int = 64
    replay_window: int = REPLAY_WINDOW


MessageHandler = Callable[[Message], Awaitable[None]]
PeerHandler = Callable[[PeerId], Awaitable[None]]
RefusalHandler = Callable[[str, str], None]


class Link:
    """One live, authenticated connection."""

    __slots__ = (
        "address",
        "channel",
        "connection",
        "keepalive_pending",
        "last_activity",
        "peer",
        "timer",
    )

    def __init__(
        self, connection: _Connection, channel: Channel, peer: PeerId, address: str, now: float
    ) -> None:
        self.connection = connection
        self.channel = channel
        self.peer = peer
        self.address = address
        self.last_activity = now
        self.keepalive_pending = False
        self.timer: asyncio.TimerHandle | None = None

    async def answers_ping(self, *, quiet: float, timeout: float) -> bool:
        """Whether the peer still answers: heard within ``quiet`` s, or pongs within ``timeout``.

        A link that does not answer is aborted, so a standby can take its place.
        """
        loop = asyncio.get_running_loop()
        if loop.time() - self.last_activity < quiet:
            return True
        try:
            # ping() itself may wait for a full send buffer: a half-open socket's symptom.
            async with asyncio.timeout(timeout):
                pong = await self.connection.ping()
                await pong
        except (TimeoutError, ConnectionClosed):
            log.warning(
                "%s (%s) did not answer a ping; cutting it for its standby", self.peer, self.address
            )
            self.connection.transport.abort()
            return False
        self.last_activity = loop.time()
        return True

    def log_close(self) -> None:
        """Log how the connection ended: politely, or as a lost link."""
        code = self.connection.close_code
        reason = self.connection.close_reason or ""
        if code in (CloseCode.NORMAL_CLOSURE, CloseCode.GOING_AWAY):
            log.info("%s disconnected politely (%s %s)", self.peer, code, reason)
        else:
            log.warning(
                "lost connection to %s (%s): code %s %s", self.peer, self.address, code, reason
            )


class LiveLinks:
    """The live links of one service: serving each, sending on them, waiting for them.

    Links are registered in ``peers``' table while they are served.  Work that must outlive
    the call that starts it (closing a connection, a delayed keepalive) runs as a task of
    this object's, cancelled by :meth:`cancel_tasks` when the service stops.
    """

    def __init__(
        self, peers: PeerRegistry[Link], *, timers: Timers, limits: Limits, stats: WireStats
    ) -> None:
        self._peers = peers
        self._timers = timers
        self._limits = limits
        self._stats = stats
        self.on_message: MessageHandler | None = None
        self.on_connected: PeerHandler | None = None
        self.on_disconnected: PeerHandler | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        # One future per waiting wait_for_peer call, woken when a link comes or goes.  (An
        # asyncio.Condition would preallocate its waiter queue in every service.)
        self._link_waiters: list[asyncio.Future[None]] = []

    def spawn(self, coro: Awaitable[Any]) -> None:
        """Run ``coro`` as a task, cancelled with the others by :meth:`cancel_tasks`."""
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def cancel_tasks(self) -> None:
        """Cancel every task :meth:`spawn` started that is still running."""
        for task in list(self._tasks):
            task.cancel()

    async def close_all(self, code: CloseCode, reason: str) -> None:
        """Close every live link and wait until each has closed (or failed to)."""
        closes = [link.connection.close(code, reason) for link in list(self._peers.links.values())]
        await asyncio.gather(*closes, return_exceptions=True)

    def close(self, peer: PeerId, why: str) -> None:
        """Start closing ``peer``'s link politely, if it has one."""
        link = self._peers.links.get(peer)
        if link is not None:
            log.info("closing connection to %s: %s", peer, why)
            self.spawn(link.connection.close(CloseCode.NORMAL_CLOSURE, why))

    # --- using the links ---------------------------------------------------------------

    async def send(self, peer: str, payload: str, zone: str | None) -> None:
        """Seal ``payload`` and send it on the link to ``peer`` (see ``Service.send``)."""
        if payload == KEEPALIVE:
            raise ValueError("KEEPALIVE is reserved for the protocol's keepalive")
        link = self._peers.link_for(peer, zone)
        await self._send_frame(link, link.channel.seal(payload))

    async def _send_frame(self, link: Link, frame: str) -> None:
        if len(frame) > self._limits.max_frame:
            raise MessageTooLarge(
                f"frame of {len(frame)} characters exceeds the limit of {self._limits.max_frame}"
            )
        try:
            await link.connection.send(frame)
        except ConnectionClosed:
            raise PeerNotConnected(f"{link.peer} disconnected") from None
        self._stats.messages_sent += 1
        self._stats.bytes_sent += len(frame)  # frames are ASCII (hex): characters are bytes

    async def wait_for_peer(self, name: str, zone: str | None) -> None:
        """Wait until ``name`` (in ``zone``) has a live link."""
        loop = asyncio.get_running_loop()
        while not self._peers.is_connected(name, zone):
            waiter: asyncio.Future[None] = loop.create_future()
            self._link_waiters.append(waiter)
            try:
                await waiter
            finally:
                if not waiter.done() or waiter.cancelled():
                    with contextlib.suppress(ValueError):
                        self._link_waiters.remove(waiter)

    async def disconnect(self, peer: str, zone: str | None) -> None:
        """Politely close the link to ``peer``."""
        link = self._peers.link_for(peer, zone)
        await link.connection.close(CloseCode.NORMAL_CLOSURE, "disconnect")

    def _notify_link_changed(self) -> None:
        waiters, self._link_waiters = self._link_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    # --- serving a link ----------------------------------------------------------------

    async def serve(
        self, connection: _Connection, channel: Channel, peer: PeerId, where: str, dialled: bool
    ) -> None:
        """Serve a connection that has finished its handshake as ``peer``'s link, until it ends.

        ``where`` is the caller's address or the URL dialled; the dialling side starts the
        keepalive ping-pong.  The reading loop is here rather than in a coroutine of its own,
        so that a link waits in one frame of ours (each costs a few hundred bytes a link).
        """
        loop = asyncio.get_running_loop()
        link = self._register(Link(connection, channel, peer, where, loop.time()))
        stats = self._stats
        try:
            if dialled:
                # The dialling side starts the keepalive ping-pong.
                await self._send_frame(link, channel.seal(KEEPALIVE))
            if self.on_connected is not None:
                await self._call(self.on_connected, peer)
            # recv() in a loop rather than ``async for``: no async generator kept per link,
            # and one step less per frame.  Its ConnectionClosedOK, which ``async for``
            # swallows, carries close codes the check below ignores.
            recv = connection.recv
            while True:
                frame = await recv()
                stats.frames_received += 1
                stats.bytes_received += len(frame)
                if not isinstance(frame, str):
                    self._reject_frame(link, FrameError("binary", "binary frames are not used"))
                    continue
                try:
                    payload = channel.open(frame)
                except FrameError as exc:
                    self._reject_frame(link, exc)
                    continue
                # Not held while the link waits for its next frame, which may be long.
                del frame
                link.last_activity = loop.time()
                if payload is None:
                    await self._send_frame(link, channel.seal_value(Channel.standby_answer()))
                elif payload == KEEPALIVE:
                    self._schedule_keepalive(link)
                else:
                    stats.messages_received += 1
                    handler = self.on_message
                    if handler is not None:
                        # What _call does, inline: no extra coroutine for every message.
                        message = Message(peer, payload)
                        del payload
                        try:
                            await handler(message)
                        except asyncio.CancelledError:
                            raise
                        except Exception:
                            stats.handler_errors += 1
                            log.exception("handler failed on %r", message)
                        del message
        except ConnectionClosed as exc:
            if (
                exc.rcvd is None
                and exc.sent is not None
                and exc.sent.code == CloseCode.MESSAGE_TOO_BIG
            ):
                self._reject_frame(link, FrameError("oversized", "frame exceeds max_frame"))
        finally:
            await self._unregister(link)

    def _register(self, link: Link) -> Link:
        """Enter ``link`` in the table (closing an older one of its peer) and arm its timers."""
        peer = link.peer
        links = self._peers.links
        previous = links.get(peer)
        if previous is not None:
            # Only possible for a peer we both dial and serve (a server's second connection
            # is held as a standby instead): keep the newest, which proved it holds the keys.
            log.warning(
                "%s connected again from %s; closing its older connection", peer, link.address
            )
            self.spawn(previous.connection.close(CloseCode.NORMAL_CLOSURE, "replaced"))
        links[peer] = link
        self._stats.connections_accepted += 1
        self._stats.links_opened[str(peer)] += 1
        log.info("connected to %s (%s)", peer, link.address)
        self._arm_watchdog(link)
        self._notify_link_changed()
        return link

    async def _unregister(self, link: Link) -> None:
        """Take ``link``, which has closed, out of the table and tell the handler."""
        if link.timer is not None:
            link.timer.cancel()
        links = self._peers.links
        if links.get(link.peer) is link:
            del links[link.peer]
            self._notify_link_changed()
            if self.on_disconnected is not None:
                await self._call(self.on_disconnected, link.peer)
        link.log_close()

    def _reject_frame(self, link: Link, exc: FrameError) -> None:
        self._stats.frames_rejected[exc.reason] += 1
        log.warning("rejected a frame from %s (%s): %s", link.peer, link.address, exc)

    async def _call(self, handler: Callable[[Any], Awaitable[None]], arg: Any) -> None:
        try:
            await handler(arg)
        except asyncio.CancelledError:
            raise
        except Exception:
            # A bug in one handler must not take the link (or the service) down with it.
            self._stats.handler_errors += 1
            log.exception("handler failed on %r", arg)

    # --- timers ------------------------------------------------------------------------

    def _schedule_keepalive(self, link: Link) -> None:
        if link.keepalive_pending:
            return  # one reply outstanding per peer, as the reference does
        link.keepalive_pending = True
        # A bound method and its argument: no closures held per link while the timer waits.
        asyncio.get_running_loop().call_later(self._timers.keepalive, self._keepalive_due, link)

    def _keepalive_due(self, link: Link) -> None:
        self.spawn(self._reply_keepalive(link))

    async def _reply_keepalive(self, link: Link) -> None:
        link.keepalive_pending = False
        if self._peers.links.get(link.peer) is not link:
            return
        try:
            await self._send_frame(link, link.channel.seal(KEEPALIVE))
        except PeerNotConnected:
            await link.connection.close(CloseCode.GOING_AWAY, "keepalive failed")

    def _arm_watchdog(self, link: Link) -> None:
        loop = asyncio.get_running_loop()
        link.timer = loop.call_later(self._timers.watchdog_tick, self._watchdog, link)

    def _watchdog(self, link: Link) -> None:
        silent = asyncio.get_running_loop().time() - link.last_activity
        if silent > self._timers.inactivity:
            self._stats.watchdog_closures += 1
            log.warning("%s (%s) silent for %.0f s; closing", link.peer, link.address, silent)
            link.timer = None
            self.spawn(link.connection.close(CloseCode.GOING_AWAY, "watchdog: peer silent"))
            return
        self._arm_watchdog(link)
