"""``bridge init`` writes only the signal URLs asked for; the bridge logs where it listens."""

from __future__ import annotations

import logging
import tomllib
from pathlib import Path

import pytest

from broadgauge.bridge import BridgeServer, BridgeSettings
from broadgauge.cli import main
from broadgauge.demo import Network
from broadgauge.runtime.config import AgentConfig


def init(path: Path, *options: str) -> dict[str, object]:
    """Run ``bridge init`` with ``options``; the ``[bridge]`` table it wrote."""
    assert main(["bridge", "init", "-c", str(path), *options]) == 0
    with path.open("rb") as file:
        table = tomllib.load(file)["bridge"]
    assert isinstance(table, dict)
    return table


def test_init_without_signal_urls_writes_none(tmp_path: Path) -> None:
    table = init(tmp_path / "bridge.toml")

    assert "signal_url" not in table and "notification_url" not in table
    settings = BridgeSettings.of(AgentConfig.load(tmp_path / "bridge.toml"))
    assert (settings.signal_url, settings.notification_url) == (None, None)


def test_init_keeps_the_signal_urls_it_is_given(tmp_path: Path) -> None:
    table = init(
        tmp_path / "bridge.toml",
        "--signal-url",
        "http://portal-web.internal/signal",
        "-N",
        "https://portal-web.internal/notification",
    )

    assert table["signal_url"] == "http://portal-web.internal/signal"
    assert table["notification_url"] == "https://portal-web.internal/notification"


def test_init_with_only_a_signal_url_writes_only_that(tmp_path: Path) -> None:
    table = init(tmp_path / "bridge.toml", "-s", "http://portal-web.internal/signal")

    assert table["signal_url"] == "http://portal-web.internal/signal"
    assert "notification_url" not in table


async def test_the_bridge_logs_where_its_api_listens_once_bound(
    demo_network: Network, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "broadgauge.bridge")
    bridge: BridgeServer = demo_network.bridge
    assert bridge.settings.port == 0  # the demo asks for any free port

    await bridge.start()

    lines = [r for r in caplog.records if "HTTP API listening" in r.getMessage()]
    assert [r.levelno for r in lines] == [logging.INFO]
    assert lines[0].getMessage() == (
        f"bridge: bridge HTTP API listening on http://127.0.0.1:{bridge.port}/ "
        f"(port {bridge.port}); client files name {bridge.url}"
    )
    assert bridge.port != 0
    unset = [r.getMessage() for r in caplog.records if "must poll" in r.getMessage()]
    assert unset == [
        "bridge: signal_url and notification_url not set: the portal software is not "
        "signalled and must poll (GET /fetch_jobs, POST /fetch_notification)"
    ]
