"""Signals over real HTTP: a stand-in portal software answers the bridge's GETs."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from broadgauge.bridge import BridgeServer, Retry
from broadgauge.client import AsyncClient, ProjectMapping
from broadgauge.demo import Network
from broadgauge.jobs.notification import Notification
from broadgauge.runtime.agent import JobFailed


class PortalSoftware:
    """Answers ``get_project_mapping`` when signalled; fetches notifications when told."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client
        self.signals: list[str] = []
        self.notifications: list[Notification] = []
        self.got_notification = asyncio.Event()

    async def signal(self, request: Request) -> Response:
        job_id = request.query_params["job_id"]
        self.signals.append(job_id)
        job = await self.client.fetch_job(job_id)
        project = str(job.instruction).split()[1]
        await self.client.send_result(
            job.completed(ProjectMapping.parse(f"{project}:{project.split('.')[0]}"))
        )
        return Response(status_code=204)

    async def notification(self, request: Request) -> Response:
        # OpenPortal's rule: fetch while handling the GET, before answering 2xx.
        fetched = await self.client.fetch_notification(request.query_params["notification_id"])
        self.notifications.append(fetched)
        self.got_notification.set()
        return Response(status_code=204)


@pytest.fixture
async def software(bridge: BridgeServer, tmp_path: Path) -> AsyncIterator[PortalSoftware]:
    path = tmp_path / "client.toml"
    bridge.client_file().save(path)
    async with AsyncClient.from_file(path) as client:
        portal = PortalSoftware(client)
        app = Starlette(
            routes=[
                Route("/signal", portal.signal),
                Route("/notification", portal.notification),
            ]
        )
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        sock.setblocking(False)
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        task = asyncio.ensure_future(server.serve(sockets=[sock]))
        while not server.started:
            await asyncio.sleep(0.01)
        base = f"http://127.0.0.1:{sock.getsockname()[1]}"
        bridge.runtime.settings = dataclasses.replace(
            bridge.settings, signal_url=f"{base}/signal", notification_url=f"{base}/notification"
        )
        try:
            yield portal
        finally:
            server.should_exit = True
            await task


async def test_bridge_board_over_http(network: Network, software: PortalSoftware) -> None:
    job = await network.agents["portal"].run(
        "portal.bridge", "get_project_mapping physics.portal", timeout=15
    )
    assert json.loads(job.result or "") == "physics.portal:physics"
    assert len(software.signals) == 1


async def test_notifications_over_http(network: Network, software: PortalSoftware) -> None:
    async with AsyncClient(software.client.config) as client:
        await client.run("portal.provider.platform.instance add_project physics.portal", 20000)
    async with asyncio.timeout(10):
        await software.got_notification.wait()
    assert "project_added physics.portal" in str(software.notifications[0])


async def test_unreachable_portal_software_fails_the_job(
    network: Network, bridge: BridgeServer
) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    port = sock.getsockname()[1]
    bridge.runtime.settings = dataclasses.replace(
        bridge.settings, signal_url=f"http://127.0.0.1:{port}/signal"
    )
    bridge.runtime.job_retry = Retry(2, 0.01)
    with pytest.raises(JobFailed, match="Failed to signal web portal"):
        await network.agents["portal"].run(
            "portal.bridge", "get_project_mapping physics.portal", timeout=15
        )
    assert bridge.runtime.fetch_jobs() == []
    sock.close()
