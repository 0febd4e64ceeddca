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
from pathlib import Path

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
from broadgauge.serving import AppServer
from broadgauge.wire import ConfigError

log = logging.getLogger("broadgauge.cli")

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
LOCK_FILE = "agent.lock"

Setup = Callable[[Agent], None]


def run_agent(config: AgentConfig, data_dir: Path, *, setup: Setup | None = None) -> int:
    """Run the agent described by ``config`` with its boards in ``data_dir``; the exit status.

    ``setup`` is called with the new :class:`Agent` before it starts (to add handlers).
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
        return asyncio.run(serve(config, data_dir, setup=setup))
    finally:
        os.close(fd)  # releases the lock


def health_app(agent: Agent) -> Starlette:
    """OpenPortal's health-check side listener: ``GET /health`` → status and worker count.

    It runs on the agent's own event loop, so an agent whose loop is stuck stops answering
    it, which is what a load balancer or liveness probe needs to see.
    """

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "workers": agent.inbound.max_workers})

    return Starlette(routes=[Route("/health", health, methods=["GET"])])


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
    try:
        agent = Agent(config, data_dir=data_dir, timers=config.timers())
        try:
            role = assemble(agent, data_dir, bridge=attach_bridge, planner=attach_network_planner)
            check_published_rules(agent)
        except BaseException:
            # Refused before starting: still close what the agent opened (store, audit log).
            await agent.stop()
            raise
        status = 0
        port = config.service.healthcheck_port
        health = AppServer(health_app(agent), config.service.ip, port) if port else None
        try:
            if setup is not None:
                setup(agent)
            await agent.start()
            await role.start()
            if health is not None:
                await health.start()
                log.info("%s: health check at %shealth", agent.name, health.url)
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
            if health is not None:
                await health.stop()
            await role.stop()
            await agent.stop()
            await role.close()
    finally:
        for signum in _STOP_SIGNALS:
            loop.remove_signal_handler(signum)
    log.info("%s stopped", config.service.name)
    return status
