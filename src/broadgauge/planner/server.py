"""The network planner served beside a bridge agent, with the broker's offers and sessions.

The bridge agent is how the planner reaches the network (:class:`AgentSource`): it sweeps
the published rules, asks instances whether an account exists, and runs the jobs an accepted
session needs (``add_user``, ``start_notebook``), each as a ``submit`` through its portal,
exactly as portal software would.
"""

from __future__ import annotations

import logging
from pathlib import Path

from starlette.routing import Route

from broadgauge.grammar import GrammarError, UserIdentifier
from broadgauge.jobs.errors import InvalidStateError
from broadgauge.planner.app import Planner
from broadgauge.planner.auth import TokenValidator
from broadgauge.planner.metrics import instrument
from broadgauge.planner.network import (
    AccountCheckError,
    NetworkConfig,
    NetworkPlanner,
    create_network_app,
    load_network_config,
)
from broadgauge.planner.offers.booking import BookingStore, open_store
from broadgauge.planner.offers.broker import Broker, ProvisionError
from broadgauge.planner.offers.http import offer_routes
from broadgauge.planner.offers.model import Limits
from broadgauge.planner.rules import RuleError
from broadgauge.runtime.agent import Agent, JobExpired, JobFailed, JobRefused
from broadgauge.runtime.metrics import AgentMetrics, PlannerMetrics
from broadgauge.runtime.rules_sweep import SweepResult
from broadgauge.serving import AppServer
from broadgauge.wire import ConfigError

log = logging.getLogger("broadgauge.planner.network")

#: How long one job the broker sends through the network may take.
JOB_TIMEOUT = 120.0
_JOB_ERRORS = (JobFailed, JobExpired, JobRefused, GrammarError, InvalidStateError)


class AgentSource:
    """The network as seen from a bridge agent: sweeps, account questions and jobs, all
    through its portal."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    async def sweep(self, budget: float) -> SweepResult:
        """Published rules from the whole hierarchy below the bridge."""
        return await self.agent.planner_rules.collect(budget)

    async def _submit(self, destination: str, instruction: str) -> object:
        portal = destination.split(".", 1)[0]
        job = await self.agent.run(
            f"{self.agent.name}.{portal}", f"submit {destination} {instruction}", JOB_TIMEOUT
        )
        return job.result_value()

    async def has_account(self, destination: str, user: UserIdentifier) -> bool:
        """Ask the instance at ``destination`` whether ``user`` has an account."""
        try:
            value = await self._submit(destination, f"is_existing_user {user}")
        except _JOB_ERRORS as exc:
            raise AccountCheckError(f"is_existing_user {user} at {destination}: {exc}") from exc
        if not isinstance(value, bool):
            raise AccountCheckError(f"is_existing_user {user} returned {value!r}")
        return value

    async def run(self, destination: str, instruction: str) -> object:
        """Run ``instruction`` at ``destination``; its result, or :class:`ProvisionError`."""
        try:
            return await self._submit(destination, instruction)
        except _JOB_ERRORS as exc:
            raise ProvisionError(f"{instruction} at {destination}: {exc}") from exc


def bookings_of(agent: Agent, config: NetworkConfig) -> BookingStore | None:
    """The booking store the config names, or SQLite in the agent's data directory (None
    for an agent that keeps nothing on disk: it answers ``/accepts`` but makes no offers)."""
    url = config.network.bookings
    if not url:
        if agent.data_dir is None:
            log.info("%s: no booking store and no data directory: no offers", agent.name)
            return None
        url = f"sqlite:///{Path(agent.data_dir) / 'bookings.sqlite3'}"
    return open_store(url)


class NetworkPlannerServer:
    """The network planner and broker beside a bridge agent: its app, and where it listens."""

    def __init__(
        self, agent: Agent, config: NetworkConfig, validator: TokenValidator | None = None
    ) -> None:
        self.config = config
        source = AgentSource(agent)
        self.store = bookings_of(agent, config)
        self.broker: Broker | None = None

        def routes(planner: Planner, network: NetworkPlanner) -> list[Route]:
            assert self.store is not None
            self.broker = Broker(
                network,
                self.store,
                source,
                limits=Limits(offer_ttl=config.network.offer_ttl),
                audit=lambda who, what, outcome: _audit(agent, who, what, outcome),
            )
            return offer_routes(planner, self.broker)

        self.app = create_network_app(
            config, source, validator, extra_routes=routes if self.store is not None else None
        )
        self.planner: NetworkPlanner = self.app.state.network
        if isinstance(agent.metrics, AgentMetrics):
            # In the agent's registry: its /metrics (health port, bridge API) shows these too.
            instrument(self.app, PlannerMetrics(agent.metrics.registry))
        self._server = AppServer(
            self.app,
            config.network.host,
            config.network.port,
            setting="[network] port in the planner-config file",
        )

    @property
    def url(self) -> str:
        """Base URL of the planner as bound (``/accepts`` is below it)."""
        return self._server.url

    async def start(self) -> None:
        """Bind and serve (``port = 0`` picks a free port)."""
        await self._server.start()
        log.info("network planner %r at %saccepts", self.config.service.name, self.url)

    async def stop(self) -> None:
        """Stop serving (idempotent); sessions being prepared are left to finish."""
        await self._server.stop()
        if self.broker is not None:
            await self.broker.wait_idle()
        await self.app.state.planner.aclose()
        if self.store is not None:
            await self.store.close()


def _audit(agent: Agent, who: str, what: str, outcome: str) -> None:
    if agent.audit_log is not None:
        agent.audit_log.append(
            time=agent.clock(),
            job=None,
            instruction=None,
            path=[],
            peer=who,
            action="session",
            operation=what,
            outcome=outcome,
        )


def attach_network_planner(agent: Agent) -> NetworkPlannerServer:
    """The network planner for a bridge agent whose ``[extras] planner-config`` names its TOML."""
    path = agent.config.extra("planner-config")
    if path is None:
        raise ConfigError(f"{agent.name}: set [extras] planner-config to serve the network planner")
    try:
        return NetworkPlannerServer(agent, load_network_config(path))
    except RuleError as exc:
        raise ConfigError(f"{agent.name}: planner-config {exc}") from exc
