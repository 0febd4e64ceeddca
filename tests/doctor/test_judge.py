"""What the probes' answers mean, without a network: the pure judgements and the report."""

from __future__ import annotations

from pathlib import Path

from broadgauge.doctor import judge
from broadgauge.doctor.findings import Repair, Report, Status, fail, ok, warn
from broadgauge.doctor.probes import Bind, Holder, HttpAnswer, parse_head
from broadgauge.jobs.agent_type import AgentType
from broadgauge.wire import Service

from .helpers import agent_config


def test_an_http_head_is_read_with_its_date() -> None:
    head = (
        b"HTTP/1.1 400 Bad Request\r\nDate: Sun, 06 Dec 2026 14:00:00 GMT\r\n"
        b"Connection: close\r\n\r\nBad Request\n"
    )
    answer = parse_head(head, received=0.0)
    assert (answer.status, answer.reason) == (400, "Bad Request")
    assert answer.date == 1796565600.0
    assert parse_head(b"SSH-2.0-OpenSSH_9.6\r\n", 0.0).status is None


def test_the_clock_is_judged_from_the_middle_of_the_date_second() -> None:
    def skew(seconds: float) -> Status:
        answer = HttpAnswer(True, status=400, date=1000.0 + seconds, received=1000.5)
        finding = judge.clock("a", "peer", answer)
        assert finding is not None
        return finding.status

    assert skew(0) is Status.OK
    assert skew(-5) is Status.OK and skew(-6) is Status.WARN
    assert skew(60) is Status.WARN and skew(61) is Status.FAIL
    assert judge.clock("a", "peer", HttpAnswer(False, "refused")) is None
    no_date = judge.clock("a", "peer", HttpAnswer(True, status=400))
    assert no_date is not None and no_date.status is Status.WARN


def test_a_peer_that_refuses_this_address_fails_only_when_the_doctor_runs_on_its_host(
    tmp_path: Path,
) -> None:
    config = agent_config(AgentType.SCHEDULER, "scheduler", 8048)
    invite = Service(agent_config(AgentType.INSTANCE, "instance", 8046).service).add_client(
        "scheduler", "10.0.0.7"
    )
    entry = Service(config.service)
    entry.add_server(invite)
    (server,) = entry.config.servers
    refused = HttpAnswer(True, status=403, reason="Forbidden")
    here = judge.peer("s", config, tmp_path / "s.toml", server, refused, here_is_host=True)
    away = judge.peer("s", config, tmp_path / "s.toml", server, refused, here_is_host=False)
    assert (here.status, away.status) == (Status.FAIL, Status.WARN)
    assert "refuses this host's address" in here.message and "--rotate" in here.fix
    other = judge.peer(
        "s", config, tmp_path / "s.toml", server, HttpAnswer(True, status=200), here_is_host=True
    )
    assert other.status is Status.WARN and "does not answer as an agent" in other.message


def test_who_holds_a_port_is_told_by_its_command_line(tmp_path: Path) -> None:
    path = tmp_path / "portal.toml"
    config = agent_config(AgentType.PORTAL, "portal", 8040)
    mine = Holder(41, "python broadgauge portal run -c portal.toml", str(tmp_path))
    other = Holder(42, "python broadgauge portal run -c /etc/other.toml", "/")
    stranger = Holder(43, "nginx: master process", "/")
    assert judge.runs_config(mine, path) is True
    assert judge.runs_config(other, path) is False
    assert judge.runs_config(stranger, path) is None
    in_use = Bind("in-use")

    def port(holder: Holder, answer: HttpAnswer | None) -> Status:
        finding = judge.own_port(
            "p", config, path, bind=in_use, answer=answer, holder=holder, locked=None
        )
        return finding.status

    assert port(mine, None) is Status.OK
    assert port(other, HttpAnswer(True, status=400)) is Status.FAIL  # another agent's port
    assert port(stranger, HttpAnswer(True, status=400)) is Status.OK  # answers as an agent
    assert port(stranger, HttpAnswer(True, status=200)) is Status.FAIL
    not_here = judge.own_port(
        "p", config, path, bind=Bind("not-local"), answer=None, holder=None, locked=None
    )
    assert not_here.status is Status.FAIL and "not an address of this machine" in not_here.message


def test_the_report_counts_and_exits_by_what_is_left_failing(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    target.chmod(0o644)
    report = Report()
    report.extend(
        [
            ok("a", "x", "fine"),
            warn("b", "x", "look"),
            fail("c", "x", "broken", "chmod 600 file", Repair("chmod", target, 0o600)),
        ]
    )
    assert report.exit_status == 1
    assert report.text_lines()[-1] == "1 ok, 1 warn, 1 fail; 1 fixable with --fix"
    assert report.apply_repairs() == [f"fixed (x c): chmod 600 {target}"]
    assert target.stat().st_mode & 0o777 == 0o600
    assert report.exit_status == 0
    assert report.to_json()[2]["fixed"] is True and "fixed" not in report.to_json()[0]
