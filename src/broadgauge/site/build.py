"""From a :class:`~broadgauge.site.topology.Topology` to every agent's config, keys exchanged.

:func:`build_configs` works in memory: for each agent it makes (or updates) an
:class:`~broadgauge.runtime.config.AgentConfig`, and for each link it puts a client entry
with two fresh keys into the listening agent's config and the matching server entry into the
dialling agent's, exactly what ``client --add`` and ``server --add`` would do.  Keys already
present on both ends of a link are kept unless ``rotate``.  The demo calls it with port 0 and
its own data directories; :mod:`broadgauge.site.files` calls it for ``broadgauge site init``.

What goes where:

* ``[service]``: the agent's name; it listens on ``listen`` (default: its address, if that is
  an IP, else ``0.0.0.0``) and ``port``; its invites name ``url`` (default
  ``ws://<address>:<port>/``).  An agent nobody dials and without a port gets port 0 on
  127.0.0.1: ``run`` always listens, and that way it takes a free port and stays private.
* each client entry admits the dialling agent's ``address`` (an IP or a CIDR range);
* ``settings`` strings, numbers and booleans go to ``[extras]`` (as strings), tables become
  top-level tables (``[bridge]``, ``[user_volumes]``, ``[timers]``, ...);
* a bridge gets ``[bridge]`` (:class:`~broadgauge.bridge.config.BridgeSettings`) with a
  generated API key, its HTTP port from ``settings.bridge.port`` (default 3000), and a client
  file for portal software;
* a filesystem agent without an ``id-resolver`` setting, under an instance whose account
  agent keeps the local (SQLite) directory on the same host, reads uids and gids from that
  directory (``directory:<its path>``): its users are not in the system's user database.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from broadgauge.bridge.config import BridgeSettings, ClientFile
from broadgauge.jobs.agent_type import AgentType
from broadgauge.runtime.config import AgentConfig
from broadgauge.site.topology import DEFAULT_BRIDGE_PORT, AgentSpec, Topology, TopologyError
from broadgauge.wire import ConfigError, ServiceConfig
from broadgauge.wire.config import ClientEntry, IpAllow, ServerEntry
from broadgauge.wire.keys import Key
from broadgauge.wire.urls import canonical_websocket_url

#: Where an agent keeps its data; relative paths are relative to its host folder.
DataDir = Callable[[AgentSpec], Path]


def site_data_dir(spec: AgentSpec) -> Path:
    """``data_dir`` from the topology, else ``<agent>/data`` (relative to the host folder)."""
    return Path(spec.data_dir) if spec.data_dir else Path(spec.name) / "data"


@dataclass
class Built:
    """Every agent's config, the bridges' client files, and what changed."""

    configs: dict[str, AgentConfig] = field(default_factory=dict)
    client_files: dict[str, ClientFile] = field(default_factory=dict)
    #: One line per link or setting worth telling the operator about.
    notes: list[str] = field(default_factory=list)
    #: Agents whose config differs from the one given as existing (or that are new).
    changed: set[str] = field(default_factory=set)


def build_configs(
    topology: Topology,
    existing: Mapping[str, AgentConfig] | None = None,
    *,
    rotate: bool = False,
    data_dir: DataDir = site_data_dir,
) -> Built:
    """Every agent's config with every invite exchanged; ``existing`` configs keep their keys.

    An existing config keeps what the topology does not set (secrets, an encryption scheme,
    extras and peers added by hand); with ``rotate`` every link, and every bridge API key,
    gets new keys.  Raises :class:`TopologyError` for settings a config cannot hold.
    """
    old = dict(existing or {})
    built = Built()
    for spec in topology.agents:
        built.configs[spec.name] = _agent_config(
            topology, spec, old.get(spec.name), built, rotate=rotate, data_dir=data_dir
        )
    for link in topology.links:
        _link(built, topology.agent(link.dials), topology.agent(link.listens), rotate=rotate)
    for spec in topology.agents:
        _note_strangers(topology, spec, built)
        before = old.get(spec.name)
        if before is None or before.dumps() != built.configs[spec.name].dumps():
            built.changed.add(spec.name)
    return built


# --- one agent -------------------------------------------------------------------------------


def _url_host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def service_for(spec: AgentSpec, old: ServiceConfig | None) -> ServiceConfig:
    """The ``[service]`` of ``spec``: name, listen address, port and URL (peers kept)."""
    if spec.port is None:
        ip, port = spec.listen or "127.0.0.1", 0
    else:
        port = spec.port
        ip = spec.listen or (spec.address if _is_ip(spec.address) else "0.0.0.0")
    url = canonical_websocket_url(spec.url or f"ws://{_url_host(spec.address)}:{port}/")
    if old is None:
        return replace(ServiceConfig.create(spec.name, ip=ip, port=port), url=url)
    return replace(old, name=spec.name, url=url, ip=ip, port=port)


def _agent_config(
    topology: Topology,
    spec: AgentSpec,
    old: AgentConfig | None,
    built: Built,
    *,
    rotate: bool,
    data_dir: DataDir,
) -> AgentConfig:
    if old is not None and old.agent is not spec.role:
        raise TopologyError(
            f"{topology.source} line {spec.line}: the existing config of {spec.name!r} is for "
            f"a {old.agent.display} agent, not {spec.role.display}; move it away, or give the "
            "agent another name"
        )
    extras = dict(old.extras) if old is not None else {}
    other = dict(old.other) if old is not None else {}
    for key, value in spec.settings.items():
        if isinstance(value, Mapping):
            if key != "bridge":
                other[key] = dict(value)
        elif isinstance(value, bool):
            extras[key] = "true" if value else "false"
        else:
            extras[key] = str(value)
    if spec.role is AgentType.FILESYSTEM and "id-resolver" not in spec.settings:
        resolver = _id_resolver(topology, spec, data_dir, built)
        if resolver is not None and "id-resolver" not in extras:
            extras["id-resolver"] = resolver
    service = service_for(spec, old.service if old is not None else None)
    config = AgentConfig(spec.role, service, extras, other)
    if spec.role is AgentType.BRIDGE:
        settings = _bridge_settings(topology, spec, old, rotate=rotate)
        config = settings.store(config)
        built.client_files[spec.name] = settings.client_file()
    return config


def _bridge_settings(
    topology: Topology, spec: AgentSpec, old: AgentConfig | None, *, rotate: bool
) -> BridgeSettings:
    """The ``[bridge]`` table: the topology's settings over the old file's, the old key kept."""
    given = spec.settings.get("bridge", {})
    table: dict[str, Any] = {}
    key: bytes | None = None
    if old is not None and isinstance(old.other.get("bridge"), Mapping):
        try:
            previous = BridgeSettings.of(old)
        except ConfigError:
            previous = None
        if previous is not None:
            key = previous.key
            # The address comes from the topology; what it does not say (signal URLs, ...)
            # stays as the operator left it.
            table = {k: v for k, v in previous.to_table().items() if k not in ("ip", "port", "url")}
    ip = given.get("ip", "127.0.0.1")
    port = given.get("port", DEFAULT_BRIDGE_PORT)
    shown = spec.address if ip in ("0.0.0.0", "::") else ip
    table.update({"ip": ip, "port": port, "url": f"http://{_url_host(str(shown))}:{port}/"})
    table.update(given)
    fresh = BridgeSettings.generate()
    table["key"] = {"data": (fresh.key if key is None or rotate else key).hex()}
    try:
        return BridgeSettings.from_table(table)
    except ConfigError as exc:
        raise TopologyError(
            f"{topology.source} line {spec.line}: bridge {spec.name!r}: {exc}"
        ) from None


def _id_resolver(
    topology: Topology, spec: AgentSpec, data_dir: DataDir, built: Built
) -> str | None:
    """``directory:<path>`` if the instance's account agent keeps a local directory here."""
    for instance in topology.servers_of(spec.name):
        for account in topology.clients_of(instance.name):
            if account.role is not AgentType.ACCOUNT:
                continue
            if str(account.settings.get("account-backend", "local")) != "local":
                continue
            if account.host != spec.host:
                built.notes.append(
                    f"filesystem {spec.name!r} cannot read the local account directory of "
                    f"{account.name!r}, which runs on another host; it resolves ids through "
                    'the system (id-resolver "nss"): set id-resolver in its settings if '
                    "the users are not in the system's user database"
                )
                return None
            directory = account.settings.get("directory")
            path = str(directory) if directory else str(data_dir(account) / "directory.sqlite3")
            return f"directory:{path}"
    return None


# --- links ---------------------------------------------------------------------------------


def _link(built: Built, lower: AgentSpec, upper: AgentSpec, *, rotate: bool) -> None:
    """Give the link ``lower`` → ``upper`` keys: kept if both ends agree, else new ones."""
    dialler, listener = built.configs[lower.name], built.configs[upper.name]
    zone = listener.service.zone
    client = listener.service.client(lower.name, zone)
    server = dialler.service.server(upper.name, zone)
    allow = IpAllow.parse(lower.address)
    matching = (
        client is not None
        and server is not None
        and client.inner_key == server.inner_key
        and client.outer_key == server.outer_key
    )
    arrow = f"{lower.name} → {upper.name}"
    if matching and not rotate:
        assert client is not None
        inner, outer = client.inner_key, client.outer_key
    else:
        inner, outer = Key.generate(), Key.generate()
        if client is None and server is None:
            built.notes.append(f"new link {arrow}: keys written to both ends")
        elif rotate:
            built.notes.append(f"rotated {arrow}: new keys on both ends")
        else:
            built.notes.append(f"re-keyed {arrow}: its two ends did not hold the same keys")
    entry = ClientEntry(lower.name, zone, allow, inner, outer)
    credentials = ServerEntry(upper.name, listener.service.url, zone, inner, outer)
    built.configs[upper.name] = replace(listener, service=listener.service.with_client(entry))
    built.configs[lower.name] = replace(dialler, service=dialler.service.with_server(credentials))


def _note_strangers(topology: Topology, spec: AgentSpec, built: Built) -> None:
    """Tell about peers in a config that the topology does not link (kept, not removed)."""
    service = built.configs[spec.name].service
    clients = {c.name for c in topology.clients_of(spec.name)}
    servers = {s.name for s in topology.servers_of(spec.name)}
    role = spec.role.display
    for entry in service.clients:
        if entry.name not in clients:
            built.notes.append(
                f"kept client {entry.peer} of {spec.name!r}, which the topology does not link "
                f"(remove it with `broadgauge {role} client --remove {entry.name} -c ...`)"
            )
    for known in service.servers:
        if known.name not in servers:
            built.notes.append(
                f"kept server {known.peer} of {spec.name!r}, which the topology does not link "
                f"(remove it with `broadgauge {role} server --remove {known.name} -c ...`)"
            )
