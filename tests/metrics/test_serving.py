"""Where ``broadgauge <role> run`` serves ``/metrics``, switching it off, and a port in use."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest

from broadgauge.cli.run import serve
from broadgauge.jobs import AgentType
from broadgauge.runtime.config import AgentConfig
from broadgauge.serving import PortInUse
from broadgauge.wire import ServiceConfig
from tests.cli.processes import free_port
from tests.metrics.scrape import scrape, value


def _config(health: int | None, metrics: dict[str, Any]) -> AgentConfig:
    service = dataclasses.replace(ServiceConfig.create("portal", port=0), healthcheck_port=health)
    return AgentConfig(AgentType.PORTAL, service, other={"metrics": metrics})


async def _get(url: str) -> httpx.Response:
    """GET ``url`` once the agent answers there."""
    async with asyncio.timeout(10), httpx.AsyncClient() as client:
        while True:
            try:
                return await client.get(url)
            except httpx.ConnectError:
                await asyncio.sleep(0.02)


async def _running(config: AgentConfig, data: Path, url: str) -> httpx.Response:
    stop = asyncio.Event()
    agent = asyncio.create_task(serve(config, data, stop=stop))
    try:
        return await _get(url)
    finally:
        stop.set()
        assert await asyncio.wait_for(agent, 10) == 0


async def test_metrics_beside_health_on_the_health_port(tmp_path: Path) -> None:
    port = free_port()
    response = await _running(_config(port, {}), tmp_path, f"http://127.0.0.1:{port}/metrics")
    assert response.status_code == 200
    assert "broadgauge_peer_up" in response.text or "broadgauge_frames_total" in response.text
    assert "process_cpu_seconds_total" in response.text  # an agent run alone is the main one


async def test_metrics_on_a_listener_of_their_own(tmp_path: Path) -> None:
    health, port = free_port(), free_port()
    config = _config(health, {"listen": f"127.0.0.1:{port}"})
    stop = asyncio.Event()
    agent = asyncio.create_task(serve(config, tmp_path, stop=stop))
    try:
        samples_url = f"http://127.0.0.1:{port}/metrics"
        assert (await _get(samples_url)).status_code == 200
        assert value(await scrape(samples_url), "broadgauge_frames_total") == 0
        # The health port then serves health only.
        assert (await _get(f"http://127.0.0.1:{health}/metrics")).status_code == 404
    finally:
        stop.set()
        assert await asyncio.wait_for(agent, 10) == 0


async def test_metrics_switched_off(tmp_path: Path) -> None:
    port = free_port()
    config = _config(port, {"enabled": False})
    response = await _running(config, tmp_path, f"http://127.0.0.1:{port}/metrics")
    assert response.status_code == 404
    health = await _running(config, tmp_path, f"http://127.0.0.1:{port}/health")
    assert health.status_code == 200


async def test_a_metrics_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = _config(None, {"listen": f"127.0.0.1:{port}"})
        with pytest.raises(PortInUse) as refused:
            await asyncio.wait_for(serve(config, tmp_path), 10)
    message = str(refused.value)
    assert f"port {port}" in message
    assert "[metrics] listen" in message
