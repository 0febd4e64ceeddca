"""Fixtures: a running demo network with its bridge API, and the official client beside it."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from broadgauge.bridge import BridgeServer, Retry
from broadgauge.demo import Network
from broadgauge.jobs.job import Job
from tests.agents.network import demo_network

__all__ = ["demo_network"]  # the shared demo-network fixture, used below

WORKER = Path(__file__).with_name("official_worker.py")


class OfficialError(Exception):
    """The official client raised (the text is its first line)."""


class Official:
    """The official ``openportal`` module, running in a worker process (see the worker)."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lock = asyncio.Lock()

    async def call(self, code: str, timeout: float = 60.0) -> Any:
        """Run ``code`` in the worker; return its ``result`` or raise :class:`OfficialError`."""
        assert self.process.stdin is not None and self.process.stdout is not None
        async with self.lock:
            self.process.stdin.write((json.dumps({"code": code}) + "\n").encode())
            await self.process.stdin.drain()
            line = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        if not line:
            raise OfficialError("the official client's process died")
        reply = json.loads(line)
        if "error" in reply:
            raise OfficialError(reply["error"] + "\n" + reply.get("detail", ""))
        return reply["ok"]

    async def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), 5)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


class Signals:
    """Stands in for the portal software's signal endpoints: records every GET."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []
        self.arrived = asyncio.Event()
        self.fail_next = 0

    async def __call__(self, url: str, param: str, value: str) -> None:
        if self.fail_next:
            self.fail_next -= 1
            raise ConnectionError("portal software is down")
        self.calls.append((url, param, value))
        self.arrived.set()

    async def next(self, param: str, timeout: float = 10.0) -> str:
        """The value of the next signal carrying ``param``."""
        async with asyncio.timeout(timeout):
            while True:
                for index, (_, p, value) in enumerate(self.calls):
                    if p == param:
                        del self.calls[index]
                        return value
                self.arrived.clear()
                await self.arrived.wait()


async def ask_portal_software(
    network: Network, signals: Signals, instruction: str
) -> tuple[asyncio.Future[Job], str]:
    """The portal asks the portal software ``instruction`` through the bridge: the job that
    finishes once it is answered, and the job id the bridge signalled."""
    asking = asyncio.ensure_future(network.agents["portal"].run("portal.bridge", instruction))
    return asking, await signals.next("job_id")


@pytest.fixture
async def network(demo_network: Network) -> Network:
    """The shared demo network with the bridge's HTTP API serving."""
    await demo_network.bridge.start()
    return demo_network


@pytest.fixture
def bridge(network: Network) -> BridgeServer:
    return network.bridge


@pytest.fixture
def signals(bridge: BridgeServer) -> Signals:
    """Signals go to a recorder; signal and notification URLs are set, retries are quick."""
    recorder = Signals()
    runtime = bridge.runtime
    runtime.signal = recorder
    runtime.settings = bridge.settings.__class__(
        **{
            **bridge.settings.__dict__,
            "signal_url": "http://portal.invalid/signal",
            "notification_url": "http://portal.invalid/notification",
        }
    )
    runtime.job_retry = Retry(3, 0.01)
    runtime.notification_retry = Retry(2, 0.01)
    return recorder


@pytest.fixture
def client_file(tmp_path: Path, bridge: BridgeServer) -> Path:
    path = tmp_path / "bridge.toml"
    bridge.client_file().save(path)
    return path


@asynccontextmanager
async def official_client(client_file: Path) -> AsyncIterator[Official]:
    """The official client in its worker process, configured with ``client_file``."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(WORKER),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    client = Official(process)
    try:
        await client.call(f"op.load_config({str(client_file)!r})")
        yield client
    finally:
        await client.close()


@pytest.fixture
async def official(client_file: Path) -> AsyncIterator[Official]:
    async with official_client(client_file) as client:
        yield client
