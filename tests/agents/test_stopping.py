"""An agent that stops while a directory change runs in a worker thread still audits it."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from typing import Any

import pytest

from broadgauge.agents.accounts.local import LocalDirectory
from broadgauge.demo import Network
from broadgauge.grammar import ProjectIdentifier
from broadgauge.runtime.audit import verify


async def test_a_change_running_when_the_account_agent_stops_is_audited(
    network: Network, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = network.roles["account"].accounts
    assert isinstance(directory, LocalDirectory)
    entered, release = threading.Event(), threading.Event()
    execute = directory._execute

    def held(op: Callable[..., Any]) -> Any:  # the change waits in its thread until released
        entered.set()
        release.wait(30)
        return execute(op)

    monkeypatch.setattr(directory, "_execute", held)
    change = asyncio.create_task(directory.add_project(ProjectIdentifier("late", "portal")))
    assert await asyncio.to_thread(entered.wait, 30)
    stopping = asyncio.create_task(network.stop_agent("account"))
    await asyncio.sleep(0.3)
    assert not stopping.done()  # waiting for the change, with the audit log still open
    release.set()
    await stopping
    await change
    log = network.root / "account" / "audit.jsonl"
    operations = [json.loads(line).get("operation") for line in log.read_text().splitlines()]
    assert any(op and "portal.late" in op for op in operations), operations
    verify(log)


async def test_settle_gives_up_on_a_change_that_never_ends(
    tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    notes: list[str] = []
    directory = LocalDirectory(tmp_path / "accounts.sqlite", audit=notes.append)
    release = threading.Event()
    execute = directory._execute
    directory._execute = lambda op: (release.wait(30), execute(op))[1]  # type: ignore[method-assign]
    change = asyncio.create_task(directory.add_project(ProjectIdentifier("hung", "portal")))
    await asyncio.sleep(0.1)
    await directory.settle(timeout=0.2)
    assert "still running after" in caplog.text and notes == []
    release.set()
    await change
    assert notes  # audited once it did end
    await directory.close()
