"""The notebook platform end to end with a real JupyterHub, driven by the official client.

The demo network runs with its notebook instance pointed at the hub the suite starts
(``tests/backends/jupyterhub.py``: JupyterHub, ``configurable-http-proxy`` and
``SimpleLocalProcessSpawner`` on loopback).  Portal software's view is the official
``openportal`` wheel calling our bridge for OpenPortal's instructions, and Broadgauge's client
for the two extensions (the wheel cannot read a Job that holds one: it re-parses every Job's
command with the reference grammar).  What happened is checked by reading the hub's own REST
API with the service token.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from rich.console import Console

from broadgauge.cli import main
from broadgauge.client import AsyncClient
from broadgauge.client import Job as ClientJob
from broadgauge.demo import NOTEBOOKS, Network, run_demo, start_network, use_jupyterhub
from broadgauge.grammar import ProjectUsageReport
from broadgauge.jobs.job import Job
from tests.backends.jupyterhub import JupyterHub
from tests.bridge.conftest import Official, OfficialError, official_client

#: A hang guard only (a spawn takes seconds).
GUARD = 120.0


@pytest.fixture
async def network(tmp_path: Path, jupyterhub: JupyterHub) -> AsyncIterator[Network]:
    started = await start_network(
        tmp_path, configure=use_jupyterhub(jupyterhub.url, jupyterhub.token)
    )
    try:
        await started.bridge.start()
        yield started
    finally:
        await started.stop()


@pytest.fixture
async def official(network: Network, tmp_path: Path) -> AsyncIterator[Official]:
    client_file = tmp_path / "bridge.toml"
    network.bridge.client_file().save(client_file)
    async with official_client(client_file) as client:
        yield client


@pytest.fixture
async def client(network: Network, tmp_path: Path) -> AsyncIterator[AsyncClient]:
    client_file = tmp_path / "client.toml"
    network.bridge.client_file().save(client_file)
    async with AsyncClient.from_file(client_file, timeout=GUARD) as opened:
        yield opened


async def extension(client: AsyncClient, instruction: str) -> ClientJob:
    """Run a Broadgauge extension on the notebook instance through our client."""
    job = await client.run(f"{NOTEBOOKS} {instruction}", max_ms=110_000)
    assert job.is_finished
    return job


async def run(official: Official, instruction: str) -> Job:
    """Run ``instruction`` on the notebook instance through the official client."""
    reply = await official.call(
        f"j = op.run({NOTEBOOKS + ' ' + instruction!r}, max_ms=110000)\n"
        "result = [j.to_json(), j.is_error, str(j.error_message) if j.is_error else '']",
        timeout=GUARD,
    )
    job = Job.from_json(reply[0])
    assert job.is_finished
    return job


async def wait_until_stopped(hub: httpx.AsyncClient, name: str) -> None:
    async with asyncio.timeout(GUARD):
        while (await hub.get(f"users/{name}")).json()["servers"]:
            await asyncio.sleep(0.2)


def hub_api(jupyterhub: JupyterHub) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=f"{jupyterhub.url}hub/api/",
        headers={"Authorization": f"token {jupyterhub.token}"},
        timeout=30,
    )


async def test_a_user_on_a_real_hub_from_portal_software(
    official: Official, client: AsyncClient, jupyterhub: JupyterHub
) -> None:
    project = f"nb{secrets.token_hex(3)}"
    user = f"alice.{project}.portal"
    name, group = f"alice.{project}", f"portal.{project}"

    # 1. A project and a user, through the bridge.
    assert not (await run(official, f"add_project {project}.portal")).is_error
    added = await run(official, f"add_user {user}")
    assert added.result_type == "UserMapping"
    assert json.loads(added.result or "") == f"{user}:{name}:{group}"

    async with hub_api(jupyterhub) as hub:
        # 2. The hub shows the user in the project's group.
        assert (await hub.get(f"groups/{group}")).json()["users"] == [name]

        # 3. The user's server starts, and its URL answers.
        started = await extension(client, f"start_notebook {user}")
        assert not started.is_error, started.error_message
        assert started.result_type == "String"
        url = started.result
        assert url == f"{jupyterhub.url}user/{name}/"
        status = await hub.get(f"{url}api/status")
        assert status.status_code == 200 and "started" in status.json()

        # 4. Blocked: the server is stopped, and a new start is refused, by the agent and by
        # the hub itself.
        assert not (await run(official, f"block_user {user}")).is_error
        model = (await hub.get(f"users/{name}")).json()
        assert model["servers"] == {} and "broadgauge-blocked" in model["groups"]
        refused = await extension(client, f"start_notebook {user}")
        assert refused.is_error and "blocked" in (refused.error_message or "")
        direct = await hub.post(f"users/{name}/server")
        assert direct.status_code >= 400
        await asyncio.sleep(0.5)  # let the hub finish failing before the next start
        assert (await hub.get(f"users/{name}")).json()["servers"] == {}

        # 5. Unblocked: it starts again.
        assert not (await run(official, f"unblock_user {user}")).is_error
        again = await extension(client, f"start_notebook {user}")
        assert not again.is_error, again.error_message
        assert (await hub.get(f"{url}api/status")).status_code == 200
        # The official wheel cannot read the finished job (its grammar lacks the extension).
        with pytest.raises(OfficialError, match="Invalid instruction: stop_notebook"):
            await official.call(f"op.run({NOTEBOOKS + ' stop_notebook ' + user!r})")
        # ... but the bridge ran it all the same: the server stops.
        await wait_until_stopped(hub, name)

        # 6. A usage report: server time of both sessions, for this user, today.
        today = dt.datetime.now(dt.UTC).date()
        report_job = await run(official, f"get_usage_report {project}.portal {today}:{today}")
        report = report_job.result_value()
        assert isinstance(report, ProjectUsageReport)
        seconds = report.reports[max(report.reports)].reports[name].seconds
        assert seconds > 0
        assert {str(k): v for k, v in report.users.items()} == {user: name}

        # 7. Removed: the hub no longer has the user.
        assert not (await run(official, f"remove_user {user}")).is_error
        assert (await hub.get(f"users/{name}")).status_code == 404


async def test_a_hub_that_refuses_the_token_fails_the_job_and_the_agent_serves_on(
    tmp_path: Path, jupyterhub: JupyterHub, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = secrets.token_hex(16)
    network = await start_network(tmp_path, configure=use_jupyterhub(jupyterhub.url, wrong))
    try:
        failed = None
        try:
            await network.submit("add_project tokens.portal", path=NOTEBOOKS)
        except Exception as exc:  # JobFailed: the job's error text
            failed = str(exc)
        assert failed is not None and "token" in failed and wrong not in failed
        # Still serving: an instruction that does not need the hub is answered.
        job = await network.submit("get_project_mapping tokens.portal", path=NOTEBOOKS)
        assert job.result_type == "ProjectMapping"
    finally:
        await network.stop()
    assert wrong not in caplog.text
    for name in ("jupyter", "notebooks"):
        audit = (tmp_path / name / "audit.jsonl").read_text()
        assert wrong not in audit


async def test_the_demo_runs_its_whole_story_on_a_real_hub(
    tmp_path: Path, jupyterhub: JupyterHub
) -> None:
    console = Console(file=io.StringIO(), width=200)
    status = await run_demo(tmp_path, console, use_jupyterhub(jupyterhub.url, jupyterhub.token))
    out = console.file.getvalue()  # type: ignore[attr-defined]
    assert status == 0, out
    # The planner's notebook answer is the real hub, and alice's server was started on it.
    assert f"YES at {NOTEBOOKS}: {jupyterhub.url}" in out
    assert f'String: "{jupyterhub.url}user/alice.physics/"' in out
    async with hub_api(jupyterhub) as hub:
        members = (await hub.get("groups/portal.physics")).json()["users"]
    assert {"alice.physics", "carol.physics"} <= set(members)


def test_demo_with_a_hub_needs_its_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JUPYTERHUB_API_TOKEN", raising=False)
    assert main(["demo", "--jupyterhub-url", "http://127.0.0.1:9/"]) == 2
