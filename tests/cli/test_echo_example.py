"""Example 1 run the way the docs tell a newcomer to: two processes and an invite file."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from .processes import BROADGAUGE, run_broadgauge


def test_echo_server_and_client_in_two_processes(tmp_path: Path) -> None:
    invitation = tmp_path / "invite.toml"
    server = subprocess.Popen(
        [*BROADGAUGE, "example", "echo", "--hops", "6", "server", "--invitation", str(invitation)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while not invitation.exists():
            assert server.poll() is None, server.communicate()
            assert time.monotonic() < deadline, "server never wrote its invite"
            time.sleep(0.05)
        assert invitation.stat().st_mode & 0o777 == 0o600
        client = run_broadgauge(
            "example", "echo", "--hops", "6", "client", "--invitation", str(invitation)
        )
        server_out, server_err = server.communicate(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
    assert client.returncode == 0, client.stderr
    assert server.returncode == 0, server_err
    assert "[client] sending 1 to server" in client.stdout
    assert "[server] received 5 from client" in server_out
    assert "[client] received 6 from server" in client.stdout
    assert client.stdout.rstrip().endswith("[client] done")
    assert server_out.rstrip().endswith("[server] done")


def test_echo_in_one_process_is_the_readme_command() -> None:
    result = run_broadgauge("example", "echo", "--hops", "3")
    assert result.returncode == 0, result.stderr
    hops = [line for line in result.stdout.splitlines() if "received" in line]
    assert hops == [
        "[server] received 1 from client",
        "[client] received 2 from server",
        "[server] received 3 from client",
    ]


def test_client_with_a_missing_invite_fails_clearly(tmp_path: Path) -> None:
    result = run_broadgauge(
        "example", "echo", "client", "--invitation", str(tmp_path / "nope.toml")
    )
    assert result.returncode == 1
    assert "cannot read invite" in result.stderr
