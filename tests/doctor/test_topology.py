"""``broadgauge doctor --topology FILE --dir DIR``: both ends of each link, and the leaves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from broadgauge.cli import main
from broadgauge.doctor.findings import Status
from broadgauge.doctor.sitewide import check_site
from broadgauge.runtime.config import AgentConfig
from broadgauge.site.topology import load_topology
from broadgauge.wire import Service
from tests.cli.processes import free_port

from .helpers import build_site, only

FAST = 0.5


def _topology(tmp_path: Path, *, scheduler: bool = True) -> Path:
    """portal <- provider <- platform <- instance <- account, filesystem (, scheduler)."""
    ports = iter(free_port() for _ in range(7))
    agents = [
        ("portal", "portal", "web"),
        ("provider", "provider", "web"),
        ("platform", "platform", "cluster"),
        ("instance", "instance", "cluster"),
        ("account", "account", "cluster"),
        ("filesystem", "filesystem", "cluster"),
    ]
    if scheduler:
        agents.append(("scheduler", "scheduler", "cluster"))
    text = ""
    for name, role, host in agents:
        text += (
            f'[[agent]]\nname = "{name}"\nrole = "{role}"\nhost = "{host}"\n'
            f'address = "127.0.0.1"\nport = {next(ports)}\n\n'
        )
    links = [("provider", "portal"), ("platform", "provider"), ("instance", "platform")]
    links += [
        (name, "instance")
        for name, role, _ in agents
        if role in ("account", "filesystem", "scheduler")
    ]
    for dials, listens in links:
        text += f'[[link]]\ndials = "{dials}"\nlistens = "{listens}"\n\n'
    path = tmp_path / "topology.toml"
    path.write_text(text)
    return path


def test_a_freshly_built_site_has_no_failures(tmp_path: Path) -> None:
    topology = _topology(tmp_path)
    build_site(load_topology(topology), tmp_path / "site")
    findings = check_site(topology, tmp_path / "site", timeout=FAST)
    links = [f for f in findings if f.check.startswith("link.")]
    assert len(links) == 6 and all(f.status is Status.OK for f in links), links
    assert only(findings, "leaves.required").status is Status.OK
    # Nothing runs: every peer is unreachable, which is the only kind of failure.
    failed = {f.check.split(".")[0] for f in findings if f.status is Status.FAIL}
    assert failed == {"peer"}
    assert {f.agent for f in findings} == {
        "portal",
        "provider",
        "platform",
        "instance",
        "account",
        "filesystem",
        "scheduler",
    }


def test_mismatched_keys_between_two_configs_fail_with_the_rotate_commands(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    topology = _topology(tmp_path)
    paths = build_site(load_topology(topology), tmp_path / "site")
    # The instance gives the scheduler new keys; the scheduler's config keeps the old ones.
    instance = AgentConfig.load(paths["instance"])
    service = Service(instance.service)
    service.rotate_client("scheduler")
    AgentConfig(instance.agent, service.config, instance.extras, instance.other).save(
        paths["instance"]
    )
    status = main(
        [
            "doctor",
            "--topology",
            str(topology),
            "--dir",
            str(tmp_path / "site"),
            "--json",
            "--timeout",
            str(FAST),
        ]
    )
    items = json.loads(capsys.readouterr().out)
    assert status == 1
    link = next(i for i in items if i["check"] == "link.scheduler->instance")
    assert link["status"] == "fail" and link["agent"] == "scheduler"
    assert "keys of link scheduler -> instance (default) differ" in link["message"]
    assert f"broadgauge instance client -c {paths['instance']} --rotate scheduler" in link["fix"]
    assert f"broadgauge scheduler server -c {paths['scheduler']} --rotate" in link["fix"]
    others = [i for i in items if i["check"].startswith("link.") and i is not link]
    assert others and all(i["status"] == "ok" for i in others)


def test_a_missing_client_entry_fails(tmp_path: Path) -> None:
    topology = _topology(tmp_path)
    paths = build_site(load_topology(topology), tmp_path / "site")
    provider = AgentConfig.load(paths["provider"])
    service = Service(provider.service)
    service.remove_client("platform")
    AgentConfig(provider.agent, service.config).save(paths["provider"])
    link = only(check_site(topology, tmp_path / "site", timeout=FAST), "link.platform->provider")
    assert link.status is Status.FAIL and "no client entry for platform@default" in link.message


def test_an_instance_without_a_scheduler_fails(tmp_path: Path) -> None:
    topology = _topology(tmp_path, scheduler=False)
    build_site(load_topology(topology), tmp_path / "site")
    leaves = only(check_site(topology, tmp_path / "site", timeout=FAST), "leaves.required")
    assert leaves.status is Status.FAIL
    assert "no scheduler agent below it" in leaves.message
    assert 'role = "scheduler"' in leaves.fix and 'listens = "instance"' in leaves.fix


def test_a_config_that_is_not_written_yet_is_reported(tmp_path: Path) -> None:
    topology = _topology(tmp_path)
    paths = build_site(load_topology(topology), tmp_path / "site")
    paths["account"].unlink()
    findings = check_site(topology, tmp_path / "site", timeout=FAST)
    missing = [f for f in findings if f.agent == "account"]
    assert [f.check for f in missing] == ["config.valid"]
    assert missing[0].status is Status.FAIL and "site init" in missing[0].fix


def test_an_unknown_host_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    topology = _topology(tmp_path)
    build_site(load_topology(topology), tmp_path / "site")
    status = main(
        ["doctor", "--topology", str(topology), "--dir", str(tmp_path / "site"), "--host", "moon"]
    )
    assert status == 1
    assert "has no such host; its hosts are web, cluster" in capsys.readouterr().err


def test_other_hosts_get_only_the_checks_made_from_here(tmp_path: Path) -> None:
    topology = _topology(tmp_path)
    build_site(load_topology(topology), tmp_path / "site")
    findings = check_site(topology, tmp_path / "site", hosts=["web"], timeout=FAST)
    assert {f.agent for f in findings if f.check == "port.listen"} == {"portal", "provider"}
    assert [f for f in findings if f.agent == "scheduler" and f.check.startswith("backend.")] == []


def test_a_site_written_by_site_init_has_matching_links(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    topology = _topology(tmp_path)
    assert main(["site", "init", str(topology), "--out", str(tmp_path / "site")]) == 0
    capsys.readouterr()
    main(["doctor", "--topology", str(topology), "--dir", str(tmp_path / "site"), "--json",
          "--timeout", str(FAST)])  # fmt: skip
    items = json.loads(capsys.readouterr().out)
    links = [i for i in items if i["check"].startswith("link.")]
    assert len(links) == 6 and all(i["status"] == "ok" for i in links)
    # Nothing runs yet: only the peers fail, and the data folders are for --fix to make.
    assert {i["check"].split(".")[0] for i in items if i["status"] == "fail"} == {"peer"}
    data = [i for i in items if i["check"] == "data.dir"]
    assert len(data) == 7 and all(i["fixable"] for i in data)
