"""The topology parser: the quickstart's example is accepted, each bad input names its line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from broadgauge.jobs.agent_type import AgentType
from broadgauge.site.topology import (
    MAY_DIAL,
    AgentSpec,
    TopologyError,
    load_topology,
    make_topology,
    parse_topology,
)
from tests.site.markdown import QUICKSTART, file_block

EXAMPLE = file_block("topology.toml").text
#: The [[agent]] header of the instance (edits below keep the lines above it).
INSTANCE_LINE = EXAMPLE.splitlines().index('name = "instance"')


def line_of(text: str, needle: str, occurrence: int = 1) -> int:
    """The 1-based line of the ``occurrence``-th line of ``text`` that contains ``needle``."""
    hits = [n for n, line in enumerate(text.splitlines(), 1) if needle in line]
    return hits[occurrence - 1]


def refused(text: str) -> str:
    with pytest.raises(TopologyError) as caught:
        parse_topology(text)
    return str(caught.value)


def test_the_quickstart_example_is_accepted() -> None:
    topology = parse_topology(EXAMPLE)
    assert [a.name for a in topology.agents] == [
        "portal", "bridge", "provider", "platform", "instance", "account", "filesystem",
        "scheduler",
    ]  # fmt: skip
    assert topology.hosts() == ["web", "hub", "cluster"]
    assert len(topology.links) == 7
    portal = topology.agent("portal")
    assert (portal.role, portal.host, portal.port, portal.address) == (
        AgentType.PORTAL, "web", 8040, "127.0.0.1",
    )  # fmt: skip
    assert portal.line == line_of(EXAMPLE, 'name = "portal"') - 1
    assert topology.agent("bridge").bridge_port == 3000
    assert topology.agent("account").settings == {"account-backend": "local"}
    assert topology.warnings() == []
    assert topology.listens("instance") and not topology.listens("account")
    assert [a.name for a in topology.servers_of("filesystem")] == ["instance"]
    order = [a.name for a in topology.top_down()]
    assert order.index("portal") < order.index("provider") < order.index("platform")
    assert order.index("platform") < order.index("instance") < order.index("account")


def test_load_topology_reads_a_file_and_names_it(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text(EXAMPLE + '\n[[link]]\ndials = "portal"\nlistens = "nowhere"\n')
    with pytest.raises(TopologyError, match=rf"^{re.escape(str(path))} line \d+: .*'nowhere'"):
        load_topology(path)
    with pytest.raises(TopologyError, match="cannot read topology"):
        load_topology(tmp_path / "missing.toml")


# --- each bad input, refused at its line -----------------------------------------------------

AGENT = '\n[[agent]]\nname = "{name}"\nrole = "{role}"\nhost = "{host}"\n{extra}\n'
LINK = '\n[[link]]\ndials = "{dials}"\nlistens = "{listens}"\n'


def test_a_duplicate_agent_name() -> None:
    text = EXAMPLE + AGENT.format(name="portal", role="provider", host="hub", extra="")
    message = refused(text)
    assert message.startswith(f"topology.toml line {line_of(text, '[[agent]]', 9)}: ")
    assert "a second agent called 'portal'" in message
    assert f"line {line_of(text, '[[agent]]', 1)}" in message


def test_a_port_clash_on_one_host() -> None:
    text = EXAMPLE + AGENT.format(name="other", role="provider", host="hub", extra="port = 8045")
    message = refused(text)
    assert message.startswith(f"topology.toml line {line_of(text, '[[agent]]', 9)}: ")
    assert "port 8045" in message and "'platform'" in message


def test_a_port_clash_on_one_address_across_hosts() -> None:
    # Two "hosts" on 127.0.0.1 are one machine: the bridge's HTTP port is taken too.
    text = EXAMPLE + AGENT.format(name="other", role="provider", host="x", extra="port = 3000")
    text = text.replace('cluster = "127.0.0.1"', 'cluster = "127.0.0.1"\nx = "127.0.0.1"')
    message = refused(text)
    assert message.startswith(f"topology.toml line {line_of(text, '[[agent]]', 9)}: ")
    assert "address '127.0.0.1'" in message and "bridge HTTP port" in message


def test_an_unknown_role() -> None:
    text = EXAMPLE.replace('role = "platform"', 'role = "platfrom"')
    message = refused(text)
    assert message.startswith(f"topology.toml line {line_of(text, 'platfrom')}: ")
    assert "unknown role 'platfrom'" in message and "platform" in message


def test_an_unknown_key_in_an_agent_and_at_the_top() -> None:
    text = EXAMPLE.replace('host = "hub"\nport = 8041', 'host = "hub"\nport = 8041\ncolour = 1')
    message = refused(text)
    assert message.startswith(f"topology.toml line {line_of(text, 'colour')}: ")
    assert "unknown key 'colour' in [agent]" in message
    text = EXAMPLE + "\n[sites]\nname = 1\n"
    assert refused(text).startswith(f"topology.toml line {line_of(text, '[sites]')}: ")


def test_a_link_to_an_unknown_agent() -> None:
    text = EXAMPLE + LINK.format(dials="scheduler", listens="instanse")
    message = refused(text)
    assert message.startswith(f"topology.toml line {line_of(text, '[[link]]', 8)}: ")
    assert "unknown agent 'instanse'" in message


def test_a_link_the_roles_do_not_allow() -> None:
    text = EXAMPLE.replace(
        'dials = "filesystem"\nlistens = "instance"', 'dials = "filesystem"\nlistens = "portal"'
    )
    message = refused(text)
    line = line_of(text, 'dials = "filesystem"') - 1
    assert message == (
        f"topology.toml line {line}: a filesystem agent ('filesystem') cannot dial a portal "
        "agent ('portal'): filesystem agents dial instance agents"
    )
    # The quickstart shows this very message.
    shown = " ".join(QUICKSTART.read_text().split())
    assert message.split(": ", 1)[1] in shown


def test_a_cycle() -> None:
    text = EXAMPLE + LINK.format(dials="portal", listens="instance")
    message = refused(text)
    in_cycle = {line_of(text, "[[link]]", n) for n in (2, 3, 4, 8)}
    assert int(message.split(" line ")[1].split(":")[0]) in in_cycle
    assert "closes a cycle (" in message and "portal → instance → platform" in message


def test_an_agent_dialling_itself_and_a_duplicate_link() -> None:
    text = EXAMPLE + LINK.format(dials="portal", listens="portal")
    assert "cannot dial itself" in refused(text)
    text = EXAMPLE + LINK.format(dials="instance", listens="platform")
    message = refused(text)
    assert message.startswith(f"topology.toml line {line_of(text, '[[link]]', 8)}: ")
    assert f"already linked on line {line_of(text, '[[link]]', 4)}" in message


def test_a_listening_agent_without_a_port() -> None:
    text = EXAMPLE.replace('host = "cluster"\nport = 8046\n', 'host = "cluster"\n')
    message = refused(text)
    assert message.startswith(
        f"topology.toml line {INSTANCE_LINE}: agent 'instance' is dialled by 'account'"
    )
    assert "add port = <number>" in message


def test_a_dialling_agent_whose_address_is_not_an_ip() -> None:
    text = EXAMPLE.replace('cluster = "127.0.0.1"', 'cluster = "cluster.example.org"')
    message = refused(text)
    assert message.startswith(f"topology.toml line {INSTANCE_LINE}: agent 'instance' dials")
    assert "not an IP address" in message


def test_bad_values_name_their_line() -> None:
    text = EXAMPLE.replace("port = 8041", 'port = "8041"')
    port_line = line_of(text, 'port = "8041"')
    assert refused(text).startswith(f"topology.toml line {port_line}: port must be")
    text = EXAMPLE.replace('"account-backend" = "local"', '"account-backend" = ["local"]')
    message = refused(text)
    assert message.startswith(f"topology.toml line {line_of(text, 'account-backend')}: ")
    text = EXAMPLE.replace(
        "[agent.settings.bridge]\nport = 3000", "[agent.settings.bridge]\nport = -1"
    )
    assert refused(text).startswith(
        f"topology.toml line {line_of(text, '[agent.settings.bridge]')}: settings.bridge.port"
    )
    text = EXAMPLE.replace('name = "hub"', "") + '\n[[agent]]\nrole = "portal"\n'
    assert "has no name" in refused(text)


def test_a_toml_syntax_error_names_its_line() -> None:
    text = EXAMPLE.replace("port = 8045", "port = = 8045")
    assert f"line {line_of(text, 'port = = 8045')}" in refused(text)


def test_multi_line_strings_and_comments_do_not_confuse_the_line_map() -> None:
    text = EXAMPLE.replace("[site]", "# [[agent]] in a comment\n[site]").replace(
        '"account-backend" = "local"',
        '"account-backend" = "local"\nnote = """\n[[agent]]\ncolour = 1\n"""',
    )
    parse_topology(text)  # the multi-line string is a setting, not a header
    bad = text.replace('role = "scheduler"', 'role = "sched"')
    line = line_of(bad, 'role = "sched"')
    assert refused(bad).startswith(f"topology.toml line {line}: unknown role 'sched'")


def test_the_table_of_links_is_the_demo_hierarchy() -> None:
    up = {kind: sorted(k.display for k in parents) for kind, parents in MAY_DIAL.items()}
    assert up == {
        AgentType.BRIDGE: ["portal"],
        AgentType.PORTAL: [],
        AgentType.PROVIDER: ["portal"],
        AgentType.PLATFORM: ["provider"],
        AgentType.INSTANCE: ["platform"],
        AgentType.ACCOUNT: ["instance"],
        AgentType.FILESYSTEM: ["instance"],
        AgentType.SCHEDULER: ["instance"],
    }


def test_warnings_for_an_instance_without_its_leaves_and_a_lonely_bridge() -> None:
    topology = make_topology(
        [
            AgentSpec("i", AgentType.INSTANCE, "h", 1, "127.0.0.1", {}, 3),
            AgentSpec("b", AgentType.BRIDGE, "h", None, "127.0.0.1", {}, 7),
        ],
        [],
        source="t",
    )
    assert topology.warnings() == [
        "t line 3: instance 'i' has no account and no filesystem and no scheduler agent; "
        "add_user and add_project need one of each (add an [[agent]] and a [[link]] that "
        "dials the instance)",
        "t line 7: bridge 'b' dials no portal, so portal software cannot reach the network "
        "through it",
    ]


def test_port_zero_only_for_an_in_process_network() -> None:
    text = EXAMPLE.replace("port = 8040", "port = 0")
    assert "has no port to listen on" in refused(text)
    assert parse_topology(text, any_port=True).agent("portal").port == 0
