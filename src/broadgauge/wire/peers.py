"""A service's peer registry: who may connect or be dialled, with which keys, and who is connected.

It owns the live :class:`~broadgauge.wire.config.ServiceConfig` (the client entries a server
admits, the server entries a client dials, and their keys), the changes made to it at run time
(adding, rotating and removing peers, and the real port once listening on port 0), the invites
those changes hand out, the allowlist match that picks the client entries a caller's address
may claim, and the table of live links by :class:`PeerId`.

It is kept apart from :mod:`~broadgauge.wire.connection` because it decides *who* and never
*how*: it does no I/O (no sockets, no asyncio), so every rule about peers and keys can be read
and tested without a network.  What a change means for a live connection (closing a link whose
keys were replaced, dialling a new server) is for the caller, the
:class:`~broadgauge.wire.service.Service`, to carry out.  The table is generic in the link type
so that this module need not know what a link is.
"""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from typing import Generic, NamedTuple, TypeVar

from broadgauge.wire.config import ClientEntry, IpAllow, ServerEntry, ServiceConfig
from broadgauge.wire.errors import ConfigError, HandshakeError, PeerNotConnected
from broadgauge.wire.invite import Invite
from broadgauge.wire.keys import Key

LinkT = TypeVar("LinkT")


class PeerId(NamedTuple):
    """A peer as the wire knows it: its name and the zone of the link."""

    name: str
    zone: str

    def __str__(self) -> str:
        return f"{self.name}@{self.zone}"


def peer_of(entry: ClientEntry | ServerEntry) -> PeerId:
    """The peer a client or server entry describes."""
    return PeerId(entry.name, entry.zone)


class PeerRegistry(Generic[LinkT]):
    """The configured peers of one service, and its live links (``LinkT``) by peer."""

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self.links: dict[PeerId, LinkT] = {}

    # --- configured peers --------------------------------------------------------------

    def add_client(self, name: str, ip: str, zone: str | None) -> ClientEntry:
        """Add (or replace) the entry for client ``name@zone`` with fresh keys."""
        entry = ClientEntry(
            name=name,
            zone=zone or self.config.zone,
            ip=IpAllow.parse(ip),
            inner_key=Key.generate(),
            outer_key=Key.generate(),
        )
        self.config = self.config.with_client(entry)
        return entry

    def rotate_client(self, name: str, zone: str | None) -> ClientEntry:
        """Give client ``name`` fresh keys; the entry with its new keys is returned."""
        entry = self._client(name, zone)
        rotated = replace(entry, inner_key=Key.generate(), outer_key=Key.generate())
        self.config = self.config.with_client(rotated)
        return rotated

    def remove_client(self, name: str, zone: str | None) -> PeerId:
        """Forget client ``name``; the peer it was is returned."""
        entry = self._client(name, zone)
        self.config = self.config.without_client(entry.name, entry.zone)
        return peer_of(entry)

    def add_server(self, invite: Invite) -> ServerEntry:
        """Add (or replace) the entry for the server ``invite`` describes."""
        entry = ServerEntry.from_invite(invite)
        self.config = self.config.with_server(entry)
        return entry

    def remove_server(self, name: str, zone: str | None) -> PeerId:
        """Forget server ``name``; the peer it was is returned."""
        entry = self.config.server(name, zone)
        if entry is None:
            raise ConfigError(f"no server called {name}")
        self.config = self.config.without_server(entry.name, entry.zone)
        return peer_of(entry)

    def _client(self, name: str, zone: str | None) -> ClientEntry:
        entry = self.config.client(name, zone)
        if entry is None:
            raise ConfigError(f"no client called {name}")
        return entry

    def invite_for(self, entry: ClientEntry) -> Invite:
        """The invite that lets the client ``entry`` dial this service."""
        return Invite(
            self.config.name, self.config.url, entry.zone, entry.inner_key, entry.outer_key
        )

    def listening_on(self, port: int) -> None:
        """Record the port the listener was given (asked for port 0) in the port and URL."""
        ip = self.config.ip
        host = f"[{ip}]" if ":" in ip else ip
        self.config = replace(self.config, port=port, url=f"ws://{host}:{port}/")

    def candidates(self, address: str) -> list[ClientEntry]:
        """The client entries whose allowlist admits ``address``; refused if there are none."""
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            raise HandshakeError("bad-address", f"{address!r} is not one IP address") from None
        matches = [c for c in self.config.clients if c.ip.matches(ip)]
        if not matches:
            raise HandshakeError("ip-not-allowed", "no client is allowed from this address")
        return matches

    def is_current(self, entry: ClientEntry) -> bool:
        """Whether ``entry`` is still configured as it was (not rotated, replaced or removed)."""
        return self.config.client(entry.name, entry.zone) == entry

    # --- connected peers ---------------------------------------------------------------

    def connected_peers(self) -> list[PeerId]:
        """Peers with a live link."""
        return list(self.links)

    def is_connected(self, name: str, zone: str | None) -> bool:
        """Whether ``name`` (in ``zone``, if given) has a live link."""
        return any(p.name == name and (zone is None or p.zone == zone) for p in self.links)

    def link_for(self, name: str, zone: str | None) -> LinkT:
        """The live link to ``name`` (in ``zone``, which is needed if it is in several)."""
        if zone is not None:
            link = self.links.get(PeerId(name, zone))
            if link is None:
                raise PeerNotConnected(f"{name}@{zone} is not connected")
            return link
        links = [link for peer, link in self.links.items() if peer.name == name]
        if not links:
            raise PeerNotConnected(f"{name} is not connected")
        if len(links) > 1:
            raise PeerNotConnected(f"{name} is connected in several zones; name the zone")
        return links[0]
