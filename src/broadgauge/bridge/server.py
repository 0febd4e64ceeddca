"""Serving the bridge API with uvicorn next to the bridge agent, and signalling over httpx.

:func:`attach_bridge` is what :func:`broadgauge.agents.assemble.assemble` is given for
``Bridge`` agents: it registers the runtime's handlers at once (so jobs for the portal
software are held even before HTTP is up) and returns a :class:`BridgeServer` whose
``start``/``stop`` the caller runs with the agent.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import httpx

from broadgauge.bridge.app import BridgeApi, build_app
from broadgauge.bridge.config import BridgeSettings, ClientFile
from broadgauge.bridge.console import PREFIX, Console, ConsoleSettings
from broadgauge.bridge.limits import TrustedProxies
from broadgauge.bridge.runtime import BridgeRuntime, Retry
from broadgauge.runtime.agent import Agent
from broadgauge.runtime.metrics import AgentMetrics, BridgeMetrics
from broadgauge.serving import AppServer

__all__ = ["BridgeServer", "HttpSignaller", "attach_bridge"]

log = logging.getLogger("broadgauge.bridge")


class HttpSignaller:
    """``GET url?param=value`` without authentication (as the reference); 2xx succeeds."""

    def __init__(self, timeout: float = 60.0) -> None:
        self.timeout = timeout
        self._client: httpx.AsyncClient | None = None

    async def __call__(self, url: str, param: str, value: str) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout)
        response = await self._client.get(url, params={param: value})
        response.raise_for_status()

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


class BridgeServer:
    """The bridge's HTTP API for one agent: start, stop, and where it listens."""

    def __init__(
        self,
        agent: Agent,
        settings: BridgeSettings,
        *,
        rate_limit: int = 10_000,
        rate_period: float = 10.0,
        job_retry: Retry | None = None,
        notification_retry: Retry | None = None,
    ) -> None:
        self.settings = settings
        self.signaller = HttpSignaller()
        self.runtime = BridgeRuntime(
            agent,
            settings,
            self.signaller,
            job_retry=job_retry,
            notification_retry=notification_retry,
        )
        # The bridge's series go in its agent's registry: one /metrics shows both.
        metrics = agent.metrics if isinstance(agent.metrics, AgentMetrics) else None
        registry = metrics.registry if metrics is not None else None
        self.api = BridgeApi(
            self.runtime,
            rate_limit=rate_limit,
            rate_period=rate_period,
            metrics=BridgeMetrics(registry, agent.name) if registry is not None else None,
        )
        self.app = build_app(self.api, registry)
        # The operator console, read-only and behind its own login (docs/operators/console.md).
        self.console = Console(
            agent,
            ConsoleSettings.of(agent.config),
            held=self.runtime.fetch_jobs,
            proxies=TrustedProxies(settings.trusted_proxies),
        )
        if self.console.settings.enabled:
            self.app.mount(PREFIX, self.console.app())
        self._server = AppServer(self.app, settings.ip, settings.port, setting="[bridge] port")
        self.port = settings.port

    @property
    def url(self) -> str:
        """Base URL the clients should use: the configured one, or the bound address."""
        if self.settings.port == 0 and self._server.running:
            return f"http://{self.settings.ip}:{self.port}/"
        return self.settings.url

    def client_file(self) -> ClientFile:
        """The client file for this bridge as it is listening now."""
        return ClientFile(self.url, self.settings.key)

    async def start(self) -> None:
        """Bind and serve (port 0 picks a free port, readable from :attr:`port`)."""
        await self._server.start()
        self.port = self._server.port
        settings = self.settings
        # Operators look for this line first: the address really bound (port 0 resolved),
        # and the base URL put in client files, which may differ behind a proxy.
        log.info(
            "%s: bridge HTTP API listening on %s (port %d); client files name %s",
            self.runtime.agent.name,
            self._server.url,
            self.port,
            self.url,
        )
        if not settings.signal_url or not settings.notification_url:
            unset = [
                name for name in ("signal_url", "notification_url") if not getattr(settings, name)
            ]
            log.info(
                "%s: %s not set: the portal software is not signalled and must poll "
                "(GET /fetch_jobs, POST /fetch_notification)",
                self.runtime.agent.name,
                " and ".join(unset),
            )

    def beside(self, planner: object) -> None:
        """Tell the console about the network planner served beside this bridge."""
        self.console.beside(planner)

    async def stop(self) -> None:
        """Stop serving (idempotent)."""
        await self._server.stop()
        await self.signaller.close()


def attach_bridge(agent: Agent, **options: Any) -> BridgeServer:
    """Give a ``Bridge`` agent its runtime and HTTP API (settings from its ``[bridge]``)."""
    return BridgeServer(agent, BridgeSettings.of(agent.config), **options)


def with_port(settings: BridgeSettings, port: int) -> BridgeSettings:
    """``settings`` listening on ``port`` (0 = any free port)."""
    return replace(settings, port=port)
