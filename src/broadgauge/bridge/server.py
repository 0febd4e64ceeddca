"""Serving the bridge API with uvicorn next to the bridge agent, and signalling over httpx.

:func:`attach_bridge` is what :func:`broadgauge.agents.assemble.assemble` is given for
``Bridge`` agents: it registers the runtime's handlers at once (so jobs for the portal
software are held even before HTTP is up) and returns a :class:`BridgeServer` whose
``start``/``stop`` the caller runs with the agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import httpx
import uvicorn

from broadgauge.bridge.app import BridgeApi, build_app
from broadgauge.bridge.config import BridgeSettings, ClientFile
from broadgauge.bridge.runtime import BridgeRuntime, Retry
from broadgauge.jobs.agent import Agent

__all__ = ["BridgeServer", "HttpSignaller", "attach_bridge"]


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


class _QuietServer(uvicorn.Server):
    """A uvicorn server that leaves SIGINT/SIGTERM to the agent (which then stops us)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


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
        self.api = BridgeApi(self.runtime, rate_limit=rate_limit, rate_period=rate_period)
        self.app = build_app(self.api)
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self.port = settings.port

    @property
    def url(self) -> str:
        """Base URL the clients should use: the configured one, or the bound address."""
        if self.settings.port == 0 and self._server is not None:
            return f"http://{self.settings.ip}:{self.port}/"
        return self.settings.url

    def client_file(self) -> ClientFile:
        """The client file for this bridge as it is listening now."""
        return ClientFile(self.url, self.settings.key)

    async def start(self) -> None:
        """Bind and serve (port 0 picks a free port, readable from :attr:`port`)."""
        if self._server is not None:
            return
        family = socket.AF_INET6 if ":" in self.settings.ip else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.settings.ip, self.settings.port))
        # Inherited by accepted connections.  Without it each reply (headers and body are
        # written separately) waits ~40 ms for the client's delayed ACK (Nagle).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.listen(1024)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            lifespan="off",
            access_log=False,
            # We resolve X-Forwarded-For ourselves, only from configured trusted proxies.
            proxy_headers=False,
            timeout_graceful_shutdown=2,
        )
        server = _QuietServer(config)
        self._server = server
        self._task = asyncio.ensure_future(server.serve(sockets=[sock]))
        while not server.started:
            if self._task.done():
                self._task.result()  # raises what stopped it
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        """Stop serving (idempotent)."""
        server, task = self._server, self._task
        self._server = self._task = None
        if server is not None and task is not None:
            server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.signaller.close()


def attach_bridge(agent: Agent, **options: Any) -> BridgeServer:
    """Give a ``Bridge`` agent its runtime and HTTP API (settings from its ``[bridge]``)."""
    return BridgeServer(agent, BridgeSettings.of(agent.config), **options)


def with_port(settings: BridgeSettings, port: int) -> BridgeSettings:
    """``settings`` listening on ``port`` (0 = any free port)."""
    return replace(settings, port=port)
