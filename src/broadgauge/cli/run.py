"""``broadgauge <role> run``: serve an agent from its config until SIGINT or SIGTERM.

:func:`run_agent` is also the way to give an agent of your own the same look and feel as the
built-in roles: configure it with ``broadgauge <role> init|client|server|...`` and start it
from a script that registers its handlers in ``setup`` (see ``docs/examples/cli.md``).
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from broadgauge.agents.assemble import assemble
from broadgauge.bridge import attach_bridge
from broadgauge.planner.network import check_published_rules
from broadgauge.planner.server import attach_network_planner
from broadgauge.runtime.agent import Agent
from broadgauge.runtime.config import AgentConfig
from broadgauge.runtime.control import HARD_RESTART_EXIT
from broadgauge.runtime.loop import run as run_on_loop
from broadgauge.runtime.metrics import AgentMetrics
from broadgauge.serving import AppServer, metrics_app, metrics_route
from broadgauge.wire import ConfigError

log = logging.getLogger("broadgauge.cli")

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
LOCK_FILE = "agent.lock"

Setup = Callable[[Agent], None]


def run_agent(
    config: AgentConfig,
    data_dir: Path,
    *,
    setup: Setup | None = None,
    event_loop: str = "asyncio",
) -> int:
    """Run the agent described by ``config`` with its boards in ``data_dir``; the exit status.

    ``setup`` is called with the new :class:`Agent` before it starts (to add handlers);
    ``event_loop`` is ``asyncio`` or ``uvloop`` (:mod:`broadgauge.runtime.loop`).
    Only one agent may use a data directory at a time: a second one fails at once instead
    of sharing the first one's boards, outbox and execution records.
    """
    # The boards name users and projects: keep them private to the service account.
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"another agent is already running with data in {data_dir}") from None
        return run_on_loop(serve(config, data_dir, setup=setup), event_loop)
    finally:
        os.close(fd)  # releases the lock


def health_app(agent: Agent, registry: CollectorRegistry | None = None) -> Starlette:
    """OpenPortal's health-check side listener: ``GET /health`` → status and worker count,
    and ``GET /metrics`` when given the agent's metrics ``registry``.

    It runs on the agent's own event loop, so an agent whose loop is stuck stops answering
    it, which is what a load balancer or liveness probe needs to see.
    """

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "workers": agent.inbound.max_workers})

    routes = [Route("/health", health, methods=["GET"])]
    if registry is not None:
        routes.append(metrics_route(registry))
    return Starlette(routes=routes)


#: The config keys and flags that place /metrics, named in errors.
METRICS_LISTEN_KEY = "[metrics] listen (or --metrics-listen)"
HEALTH_PORT_KEY = "[service] heathcheck_port, which also serves /metrics (or init -k)"


@dataclass(frozen=True)
class MetricsSettings:
    """Where an agent serves ``/metrics``: the ``[metrics]`` table of its config.

    ``enabled = false`` switches metrics off.  ``listen = "HOST:PORT"`` serves them on a
    listener of their own; without it they are served beside ``/health`` on the health port
    (and on the bridge's and the network planner's HTTP APIs, which any agent serves).
    """

    enabled: bool = True
    host: str | None = None
    port: int | None = None

    @classmethod
    def of(cls, config: AgentConfig) -> MetricsSettings:
        """Read ``[metrics]`` from ``config`` (:class:`ConfigError` if malformed)."""
        table = config.other.get("metrics", {})
        if not isinstance(table, dict):
            raise ConfigError("[metrics] must be a table")
        enabled = table.get("enabled", True)
        if not isinstance(enabled, bool):
            raise ConfigError("[metrics] enabled must be true or false")
        listen = table.get("listen")
        if listen is None:
            return cls(enabled)
        host, port = parse_listen(listen, "[metrics] listen")
        return cls(enabled, host, port)


def parse_listen(text: object, what: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:9464`` for IPv6) as a host and a port number."""
    if not isinstance(text, str) or ":" not in text:
        raise ConfigError(f"{what} must be HOST:PORT, not {text!r}")
    host, _, port_text = text.rpartition(":")
    host = host.strip("[]")
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(f"{what} must be HOST:PORT, not {text!r}") from None
    if not host or not 0 <= port <= 65535:
        raise ConfigError(f"{what} must be HOST:PORT, not {text!r}")
    return host, port


def _servers(
    agent: Agent, config: AgentConfig, metrics: AgentMetrics | None
) -> list[tuple[AppServer, list[str]]]:
    """The side listeners to start: the health port, and a metrics listener of its own."""
    settings = MetricsSettings.of(config)
    registry = metrics.registry if metrics is not None else None
    servers: list[tuple[AppServer, list[str]]] = []
    port = config.service.healthcheck_port
    separate = registry is not None and settings.port is not None
    if port:
        health_registry = None if separate else registry
        key = HEALTH_PORT_KEY if health_registry is not None else "[service] heathcheck_port"
        app = health_app(agent, health_registry)
        # The paths are named in the "at" line: operators copy it into their probes.
        paths = ["health"] + (["metrics"] if health_registry is not None else [])
        servers.append((AppServer(app, config.service.ip, port, setting=key), paths))
    if separate and registry is not None and settings.host is not None:
        assert settings.port is not None
        app = metrics_app(registry)
        server = AppServer(app, settings.host, settings.port, setting=METRICS_LISTEN_KEY)
        servers.append((server, ["metrics"]))
    return servers


async def serve(
    config: AgentConfig,
    data_dir: Path,
    *,
    setup: Setup | None = None,
    stop: asyncio.Event | None = None,
) -> int:
    """Start the agent with its role, wait for SIGINT, SIGTERM or ``stop``, then stop it.

    Returns 0, or :data:`HARD_RESTART_EXIT` after a hard restart was ordered, so that the
    service manager (systemd ``Restart=on-failure``) starts the agent again.
    """
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in _STOP_SIGNALS:
        loop.add_signal_handler(signum, stop.set)
    kind = type(loop)
    log.info("%s: event loop %s.%s", config.service.name, kind.__module__, kind.__name__)
    try:
        agent = Agent(config, data_dir=data_dir, timers=config.timers())
        # Before the roles: the bridge and the network planner put their series in it.
        enabled = MetricsSettings.of(config).enabled
        metrics = AgentMetrics.attach(agent, process=True) if enabled else None
        try:
            role = assemble(agent, data_dir, bridge=attach_bridge, planner=attach_network_planner)
            check_published_rules(agent)
        except BaseException:
            # Refused before starting: still close what the agent opened (store, audit log).
            await agent.stop()
            raise
        status = 0
        side = _servers(agent, config, metrics)
        try:
            if setup is not None:
                setup(agent)
            # Side listeners first: a port in use stops the agent before it takes any job.
            for server, paths in side:
                await server.start()
                for path in paths:
                    what = "health check" if path == "health" else "metrics"
                    log.info("%s: %s at %s%s", agent.name, what, server.url, path)
            await agent.start()
            await role.start()
            service = agent.service.config
            log.info(
                "%s (%s) listening on %s:%d, invites name %s; %d client(s), %d server(s); "
                "data in %s",
                agent.name,
                agent.agent_type.value,
                service.ip,
                service.port,
                service.url,
                len(service.clients),
                len(service.servers),
                data_dir,
            )
            restart = asyncio.ensure_future(agent.control.hard_restart.wait())
            stopped = asyncio.ensure_future(stop.wait())
            await asyncio.wait({restart, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if restart.done():
                log.warning(
                    "%s: hard restart ordered; exiting with %d", agent.name, HARD_RESTART_EXIT
                )
                status = HARD_RESTART_EXIT
            restart.cancel()
            stopped.cancel()
            log.info("%s stopping", agent.name)
        finally:
            for server, _ in side:
                await server.stop()
            await role.stop()
            await agent.stop()
            await role.close()
    finally:
        for signum in _STOP_SIGNALS:
            loop.remove_signal_handler(signum)
    log.info("%s stopped", config.service.name)
    return status
