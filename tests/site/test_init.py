"""``broadgauge site init``: private files, each key only at its link's two ends, re-runs keep
keys, ``--rotate`` changes them, and the configs it writes make a network that runs a job."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from broadgauge.agents.assemble import assemble
from broadgauge.bridge.config import BridgeSettings, ClientFile
from broadgauge.cli import main
from broadgauge.jobs.agent_type import AgentType
from broadgauge.runtime.agent import Agent
from broadgauge.runtime.config import AgentConfig
from broadgauge.site.topology import parse_topology
from broadgauge.wire import Timers
from tests.cli.processes import free_port
from tests.site.markdown import file_block

EXAMPLE = file_block("topology.toml").text
TOPOLOGY = parse_topology(EXAMPLE)
FAST = Timers(reconnect_initial=0.05, reconnect_max=1.0)


def init(tmp_path: Path, *extra: str, text: str = EXAMPLE) -> int:
    (tmp_path / "topology.toml").write_text(text)
    return main(["site", "init", str(tmp_path / "topology.toml"), *extra])


def configs(tmp_path: Path) -> dict[str, AgentConfig]:
    return {
        path.parent.name: AgentConfig.load(path)
        for path in (tmp_path / "site").glob("*/*/config.toml")
    }


def link_keys(found: dict[str, AgentConfig]) -> dict[tuple[str, str], tuple[str, str]]:
    """(dials, listens) -> the two keys, checked to be the same at both ends."""
    keys = {}
    for link in TOPOLOGY.links:
        client = found[link.listens].service.client(link.dials)
        server = found[link.dials].service.server(link.listens)
        assert client is not None and server is not None, link
        assert (client.inner_key, client.outer_key) == (server.inner_key, server.outer_key)
        keys[(link.dials, link.listens)] = (
            client.inner_key.secret_bytes.hex(),
            client.outer_key.secret_bytes.hex(),
        )
    return keys


def test_files_are_private_and_in_one_folder_per_host(tmp_path: Path) -> None:
    assert init(tmp_path) == 0
    site = tmp_path / "site"
    assert site.stat().st_mode & 0o777 == 0o700
    for host in TOPOLOGY.hosts():
        assert (site / host).stat().st_mode & 0o777 == 0o700
        names = {spec.name for spec in TOPOLOGY.on_host(host)}
        assert {p.name for p in (site / host).iterdir() if p.is_dir()} == names
        assert (site / host / "run.sh").stat().st_mode & 0o777 == 0o700
        for name in names:
            assert (site / host / name).stat().st_mode & 0o777 == 0o700
    files = [p for p in site.rglob("*.toml")]
    assert len(files) == 9  # 8 configs and the bridge's client file
    for path in files:
        assert path.stat().st_mode & 0o777 == 0o600, path


def test_each_key_is_only_in_the_configs_of_its_two_ends(tmp_path: Path) -> None:
    init(tmp_path)
    found = configs(tmp_path)
    texts = {p: p.read_text() for p in (tmp_path / "site").rglob("*") if p.is_file()}
    for (dials, listens), pair in link_keys(found).items():
        for key in pair:
            holders = sorted(p.parent.name for p, text in texts.items() if key in text)
            assert holders == sorted([dials, listens]), (dials, listens, holders)
    bridge = BridgeSettings.of(found["bridge"])
    holders = sorted(
        str(p.relative_to(tmp_path)) for p, t in texts.items() if bridge.key.hex() in t
    )
    assert holders == ["site/web/bridge/client.toml", "site/web/bridge/config.toml"]
    client_file = ClientFile.load(tmp_path / "site/web/bridge/client.toml")
    assert client_file.url == "http://127.0.0.1:3000/"


def test_configs_say_what_the_topology_says(tmp_path: Path) -> None:
    init(tmp_path)
    found = configs(tmp_path)
    portal = found["portal"].service
    assert (portal.ip, portal.port, portal.url) == ("127.0.0.1", 8040, "ws://127.0.0.1:8040/")
    provider = portal.client("provider")
    assert provider is not None and str(provider.ip) == "127.0.0.1"  # the dialler's address
    assert found["account"].service.port == 0  # nobody dials it: any free loopback port
    assert found["account"].extra("account-backend") == "local"
    assert found["scheduler"].extra("scheduler-backend") == "ledger"
    # The filesystem agent reads uids from the account agent's directory on the same host.
    assert found["filesystem"].extra("id-resolver") == "directory:account/data/directory.sqlite3"
    assert found["instance"].agent is AgentType.INSTANCE
    run_sh = (tmp_path / "site/cluster/run.sh").read_text()
    assert (
        "instance) exec broadgauge instance run -c instance/config.toml --data-dir instance/data"
        in run_sh
    )


def test_running_again_keeps_keys_and_what_was_added_by_hand(tmp_path: Path) -> None:
    init(tmp_path)
    account = tmp_path / "site/cluster/account/config.toml"
    assert (
        main(["account", "extra", "-c", str(account), "-k", "protected-users", "-v", "root"]) == 0
    )
    before = link_keys(configs(tmp_path))
    api_key = BridgeSettings.of(configs(tmp_path)["bridge"]).key
    platform = (tmp_path / "site/hub/platform/config.toml").read_text()
    assert init(tmp_path) == 0
    after = configs(tmp_path)
    assert link_keys(after) == before
    assert BridgeSettings.of(after["bridge"]).key == api_key
    assert after["account"].extra("protected-users") == "root"
    assert (tmp_path / "site/hub/platform/config.toml").read_text() == platform


def test_adding_an_agent_keeps_every_existing_key(tmp_path: Path) -> None:
    init(tmp_path)
    before = link_keys(configs(tmp_path))
    more = EXAMPLE + (
        '\n[[agent]]\nname = "provider2"\nrole = "provider"\nhost = "hub"\nport = 8042\n'
        '\n[[link]]\ndials = "provider2"\nlistens = "portal"\n'
    )
    assert init(tmp_path, text=more) == 0
    after = configs(tmp_path)
    assert link_keys(after) == before
    client = after["portal"].service.client("provider2")
    server = after["provider2"].service.server("portal")
    assert client is not None and server is not None and client.inner_key == server.inner_key


def test_rotate_gives_every_link_and_the_bridge_new_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    init(tmp_path)
    before = link_keys(configs(tmp_path))
    api_key = BridgeSettings.of(configs(tmp_path)["bridge"]).key
    capsys.readouterr()
    assert init(tmp_path, "--rotate") == 0
    said = capsys.readouterr().out
    after = configs(tmp_path)
    rotated = link_keys(after)  # still the same at both ends
    for link, pair in before.items():
        assert set(rotated[link]).isdisjoint(pair), link
        assert f"rotated {link[0]} → {link[1]}: new keys on both ends" in said
    assert BridgeSettings.of(after["bridge"]).key != api_key
    assert "Every link has new keys" in said


def test_mismatched_ends_are_re_keyed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    init(tmp_path)
    path = tmp_path / "site/hub/provider/config.toml"
    # Someone re-ran `broadgauge provider init --force` there: the provider forgot the portal.
    assert main(["provider", "init", "-c", str(path), "--force"]) == 0
    capsys.readouterr()
    init(tmp_path)
    assert "re-keyed provider → portal" in capsys.readouterr().out
    link_keys(configs(tmp_path))  # both ends agree again


def test_a_bad_topology_is_refused_with_its_line_and_nothing_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = EXAMPLE.replace('role = "platform"', 'role = "platfrom"')
    assert init(tmp_path, text=bad) == 1
    err = capsys.readouterr().err
    assert re.match(r"broadgauge: \S+topology\.toml line \d+: unknown role 'platfrom'", err)
    assert not (tmp_path / "site").exists()


async def test_a_site_built_by_init_links_up_and_runs_a_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Free ports instead of the example's (the only change), then start every agent here.
    text = re.sub(r"(?m)^port = \d+", lambda _: f"port = {free_port()}", EXAMPLE)
    assert init(tmp_path, text=text) == 0
    topology = parse_topology(text)
    # The configs' relative paths (id-resolver) are relative to the cluster's folder.
    monkeypatch.chdir(tmp_path / "site" / "cluster")
    agents: dict[str, Agent] = {}
    roles = []
    try:
        for spec in topology.top_down():
            folder = tmp_path / "site" / spec.host / spec.name
            agent = Agent(
                AgentConfig.load(folder / "config.toml"), data_dir=folder / "data", timers=FAST
            )
            roles.append(assemble(agent, folder / "data"))
            agents[spec.name] = agent
            await agent.start()
        async with asyncio.timeout(20):
            for link in topology.links:
                await agents[link.listens].peer_of_type(topology.agent(link.dials).role)
        path = "portal.provider.platform.instance"
        job = await agents["bridge"].run(
            "bridge.portal", f"submit {path} add_user alice.physics.portal", timeout=30
        )
        assert job.result_value() is not None
        assert str(job.result_value()) == "alice.physics.portal:alice.physics:portal.physics"
        home = tmp_path / "site/cluster/filesystem/data/sandbox"
        assert any(home.rglob("alice.physics")), "the filesystem agent made no home folder"
    finally:
        for agent in reversed(list(agents.values())):
            await agent.stop()
        for role in roles:
            await role.close()
