"""``/metrics`` on the planner's apps, and counting their ``/accepts`` answers.

The series themselves are defined with every other in :mod:`broadgauge.runtime.metrics`
(:class:`~broadgauge.runtime.metrics.PlannerMetrics`).  :func:`instrument` adds the route
and an ASGI wrapper that reads each ``/accepts`` answer's status and first body bytes, so
the three apps (one service, the aggregator, the network planner) are counted alike without
touching their handlers.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from broadgauge.runtime.metrics import PlannerMetrics
from broadgauge.serving import metrics_route

__all__ = ["instrument"]


class _AcceptsCounter:
    """Pure ASGI: counts each ``/accepts`` answer by outcome, passing everything through."""

    def __init__(self, app: ASGIApp, metrics: PlannerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/accepts":
            await self.app(scope, receive, send)
            return
        status = 0
        counted = False

        async def sending(message: Message) -> None:
            nonlocal status, counted
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and not counted:
                counted = True
                self.metrics.answered(status, message.get("body", b""))
            await send(message)

        await self.app(scope, receive, sending)


def instrument(app: Starlette, metrics: PlannerMetrics) -> Starlette:
    """Serve ``metrics`` at ``/metrics`` on ``app`` and count its ``/accepts`` answers."""
    app.router.routes.append(metrics_route(metrics.registry))
    app.add_middleware(_AcceptsCounter, metrics=metrics)
    return app
