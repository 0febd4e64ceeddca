"""``broadgauge demo``: a whole agent network on loopback, with embedded backends.

Ten agents in one process, each with its own keys, invite and data directory, linked as a
site would link them, and configured by the same code as ``broadgauge site init``
(:data:`DEMO_TOPOLOGY` is a topology file).  The provider has the seed's two platforms, the
clusters and the notebooks::

    bridge ─▶ portal ◀─ provider ◀─ platform ◀─ instance ◀─ account    (local SQLite directory)
                               │                        ◀─ filesystem (a sandbox folder)
                               │                        ◀─ scheduler  (a SQLite ledger)
                               ◀─ notebooks ◀─ jupyter   (the embedded JupyterHub stand-in,
                                                          or a real hub: --jupyterhub-url)

(an arrow points from the agent that dials to the one that listens).  The scenario sends each
instruction the way portal software does, through the bridge as ``submit`` jobs, and prints
what happened at each step.  ``--serve`` keeps the network up and describes it in
``network.toml`` so other tools can attach.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import tomli_w
from rich.console import Console
from rich.table import Table

from broadgauge.agents.assemble import Role, assemble, seat_planner
from broadgauge.agents.scheduler.ledger import LedgerScheduler
from broadgauge.bridge import BridgeServer, attach_bridge
from broadgauge.bridge.console import ConsoleSettings, hash_password
from broadgauge.grammar import ProjectUsageReport, UserMapping
from broadgauge.jobs.agent_type import AgentType
from broadgauge.jobs.job import Job
from broadgauge.planner.answers import Task
from broadgauge.planner.config import parse_config
from broadgauge.planner.network import NetworkConfig, NetworkSettings
from broadgauge.planner.offers.records import Phase
from broadgauge.planner.rules import Identity
from broadgauge.planner.server import NetworkPlannerServer
from broadgauge.runtime.agent import Agent, JobFailed
from broadgauge.runtime.audit import verify
from broadgauge.runtime.config import AgentConfig
from broadgauge.runtime.metrics import AgentMetrics
from broadgauge.serving import AppServer, metrics_app
from broadgauge.site.build import build_configs
from broadgauge.site.topology import Topology, parse_topology
from broadgauge.wire import SimpleEncryption, Timers

PATH = "portal.provider.platform.instance"
NOTEBOOKS = "portal.provider.notebooks.jupyter"
PROJECT = "physics.portal"
USERS = ("alice.physics.portal", "bob.physics.portal")
FAST_RECONNECT = Timers(reconnect_initial=0.05, reconnect_max=2.0)
NEWCOMER = "carol.physics.portal"
#: The operator account ``--serve`` makes for the console (a fresh password each run).
OPERATOR = "operator"
#: The researcher who asks the broker for a notebook session, with no account anywhere yet.
RESEARCHER = "dora.physics.portal"
SESSION_REQUEST = {
    "name": "a notebook for the demo",
    "executable": {"kind": "jupyter-notebook"},
    "compute": {"cores": {"min": 2}, "memory": {"min": 4}},
}


def notebook_rules(endpoint: str) -> dict[str, object]:
    """What the demo's notebook instance publishes to the network planner: notebooks on its
    hub (at ``endpoint``) for the users it has."""
    return {
        "service": {"name": "jupyter"},
        # What the broker may reserve at once for sessions (offers hold the request's minima).
        "site": {"capabilities": [], "capacity": {"cores": 8, "memory": 32}},
        "rules": [
            {
                "name": "notebooks-for-account-holders",
                "tasktypes": ["jupyter-notebook"],
                "servicetype": "jupyter-hub",
                "serviceinfo": {"endpoint": endpoint},
                "requires_account": True,
            }
        ],
    }


#: The network planner beside the demo's bridge: anonymous, any free loopback port.
DEMO_PLANNER = NetworkConfig(
    parse_config({"service": {"name": "demo network planner"}}),
    NetworkSettings(port=0, refresh=0.0, missing_account_ttl=0.0),
)

#: The demo's site, in the format of ``broadgauge site init`` (see docs/operators/quickstart.md).
#: Every agent runs in this process on loopback; port 0 is any free port, learnt at start.
DEMO_TOPOLOGY = """
[hosts]
loopback = "127.0.0.1"

[[agent]]
name = "portal"
role = "portal"
host = "loopback"
port = 0

[[agent]]
name = "bridge"
role = "bridge"
host = "loopback"
[agent.settings.bridge]
port = 0                        # the HTTP API, on any free loopback port

[[agent]]
name = "provider"
role = "provider"
host = "loopback"
port = 0

[[agent]]
name = "platform"
role = "platform"
host = "loopback"
port = 0

[[agent]]
name = "instance"
role = "instance"
host = "loopback"
port = 0

[[agent]]
name = "notebooks"
role = "platform"
host = "loopback"
port = 0

[[agent]]
name = "jupyter"
role = "instance"
host = "loopback"
port = 0
[agent.settings]
service = "notebooks"           # a JupyterHub (the embedded stand-in unless jupyterhub-url)
notebook-url = "https://jupyter.instance.example/"  # what the stand-in answers; it serves nothing

[[agent]]
name = "account"
role = "account"
host = "loopback"

[[agent]]
name = "filesystem"             # reads ids from the account directory (set by the builder)
role = "filesystem"
host = "loopback"

[[agent]]
name = "scheduler"
role = "scheduler"
host = "loopback"

[[link]]
dials = "bridge"
listens = "portal"

[[link]]
dials = "provider"
listens = "portal"

[[link]]
dials = "platform"
listens = "provider"

[[link]]
dials = "instance"
listens = "platform"

[[link]]
dials = "notebooks"
listens = "provider"

[[link]]
dials = "jupyter"
listens = "notebooks"

[[link]]
dials = "account"
listens = "instance"

[[link]]
dials = "filesystem"
listens = "instance"

[[link]]
dials = "scheduler"
listens = "instance"
"""
TOPOLOGY: Topology = parse_topology(DEMO_TOPOLOGY, "the demo's topology", any_port=True)


@dataclass
class Network:
    """The running agents, their roles and where their data lives."""

    root: Path
    agents: dict[str, Agent] = field(default_factory=dict)
    roles: dict[str, Role] = field(default_factory=dict)
    #: Each agent's ``/metrics`` listener (with ``start_network(metrics=True)``).
    metrics_servers: dict[str, AppServer] = field(default_factory=dict)

    def metrics_urls(self) -> dict[str, str]:
        """Each agent's ``/metrics`` URL (empty unless started with metrics)."""
        return {name: f"{server.url}metrics" for name, server in self.metrics_servers.items()}

    @property
    def planner(self) -> NetworkPlannerServer:
        """The network planner and broker beside the bridge (served by :func:`serve_demo`)."""
        server = self.roles["bridge"].planner
        assert isinstance(server, NetworkPlannerServer)
        return server

    @property
    def bridge(self) -> BridgeServer:
        """The bridge's HTTP API (started by :func:`serve_demo`, or by a test)."""
        server = self.roles["bridge"].bridge
        assert isinstance(server, BridgeServer)
        return server

    async def stop(self) -> None:
        """Stop every agent, lowest first."""
        for name in reversed(list(self.agents)):
            await self.stop_agent(name)

    async def stop_agent(self, name: str) -> None:
        """Stop one agent (and its ``/metrics``) and forget it, as if it had died."""
        server = self.metrics_servers.pop(name, None)
        if server is not None:
            await server.stop()
        await self.roles[name].stop()
        await self.agents.pop(name).stop()
        await self.roles.pop(name).close()

    async def submit(self, instruction: str, timeout: float = 30.0, path: str = PATH) -> Job:
        """Send ``instruction`` to an instance (the cluster unless ``path`` names another) the
        way portal software does: via the bridge."""
        bridge = self.agents["bridge"]
        return await bridge.run("bridge.portal", f"submit {path} {instruction}", timeout=timeout)

    def describe(self) -> dict[str, object]:
        """What other tools need to attach: each agent's type, URL and data directory."""
        return {
            "agents": {
                name: {
                    "type": agent.agent_type.value,
                    "url": agent.service.url,
                    "data_dir": str(self.root / name),
                    "audit_log": str(self.root / name / "audit.jsonl"),
                }
                for name, agent in self.agents.items()
            },
            "path": PATH,
        }


Configure = Callable[[str, AgentConfig], AgentConfig]


def with_console_user(
    name: str, password_hash: str, configure: Configure | None = None
) -> Configure:
    """A :data:`Configure` that gives the bridge's operator console the account ``name``
    (an Argon2 hash, as ``broadgauge bridge console-user --add`` stores it)."""

    def change(agent: str, config: AgentConfig) -> AgentConfig:
        if configure is not None:
            config = configure(agent, config)
        if config.agent is not AgentType.BRIDGE:
            return config
        return ConsoleSettings.of(config).with_user(name, password_hash).store(config)

    return change


def use_jupyterhub(url: str, token: str) -> Configure:
    """A :data:`Configure` that points the demo's notebook instance at a real JupyterHub.

    The token is stored as the agent would keep it in its config file: encrypted, under the
    ``simple`` scheme (the demo's configs live only in its data folder).
    """

    def configure(name: str, config: AgentConfig) -> AgentConfig:
        if name != "jupyter":
            return config
        if config.service.encryption is None:
            config = replace(config, service=replace(config.service, encryption=SimpleEncryption()))
        return config.with_extra("jupyterhub-url", url).with_secret("jupyterhub-token", token)

    return configure


async def start_network(
    root: Path,
    *,
    timers: Timers = FAST_RECONNECT,
    configure: Configure | None = None,
    topology: Topology = TOPOLOGY,
    metrics: bool = False,
) -> Network:
    """Start every agent of ``topology`` (the demo's :data:`TOPOLOGY`) under ``root`` and wait
    until all are linked.

    With ``metrics`` each agent gets its own registry, served at ``/metrics`` on a free
    loopback port (:meth:`Network.metrics_urls`); the bridge's also holds the process's.

    The configs come from :func:`broadgauge.site.build.build_configs`, as for a real site.

    ``configure(name, config)`` may change each agent's config before it starts (to choose
    other back ends, as the real-backend tests and benchmarks do).
    """
    network = Network(root)
    # The same code as `broadgauge site init`: configs, keys and the filesystem's id-resolver.
    built = build_configs(topology, data_dir=lambda spec: root / spec.name)
    try:
        for spec in topology.top_down():
            name, kind = spec.name, spec.role
            config = built.configs[name]
            # The invites were made before anyone listened on port 0: name the real URLs.
            service = config.service
            for upper in topology.servers_of(name):
                entry = service.server(upper.name)
                assert entry is not None
                url = network.agents[upper.name].service.url
                service = service.with_server(replace(entry, url=url))
            config = replace(config, service=service)
            if configure is not None:
                config = configure(name, config)
            agent = Agent(config, data_dir=root / name, timers=timers)
            if metrics:
                # Before assemble: the bridge and its planner add their series to it.
                registry = AgentMetrics.attach(agent, process=kind is AgentType.BRIDGE).registry
                network.metrics_servers[name] = AppServer(metrics_app(registry), "127.0.0.1", 0)
            role = assemble(agent, root / name, bridge=attach_bridge)
            if role.notebooks is not None and agent.planner_rules.document is None:
                agent.planner_rules.publish(notebook_rules(role.notebooks.hub.url))
            if kind is AgentType.BRIDGE and role.planner is None:
                seat_planner(role, NetworkPlannerServer(agent, DEMO_PLANNER))
            network.roles[name] = role
            network.agents[name] = agent
            await agent.start(listen=topology.listens(name))
            if name in network.metrics_servers:
                await network.metrics_servers[name].start()
        async with asyncio.timeout(20):
            for link in topology.links:
                await _linked(network.agents[link.listens], link.dials)
    except BaseException:
        await network.stop()
        raise
    return network


async def _linked(listener: Agent, dialler: str) -> None:
    """Return once ``dialler`` has connected to ``listener`` and registered."""

    def up() -> bool:
        return any(
            peer.name == dialler and peer in listener.peer_types
            for peer in listener.service.connected_peers()
        )

    # Woken by each Register, so no polling.
    async with listener.registrations:
        await listener.registrations.wait_for(up)


class StepFailed(Exception):
    """A scenario step that did not do what it should."""


@dataclass
class Step:
    """One line of the scenario's report."""

    title: str
    outcome: str
    ok: bool
    millis: float


class Scenario:
    """The demo's story, step by step, printed as it goes."""

    def __init__(self, network: Network, console: Console) -> None:
        self.network = network
        self.console = console
        self.steps: list[Step] = []
        #: the planner's last suggestion: (destination, instruction) to provision
        self.suggestion: tuple[str, str] | None = None
        #: the broker's offers to the researcher (session uuids)
        self.offers: list[str] = []

    async def step(self, title: str, action: Callable[[], Awaitable[str]]) -> None:
        """Run one step with a spinner; record and print its outcome."""
        started = time.perf_counter()
        with self.console.status(title):
            try:
                outcome, ok = await action(), True
            except (JobFailed, StepFailed) as exc:
                outcome, ok = f"failed: {exc}", False
        millis = (time.perf_counter() - started) * 1000
        self.steps.append(Step(title, outcome, ok, millis))
        mark = "[green]✓[/]" if ok else "[red]✗[/]"
        self.console.print(f"{mark} {title}  [dim]({millis:.0f} ms)[/]\n    {outcome}")

    def job(self, instruction: str, path: str = PATH) -> Callable[[], Awaitable[str]]:
        """An action that submits ``instruction`` (to ``path``) and describes its result."""

        async def run() -> str:
            job = await self.network.submit(instruction, path=path)
            return f"{job.result_type}: {_show(job)}"

        return run

    async def run(self) -> bool:
        """The whole story; True if every step went as expected."""
        today = dt.date.today()
        month = f"{today.replace(day=1)}:{today}"
        await self.step(f"Create project {PROJECT}", self.job(f"add_project {PROJECT}"))
        for user in USERS:
            await self.step(f"Add user {user}", self.job(f"add_user {user}"))
        await self.step(
            f"Give {PROJECT} a group on the notebook hub",
            self.job(f"add_project {PROJECT}", NOTEBOOKS),
        )
        await self.step(
            f"Add {USERS[0]} to the notebook hub too", self.job(f"add_user {USERS[0]}", NOTEBOOKS)
        )
        await self.step(
            f"Ask the network planner where {USERS[0]} can run a jupyter-notebook",
            self._where_can(USERS[0], expect_yes=True),
        )
        await self.step(
            f"Ask where {NEWCOMER} (not on the hub yet) can run one",
            self._where_can(NEWCOMER, expect_yes=False),
        )
        await self.step(f"Provision {NEWCOMER} as suggested", self._provision)
        await self.step(f"Ask again for {NEWCOMER}", self._where_can(NEWCOMER, expect_yes=True))
        await self.step(f"{RESEARCHER} asks the broker for a notebook session", self._request)
        await self.step(f"{RESEARCHER} accepts the first offer", self._accept)
        await self.step(f"{RESEARCHER} ends the session", self._end_session)
        await self.step(
            f"Start {USERS[0]}'s notebook server",
            self.job(f"start_notebook {USERS[0]}", NOTEBOOKS),
        )
        await self.step(
            f"Stop {USERS[0]}'s notebook server", self.job(f"stop_notebook {USERS[0]}", NOTEBOOKS)
        )
        await self.step(
            "Set a 10 GB quota on the project volume",
            self.job(f"set_project_quota {PROJECT} projects 10 GB"),
        )
        await self.step(
            "Set a compute limit of 1000 hours", self.job(f"set_limit {PROJECT} 1000 hours")
        )
        await self.step(f"Block {USERS[1]}", self.job(f"block_user {USERS[1]}"))
        await self.step("Check the block", self.job(f"is_blocked_user {USERS[1]}"))
        await self.step(f"Unblock {USERS[1]}", self.job(f"unblock_user {USERS[1]}"))
        await self.step("Record 2 h 30 min of jobs for alice", self._simulate_usage)
        await self.step(
            "Produce this month's usage report",
            self.job(f"get_usage_report {PROJECT} {month}"),
        )
        await self.step(
            "Produce this month's notebook usage report",
            self.job(f"get_usage_report {PROJECT} {month}", NOTEBOOKS),
        )
        await self.step(f"Remove user {USERS[1]}", self.job(f"remove_user {USERS[1]}"))
        await self.step("List the project's users", self.job(f"get_users {PROJECT}"))
        await self.step("Verify every agent's audit log", self._verify_audit)
        return all(step.ok for step in self.steps)

    def _where_can(self, user: str, *, expect_yes: bool) -> Callable[[], Awaitable[str]]:
        async def ask() -> str:
            identity = Identity(user, {"sub": user, "openportal_users": [user]})
            planner = self.network.planner.planner
            body = await planner.answer(Task("jupyter-notebook"), identity)
            if expect_yes and body["answers"]:
                where = body["answers"][0]
                return f"YES at {where['destination']}: {where['serviceinfo']['endpoint']}"
            if not expect_yes and body["provisionable"]:
                provision = body["provisionable"][0]["reponseinfo"]["provision"]
                self.suggestion = (provision["destination"], provision["instruction"])
                return (
                    f"NO for now; provision: {provision['destination']} {provision['instruction']}"
                )
            raise StepFailed(f"unexpected answer {body}")

        return ask

    def _researcher(self) -> Identity:
        return Identity(RESEARCHER, {"sub": RESEARCHER, "openportal_users": [RESEARCHER]})

    async def _request(self) -> str:
        broker = self.network.planner.broker
        assert broker is not None
        record, offers = await broker.request(SESSION_REQUEST, self._researcher())
        if not offers:
            raise StepFailed(f"no offers: {[m['message'] for m in record.messages]}")
        self.offers = [offer.uuid for offer in offers]
        sites = sorted({offer.resource for offer in offers})
        count = f"{len(offers)} offer" + ("s" if len(offers) != 1 else "")
        return f"{record.result}: {count} (2 cores, 4 GiB, 2 h) from {sites}"

    async def _accept(self) -> str:
        broker = self.network.planner.broker
        assert broker is not None and self.offers
        await broker.update(self.offers[0], Phase.ACCEPTED, self._researcher())
        await broker.wait_idle()
        session = await broker.session(self.offers[0], self._researcher())
        if session.phase is not Phase.AVAILABLE:
            raise StepFailed(f"{session.phase}: {[m['message'] for m in session.messages]}")
        notes = "; ".join(m["message"] for m in session.messages)
        return f"{session.phase} at {session.connectors[0]['location']} ({notes})"

    async def _end_session(self) -> str:
        broker = self.network.planner.broker
        assert broker is not None and self.offers
        ended = await broker.update(self.offers[0], Phase.CANCELLED, self._researcher())
        return f"{ended.phase}: {ended.messages[-1]['message']}"

    async def _provision(self) -> str:
        if self.suggestion is None:
            raise StepFailed("the planner suggested nothing to provision")
        destination, instruction = self.suggestion
        job = await self.network.submit(instruction, path=destination)
        return f"{destination} {instruction} -> {job.result_type}: {_show(job)}"

    async def _simulate_usage(self) -> str:
        # The embedded scheduler runs no jobs; record what a finished job would have used.
        scheduler = self.network.roles["scheduler"].scheduler
        assert isinstance(scheduler, LedgerScheduler)
        mapping = UserMapping.parse(f"{USERS[0]}:alice.physics:portal.physics")
        await scheduler.record_usage(mapping, dt.date.today(), 9000, jobs=3)
        return "ledger: 9000 s in 3 jobs for alice.physics (as if they had run)"

    async def _verify_audit(self) -> str:
        entries = 0
        for name in self.network.agents:
            result = verify(self.network.root / name / "audit.jsonl")
            if not result.ok:
                raise StepFailed(f"{name}: line {result.first_bad_line}: {result.reason}")
            entries += result.entries
        return (
            f"{entries} hash-chained entries across {len(self.network.agents)} agents, all intact"
        )

    def summary(self) -> Table:
        """A table of every step."""
        table = Table(title="Broadgauge demo")
        table.add_column("step")
        table.add_column("result")
        table.add_column("ms", justify="right")
        for step in self.steps:
            table.add_row(step.title, "ok" if step.ok else "failed", f"{step.millis:.0f}")
        return table


def _show(job: Job) -> str:
    value = job.result_value()
    if isinstance(value, ProjectUsageReport):
        totals: dict[str, tuple[int, int]] = {}
        for daily in value.reports.values():
            for user, usage in daily.reports.items():
                seconds, jobs = totals.get(user, (0, 0))
                totals[user] = (seconds + usage.seconds, jobs + daily.user_job_counts.get(user, 0))
        names = {local: str(identity) for identity, local in value.users.items()}
        lines = [f"{names.get(u, u)}: {s} s in {j} jobs" for u, (s, j) in sorted(totals.items())]
        return f"{len(value.reports)} days; " + ("; ".join(lines) or "no usage")
    text = job.result or ""
    return text if len(text) <= 160 else text[:157] + "..."


async def run_demo(root: Path, console: Console, configure: Configure | None = None) -> int:
    """Start the network under ``root``, run the scenario, stop; the exit status.

    ``configure`` changes agents' configs first (:func:`use_jupyterhub`).
    """
    console.print(f"[bold]Starting {len(TOPOLOGY.agents)} agents on loopback[/] (data in {root})")
    network = await start_network(root, configure=configure)
    try:
        for name, agent in network.agents.items():
            console.print(f"  {name:<10} {agent.agent_type.value:<10} {agent.service.url}")
        scenario = Scenario(network, console)
        ok = await scenario.run()
        portal = network.roles["portal"].portal
        if portal is not None and portal.notifications:
            console.print("[bold]Notifications the portal received:[/]")
            for notification in portal.notifications:
                console.print(f"  {notification}")
        console.print(scenario.summary())
    finally:
        await network.stop()
    return 0 if ok else 1


async def serve_demo(
    root: Path, console: Console, stop: asyncio.Event, configure: Configure | None = None
) -> int:
    """Start the network, describe it in ``root/network.toml``, serve until ``stop``.

    The bridge's HTTP API listens on a free loopback port; its client file (``url`` and
    ``key``, as ``openportal.load_config`` reads) is written to ``root/bridge.toml``.
    """
    # A fresh operator password each run, kept only as a hash in the bridge's config.
    password = secrets.token_urlsafe(12)
    configure = with_console_user(OPERATOR, hash_password(password), configure)
    network = await start_network(root, configure=configure, metrics=True)
    try:
        await network.roles["bridge"].start()
        client_file = root / "bridge.toml"
        network.bridge.client_file().save(client_file)
        description = root / "network.toml"
        described = {
            **network.describe(),
            "planner": network.planner.url,
            "metrics": network.metrics_urls(),
        }
        description.write_text(tomli_w.dumps(described), encoding="utf-8")
        console.print(f"Network up; described in {description}. Interrupt to stop.")
        console.print(
            f"Bridge API at {network.bridge.url} (docs at {network.bridge.url}docs); "
            f"client file {client_file}"
        )
        console.print(
            f"Network planner at {network.planner.url}accepts "
            f"(try {network.planner.url}accepts?tasktype=jupyter-notebook)"
        )
        console.print("Prometheus metrics:")
        for name, url in network.metrics_urls().items():
            console.print(f"  {name:<10} {url}")
        console.print(
            f"Operator console at {network.bridge.url}console/ "
            f"(user {OPERATOR}, password {password}: shown only now)"
        )
        await stop.wait()
    finally:
        await network.stop()
    return 0
