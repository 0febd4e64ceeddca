"""Example 3, the running half: two agents configured with the CLI connect with ``run``.

The agents are real processes in a temporary HOME; whether they are linked is read from
the portal's log (``provider@default registered as Provider`` is logged once the provider's
Register arrives over the authenticated link).
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from broadgauge.cli import main
from broadgauge.cli.run import serve
from broadgauge.grammar import UserMapping
from broadgauge.jobs import AgentType
from broadgauge.runtime.agent import Agent, Envelope
from broadgauge.runtime.config import AgentConfig
from broadgauge.runtime.store import BoardStore
from broadgauge.wire import ServerEntry, ServiceConfig

from .processes import Broadgauge, free_port

ROOT = Path(__file__).resolve().parents[2]
REGISTERED = "portal: provider@default registered as Provider"
REFUSED = "no-matching-key"


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A portal and a provider configured on free ports, the provider holding its invite."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    assert main(["portal", "init", "-p", str(free_port())]) == 0
    assert main(["provider", "init", "-p", str(free_port())]) == 0
    assert main(["portal", "client", "--add", "provider", "--ip", "127.0.0.1"]) == 0
    assert main(["provider", "server", "--add", "invite_provider_default.toml"]) == 0
    yield tmp_path


class Agents:
    """Start ``broadgauge <role> run`` processes; kill leftovers when the test ends."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        self.started: list[Broadgauge] = []

    def run(self, role: str, *options: str) -> Broadgauge:
        process = Broadgauge(role, "run", *options, env=os.environ, cwd=self.cwd)
        self.started.append(process)
        process.wait_for(f"{role} ({role.capitalize()}) listening on")
        return process

    def kill_all(self) -> None:
        for process in self.started:
            process.kill()


@pytest.fixture
def agents(site: Path) -> Iterator[Agents]:
    started = Agents(site)
    try:
        yield started
    finally:
        started.kill_all()


def test_portal_and_provider_connect_and_stop_cleanly(site: Path, agents: Agents) -> None:
    portal = agents.run("portal")
    provider = agents.run("provider")
    portal.wait_for(REGISTERED)
    provider.wait_for("provider: portal@default registered as Portal")
    assert provider.terminate() == 0, provider.output
    portal.wait_for("portal: provider@default disconnected")
    assert portal.terminate() == 0, portal.output
    assert "portal stopped" in portal.output and "provider stopped" in provider.output
    for role in ("portal", "provider"):
        data = site / "data" / "broadgauge" / role
        assert data.stat().st_mode & 0o777 == 0o700
        assert (data / "boards.sqlite3").exists()


def test_an_agent_on_uvloop_links_with_one_on_asyncio(site: Path, agents: Agents) -> None:
    """The optional ``fast`` extra: ``--event-loop uvloop`` changes the loop, nothing else."""
    portal = agents.run("portal", "--event-loop", "uvloop")
    provider = agents.run("provider")
    portal.wait_for("portal: event loop uvloop.Loop")
    provider.wait_for("provider: event loop asyncio.unix_events._UnixSelectorEventLoop")
    portal.wait_for(REGISTERED)
    provider.wait_for("provider: portal@default registered as Portal")
    assert portal.terminate() == 0, portal.output
    assert "portal stopped" in portal.output


def test_a_rotated_client_needs_the_rotate_file(site: Path, agents: Agents) -> None:
    assert main(["portal", "client", "--rotate", "provider"]) == 0
    portal = agents.run("portal")
    stale = agents.run("provider")  # still holds the keys of the first invite
    portal.wait_for(REFUSED)
    # The dialling side says what is wrong and what to run, at WARNING.
    stale.wait_for("WARNING broadgauge.wire: portal@default at ")
    assert "refused our keys" in stale.output
    assert "`broadgauge <role> server --rotate rotate_provider_default.toml`" in stale.output
    assert REGISTERED not in portal.output
    assert stale.terminate() == 0, stale.output

    assert main(["provider", "server", "--rotate", "rotate_provider_default.toml"]) == 0
    provider = agents.run("provider")
    portal.wait_for(REGISTERED)
    assert provider.terminate() == 0, provider.output
    assert portal.terminate() == 0, portal.output


def test_run_on_a_port_in_use_fails_clearly(site: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        assert main(["portal", "init", "--force", "-p", str(port)]) == 0
        portal = Broadgauge("portal", "run", env=os.environ, cwd=site)
        try:
            assert portal.finish() == 1
        finally:
            portal.kill()
    assert "broadgauge: " in portal.output
    assert "address already in use" in portal.output.lower()


def test_two_agents_cannot_share_a_data_directory(site: Path, agents: Agents) -> None:
    portal = agents.run("portal")
    other = site / "second-portal.toml"
    assert main(["portal", "init", "-c", str(other), "-p", str(free_port())]) == 0
    data = str(site / "data" / "broadgauge" / "portal")
    second = Broadgauge("portal", "run", "-c", str(other), "--data-dir", data, cwd=site)
    try:
        assert second.finish() == 1
    finally:
        second.kill()
    assert f"broadgauge: another agent is already running with data in {data}" in second.output
    assert portal.terminate() == 0, portal.output


async def test_serve_runs_your_own_handlers_and_keeps_boards(tmp_path: Path) -> None:
    """What docs/examples/cli.md shows: the standard run loop with handlers of your own."""
    portal = Agent(AgentConfig(AgentType.PORTAL, ServiceConfig.create("portal", port=0)))
    await portal.start()
    try:
        invite = portal.service.add_client("cluster", "127.0.0.1")
        service = ServiceConfig.create("cluster", port=free_port())
        config = AgentConfig(
            AgentType.INSTANCE, service.with_server(ServerEntry.from_invite(invite))
        )

        def setup(agent: Agent) -> None:
            @agent.handler("add_user")
            async def add_user(envelope: Envelope) -> UserMapping:
                user = envelope.job.instruction.user  # type: ignore[attr-defined]
                return UserMapping(user, user.username, f"{user.portal}.{user.project}")

        stop = asyncio.Event()
        cluster = asyncio.create_task(serve(config, tmp_path, setup=setup, stop=stop))
        async with asyncio.timeout(10):
            await portal.service.wait_for_peer("cluster")
        job = await portal.run("portal.cluster", "add_user fred.proj.org", timeout=10)
        assert job.result == '"fred.proj.org:fred:org.proj"'
        stop.set()
        assert await asyncio.wait_for(cluster, 10) == 0
    finally:
        await portal.stop()
    store = BoardStore(tmp_path)
    try:
        (kept,) = store.load_all()["portal@default"]
    finally:
        store.close()
    assert (kept.id, kept.result_type) == (job.id, "UserMapping")


def test_bridge_serves_the_network_planner_over_what_the_provider_publishes(
    site: Path, agents: Agents
) -> None:
    # The provider publishes the JupyterHub sample's rules; the bridge serves the network
    # planner from its planner-config; both are set with `extra` and started with `run`.
    rules = ROOT / "examples" / "planner" / "jupyterhub.toml"
    assert main(["provider", "extra", "-k", "planner-rules", "-v", str(rules)]) == 0
    planner_port = free_port()
    planner_config = site / "network-planner.toml"
    planner_config.write_text(f"[network]\nport = {planner_port}\nrefresh = 0\n")
    assert main(["bridge", "init", "-p", str(free_port())]) == 0
    assert main(["bridge", "extra", "-k", "planner-config", "-v", str(planner_config)]) == 0
    assert main(["portal", "client", "--add", "bridge", "--ip", "127.0.0.1"]) == 0
    assert main(["bridge", "server", "--add", "invite_bridge_default.toml"]) == 0
    portal = agents.run("portal")
    bridge = agents.run("bridge")
    bridge.wait_for(f"network planner 'planner' at http://127.0.0.1:{planner_port}/accepts")
    bridge.wait_for("bridge: portal@default registered as Portal")
    # `run` says where the HTTP API listens (bridge init's default port), and that with no
    # signal URLs asked for at init, nothing will be signalled.
    bridge.wait_for(
        "INFO broadgauge.bridge: bridge: bridge HTTP API listening on http://127.0.0.1:3000/ "
        "(port 3000)"
    )
    assert "signal_url and notification_url not set" in bridge.output
    url = f"http://127.0.0.1:{planner_port}/accepts"
    # Before the provider runs, its branch is silent and the answer is a plain NO.
    before = httpx.get(url, params={"tasktype": "jupyter-notebook"}, timeout=30).json()
    assert before["reponseword"] == "NO"
    assert before["failures"] == [
        {"destination": "portal.provider", "status": "silent", "detail": "did not answer the sweep"}
    ]
    provider = agents.run("provider")
    portal.wait_for(REGISTERED)
    body = httpx.get(url, params={"tasktype": "jupyter-notebook"}, timeout=30).json()
    assert body["reponseword"] == "YES"
    assert body["answers"] == [
        {
            "destination": "portal.provider",
            "reponseword": "YES",
            "servicetype": "jupyter-hub",
            "serviceinfo": {"endpoint": "http://jupyter.example.org/"},
        }
    ]
    assert body["failures"] == []
    for process in (provider, bridge, portal):
        assert process.terminate() == 0, process.output


def test_an_agent_with_unparseable_planner_rules_does_not_start(site: Path) -> None:
    bad = site / "bad-rules.toml"
    bad.write_text('[[rules]]\nname = "no task types"\n')
    assert main(["provider", "extra", "-k", "planner-rules", "-v", str(bad)]) == 0
    provider = Broadgauge("provider", "run", env=os.environ, cwd=site)
    assert provider.finish() != 0
    assert "planner-rules" in provider.output and "no task types" in provider.output


def test_healthcheck_port_answers_get_health_while_the_agent_runs(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "HOME": str(tmp_path),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "XDG_DATA_HOME": str(tmp_path / "data"),
    }
    health_port = free_port()
    init = Broadgauge("platform", "init", "-p", str(free_port()), "-k", str(health_port), env=env)
    assert init.finish() == 0, init.output
    config = tmp_path / "config" / "broadgauge" / "platform.toml"
    assert f"heathcheck_port = {health_port}" in config.read_text()  # sic: the reference's key
    platform = Broadgauge("platform", "run", env=env, cwd=tmp_path)
    try:
        platform.wait_for(f"health check at http://127.0.0.1:{health_port}/health")
        reply = httpx.get(f"http://127.0.0.1:{health_port}/health", timeout=10)
        assert reply.status_code == 200
        assert reply.json() == {"status": "ok", "workers": 64}
        assert httpx.get(f"http://127.0.0.1:{health_port}/", timeout=10).status_code == 404
        assert platform.terminate() == 0, platform.output
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{health_port}/health", timeout=10)
    finally:
        platform.kill()
