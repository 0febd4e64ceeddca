"""How sockets become links: the listener, admission, the handshakes and the dialers.

:class:`Connections` listens for callers and admits them, dials every configured server and
redials it with backoff, and runs the handshake over the websocket on either side, including
the wait of a connection held as a standby until it is promoted.  A connection that comes
through is handed to :meth:`LiveLinks.serve <broadgauge.wire.link.LiveLinks.serve>`; from then
on :mod:`~broadgauge.wire.link` runs it.  It also starts and stops the whole, and closes the
link and the standbys of a peer whose entry changed.

It is separate from :mod:`~broadgauge.wire.link`, which runs a link once it is made, and from
:mod:`~broadgauge.wire.peers`, which decides who may connect: this module asks that registry
and changes no peer.  Everything cryptographic and every protocol decision lives in the
sans-I/O :mod:`~broadgauge.wire.handshake` and in :mod:`~broadgauge.wire.standby`; this module
only moves handshake frames between them and ``websockets`` connections.

Admission of an incoming connection happens in this order, and any failure closes the
connection, logs the caller's address with the reason and counts it:

1. the caller's IP (or the configured proxy header) must match a client entry's allowlist;
2. the salt headers must be present and well formed;
3. one of the matching entries' keys must open the first handshake frame;
4. the zone, then the name, the caller states must be that entry's.
"""

from __future__ import annotations

import asyncio
import http
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypedDict

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.frames import CloseCode
from websockets.http11 import Request, Response

from broadgauge.wire.config import ClientEntry, ServerEntry
from broadgauge.wire.errors import HandshakeError, KeysRefused
from broadgauge.wire.handshake import (
    INNER_SALT_HEADER,
    OUTER_SALT_HEADER,
    Channel,
    ClientHandshake,
    ServerHandshake,
    StandbyStatus,
    check_salt_headers,
)
from broadgauge.wire.link import Limits, Link, LiveLinks, RefusalHandler, Timers
from broadgauge.wire.peers import PeerId, PeerRegistry, peer_of
from broadgauge.wire.standby import StandbyDesk, recv_text, wait_for_promotion
from broadgauge.wire.stats import WireStats

log = logging.getLogger("broadgauge.wire")


def _remote(connection: ServerConnection) -> str:
    remote = connection.remote_address
    return f"{remote[0]}:{remote[1]}" if remote else "?"


def _salt_headers(headers: Headers) -> dict[str, str | None]:
    return {h: headers.get(h) for h in (INNER_SALT_HEADER, OUTER_SALT_HEADER)}


def _forget_upgrade_headers(connection: ServerConnection | ClientConnection) -> None:
    """Empty the upgrade request's and response's header tables once the handshake is done.

    Nothing reads them after it (websockets only during its opening handshake, we only for
    the salts and the proxy header), and they are a fifth of an idle link's memory.
    """
    for message in (connection.request, connection.response):
        if message is not None:
            message.headers.clear()


class _SocketOptions(TypedDict):
    compression: None
    max_size: int
    max_queue: int
    ping_interval: None
    open_timeout: float
    close_timeout: float


class Connections:
    """The listener and the dialers of one service, which hand what they connect to ``live``.

    ``peers`` is the service's registry.  ``standby`` holds second connections for a
    ``name@zone`` already connected.  ``dial`` makes one attempt to reach a server (see
    :meth:`dial_once`); the redial loop calls it through the service so that an attempt can
    be wrapped there.
    """

    def __init__(
        self,
        peers: PeerRegistry[Link],
        standby: StandbyDesk,
        live: LiveLinks,
        *,
        timers: Timers,
        limits: Limits,
        stats: WireStats,
        dial: Callable[[ServerEntry], Awaitable[bool]],
    ) -> None:
        self._peers = peers
        self._standby = standby
        self._live = live
        self._timers = timers
        self._limits = limits
        self._stats = stats
        self._dial = dial
        self.on_refused: RefusalHandler | None = None
        self.running = False
        # Made only when someone waits for the stop (an Event costs most of a KiB).
        self._stopped: asyncio.Event | None = None
        self._dialers: dict[PeerId, asyncio.Task[None]] = {}
        self._server: Server | None = None

    # --- start and stop ----------------------------------------------------------------

    async def start(self, *, listen: bool) -> None:
        """Start listening (if ``listen``) and dialing every configured server."""
        if self.running:
            return
        self.running = True
        if listen:
            config = self._peers.config
            self._server = await serve(
                self._serve_connection,
                config.ip,
                config.port,
                process_request=self._admit,
                server_header=None,
                **self._socket_options(),
            )
            if self._peers.config.port == 0:
                self._peers.listening_on(self._server.sockets[0].getsockname()[1])
        for entry in self._peers.config.servers:
            self.start_dialer(entry)

    async def stop(self) -> None:
        """Close every link politely, stop dialing and stop listening."""
        if not self.running:
            return
        self.running = False
        await self._live.close_all(CloseCode.GOING_AWAY, "service stopping")
        for dialer in self._dialers.values():
            dialer.cancel()
        await asyncio.gather(*self._dialers.values(), return_exceptions=True)
        self._dialers.clear()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        self._live.cancel_tasks()
        if self._stopped is not None:
            self._stopped.set()
            self._stopped = None

    async def wait_stopped(self) -> None:
        """Wait until :meth:`stop` has finished (at once if not running)."""
        if not self.running:
            return
        if self._stopped is None:
            self._stopped = asyncio.Event()
        await self._stopped.wait()

    def _socket_options(self) -> _SocketOptions:
        """The ``websockets`` settings of both ends: our limits, our timers, no extras.

        No compression, and no ``websockets`` pings (the protocol has its own keepalive).
        """
        return {
            "compression": None,
            "max_size": self._limits.max_frame,
            "max_queue": self._limits.max_queue,
            "ping_interval": None,
            "open_timeout": self._timers.handshake,
            "close_timeout": self._timers.close,
        }

    def drop_link(self, peer: PeerId, why: str) -> None:
        """Close ``peer``'s link and its waiting standbys (its entry changed or went)."""
        self._live.close(peer, why)
        for standby in self._standby.waiting_connections(peer):
            assert isinstance(standby, ServerConnection)
            log.info("closing a standby connection for %s: %s", peer, why)
            self._live.spawn(standby.close(CloseCode.NORMAL_CLOSURE, why))

    # --- server side -------------------------------------------------------------------

    def _caller_address(self, connection: ServerConnection, headers: Headers) -> str:
        header = self._peers.config.proxy_header
        if header:
            value = headers.get(header)
            if value is None:
                raise HandshakeError("no-proxy-header", f"no {header} header")
            return value.strip()
        remote = connection.remote_address
        return str(remote[0]) if remote else ""

    def _admit(self, connection: ServerConnection, request: Request) -> Response | None:
        """Refuse an upgrade from an address no client entry allows, before any crypto."""
        where = _remote(connection)
        try:
            address = self._caller_address(connection, request.headers)
            if self._peers.config.proxy_header:
                where = f"{address} (via {where})"
            self._peers.candidates(address)
            check_salt_headers(_salt_headers(request.headers))
        except HandshakeError as exc:
            self._refuse(where, exc)
            status = http.HTTPStatus.FORBIDDEN
            if exc.reason in ("missing-salt", "bad-salt"):
                status = http.HTTPStatus.BAD_REQUEST
            return connection.respond(status, f"{status.phrase}\n")
        return None

    def _refuse(self, where: str, exc: HandshakeError) -> None:
        self._stats.connections_rejected[exc.reason] += 1
        log.warning("refused connection from %s: %s", where, exc)
        if self.on_refused is not None:
            try:
                self.on_refused(where, str(exc))
            except Exception:
                log.exception("refusal handler failed")

    async def _accept_handshake(
        self, connection: ServerConnection, where: str
    ) -> tuple[ClientEntry, Channel, bool] | None:
        """Run the server's side of the handshake: the caller's entry, the channel and whether
        it is held as a standby; ``None`` if it failed (refused, counted and closed).

        Its own coroutine so that the handshake's state (the candidate entries, the request
        headers, the frames) is freed before the link is served, not held while it lives.
        """
        handshake: ServerHandshake | None = None
        try:
            headers = connection.request.headers if connection.request else Headers()
            address = self._caller_address(connection, headers)
            handshake = ServerHandshake(
                self._peers.config.name,
                self._peers.candidates(address),
                _salt_headers(headers),
                claim=lambda name, zone: self._standby.claim(PeerId(name, zone), connection),
                replay_window=self._limits.replay_window,
            )
            async with asyncio.timeout(self._timers.handshake):
                await connection.send(handshake.receive(await recv_text(connection)))
                await connection.send(handshake.receive(await recv_text(connection)))
        except (HandshakeError, TimeoutError, ConnectionClosed) as exc:
            if handshake is not None and handshake.done and not handshake.client_is_secondary:
                # It claimed the primary slot, then failed to send its last frame.
                assert handshake.client is not None
                self._standby.release(peer_of(handshake.client), connection)
            if isinstance(exc, ConnectionClosed):
                self._refuse(where, HandshakeError("closed", "closed during the handshake"))
                return None
            if isinstance(exc, TimeoutError):
                exc = HandshakeError("timeout", "handshake took too long")
            self._refuse(where, exc)
            await connection.close(CloseCode.POLICY_VIOLATION)
            return None
        assert handshake.client is not None and handshake.channel is not None
        _forget_upgrade_headers(connection)
        return handshake.client, handshake.channel, handshake.client_is_secondary

    async def _serve_connection(self, connection: ServerConnection) -> None:
        where = _remote(connection)
        shaken = await self._accept_handshake(connection, where)
        if shaken is None:
            return
        entry, channel, secondary = shaken
        del shaken
        peer = peer_of(entry)
        if secondary:
            try:
                await self._standby.hold(
                    connection,
                    channel,
                    peer,
                    timeout=self._timers.handshake,
                    is_current=lambda: self._peers.is_current(entry),
                )
            except (HandshakeError, TimeoutError, ConnectionClosed) as exc:
                if isinstance(exc, HandshakeError):
                    self._refuse(where, exc)
                await connection.close(CloseCode.POLICY_VIOLATION)
                return
        # From here this connection owns the primary slot (claimed, or promoted into it).
        try:
            if not self._peers.is_current(entry):
                # Keys rotated or the client removed while this connection was being set up.
                self._refuse(where, HandshakeError("revoked", "its keys were replaced"))
                await connection.close(CloseCode.POLICY_VIOLATION)
                return
            await self._live.serve(connection, channel, peer, where, dialled=False)
        finally:
            self._standby.release(peer, connection)

    # --- client side -------------------------------------------------------------------

    def start_dialer(self, entry: ServerEntry) -> None:
        """Dial ``entry``'s server until it is removed or the service stops."""
        peer = peer_of(entry)
        self.stop_dialer(peer)
        self._dialers[peer] = asyncio.ensure_future(self._dial_forever(peer))

    def stop_dialer(self, peer: PeerId) -> None:
        """Stop dialing ``peer`` (its live link, if any, is left alone)."""
        dialer = self._dialers.pop(peer, None)
        if dialer is not None:
            dialer.cancel()

    async def _dial_forever(self, peer: PeerId) -> None:
        backoff = self._timers.reconnect_initial
        while self.running:
            entry = self._peers.config.server(peer.name, peer.zone)
            if entry is None:
                return
            try:
                if await self._dial(entry):
                    backoff = self._timers.reconnect_initial
            except asyncio.CancelledError:
                raise
            except KeysRefused as exc:
                log.warning("%s", self._stale_keys_hint(peer, entry, exc))
            except HandshakeError as exc:
                log.warning("handshake with %s at %s failed: %s", peer, entry.url, exc)
            except (OSError, TimeoutError, InvalidHandshake, InvalidURI, ConnectionClosed) as exc:
                log.info("cannot reach %s at %s: %s", peer, entry.url, exc or type(exc).__name__)
            # Equal jitter: wait between half and all of the current backoff.
            await asyncio.sleep(backoff / 2 + random.uniform(0, backoff / 2))
            backoff = min(backoff * 2, self._timers.reconnect_max)

    def _stale_keys_hint(self, peer: PeerId, entry: ServerEntry, exc: KeysRefused) -> str:
        """What to tell the operator when ``peer`` refused our keys: the command that fixes it."""
        me = self._peers.config.name
        rotated = f"rotate_{me}_{entry.zone}.toml"
        return (
            f"{peer} at {entry.url} refused our keys ({exc.detail}): the keys this agent holds "
            f"for it are stale, most likely rotated on its side.  Get the file its operator "
            f"made with `client --rotate {me}` ({rotated}), run "
            f"`broadgauge <role> server --rotate {rotated}` for this agent, then restart it"
        )

    async def dial_once(self, entry: ServerEntry) -> bool:
        """Connect to ``entry``'s server, shake hands and serve the link until it closes.

        Raises :class:`KeysRefused` if the server hangs up on our first handshake frame.
        """
        handshake = ClientHandshake(
            self._peers.config.name, entry, replay_window=self._limits.replay_window
        )
        # Awaited, then entered: ``async with connect(...)`` would keep the connect object
        # (its options, headers and factory) alive as long as the link; the connection
        # closes itself on the way out the same way.
        async with await connect(
            entry.url,
            additional_headers=handshake.headers,
            user_agent_header=None,
            **self._socket_options(),
        ) as connection:
            channel, standby = await self._offer_handshake(connection, handshake)
            del handshake  # its keys and frames are not needed by the link
            if standby.server_is_secondary:
                raise HandshakeError("server-secondary", f"{entry.url} is a standby server")
            if standby.client_is_secondary:
                held = self._stats.held_as_standby
                held.add(str(peer_of(entry)))
                try:
                    await wait_for_promotion(
                        connection, channel, entry.url, timeout=self._timers.handshake
                    )
                finally:
                    held.discard(str(peer_of(entry)))
            await self._live.serve(connection, channel, peer_of(entry), entry.url, True)
            return True

    async def _offer_handshake(
        self, connection: ClientConnection, handshake: ClientHandshake
    ) -> tuple[Channel, StandbyStatus]:
        """Run the client's side of the handshake; the channel and the server's standby status."""
        async with asyncio.timeout(self._timers.handshake):
            await connection.send(handshake.start())
            try:
                first = await recv_text(connection)
            except ConnectionClosed as exc:
                # The server read our first frame and hung up: no key of its opened it.
                # (The reference drops the socket; ours sends 1008 policy violation.
                # Going away, 1001, is a server stopping, not a refusal.)
                if exc.rcvd is None or exc.rcvd.code == CloseCode.POLICY_VIOLATION:
                    raise KeysRefused(f"closed the handshake: {exc}") from exc
                raise
            reply = handshake.receive(first)
            assert reply is not None
            await connection.send(reply)
            handshake.receive(await recv_text(connection))
        assert handshake.channel is not None and handshake.peer is not None
        _forget_upgrade_headers(connection)
        return handshake.channel, handshake.peer.standby
