"""The asyncio edge of the wire layer: a :class:`Service` that listens, dials and relays.

:class:`Service` is the facade the rest of Broadgauge uses.  It composes four parts and
carries out what a change to one means for the others:

* :mod:`~broadgauge.wire.peers` keeps the config (who may connect, who to dial, their keys)
  and the table of live links;
* :mod:`~broadgauge.wire.connection` turns sockets into links: listening, admission, the
  handshakes, dialling and redialling;
* :mod:`~broadgauge.wire.link` runs each link once made: reading and writing frames, the
  keepalive, the watchdog and the liveness ping;
* :mod:`~broadgauge.wire.standby` holds a second connection for a connected peer until the
  first one goes.

Everything cryptographic and every protocol decision lives in the sans-I/O modules
(:mod:`~broadgauge.wire.handshake`, :mod:`~broadgauge.wire.envelope`).
"""

from __future__ import annotations

from collections.abc import Awaitable

from broadgauge.wire.config import ServerEntry, ServiceConfig
from broadgauge.wire.connection import Connections
from broadgauge.wire.invite import Invite
from broadgauge.wire.link import (
    Limits,
    Link,
    LiveLinks,
    Message,
    MessageHandler,
    PeerHandler,
    RefusalHandler,
    Timers,
)
from broadgauge.wire.peers import PeerId, PeerRegistry, peer_of
from broadgauge.wire.standby import StandbyDesk
from broadgauge.wire.stats import WireStats

__all__ = [
    "PRIMARY_PING_TIMEOUT",
    "PRIMARY_QUIET",
    "Limits",
    "Message",
    "MessageHandler",
    "PeerHandler",
    "PeerId",
    "RefusalHandler",
    "Service",
    "Timers",
]

#: A primary heard from this recently is alive; a quieter one is pinged when a standby asks.
PRIMARY_QUIET = 5.0
PRIMARY_PING_TIMEOUT = 5.0


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
        self.timers = timers or Timers()
        self.limits = limits or Limits()
        self.stats = WireStats()
        self._peers: PeerRegistry[Link] = PeerRegistry(config)
        self._standby = StandbyDesk(lambda peer: peer in self._peers.links, self._primary_alive)
        self._live = LiveLinks(
            self._peers, timers=self.timers, limits=self.limits, stats=self.stats
        )
        self._connections = Connections(
            self._peers,
            self._standby,
            self._live,
            timers=self.timers,
            limits=self.limits,
            stats=self.stats,
            # Looked up on every attempt (not bound now), so wrapping ``_dial_once`` sees each.
            dial=lambda entry: self._dial_once(entry),  # noqa: PLW0108
        )

    # --- configuration -----------------------------------------------------------------

    @property
    def config(self) -> ServiceConfig:
        """The current config, including peers added or rotated at run time."""
        return self._peers.config

    @property
    def name(self) -> str:
        """This service's name."""
        return self._peers.config.name

    def add_client(self, name: str, ip: str, zone: str | None = None) -> Invite:
        """Allow a new client to connect from ``ip`` (an address or CIDR range).

        Returns the invite to hand to that client.  Any existing entry for the same
        ``name@zone`` is replaced, and its keys stop working.
        """
        entry = self._peers.add_client(name, ip, zone)
        self._connections.drop_link(peer_of(entry), "client entry replaced")
        return self._peers.invite_for(entry)

    def rotate_client(self, name: str, zone: str | None = None) -> Invite:
        """Give client ``name`` new keys and return its new invite.

        The old invite stops working at once: a live connection made with it is closed, and
        reconnecting with the old keys fails the handshake.
        """
        entry = self._peers.rotate_client(name, zone)
        self._connections.drop_link(peer_of(entry), "keys rotated")
        return self._peers.invite_for(entry)

    def remove_client(self, name: str, zone: str | None = None) -> None:
        """Forget a client and close its connection."""
        peer = self._peers.remove_client(name, zone)
        self._connections.drop_link(peer, "client removed")

    def add_server(self, invite: Invite) -> None:
        """Trust the server described by ``invite`` and dial it (now, if running)."""
        entry = self._peers.add_server(invite)
        self._connections.drop_link(peer_of(entry), "server entry replaced")
        if self._connections.running:
            self._connections.start_dialer(entry)

    def remove_server(self, name: str, zone: str | None = None) -> None:
        """Stop dialing a server and close its connection."""
        peer = self._peers.remove_server(name, zone)
        self._connections.stop_dialer(peer)
        self._connections.drop_link(peer, "server removed")

    @property
    def url(self) -> str:
        """The URL clients should dial (with the real port once listening on port 0)."""
        return self._peers.config.url

    # --- handlers ----------------------------------------------------------------------

    def on_message(self, handler: MessageHandler) -> MessageHandler:
        """Register the coroutine that receives every payload.  Usable as a decorator."""
        self._live.on_message = handler
        return handler

    def on_connected(self, handler: PeerHandler) -> PeerHandler:
        """Register a coroutine called when a peer has completed the handshake."""
        self._live.on_connected = handler
        return handler

    def on_disconnected(self, handler: PeerHandler) -> PeerHandler:
        """Register a coroutine called when a peer's connection has ended."""
        self._live.on_disconnected = handler
        return handler

    def on_refused(self, handler: RefusalHandler) -> RefusalHandler:
        """Register a function called with (caller address, reason) for each refused caller."""
        self._connections.on_refused = handler
        return handler

    # --- sending -----------------------------------------------------------------------

    def connected_peers(self) -> list[PeerId]:
        """Peers with a live connection."""
        return self._peers.connected_peers()

    def standbys(self, name: str, zone: str) -> int:
        """How many standby connections of ``name@zone`` wait behind its primary link."""
        return self._standby.standbys(PeerId(name, zone))

    async def send(self, peer: str, payload: str, zone: str | None = None) -> None:
        """Send ``payload`` to the connected peer ``peer`` (in ``zone``, if given).

        Raises :class:`PeerNotConnected` if there is no live link, and
        :class:`MessageTooLarge` if the frame would exceed :attr:`Limits.max_frame`.
        """
        await self._live.send(peer, payload, zone)

    async def wait_for_peer(self, name: str, zone: str | None = None) -> None:
        """Wait until ``name`` (in ``zone``) is connected.  Bound it with ``asyncio.timeout``."""
        await self._live.wait_for_peer(name, zone)

    async def disconnect(self, peer: str, zone: str | None = None) -> None:
        """Politely close the link to ``peer``.  A dialled server will be redialled later."""
        await self._live.disconnect(peer, zone)

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self, *, listen: bool = True) -> None:
        """Start listening (if ``listen``) and dialing every configured server."""
        await self._connections.start(listen=listen)

    async def stop(self) -> None:
        """Close every link politely, stop dialing and stop listening."""
        await self._connections.stop()

    async def run(self) -> None:
        """Start, then serve until :meth:`stop` is called."""
        await self.start()
        await self._connections.wait_stopped()

    async def __aenter__(self) -> Service:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- glue between the parts --------------------------------------------------------

    @property
    def _links(self) -> dict[PeerId, Link]:
        """The live links by peer (the registry's table)."""
        return self._peers.links

    def _dial_once(self, entry: ServerEntry) -> Awaitable[bool]:
        # Returns the attempt rather than awaiting it: no frame of ours held per live link.
        return self._connections.dial_once(entry)

    async def _primary_alive(self, peer: object) -> bool:
        """Whether ``peer``'s link still answers; one that does not is cut, for its standby."""
        link = self._peers.links.get(peer) if isinstance(peer, PeerId) else None
        if link is None:
            return False
        return await link.answers_ping(quiet=PRIMARY_QUIET, timeout=PRIMARY_PING_TIMEOUT)
