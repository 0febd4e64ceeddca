"""Restart and diagnostics through the bridge: an unknown agent path is a 404 for both."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import httpx
import pytest

from broadgauge.bridge import BridgeServer
from broadgauge.demo import Network
from broadgauge.jobs.commands import Restart
from broadgauge.wire import PeerId

from .signing import call

DEEP = "portal.provider.platform.instance.filesystem"


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as client:
        yield client


async def post(
    http: httpx.AsyncClient, bridge: BridgeServer, function: str, body: str
) -> httpx.Response:
    return await call(http, bridge.url, bridge.settings.key, "post", function, body.encode())


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("nowhere", "bridge has no neighbour called nowhere"),
        ("portal.nowhere", "portal has no connected neighbour called nowhere"),
        ("portal.provider.nowhere.instance", "provider has no connected neighbour called nowhere"),
        (
            f"{DEEP}.further",
            "filesystem is a leaf (filesystem) agent: it passes nothing on to further",
        ),
    ],
)
async def test_restart_to_an_unknown_path_is_the_404_diagnostics_gives(
    http: httpx.AsyncClient, bridge: BridgeServer, path: str, message: str
) -> None:
    diagnostics = await post(http, bridge, "diagnostics", f'{{"destination":"{path}"}}')
    restart = await post(
        http, bridge, "restart", f'{{"restart_type":"soft","destination":"{path}"}}'
    )

    assert (diagnostics.status_code, diagnostics.json()) == (404, {"message": message})
    assert (restart.status_code, restart.json()) == (404, {"message": message})


async def test_known_deep_paths_still_reach_their_agent(
    http: httpx.AsyncClient, network: Network, bridge: BridgeServer
) -> None:
    diagnostics = await post(http, bridge, "diagnostics", f'{{"destination":"{DEEP}"}}')
    assert diagnostics.status_code == 200
    assert diagnostics.json()["report"]["agent_name"] == "filesystem"

    restart = await post(
        http, bridge, "restart", '{"restart_type":"hard","destination":"portal.provider"}'
    )
    assert restart.json() == {"status": "ok", "message": "Restart command sent successfully"}
    provider = network.agents["provider"].control.hard_restart
    await provider.wait()


async def test_a_restart_the_portal_cannot_pass_on_is_logged_not_left_unretrieved(
    network: Network, caplog: pytest.LogCaptureFixture
) -> None:
    # As a bridge that does not check the path (the reference's) sends it: straight on.
    caplog.set_level(logging.WARNING, "broadgauge.jobs")
    bridge = network.agents["bridge"]
    await bridge.send_control(PeerId("portal", "default"), Restart("soft", "nowhere"))

    def logged() -> list[str]:
        return [r.getMessage() for r in caplog.records if "not passed on" in r.getMessage()]

    async with asyncio.timeout(10):
        while not logged():
            await asyncio.sleep(0.01)
    [line] = logged()
    assert line.startswith("portal: restart from bridge@default not passed on: ")
    assert line.endswith("nowhere")
    # The portal is still serving (nothing crashed); the suite's guard checks the rest.
    assert PeerId("portal", "default") in bridge.service.connected_peers()
