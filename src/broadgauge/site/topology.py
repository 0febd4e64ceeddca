"""The topology file: a site's agents and links in one TOML document (pure: text in, value out).

::

    [site]
    output = "site"              # optional: where `broadgauge site init` writes (default "site")

    [hosts]                      # optional: the address of each host (default: its name)
    web = "10.0.0.1"

    [[agent]]
    name = "portal"
    role = "portal"              # portal, provider, platform, instance, account, filesystem,
                                 # scheduler or bridge
    host = "web"                 # the host it runs on: one output folder per host
    port = 8040                  # the port it listens on (required if another agent dials it)
    # address = "10.0.0.1"       # what peers dial, and what the allowlists of its servers
                                 # name (default: the host's address from [hosts], else host)
    # listen = "0.0.0.0"         # the IP it binds (default: address, if that is an IP)
    # url = "wss://portal.example.org"  # the URL its invites name (default ws://address:port/)
    # data_dir = "/var/lib/broadgauge/portal"  # default: <agent>/data in its host folder
    [agent.settings]             # optional: strings (and numbers, true/false) go to [extras],
    "account-backend" = "local"  # tables become top-level tables of the config ([bridge],
                                 # [user_volumes], [timers], ...)

    [[link]]
    dials = "provider"           # the websocket client ...
    listens = "portal"           # ... of this agent

What the parser refuses, each naming the line: TOML syntax errors, unknown keys and tables,
wrong types, an unknown role, a duplicate agent name, two agents on one host (or one address)
and port, a link to an unknown agent, a duplicate link, a cycle of links, a link the roles do
not allow (:data:`MAY_DIAL`), a dialled agent without a port, and a dialling agent whose
address is not an IP address or range (its servers' allowlists need one).

**Line numbers.**  :mod:`tomllib` keeps no positions, so :class:`_Lines` scans the text once:
it notes each table header (``[[agent]]``, ``[agent.settings]``, ``[[link]]``, ``[site]``,
``[hosts]``) and each ``key =`` at the start of a line, skipping comments and the inside of
multi-line strings.  The n-th ``[[agent]]`` header is the n-th agent of the parsed document
(TOML keeps array-of-tables order), and a key's line is the first ``key =`` line inside its
block.  A key written another way (inline, dotted) is reported at its block's header line.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from broadgauge.jobs.agent_type import AgentType
from broadgauge.text import first_bad_name_character

__all__ = [
    "MAY_DIAL",
    "ROLES",
    "AgentSpec",
    "LinkSpec",
    "Topology",
    "TopologyError",
    "load_topology",
    "make_topology",
    "parse_topology",
]

#: Role names as the command line spells them (``broadgauge <role> ...``).
ROLES: Mapping[str, AgentType] = MappingProxyType(
    {kind.display: kind for kind in AgentType if kind is not AgentType.VIRTUAL}
)

#: Which roles an agent of each role may dial: the one table of allowed links.
#:
#: It is the hierarchy the code enforces.  Jobs flow down bridge → portal → provider →
#: platform → instance → leaves, and an agent treats the peers it dials as above it
#: (:mod:`broadgauge.jobs.directions`), except that a portal treats its bridge, which dials
#: it, as above.  A portal takes ``submit`` only from a bridge (:mod:`broadgauge.agents.portal`);
#: only an instance asks account, filesystem and scheduler agents for work, by type, among
#: the agents that dial it (:mod:`broadgauge.agents.instance`); the rules sweep asks a bridge's
#: portal and the routing agents below it (:mod:`broadgauge.runtime.rules_sweep`).  A portal
#: dials nobody.
MAY_DIAL: Mapping[AgentType, frozenset[AgentType]] = MappingProxyType(
    {
        AgentType.BRIDGE: frozenset({AgentType.PORTAL}),
        AgentType.PORTAL: frozenset(),
        AgentType.PROVIDER: frozenset({AgentType.PORTAL}),
        AgentType.PLATFORM: frozenset({AgentType.PROVIDER}),
        AgentType.INSTANCE: frozenset({AgentType.PLATFORM}),
        AgentType.ACCOUNT: frozenset({AgentType.INSTANCE}),
        AgentType.FILESYSTEM: frozenset({AgentType.INSTANCE}),
        AgentType.SCHEDULER: frozenset({AgentType.INSTANCE}),
    }
)

#: The leaf roles an instance needs for add_user and add_project.
REQUIRED_LEAVES = (AgentType.ACCOUNT, AgentType.FILESYSTEM, AgentType.SCHEDULER)
#: Settings tables that would clash with the config's own layout.
_RESERVED_TABLES = frozenset({"agent", "service", "extras"})
_AGENT_KEYS = frozenset(
    {"name", "role", "host", "port", "address", "listen", "url", "data_dir", "settings"}
)
_LINK_KEYS = frozenset({"dials", "listens"})
_SITE_KEYS = frozenset({"output"})
_TOP_KEYS = frozenset({"site", "hosts", "agent", "link"})
DEFAULT_BRIDGE_PORT = 3000


class TopologyError(ValueError):
    """A topology that cannot be built; the message names the file and line."""


@dataclass(frozen=True)
class AgentSpec:
    """One ``[[agent]]`` of the topology."""

    name: str
    role: AgentType
    host: str
    port: int | None
    address: str  #: what peers dial, and what the allowlists of the agents it dials name
    settings: Mapping[str, Any]
    line: int
    listen: str | None = None  #: the IP to bind (None: the address if it is an IP)
    url: str | None = None  #: the URL invites name (None: ws://address:port/)
    data_dir: str | None = None  #: None: ``<agent>/data`` in its host folder

    @property
    def bridge_port(self) -> int | None:
        """The port of a bridge's HTTP API (``settings.bridge.port``, default 3000)."""
        if self.role is not AgentType.BRIDGE:
            return None
        table = self.settings.get("bridge", {})
        port = table.get("port", DEFAULT_BRIDGE_PORT) if isinstance(table, Mapping) else None
        return port if isinstance(port, int) and not isinstance(port, bool) else None


@dataclass(frozen=True)
class LinkSpec:
    """One ``[[link]]``: ``dials`` is the websocket client of ``listens``."""

    dials: str
    listens: str
    line: int


@dataclass(frozen=True)
class Topology:
    """A checked topology: build it with :func:`parse_topology` or :func:`make_topology`."""

    agents: tuple[AgentSpec, ...]
    links: tuple[LinkSpec, ...]
    output: str | None = None  #: ``[site] output``, if given
    source: str = "topology.toml"
    _by_name: Mapping[str, AgentSpec] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {a.name: a for a in self.agents})

    def agent(self, name: str) -> AgentSpec:
        """The agent called ``name`` (KeyError if there is none)."""
        return self._by_name[name]

    def hosts(self) -> list[str]:
        """Every host, in the order of first appearance."""
        return list(dict.fromkeys(a.host for a in self.agents))

    def on_host(self, host: str) -> list[AgentSpec]:
        """The agents that run on ``host``, in file order."""
        return [a for a in self.agents if a.host == host]

    def servers_of(self, name: str) -> list[AgentSpec]:
        """The agents ``name`` dials."""
        return [self.agent(link.listens) for link in self.links if link.dials == name]

    def clients_of(self, name: str) -> list[AgentSpec]:
        """The agents that dial ``name``."""
        return [self.agent(link.dials) for link in self.links if link.listens == name]

    def top_down(self) -> list[AgentSpec]:
        """Every agent after the agents it dials (otherwise in file order): a start order."""
        placed: dict[str, AgentSpec] = {}
        pending = list(self.agents)
        while pending:
            # make_topology refused cycles, so each pass places at least one agent.
            for spec in pending:
                if all(server.name in placed for server in self.servers_of(spec.name)):
                    placed[spec.name] = spec
            pending = [spec for spec in pending if spec.name not in placed]
        return list(placed.values())

    def listens(self, name: str) -> bool:
        """Whether another agent dials ``name``."""
        return any(link.listens == name for link in self.links)

    def warnings(self) -> list[str]:
        """What is allowed but will not work for add_user: missing leaves, a lonely bridge."""
        notes = []
        for spec in self.agents:
            if spec.role is AgentType.INSTANCE:
                roles = {client.role for client in self.clients_of(spec.name)}
                missing = [kind.display for kind in REQUIRED_LEAVES if kind not in roles]
                if missing:
                    notes.append(
                        f"{self.source} line {spec.line}: instance {spec.name!r} has no "
                        f"{' and no '.join(missing)} agent; add_user and add_project need one "
                        "of each (add an [[agent]] and a [[link]] that dials the instance)"
                    )
            if spec.role is AgentType.BRIDGE and not self.servers_of(spec.name):
                notes.append(
                    f"{self.source} line {spec.line}: bridge {spec.name!r} dials no portal, "
                    "so portal software cannot reach the network through it"
                )
        return notes


# --- reading the text ------------------------------------------------------------------------

_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\[\]#]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"""^\s*(?:"([^"]+)"|'([^']+)'|([A-Za-z0-9_-]+))\s*=""")


class _Lines:
    """Where each block and key of the document starts (see the module docstring)."""

    def __init__(self, text: str) -> None:
        #: (header, index among the same headers) -> line; ("", 0) is the top of the file.
        self.blocks: dict[tuple[str, int], int] = {("", 0): 1}
        self.keys: dict[tuple[str, int, str], int] = {}
        counts: dict[str, int] = {}
        current = ("", 0)
        quote: str | None = None
        for number, line in enumerate(text.splitlines(), start=1):
            if quote is not None:
                if line.count(quote) % 2 == 1:
                    quote = None
                continue
            header = _HEADER.match(line)
            if header is not None:
                name = re.sub(r"\s*\.\s*", ".", header.group(2)).replace('"', "")
                if header.group(1) == "[[":
                    index = counts.get(name, -1) + 1
                    counts[name] = index
                else:
                    # A sub-table ([agent.settings]) belongs to the latest [[agent]].
                    parent = name.split(".", 1)[0]
                    index = counts.get(parent, 0) if name != parent else 0
                current = (name, index)
                self.blocks.setdefault(current, number)
                continue
            key = _KEY.match(line)
            if key is not None:
                name = key.group(1) or key.group(2) or key.group(3)
                self.keys.setdefault((*current, name), number)
            for mark in ('"""', "'''"):
                if line.split("#", 1)[0].count(mark) % 2 == 1:
                    quote = mark
                    break

    def block(self, header: str, index: int = 0) -> int:
        """The line of the ``index``-th ``[header]``, else of its parent block, else 1."""
        line = self.blocks.get((header, index))
        if line is not None:
            return line
        return self.block(header.rsplit(".", 1)[0], index) if "." in header else 1

    def key(self, header: str, index: int, key: str) -> int:
        """The line of ``key =`` in that block, else the block's header line."""
        return self.keys.get((header, index, key), self.block(header, index))


class _Reader:
    """Turns the parsed document into specs, raising :class:`TopologyError` with lines."""

    def __init__(self, text: str, source: str) -> None:
        self.source = source
        self.lines = _Lines(text)

    def fail(self, line: int, message: str) -> TopologyError:
        return TopologyError(f"{self.source} line {line}: {message}")

    def unknown(self, table: Mapping[str, Any], known: Iterable[str], header: str, i: int) -> None:
        for key in table:
            if key not in known:
                raise self.fail(
                    self.lines.key(header, i, key),
                    f"unknown key {key!r} in [{header}]; known keys: {', '.join(sorted(known))}",
                )

    def string(self, table: Mapping[str, Any], key: str, header: str, i: int) -> str | None:
        value = table.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            raise self.fail(self.lines.key(header, i, key), f"{key} must be a non-empty string")
        return value.strip()

    def agent(self, table: Any, i: int, addresses: Mapping[str, str]) -> AgentSpec:
        line = self.lines.block("agent", i)
        if not isinstance(table, dict):
            raise self.fail(line, "each [[agent]] must be a table")
        self.unknown(table, _AGENT_KEYS, "agent", i)
        for key in ("name", "role", "host"):
            if key not in table:
                raise self.fail(line, f'[[agent]] has no {key}; add {key} = "..."')
        name = self.string(table, "name", "agent", i)
        role = self.string(table, "role", "agent", i)
        host = self.string(table, "host", "agent", i)
        assert name is not None and role is not None and host is not None
        bad = first_bad_name_character(name)
        if bad is not None:
            raise self.fail(
                self.lines.key("agent", i, "name"),
                f"agent name {name!r} contains {bad!r}; use letters, digits, - and _",
            )
        if role.lower() not in ROLES:
            raise self.fail(
                self.lines.key("agent", i, "role"),
                f"unknown role {role!r}; roles are {', '.join(ROLES)}",
            )
        port = table.get("port")
        if port is not None and (
            not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535
        ):
            raise self.fail(self.lines.key("agent", i, "port"), "port must be a port number")
        settings = table.get("settings", {})
        if not isinstance(settings, dict):
            raise self.fail(self.lines.key("agent", i, "settings"), "settings must be a table")
        self.check_settings(settings, i)
        listen = self.string(table, "listen", "agent", i)
        if listen is not None and not _is_ip(listen):
            raise self.fail(
                self.lines.key("agent", i, "listen"), f"listen {listen!r} is not an IP address"
            )
        address = self.string(table, "address", "agent", i) or addresses.get(host, host)
        return AgentSpec(
            name=name,
            role=ROLES[role.lower()],
            host=host,
            port=port,
            address=address,
            settings=settings,
            line=line,
            listen=listen,
            url=self.string(table, "url", "agent", i),
            data_dir=self.string(table, "data_dir", "agent", i),
        )

    def check_settings(self, settings: Mapping[str, Any], i: int) -> None:
        for key, value in settings.items():
            line = self.lines.blocks.get(("agent.settings." + key, i)) or self.lines.key(
                "agent.settings", i, key
            )
            if isinstance(value, dict):
                if key in _RESERVED_TABLES:
                    raise self.fail(line, f"settings.{key} would replace the config's [{key}]")
                if key == "bridge":
                    port = value.get("port", DEFAULT_BRIDGE_PORT)
                    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port < 65536:
                        raise self.fail(line, "settings.bridge.port must be a port number")
            elif not isinstance(value, str | int | float | bool):
                raise self.fail(
                    line,
                    f"settings.{key} must be a string, a number, true/false or a table "
                    "(extras are strings; tables become tables of the config)",
                )

    def link(self, table: Any, i: int) -> LinkSpec:
        line = self.lines.block("link", i)
        if not isinstance(table, dict):
            raise self.fail(line, "each [[link]] must be a table")
        self.unknown(table, _LINK_KEYS, "link", i)
        for key in ("dials", "listens"):
            if key not in table:
                raise self.fail(line, f'[[link]] has no {key}; add {key} = "<agent name>"')
        dials = self.string(table, "dials", "link", i)
        listens = self.string(table, "listens", "link", i)
        assert dials is not None and listens is not None
        return LinkSpec(dials, listens, line)

    def document(
        self, document: dict[str, Any]
    ) -> tuple[list[AgentSpec], list[LinkSpec], str | None]:
        for key in document:
            if key not in _TOP_KEYS:
                line = self.lines.blocks.get((key, 0)) or self.lines.key("", 0, key)
                raise self.fail(
                    line,
                    f"unknown table or key {key!r}; a topology has [site], [hosts], "
                    "[[agent]] and [[link]]",
                )
        site = document.get("site", {})
        if not isinstance(site, dict):
            raise self.fail(self.lines.key("", 0, "site"), "site must be a table")
        self.unknown(site, _SITE_KEYS, "site", 0)
        output = self.string(site, "output", "site", 0)
        hosts = document.get("hosts", {})
        if not isinstance(hosts, dict):
            raise self.fail(self.lines.key("", 0, "hosts"), "hosts must be a table")
        for host, address in hosts.items():
            if not isinstance(address, str) or not address.strip():
                raise self.fail(
                    self.lines.key("hosts", 0, host), f"hosts.{host} must be an address string"
                )
        addresses = {host: str(address).strip() for host, address in hosts.items()}
        agents, links = document.get("agent", []), document.get("link", [])
        for key, value in (("agent", agents), ("link", links)):
            if not isinstance(value, list):
                raise self.fail(
                    self.lines.key("", 0, key), f"write each {key} as a [[{key}]] table"
                )
        return (
            [self.agent(table, i, addresses) for i, table in enumerate(agents)],
            [self.link(table, i) for i, table in enumerate(links)],
            output,
        )


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _is_ip_or_range(text: str) -> bool:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return True


# --- checking the whole --------------------------------------------------------------------


def make_topology(
    agents: Iterable[AgentSpec],
    links: Iterable[LinkSpec],
    *,
    source: str = "topology.toml",
    output: str | None = None,
    any_port: bool = False,
) -> Topology:
    """Check agents and links together and return the :class:`Topology`.

    ``any_port`` lets a dialled agent have port 0 (any free port when it starts): only an
    in-process network such as the demo, which learns the real port before anyone dials,
    can use it.  Raises :class:`TopologyError` naming the line of what is wrong.
    """
    agents, links = tuple(agents), tuple(links)

    def fail(line: int, message: str) -> TopologyError:
        return TopologyError(f"{source} line {line}: {message}")

    by_name: dict[str, AgentSpec] = {}
    ports: dict[tuple[str, int], tuple[AgentSpec, str]] = {}
    for spec in agents:
        if spec.name in by_name:
            raise fail(
                spec.line,
                f"a second agent called {spec.name!r} (the first is on line "
                f"{by_name[spec.name].line}); agent names must be unique",
            )
        by_name[spec.name] = spec
        used = [(spec.port, "port"), (spec.bridge_port, "bridge HTTP port")]
        for port, what in used:
            if not port:
                continue
            # The same host, or the same address (several "hosts" tried on one machine).
            for place in {f"host {spec.host!r}", f"address {spec.address!r}"}:
                other = ports.get((place, port))
                if other is not None:
                    raise fail(
                        spec.line,
                        f"agent {spec.name!r} uses {what} {port} on {place}, which agent "
                        f"{other[0].name!r} (line {other[0].line}) already uses for its "
                        f"{other[1]}; give one of them another port",
                    )
                ports[(place, port)] = (spec, what)
    names = ", ".join(by_name)
    seen: dict[tuple[str, str], LinkSpec] = {}
    for link in links:
        for end in (link.dials, link.listens):
            if end not in by_name:
                raise fail(link.line, f"link names unknown agent {end!r}; agents are {names}")
        if link.dials == link.listens:
            raise fail(link.line, f"agent {link.dials!r} cannot dial itself (a cycle)")
        pair = (link.dials, link.listens)
        if pair in seen or pair[::-1] in seen:
            first = seen.get(pair) or seen[pair[::-1]]
            raise fail(
                link.line,
                f"{link.dials!r} and {link.listens!r} are already linked on line {first.line}",
            )
        seen[pair] = link
    _check_cycles(links, fail)
    for link in links:
        lower, upper = by_name[link.dials], by_name[link.listens]
        if upper.role not in MAY_DIAL[lower.role]:
            allowed = " or ".join(sorted(k.display for k in MAY_DIAL[lower.role]))
            hint = (
                f"{lower.role.display} agents dial {allowed} agents"
                if allowed
                else (f"{lower.role.display} agents dial no one: others dial them")
            )
            raise fail(
                link.line,
                f"a {lower.role.display} agent ({lower.name!r}) cannot dial a "
                f"{upper.role.display} agent ({upper.name!r}): {hint}",
            )
        if upper.port is None or (upper.port == 0 and not any_port):
            raise fail(
                upper.line,
                f"agent {upper.name!r} is dialled by {lower.name!r} (line {link.line}) "
                "but has no port to listen on; add port = <number>",
            )
        if not _is_ip_or_range(lower.address):
            raise fail(
                lower.line,
                f"agent {lower.name!r} dials {upper.name!r}, which admits it by IP address, "
                f"but its address {lower.address!r} is not an IP address or range; set "
                'address = "<its IP>" (or the host\'s address in [hosts])',
            )
        if upper.url is None and "/" in upper.address:
            raise fail(
                upper.line,
                f"agent {upper.name!r} is dialled but its address {upper.address!r} is a "
                'range; set url = "ws://<host>:<port>/" for its peers to dial',
            )
    return Topology(agents, links, output=output, source=source)


def _check_cycles(links: tuple[LinkSpec, ...], fail: Callable[[int, str], TopologyError]) -> None:
    """Refuse a cycle of links, naming the link that closes it and the whole loop."""
    upward: dict[str, list[LinkSpec]] = {}
    for link in links:
        upward.setdefault(link.dials, []).append(link)
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        for link in upward.get(name, []):
            if link.listens in path:
                loop = [*path[path.index(link.listens) :], link.listens]
                raise fail(
                    link.line,
                    f"this link closes a cycle ({' → '.join(loop)}); links must form a tree "
                    "from the leaves up to the portal",
                )
            if link.listens not in done:
                visit(link.listens, [*path, link.listens])
        done.add(name)

    for start in list(upward):
        if start not in done:
            visit(start, [start])


def parse_topology(text: str, source: str = "topology.toml", *, any_port: bool = False) -> Topology:
    """Parse and check a topology document; :class:`TopologyError` names the line."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TopologyError(f"{source}: not valid TOML: {exc}") from None
    reader = _Reader(text, source)
    agents, links, output = reader.document(document)
    return make_topology(agents, links, source=source, output=output, any_port=any_port)


def load_topology(path: str | os.PathLike[str]) -> Topology:
    """Read and check the topology file at ``path``."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise TopologyError(f"cannot read topology {path}: {exc}") from None
    return parse_topology(text, os.fspath(path))
