"""``broadgauge doctor CONFIG``: each broken thing is reported with its fix (real files, real
loopback sockets)."""

from __future__ import annotations

import json
import os
import socket
from dataclasses import replace
from pathlib import Path

import pytest

from broadgauge.cli import main
from broadgauge.doctor.checkup import Target, check_config
from broadgauge.doctor.findings import Status
from broadgauge.jobs.agent_type import AgentType
from broadgauge.runtime.audit import AuditLog
from broadgauge.wire import Service, SimpleEncryption
from tests.cli.processes import free_port

from .helpers import agent_config, date_server, only, write

FAST = 0.5  # seconds per probe: loopback answers at once, and silence is what is tested


@pytest.fixture
def data(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir(mode=0o700)
    return folder


def test_a_good_config_passes(tmp_path: Path, data: Path) -> None:
    path = write(agent_config(AgentType.PORTAL, "portal", free_port()), tmp_path / "portal.toml")
    findings = check_config(Target("portal", path, data), timeout=FAST)
    assert [f for f in findings if f.status is Status.FAIL] == []
    assert only(findings, "config.valid").status is Status.OK
    assert only(findings, "config.mode").status is Status.OK
    port = only(findings, "port.listen")
    assert port.status is Status.OK and "is free: the agent is not running" in port.message
    assert only(findings, "data.dir").status is Status.OK
    assert main(["doctor", str(path), "--data-dir", str(data), "--timeout", str(FAST)]) == 0


def test_bad_toml_is_reported_with_its_line(tmp_path: Path, data: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text('agent = "Portal"\n[service\nname = "portal"\n')
    path.chmod(0o600)
    findings = check_config(Target("broken", path, data), timeout=FAST)
    valid = only(findings, "config.valid")
    assert valid.status is Status.FAIL
    assert "not valid TOML" in valid.message and "line 2" in valid.message
    assert "correct it in" in valid.fix
    assert main(["doctor", str(path), "--data-dir", str(data)]) == 1


def test_a_bad_value_names_its_key(tmp_path: Path, data: Path) -> None:
    path = write(agent_config(AgentType.PORTAL, "portal", free_port()), tmp_path / "p.toml")
    path.write_text(path.read_text().replace("port = ", 'port = "x" #'))
    valid = only(check_config(Target("p", path, data), timeout=FAST), "config.valid")
    assert valid.status is Status.FAIL and "service port must be an integer" in valid.message


def test_a_config_others_can_read_fails_and_is_fixable(tmp_path: Path, data: Path) -> None:
    path = write(agent_config(AgentType.PORTAL, "portal", free_port()), tmp_path / "p.toml")
    path.chmod(0o644)
    mode = only(check_config(Target("portal", path, data), timeout=FAST), "config.mode")
    assert mode.status is Status.FAIL and "0644" in mode.message
    assert mode.fix == f"chmod 600 {path}" and mode.fixable


def test_a_port_held_by_another_socket_fails_naming_port_and_key(
    tmp_path: Path, data: Path
) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()  # accepts into the backlog, never answers
        port = held.getsockname()[1]
        path = write(agent_config(AgentType.PORTAL, "portal", port), tmp_path / "p.toml")
        finding = only(check_config(Target("portal", path, data), timeout=FAST), "port.listen")
    assert finding.status is Status.FAIL
    assert f"port {port} (service.port)" in finding.message
    assert "held by" in finding.message and "not by this agent" in finding.message
    assert f"process {os.getpid()}" in finding.message  # found through /proc: this test
    assert "[service] port" in finding.fix


def test_an_unreachable_peer_fails(tmp_path: Path, data: Path) -> None:
    upper = Service(agent_config(AgentType.INSTANCE, "instance", free_port()).service)
    invite = upper.add_client("scheduler", "127.0.0.1")  # nothing listens on its port
    service = Service(agent_config(AgentType.SCHEDULER, "scheduler", free_port()).service)
    service.add_server(invite)
    config = agent_config(AgentType.SCHEDULER, "scheduler", 0)
    path = write(replace(config, service=service.config), tmp_path / "s.toml")
    findings = check_config(Target("scheduler", path, data), timeout=FAST)
    peer = only(findings, "peer.instance")
    assert peer.status is Status.FAIL
    assert f"cannot reach server instance@default at {invite.url}" in peer.message
    assert "start the instance agent" in peer.fix
    assert not [f for f in findings if f.check.startswith("clock.")]  # nothing answered


def test_an_instance_without_a_scheduler_is_warned_about(tmp_path: Path, data: Path) -> None:
    service = Service(agent_config(AgentType.INSTANCE, "instance", free_port()).service)
    service.add_client("account", "127.0.0.1")
    service.add_client("filesystem", "127.0.0.1")
    config = agent_config(AgentType.INSTANCE, "instance", 0)
    path = write(replace(config, service=service.config), tmp_path / "i.toml")
    leaves = only(check_config(Target("instance", path, data), timeout=FAST), "leaves.required")
    # One config cannot know its clients' roles: a warning, not a failure.
    assert leaves.status is Status.WARN
    assert "a scheduler agent" in leaves.message and "account agent or" not in leaves.message
    assert "--add scheduler" in leaves.fix


def test_a_tampered_audit_log_fails(tmp_path: Path, data: Path) -> None:
    log = AuditLog(data / "audit.jsonl", "portal")
    for n in range(3):
        log.append(time=float(n), action="test", outcome="ok")
    log.close()
    lines = (data / "audit.jsonl").read_text().splitlines()
    lines[1] = lines[1].replace('"outcome":"ok"', '"outcome":"changed"')
    (data / "audit.jsonl").write_text("\n".join(lines) + "\n")
    path = write(agent_config(AgentType.PORTAL, "portal", free_port()), tmp_path / "p.toml")
    audit = only(check_config(Target("portal", path, data), timeout=FAST), "audit.log")
    assert audit.status is Status.FAIL
    assert "line 2 is broken" in audit.message and "altered" in audit.message
    assert "broadgauge audit verify" in audit.fix


def test_an_intact_audit_log_passes(tmp_path: Path, data: Path) -> None:
    log = AuditLog(data / "audit.jsonl", "portal")
    log.append(time=1.0, action="test", outcome="ok")
    log.close()
    path = write(agent_config(AgentType.PORTAL, "portal", free_port()), tmp_path / "p.toml")
    audit = only(check_config(Target("portal", path, data), timeout=FAST), "audit.log")
    assert audit.status is Status.OK and "1 entries, chain intact" in audit.message


def test_an_ldap_url_with_nothing_listening_fails(tmp_path: Path, data: Path) -> None:
    port = free_port()
    config = agent_config(
        AgentType.ACCOUNT,
        "account",
        free_port(),
        **{
            "account-backend": "ldap",
            "ldap-url": f"ldap://127.0.0.1:{port}",
            "ldap-bind-dn": "cn=admin,dc=example,dc=org",
            "ldap-base-dn": "dc=example,dc=org",
        },
    )
    config = replace(config, service=replace(config.service, encryption=SimpleEncryption()))
    config = config.with_secret("ldap-password", "secret")
    path = write(config, tmp_path / "a.toml")
    ldap = only(check_config(Target("account", path, data), timeout=FAST), "backend.ldap")
    assert ldap.status is Status.FAIL
    assert f"cannot bind to LDAP at ldap://127.0.0.1:{port}" in ldap.message
    assert "ldap-url" in ldap.fix


def test_an_ldap_backend_without_its_settings_names_them(tmp_path: Path, data: Path) -> None:
    config = agent_config(AgentType.ACCOUNT, "account", free_port(), **{"account-backend": "ldap"})
    path = write(config, tmp_path / "a.toml")
    findings = [
        f
        for f in check_config(Target("account", path, data), timeout=FAST)
        if f.check == "backend.ldap"
    ]
    assert {f.message.split(" ")[1] for f in findings} == {
        "ldap-url",
        "ldap-bind-dn",
        "ldap-base-dn",
    }
    assert all(f.status is Status.FAIL and " extra -c " in f.fix for f in findings)


@pytest.mark.parametrize(
    ("offset", "status", "word"),
    [
        (-120.0, Status.FAIL, "behind"),
        (-20.0, Status.WARN, "behind"),
        (90.0, Status.FAIL, "ahead of"),
    ],
)
def test_clock_skew_is_read_from_the_peers_date_header(
    tmp_path: Path, data: Path, offset: float, status: Status, word: str
) -> None:
    with date_server(offset) as url:
        upper = Service(agent_config(AgentType.INSTANCE, "instance", 0).service)
        invite = upper.add_client("scheduler", "127.0.0.1")
        service = Service(agent_config(AgentType.SCHEDULER, "scheduler", free_port()).service)
        service.add_server(replace(invite, url=url))
        config = agent_config(AgentType.SCHEDULER, "scheduler", 0)
        path = write(replace(config, service=service.config), tmp_path / "s.toml")
        findings = check_config(Target("scheduler", path, data), timeout=FAST)
    assert only(findings, "peer.instance").status is Status.OK  # a 400: address admitted
    clock = only(findings, "clock.instance")
    assert clock.status is status
    assert f"{abs(offset):.0f} s {word} ours" in clock.message
    assert "timedatectl" in clock.fix


def test_a_peer_in_step_passes_the_clock_check(tmp_path: Path, data: Path) -> None:
    with date_server(0.0) as url:
        upper = Service(agent_config(AgentType.INSTANCE, "instance", 0).service)
        invite = upper.add_client("scheduler", "127.0.0.1")
        service = Service(agent_config(AgentType.SCHEDULER, "scheduler", free_port()).service)
        service.add_server(replace(invite, url=url))
        config = agent_config(AgentType.SCHEDULER, "scheduler", 0)
        path = write(replace(config, service=service.config), tmp_path / "s.toml")
        findings = check_config(Target("scheduler", path, data), timeout=FAST)
    assert only(findings, "clock.instance").status is Status.OK


def test_json_output_parses(tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(agent_config(AgentType.PORTAL, "portal", free_port()), tmp_path / "p.toml")
    path.chmod(0o640)
    status = main(["doctor", str(path), "--data-dir", str(data), "--json", "--timeout", str(FAST)])
    items = json.loads(capsys.readouterr().out)
    assert status == 1
    assert all(set(item) >= {"check", "agent", "status", "message", "fix"} for item in items)
    mode = next(item for item in items if item["check"] == "config.mode")
    assert mode["status"] == "fail" and mode["agent"] == "portal" and mode["fixable"] is True
    assert {item["status"] for item in items} <= {"ok", "warn", "fail"}
