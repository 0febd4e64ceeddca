"""The asyncio edge of the wire layer: a :class:`Service` that listens, dials and relays.

Everything cryptographic and every protocol decision lives in the sans-I/O modules
(:mod:`~broadgauge.wire.handshake`, :mod:`~broadgauge.wire.envelope`); this module only moves
frames between them and ``websockets`` connections, and runs the timers.

Admission of an incoming connection happens in this order, and any failure closes the
connection, logs the caller's address with the reason and counts it:

1. the caller's IP (or the configured proxy header) must match a client entry's allowlist;
2. the salt headers must be present and well formed;
3. one of the matching entries' keys must open the first handshake frame;
4. the zone, then the name, the caller states must be that entry's.

After the handshake a frame that fails to open is skipped and counted; the link stays up.
"""

from __future__ import annotations

import asyncio
import http
import ipaddress
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.frames import CloseCode
from websockets.http11 import Request, Response

from broadgauge.wire.config import ClientEntry, IpAllow, ServerEntry, ServiceConfig
from broadgauge.wire.errors import (
    ConfigError,
    FrameError,
    HandshakeError,
    MessageTooLarge,
    PeerNotConnected,
)
from broadgauge.wire.handshake import (
    INNER_SALT_HEADER,
    KEEPALIVE,
    OUTER_SALT_HEADER,
    Channel,
    ClientHandshake,
    ServerHandshake,
    check_salt_headers,
)
from broadgauge.wire.invite import Invite
from broadgauge.wire.keys import Key
from broadgauge.wire.standby import StandbyDesk, recv_text, wait_for_promotion
from broadgauge.wire.stats import WireStats

log = logging.getLogger("broadgauge.wire")

_Connection = ServerConnection | ClientConnection
#: A primary heard from this recently is alive; a quieter one is pinged when a standby asks.
PRIMARY_QUIET = 5.0
PRIMARY_PING_TIMEOUT = 5.0


class PeerId(NamedTuple):
    """A peer as the wire knows it: its name and the zone of the link."""

    name: str
    zone: str

    def __str__(self) -> str:
        return f"{self.name}@{self.zone}"


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
    """

    keepalive: float = 23.0
    watchdog_tick: float = 27.0
    inactivity: float = 300.0
    handshake: float = 10.0
    reconnect_initial: float = 0.5
    reconnect_max: float = 60.0
    close: float = 5.0


@dataclass(frozen=True)
class Limits:
    """Resource bounds for each connection.

    ``max_frame`` is in characters of the (hex) frame text: a payload of N bytes needs about
    4N + 300 characters.  A larger incoming frame closes the link with code 1009 (the
    transport cannot skip it without reading it).  ``max_queue`` bounds the frames buffered
    per connection while the handler is busy; beyond it the reader stops and TCP pushes back.
    """

    max_frame: int = 16 * 1024 * 1024
    max_queue: int = 64
    replay_window: int = 4096


MessageHandler = Callable[[Message], Awaitable[None]]
PeerHandler = Callable[[PeerId], Awaitable[None]]
RefusalHandler = Callable[[str, str], None]


class _Link:
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


class Service:
    """A paddington service: serves its clients, dials its servers, relays payloads.

    Typical use::

        service = Service(ServiceConfig.create("portal", port=8040))
        invite = service.add_client("provider", "127.0.0.1")   # hand this to the provider
        service.on_message(handle)                            # async def handle(message)
        await service.run()                                    # until stop()

    The message handler is awaited before the next frame from the same peer is read, so a
    peer's messages are handled in order.  Long work must be spawned as its own task.
    """

    def __init__(
        self,
        config: ServiceConfig,
        *,
        timers: Timers | None = None,
        limits: Limits | None = None,
    ) -> None:
        self._config = config
        self.timers = timers or Timers()
        self.limits = limits or Limits()
        self.stats = WireStats()
        self._links: dict[PeerId, _Link] = {}
        self._dialers: dict[PeerId, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._server: Server | None = None
        self._stopped = asyncio.Event()
        self._running = False
        self._on_message: MessageHandler | None = None
        self._on_connected: PeerHandler | None = None
        self._on_disconnected: PeerHandler | None = None
        self._on_refused: RefusalHandler | None = None
        self._link_changed = asyncio.Condition()
        self._standby = StandbyDesk(lambda peer: peer in self._links, self._primary_alive)

    # --- configuration -----------------------------------------------------------------

    @property
    def config(self) -> ServiceConfig:
        """The current config, including peers added or rotated at run time."""
        return self._config

    @property
    def name(self) -> str:
        """This service's name."""
        return self._config.name

    def add_client(self, name: str, ip: str, zone: str | None = None) -> Invite:
        """Allow a new client to connect from ``ip`` (an address or CIDR range).

        Returns the invite to hand to that client.  Any existing entry for the same
        ``name@zone`` is replaced, and its keys stop working.
        """
        entry = ClientEntry(
            name=name,
            zone=zone or self._config.zone,
            ip=IpAllow.parse(ip),
            inner_key=Key.generate(),
            outer_key=Key.generate(),
        )
        new_config = self._config.with_client(entry)
        self._config = new_config
        self._drop_link(PeerId(entry.name, entry.zone), "client entry replaced")
        return self._invite_for(entry)

    def rotate_client(self, name: str, zone: str | None = None) -> Invite:
        """Give client ``name`` new keys and return its new invite.

        The old invite stops working at once: a live connection made with it is closed, and
        reconnecting with the old keys fails the handshake.
        """
        entry = self._config.client(name, zone)
        if entry is None:
            raise ConfigError(f"no client called {name}")
        rotated = replace(entry, inner_key=Key.generate(), outer_key=Key.generate())
        self._config = self._config.with_client(rotated)
        self._drop_link(PeerId(entry.name, entry.zone), "keys rotated")
        return self._invite_for(rotated)

    def remove_client(self, name: str, zone: str | None = None) -> None:
        """Forget a client and close its connection."""
        entry = self._config.client(name, zone)
        if entry is None:
            raise ConfigError(f"no client called {name}")
        self._config = self._config.without_client(entry.name, entry.zone)
        self._drop_link(PeerId(entry.name, entry.zone), "client removed")

    def add_server(self, invite: Invite) -> None:
        """Trust the server described by ``invite`` and dial it (now, if running)."""
        entry = ServerEntry.from_invite(invite)
        self._config = self._config.with_server(entry)
        peer = PeerId(entry.name, entry.zone)
        self._drop_link(peer, "server entry replaced")
        if self._running:
            self._start_dialer(entry)

    def remove_server(self, name: str, zone: str | None = None) -> None:
        """Stop dialing a server and close its connection."""
        entry = self._config.server(name, zone)
        if entry is None:
            raise ConfigError(f"no server called {name}")
        self._config = self._config.without_server(entry.name, entry.zone)
        peer = PeerId(entry.name, entry.zone)
        dialer = self._dialers.pop(peer, None)
        if dialer is not None:
            dialer.cancel()
        self._drop_link(peer, "server removed")

    def _invite_for(self, entry: ClientEntry) -> Invite:
        return Invite(self.name, self.url, entry.zone, entry.inner_key, entry.outer_key)

    @property
    def url(self) -> str:
        """The URL clients should dial (with the real port once listening on port 0)."""
        return self._config.url

    # --- handlers ----------------------------------------------------------------------

    def on_message(self, handler: MessageHandler) -> MessageHandler:
        """Register the coroutine that receives every payload.  Usable as a decorator."""
        self._on_message = handler
        return handler

    def on_connected(self, handler: PeerHandler) -> PeerHandler:
        """Register a coroutine called when a peer has completed the handshake."""
        self._on_connected = handler
        return handler

    def on_disconnected(self, handler: PeerHandler) -> PeerHandler:
        """Register a coroutine called when a peer's connection has ended."""
        self._on_disconnected = handler
        return handler

    def on_refused(self, handler: RefusalHandler) -> RefusalHandler:
        """Register a function called with (caller address, reason) for each refused caller."""
        self._on_refused = handler
        return handler

    # --- sending -----------------------------------------------------------------------

    def connected_peers(self) -> list[PeerId]:
        """Peers with a live connection."""
        return list(self._links)

    def _link_for(self, name: str, zone: str | None) -> _Link:
        if zone is not None:
            link = self._links.get(PeerId(name, zone))
            if link is None:
                raise PeerNotConnected(f"{name}@{zone} is not connected")
            return link
        links = [link for peer, link in self._links.items() if peer.name == name]
        if not links:
            raise PeerNotConnected(f"{name} is not connected")
        if len(links) > 1:
            raise PeerNotConnected(f"{name} is connected in several zones; name the zone")
        return links[0]

    async def send(self, peer: str, payload: str, zone: str | None = None) -> None:
        """Send ``payload`` to the connected peer ``peer`` (in ``zone``, if given).

        Raises :class:`PeerNotConnected` if there is no live link, and
        :class:`MessageTooLarge` if the frame would exceed :attr:`Limits.max_frame`.
        """
        if payload == KEEPALIVE:
            raise ValueError("KEEPALIVE is reserved for the protocol's keepalive")
        link = self._link_for(peer, zone)
        await self._send_frame(link, link.channel.seal(payload))

    async def _send_frame(self, link: _Link, frame: str) -> None:
        if len(frame) > self.limits.max_frame:
            raise MessageTooLarge(
                f"frame of {len(frame)} characters exceeds the limit of {self.limits.max_frame}"
            )
        try:
            await link.connection.send(frame)
        except ConnectionClosed:
            raise PeerNotConnected(f"{link.peer} disconnected") from None
        self.stats.messages_sent += 1

    async def wait_for_peer(self, name: str, zone: str | None = None) -> None:
        """Wait until ``name`` (in ``zone``) is connected.  Bound it with ``asyncio.timeout``."""

        def connected() -> bool:
            return any(p.name == name and (zone is None or p.zone == zone) for p in self._links)

        async with self._link_changed:
            await self._link_changed.wait_for(connected)

    async def disconnect(self, peer: str, zone: str | None = None) -> None:
        """Politely close the link to ``peer``.  A dialled server will be redialled later."""
        link = self._link_for(peer, zone)
        await link.connection.close(CloseCode.NORMAL_CLOSURE, "disconnect")

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self, *, listen: bool = True) -> None:
        """Start listening (if ``listen``) and dialing every configured server."""
        if self._running:
            return
        self._running = True
        self._stopped.clear()
        if listen:
            self._server = await serve(
                self._serve_connection,
                self._config.ip,
                self._config.port,
                process_request=self._admit,
                compression=None,
                max_size=self.limits.max_frame,
                max_queue=self.limits.max_queue,
                ping_interval=None,
                close_timeout=self.timers.close,
                open_timeout=self.timers.handshake,
                server_header=None,
            )
            if self._config.port == 0:
                port = self._server.sockets[0].getsockname()[1]
                host = f"[{self._config.ip}]" if ":" in self._config.ip else self._config.ip
                self._config = replace(self._config, port=port, url=f"ws://{host}:{port}/")
        for entry in self._config.servers:
            self._start_dialer(entry)

    async def stop(self) -> None:
        """Close every link politely, stop dialing and stop listening."""
        if not self._running:
            return
        self._running = False
        closes = [
            link.connection.close(CloseCode.GOING_AWAY, "service stopping")
            for link in list(self._links.values())
        ]
        await asyncio.gather(*closes, return_exceptions=True)
        for dialer in self._dialers.values():
            dialer.cancel()
        await asyncio.gather(*self._dialers.values(), return_exceptions=True)
        self._dialers.clear()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for task in list(self._tasks):
            task.cancel()
        self._stopped.set()

    async def run(self) -> None:
        """Start, then serve until :meth:`stop` is called."""
        await self.start()
        await self._stopped.wait()

    async def __aenter__(self) -> Service:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- server side -------------------------------------------------------------------

    def _caller_address(self, connection: ServerConnection, headers: Headers) -> str:
        header = self._config.proxy_header
        if header:
            value = headers.get(header)
            if value is None:
                raise HandshakeError("no-proxy-header", f"no {header} header")
            return value.strip()
        remote = connection.remote_address
        return str(remote[0]) if remote else ""

    def _candidates(self, address: str) -> list[ClientEntry]:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            raise HandshakeError("bad-address", f"{address!r} is not one IP address") from None
        matches = [c for c in self._config.clients if c.ip.matches(ip)]
        if not matches:
            raise HandshakeError("ip-not-allowed", "no client is allowed from this address")
        return matches

    def _admit(self, connection: ServerConnection, request: Request) -> Response | None:
        """Refuse an upgrade from an address no client entry allows, before any crypto."""
        remote = connection.remote_address
        where = f"{remote[0]}:{remote[1]}" if remote else "?"
        try:
            address = self._caller_address(connection, request.headers)
            if self._config.proxy_header:
                where = f"{address} (via {where})"
            self._candidates(address)
            check_salt_headers(
                {h: request.headers.get(h) for h in (INNER_SALT_HEADER, OUTER_SALT_HEADER)}
            )
        except HandshakeError as exc:
            self._refuse(where, exc)
            status = http.HTTPStatus.FORBIDDEN
            if exc.reason in ("missing-salt", "bad-salt"):
                status = http.HTTPStatus.BAD_REQUEST
            return connection.respond(status, f"{status.phrase}\n")
        return None

    def _refuse(self, where: str, exc: HandshakeError) -> None:
        self.stats.connections_rejected[exc.reason] += 1
        log.warning("refused connection from %s: %s", where, exc)
        if self._on_refused is not None:
            try:
                self._on_refused(where, str(exc))
            except Exception:
                log.exception("refusal handler failed")

    async def _serve_connection(self, connection: ServerConnection) -> None:
        remote = connection.remote_address
        where = f"{remote[0]}:{remote[1]}" if remote else "?"
        handshake: ServerHandshake | None = None
        try:
            headers = connection.request.headers if connection.request else Headers()
            address = self._caller_address(connection, headers)
            handshake = ServerHandshake(
                self.name,
                self._candidates(address),
                {h: headers.get(h) for h in (INNER_SALT_HEADER, OUTER_SALT_HEADER)},
                claim=lambda name, zone: self._standby.claim(PeerId(name, zone), connection),
            )
            async with asyncio.timeout(self.timers.handshake):
                await connection.send(handshake.receive(await recv_text(connection)))
                await connection.send(handshake.receive(await recv_text(connection)))
        except (HandshakeError, TimeoutError, ConnectionClosed) as exc:
            if handshake is not None and handshake.done and not handshake.client_is_secondary:
                # It claimed the primary slot, then failed to send its last frame.
                assert handshake.client is not None
                peer = PeerId(handshake.client.name, handshake.client.zone)
                self._standby.release(peer, connection)
            if isinstance(exc, ConnectionClosed):
                self._refuse(where, HandshakeError("closed", "closed during the handshake"))
                return
            if isinstance(exc, TimeoutError):
                exc = HandshakeError("timeout", "handshake took too long")
            self._refuse(where, exc)
            await connection.close(CloseCode.POLICY_VIOLATION)
            return
        assert handshake.client is not None and handshake.channel is not None
        entry = handshake.client
        peer = PeerId(entry.name, entry.zone)

        def is_current() -> bool:
            # Keys rotated or the client removed while this connection was being set up.
            return self._config.client(entry.name, entry.zone) == entry

        if handshake.client_is_secondary:
            try:
                await self._standby.hold(
                    connection,
                    handshake.channel,
                    peer,
                    timeout=self.timers.handshake,
                    is_current=is_current,
                )
            except (HandshakeError, TimeoutError, ConnectionClosed) as exc:
                if isinstance(exc, HandshakeError):
                    self._refuse(where, exc)
                await connection.close(CloseCode.POLICY_VIOLATION)
                return
        # From here this connection owns the primary slot (claimed, or promoted into it).
        try:
            if not is_current():
                self._refuse(where, HandshakeError("revoked", "its keys were replaced"))
                await connection.close(CloseCode.POLICY_VIOLATION)
                return
            await self._serve_link(connection, handshake.channel, peer, where, dialled=False)
        finally:
            self._standby.release(peer, connection)

    # --- client side -------------------------------------------------------------------

    def _start_dialer(self, entry: ServerEntry) -> None:
        peer = PeerId(entry.name, entry.zone)
        old = self._dialers.pop(peer, None)
        if old is not None:
            old.cancel()
        self._dialers[peer] = asyncio.ensure_future(self._dial_forever(peer))

    async def _dial_forever(self, peer: PeerId) -> None:
        backoff = self.timers.reconnect_initial
        while self._running:
            entry = self._config.server(peer.name, peer.zone)
            if entry is None:
                return
            try:
                if await self._dial_once(entry):
                    backoff = self.timers.reconnect_initial
            except asyncio.CancelledError:
                raise
            except HandshakeError as exc:
                log.warning("handshake with %s at %s failed: %s", peer, entry.url, exc)
            except (OSError, TimeoutError, InvalidHandshake, InvalidURI, ConnectionClosed) as exc:
                log.info("cannot reach %s at %s: %s", peer, entry.url, exc or type(exc).__name__)
            # Equal jitter: wait between half and all of the current backoff.
            await asyncio.sleep(backoff / 2 + random.uniform(0, backoff / 2))
            backoff = min(backoff * 2, self.timers.reconnect_max)

    async def _dial_once(self, entry: ServerEntry) -> bool:
        handshake = ClientHandshake(self.name, entry)
        async with connect(
            entry.url,
            additional_headers=handshake.headers,
            compression=None,
            max_size=self.limits.max_frame,
            max_queue=self.limits.max_queue,
            ping_interval=None,
            open_timeout=self.timers.handshake,
            close_timeout=self.timers.close,
            user_agent_header=None,
        ) as connection:
            async with asyncio.timeout(self.timers.handshake):
                await connection.send(handshake.start())
                reply = handshake.receive(await recv_text(connection))
                assert reply is not None
                await connection.send(reply)
                handshake.receive(await recv_text(connection))
            assert handshake.channel is not None and handshake.peer is not None
            standby = handshake.peer.standby
            if standby.server_is_secondary:
                raise HandshakeError("server-secondary", f"{entry.url} is a standby server")
            if standby.client_is_secondary:
                await wait_for_promotion(
                    connection, handshake.channel, entry.url, timeout=self.timers.handshake
                )
            await self._serve_link(
                connection, handshake.channel, PeerId(entry.name, entry.zone), entry.url, True
            )
            return True

    # --- an established link -----------------------------------------------------------

    async def _serve_link(
        self, connection: _Connection, channel: Channel, peer: PeerId, where: str, dialled: bool
    ) -> None:
        loop = asyncio.get_running_loop()
        link = _Link(connection, channel, peer, where, loop.time())
        previous = self._links.get(peer)
        if previous is not None:
            # Only possible for a peer we both dial and serve (a server's second connection
            # is held as a standby instead): keep the newest, which proved it holds the keys.
            log.warning("%s connected again from %s; closing its older connection", peer, where)
            self._spawn(previous.connection.close(CloseCode.NORMAL_CLOSURE, "replaced"))
        self._links[peer] = link
        self.stats.connections_accepted += 1
        log.info("connected to %s (%s)", peer, where)
        self._arm_watchdog(link)
        await self._notify_link_changed()
        try:
            if dialled:
                # The dialling side starts the keepalive ping-pong.
                await self._send_frame(link, channel.seal(KEEPALIVE))
            if self._on_connected is not None:
                await self._call(self._on_connected, peer)
            await self._read(link)
        finally:
            if link.timer is not None:
                link.timer.cancel()
            if self._links.get(peer) is link:
                del self._links[peer]
                await self._notify_link_changed()
                if self._on_disconnected is not None:
                    await self._call(self._on_disconnected, peer)
            self._log_close(link)

    async def _read(self, link: _Link) -> None:
        loop = asyncio.get_running_loop()
        try:
            async for frame in link.connection:
                if not isinstance(frame, str):
                    self._reject_frame(link, FrameError("binary", "binary frames are not used"))
                    continue
                try:
                    payload = link.channel.open(frame)
                except FrameError as exc:
                    self._reject_frame(link, exc)
                    continue
                link.last_activity = loop.time()
                if payload is None:
                    await self._send_frame(link, link.channel.seal_value(Channel.standby_answer()))
                elif payload == KEEPALIVE:
                    self._schedule_keepalive(link)
                else:
                    self.stats.messages_received += 1
                    if self._on_message is not None:
                        await self._call(self._on_message, Message(link.peer, payload))
        except ConnectionClosed as exc:
            if (
                exc.rcvd is None
                and exc.sent is not None
                and exc.sent.code == CloseCode.MESSAGE_TOO_BIG
            ):
                self._reject_frame(link, FrameError("oversized", "frame exceeds max_frame"))

    def _reject_frame(self, link: _Link, exc: FrameError) -> None:
        self.stats.frames_rejected[exc.reason] += 1
        log.warning("rejected a frame from %s (%s): %s", link.peer, link.address, exc)

    async def _call(self, handler: Callable[[Any], Awaitable[None]], arg: Any) -> None:
        try:
            await handler(arg)
        except asyncio.CancelledError:
            raise
        except Exception:
            # A bug in one handler must not take the link (or the service) down with it.
            self.stats.handler_errors += 1
            log.exception("handler failed on %r", arg)

    def _log_close(self, link: _Link) -> None:
        connection = link.connection
        code = connection.close_code
        reason = connection.close_reason or ""
        if code in (CloseCode.NORMAL_CLOSURE, CloseCode.GOING_AWAY):
            log.info("%s disconnected politely (%s %s)", link.peer, code, reason)
        else:
            log.warning(
                "lost connection to %s (%s): code %s %s", link.peer, link.address, code, reason
            )

    # --- timers ------------------------------------------------------------------------

    def _schedule_keepalive(self, link: _Link) -> None:
        if link.keepalive_pending:
            return  # one reply outstanding per peer, as the reference does
        link.keepalive_pending = True

        async def reply() -> None:
            link.keepalive_pending = False
            if self._links.get(link.peer) is not link:
                return
            try:
                await self._send_frame(link, link.channel.seal(KEEPALIVE))
            except PeerNotConnected:
                await link.connection.close(CloseCode.GOING_AWAY, "keepalive failed")

        asyncio.get_running_loop().call_later(self.timers.keepalive, lambda: self._spawn(reply()))

    def _arm_watchdog(self, link: _Link) -> None:
        loop = asyncio.get_running_loop()
        link.timer = loop.call_later(self.timers.watchdog_tick, self._watchdog, link)

    def _watchdog(self, link: _Link) -> None:
        silent = asyncio.get_running_loop().time() - link.last_activity
        if silent > self.timers.inactivity:
            self.stats.watchdog_closures += 1
            log.warning("%s (%s) silent for %.0f s; closing", link.peer, link.address, silent)
            link.timer = None
            self._spawn(link.connection.close(CloseCode.GOING_AWAY, "watchdog: peer silent"))
            return
        self._arm_watchdog(link)

    async def _primary_alive(self, peer: object) -> bool:
        """Whether ``peer``'s link still answers; one that does not is cut, for its standby."""
        link = self._links.get(peer) if isinstance(peer, PeerId) else None
        if link is None:
            return False
        loop = asyncio.get_running_loop()
        if loop.time() - link.last_activity < PRIMARY_QUIET:
            return True
        try:
            # ping() itself may wait for a full send buffer: a half-open socket's symptom.
            async with asyncio.timeout(PRIMARY_PING_TIMEOUT):
                pong = await link.connection.ping()
                await pong
        except (TimeoutError, ConnectionClosed):
            log.warning(
                "%s (%s) did not answer a ping; cutting it for its standby", peer, link.address
            )
            link.connection.transport.abort()
            return False
        link.last_activity = loop.time()
        return True

    def _drop_link(self, peer: PeerId, why: str) -> None:
        link = self._links.get(peer)
        if link is not None:
            log.info("closing connection to %s: %s", peer, why)
            self._spawn(link.connection.close(CloseCode.NORMAL_CLOSURE, why))
        for standby in self._standby.waiting_connections(peer):
            assert isinstance(standby, ServerConnection)
            log.info("closing a standby connection for %s: %s", peer, why)
            self._spawn(standby.close(CloseCode.NORMAL_CLOSURE, why))

    async def _notify_link_changed(self) -> None:
        async with self._link_changed:
            self._link_changed.notify_all()
