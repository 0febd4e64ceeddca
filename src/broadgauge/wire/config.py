"""The service config: who this service is and which peers it trusts (notes §1.11, §2.1).

The TOML layout is the reference's, so configs move between implementations::

    [service]
    name = "cluster"
    url = "ws://cluster.internal:8046/"
    ip = "127.0.0.1"
    port = 8046
    servers = []          # peers we dial (imported invites)
    clients = []          # peers allowed to dial us

    [[service.clients]]
    name = "freeipa"
    zone = "default"
    ip = { IP = "10.0.0.7" }          # or { Range = "10.0.0.0/24" }
    inner_key = { data = "<64 hex>" }
    outer_key = { data = "<64 hex>" }

A :class:`ServiceConfig` is immutable; the ``with_*`` methods return changed copies.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import tomli_w

from broadgauge.wire.errors import ConfigError
from broadgauge.wire.files import parse_toml, read_text_file, write_private
from broadgauge.wire.invite import Invite, ServerCredentials, require_keys
from broadgauge.wire.keys import Key
from broadgauge.wire.names import DEFAULT_ZONE, check_name, check_zone
from broadgauge.wire.secrets import EncryptionScheme, scheme_from_dict, scheme_to_dict
from broadgauge.wire.urls import canonical_websocket_url

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class IpAllow:
    """Where a client may connect from: one address (``IP``) or a CIDR range (``Range``).

    The reference accepts IPv4 ranges only; we also accept IPv6 ranges.
    """

    network: IpNetwork
    is_range: bool

    @classmethod
    def parse(cls, text: str) -> IpAllow:
        """Parse ``10.0.0.7`` or ``10.0.0.0/24``."""
        try:
            if "/" in text:
                return cls(ipaddress.ip_network(text.strip(), strict=False), True)
            return cls(ipaddress.ip_network(text.strip()), False)
        except ValueError:
            raise ConfigError(f"{text!r} is not an IP address or CIDR range") from None

    @classmethod
    def from_toml(cls, value: Any) -> IpAllow:
        """Parse the externally tagged ``{IP = ...}`` / ``{Range = ...}`` form."""
        if not isinstance(value, dict) or len(value) != 1:
            raise ConfigError('ip must be { IP = "<address>" } or { Range = "<cidr>" }')
        ((tag, text),) = value.items()
        if tag not in ("IP", "Range") or not isinstance(text, str):
            raise ConfigError('ip must be { IP = "<address>" } or { Range = "<cidr>" }')
        allow = cls.parse(text)
        if (tag == "Range") != allow.is_range:
            raise ConfigError(f"ip {tag} = {text!r}: use IP for an address, Range for a CIDR")
        return allow

    def to_toml(self) -> dict[str, str]:
        """Render the tagged form."""
        if self.is_range:
            return {"Range": str(self.network)}
        return {"IP": str(self.network.network_address)}

    def matches(self, address: IpAddress) -> bool:
        """Whether ``address`` is allowed."""
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return address in self.network

    def __str__(self) -> str:
        return str(self.network) if self.is_range else str(self.network.network_address)


@dataclass(frozen=True)
class ClientEntry:
    """A peer allowed to dial this service (this service is its server)."""

    name: str
    zone: str
    ip: IpAllow
    inner_key: Key
    outer_key: Key

    @classmethod
    def from_toml(cls, data: Any) -> ClientEntry:
        """Parse one ``[[service.clients]]`` table."""
        if not isinstance(data, dict):
            raise ConfigError("each client must be a table")
        require_keys(data, "client", "name", "ip", "inner_key", "outer_key")
        return cls(
            name=check_name(data["name"], "client name"),
            zone=check_zone(data.get("zone", DEFAULT_ZONE)),
            ip=IpAllow.from_toml(data["ip"]),
            inner_key=Key.from_table(data["inner_key"]),
            outer_key=Key.from_table(data["outer_key"]),
        )

    def to_toml(self) -> dict[str, Any]:
        """Render the table."""
        return {
            "name": self.name,
            "zone": self.zone,
            "ip": self.ip.to_toml(),
            "inner_key": self.inner_key.to_table(),
            "outer_key": self.outer_key.to_table(),
        }

    @property
    def peer(self) -> str:
        """``name@zone``, the key under which connections are registered."""
        return f"{self.name}@{self.zone}"


@dataclass(frozen=True)
class ServerEntry(ServerCredentials):
    """A peer this service dials (imported from that server's invite)."""

    @classmethod
    def from_invite(cls, invite: Invite) -> ServerEntry:
        """Turn an invite into a server entry."""
        return cls(invite.name, invite.url, invite.zone, invite.inner_key, invite.outer_key)

    @classmethod
    def from_toml(cls, data: Any) -> ServerEntry:
        """Parse one ``[[service.servers]]`` table."""
        if not isinstance(data, dict):
            raise ConfigError("each server must be a table")
        return cls._from_table(data, "server", zone_required=False)

    def to_toml(self) -> dict[str, Any]:
        """Render the table."""
        return self._to_table()

    @property
    def peer(self) -> str:
        """``name@zone``."""
        return f"{self.name}@{self.zone}"


@dataclass(frozen=True)
class ServiceConfig:
    """Everything the wire layer needs to know about this service and its peers."""

    name: str
    url: str
    ip: str = "127.0.0.1"
    port: int = 8040
    zone: str = DEFAULT_ZONE
    healthcheck_port: int | None = None
    proxy_header: str | None = None
    servers: tuple[ServerEntry, ...] = ()
    clients: tuple[ClientEntry, ...] = ()
    encryption: EncryptionScheme | None = field(default=None)

    def __post_init__(self) -> None:
        check_name(self.name, "service name")
        check_zone(self.zone)
        try:
            ipaddress.ip_address(self.ip)
        except ValueError:
            raise ConfigError(f"service ip {self.ip!r} is not an IP address") from None
        for what, port in (("port", self.port), ("heathcheck_port", self.healthcheck_port)):
            if port is not None and not 0 <= port <= 65535:
                raise ConfigError(f"service {what} {port} is out of range")
        _unique("client", [c.peer for c in self.clients])
        _unique("server", [s.peer for s in self.servers])

    @classmethod
    def create(
        cls, name: str, *, url: str | None = None, ip: str = "127.0.0.1", port: int = 8040
    ) -> ServiceConfig:
        """A new config with no peers; the URL defaults to ``ws://<ip>:<port>/``."""
        host = f"[{ip}]" if ":" in ip else ip
        return cls(
            name=check_name(name, "service name"),
            url=canonical_websocket_url(url or f"ws://{host}:{port}"),
            ip=ip,
            port=port,
        )

    # --- peers -------------------------------------------------------------------------

    def client(self, name: str, zone: str | None = None) -> ClientEntry | None:
        """The client entry for ``name`` (in ``zone``, or in any zone if it is unique)."""
        return _find(self.clients, name, zone)

    def server(self, name: str, zone: str | None = None) -> ServerEntry | None:
        """The server entry for ``name``."""
        return _find(self.servers, name, zone)

    def with_client(self, entry: ClientEntry) -> ServiceConfig:
        """Add ``entry``, replacing any entry for the same ``name@zone``."""
        rest = tuple(c for c in self.clients if c.peer != entry.peer)
        return replace(self, clients=(*rest, entry))

    def without_client(self, name: str, zone: str) -> ServiceConfig:
        """Remove the client ``name@zone``."""
        return replace(self, clients=tuple(c for c in self.clients if c.peer != f"{name}@{zone}"))

    def with_server(self, entry: ServerEntry) -> ServiceConfig:
        """Add ``entry``, replacing any entry for the same ``name@zone``."""
        rest = tuple(s for s in self.servers if s.peer != entry.peer)
        return replace(self, servers=(*rest, entry))

    def without_server(self, name: str, zone: str) -> ServiceConfig:
        """Remove the server ``name@zone``."""
        return replace(self, servers=tuple(s for s in self.servers if s.peer != f"{name}@{zone}"))

    # --- TOML --------------------------------------------------------------------------

    @classmethod
    def from_toml(cls, data: Any) -> ServiceConfig:
        """Parse the ``[service]`` table."""
        if not isinstance(data, dict):
            raise ConfigError("[service] must be a table")
        require_keys(data, "service", "name", "url", "ip", "port", "servers", "clients")
        url, port = data["url"], data["port"]
        if not isinstance(url, str):
            raise ConfigError("service url must be a string")
        if not isinstance(port, int) or isinstance(port, bool):
            raise ConfigError("service port must be an integer")
        servers, clients = data["servers"], data["clients"]
        if not isinstance(servers, list) or not isinstance(clients, list):
            raise ConfigError("servers and clients must be arrays of tables")
        health = data.get("heathcheck_port")  # sic: the reference's key is misspelt
        if health is not None and (not isinstance(health, int) or isinstance(health, bool)):
            raise ConfigError("heathcheck_port must be an integer")
        proxy_header = data.get("proxy_header")
        if proxy_header is not None and not isinstance(proxy_header, str):
            raise ConfigError("proxy_header must be a string")
        ip = data["ip"]
        if not isinstance(ip, str):
            raise ConfigError("service ip must be a string")
        encryption = data.get("encryption")
        return cls(
            name=check_name(data["name"], "service name"),
            url=canonical_websocket_url(url),
            ip=ip,
            port=port,
            zone=check_zone(data.get("zone", DEFAULT_ZONE)),
            healthcheck_port=health,
            proxy_header=proxy_header,
            servers=tuple(ServerEntry.from_toml(s) for s in servers),
            clients=tuple(ClientEntry.from_toml(c) for c in clients),
            encryption=None if encryption is None else scheme_from_dict(encryption),
        )

    def to_toml(self) -> dict[str, Any]:
        """Render the ``[service]`` table (``None`` values are simply absent, as TOML needs)."""
        data: dict[str, Any] = {
            "name": self.name,
            "url": self.url,
            "ip": self.ip,
            "port": self.port,
            "zone": self.zone,
        }
        if self.healthcheck_port is not None:
            data["heathcheck_port"] = self.healthcheck_port
        if self.proxy_header is not None:
            data["proxy_header"] = self.proxy_header
        if self.encryption is not None:
            data["encryption"] = scheme_to_dict(self.encryption)
        data["servers"] = [s.to_toml() for s in self.servers]
        data["clients"] = [c.to_toml() for c in self.clients]
        return data

    @classmethod
    def loads(cls, text: str) -> ServiceConfig:
        """Parse a TOML document and read its ``[service]`` table."""
        return cls.from_document(parse_toml(text, "config"))

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> ServiceConfig:
        """Read the ``[service]`` table of a parsed config document."""
        if "service" not in document:
            raise ConfigError("config has no [service] table")
        return cls.from_toml(document["service"])

    def dumps(self) -> str:
        """Render a TOML document with only the ``[service]`` table."""
        return tomli_w.dumps({"service": self.to_toml()})

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ServiceConfig:
        """Read a config file."""
        return cls.loads(read_text_file(path, "config"))

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the config with mode 0600 (it holds every peer's keys)."""
        write_private(Path(path), self.dumps())


def _unique(what: str, peers: list[str]) -> None:
    seen: set[str] = set()
    for peer in peers:
        if peer in seen:
            raise ConfigError(f"two {what} entries for {peer}")
        seen.add(peer)


_Entry = TypeVar("_Entry", ClientEntry, ServerEntry)


def _find(entries: tuple[_Entry, ...], name: str, zone: str | None) -> _Entry | None:
    matches = [e for e in entries if e.name == name and (zone is None or e.zone == zone)]
    if len(matches) > 1:
        raise ConfigError(f"{name} is a peer in several zones; name the zone")
    return matches[0] if matches else None
