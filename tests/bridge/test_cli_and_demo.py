"""``broadgauge bridge init|bridge`` and ``broadgauge demo --serve``'s bridge."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

from rich.console import Console

from broadgauge.bridge import BridgeSettings, ClientFile
from broadgauge.cli import main
from broadgauge.client import AsyncClient
from broadgauge.demo import serve_demo
from broadgauge.runtime.config import AgentConfig


def test_init_and_client_file(tmp_path: Path) -> None:
    config_path, client_path = tmp_path / "bridge.toml", tmp_path / "client.toml"
    assert (
        main(
            [
                "bridge",
                "init",
                "-c",
                str(config_path),
                "--bridge-url",
                "http://web:3000/api/",
                "--bridge-port",
                "3001",
                "--signal-url",
                "ftp://not-http/",
                "--trusted-proxy",
                "10.0.0.0/8",
            ]
        )
        == 0
    )
    settings = BridgeSettings.of(AgentConfig.load(config_path))
    assert settings.port == 3001 and settings.url == "http://web:3000/api/"
    assert settings.signal_url is None  # only http(s) is kept, as the reference
    assert settings.notification_url is None  # none asked for: none written
    assert settings.trusted_proxies == ("10.0.0.0/8",)
    assert (
        main(["bridge", "bridge", "-c", str(config_path), "--client-file", str(client_path)]) == 0
    )
    assert ClientFile.load(client_path) == ClientFile("http://web:3000/api/", settings.key)
    assert client_path.stat().st_mode & 0o077 == 0
    assert main(["bridge", "bridge", "-c", str(config_path), "--regenerate"]) == 0
    renewed = BridgeSettings.of(AgentConfig.load(config_path))
    assert renewed.key != settings.key and renewed.port == 3001


async def test_demo_serve_writes_a_working_client_file(tmp_path: Path) -> None:
    stop = asyncio.Event()
    console = Console(file=io.StringIO())
    serving = asyncio.ensure_future(serve_demo(tmp_path, console, stop))
    try:
        async with asyncio.timeout(30):
            while not (tmp_path / "bridge.toml").exists():
                await asyncio.sleep(0.05)
        async with AsyncClient.from_file(tmp_path / "bridge.toml") as client:
            assert str(await client.get_portal()) == "portal"
            job = await client.run(
                "portal.provider.platform.instance add_project physics.portal", max_ms=20000
            )
            assert job.result_type == "ProjectMapping"
    finally:
        stop.set()
        assert await asyncio.wait_for(serving, 30) == 0
