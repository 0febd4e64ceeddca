"""Serving an ASGI application with uvicorn inside an agent's event loop.

The bridge's API and the network planner run beside an agent, in its process and loop, so
they start and stop with it.  :class:`AppServer` binds the socket itself (port 0 picks a free
one, readable afterwards) and leaves SIGINT/SIGTERM to the agent, which then stops it.
:func:`metrics_route` serves a Prometheus registry at ``/metrics`` on any of these apps.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
from collections.abc import Iterator
from typing import Any

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from broadgauge.wire import ConfigError

__all__ = ["AppServer", "PortInUse", "metrics_app", "metrics_route"]


class PortInUse(ConfigError):
    """The port an app was configured to listen on is taken by another process."""


def metrics_route(registry: CollectorRegistry) -> Route:
    """``GET /metrics``: ``registry`` in the Prometheus text format."""

    async def metrics(_: Request) -> Response:
        # Collecting reads the agent's boards and links: on the loop that changes them, so
        # a scrape sees one consistent moment (it takes about a millisecond per 1,000 jobs).
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return Route("/metrics", metrics, methods=["GET"])


def metrics_app(registry: CollectorRegistry) -> Starlette:
    """An app that serves only ``/metrics`` (a separate metrics listener)."""
    return Starlette(routes=[metrics_route(registry)])


class _QuietServer(uvicorn.Server):
    """A uvicorn server that leaves SIGINT/SIGTERM to the agent (which then stops us)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class AppServer:
    """One ASGI app on one address: :meth:`start`, :meth:`stop`, and the bound :attr:`port`."""

    def __init__(self, app: Any, host: str, port: int, *, setting: str = "") -> None:
        self.app = app
        self.host = host
        self.port = port
        #: The config key (or flag) that chose this port, named if it is already in use.
        self.setting = setting
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._server is not None

    @property
    def url(self) -> str:
        """``http://host:port/`` as bound (IPv6 hosts in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    async def start(self) -> None:
        """Bind and serve (idempotent)."""
        if self._server is not None:
            return
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as exc:
            sock.close()
            if exc.errno != errno.EADDRINUSE:
                raise
            where = f" (set by {self.setting})" if self.setting else ""
            raise PortInUse(
                f"port {self.port} on {self.host} is already in use{where}: stop what holds it "
                "or choose another port"
            ) from None
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
            # Apps that care resolve X-Forwarded-For themselves, from trusted proxies only.
            proxy_headers=False,
            timeout_graceful_shutdown=2,
        )
        server = _QuietServer(config)
        self._server = server
        self._task = asyncio.ensure_future(server.serve(sockets=[sock]))
        while not server.started:
            if self._task.done():
                self._server = None
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
