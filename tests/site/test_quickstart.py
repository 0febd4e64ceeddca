"""The quickstart's commands, run as written: docs/operators/quickstart.md cannot drift.

The test takes the fenced blocks of the page (see :mod:`tests.site.markdown` for the markers)
and, in a temporary folder on loopback:

* writes ``topology.toml`` and ``add_user.py`` from their blocks, and appends the second
  cluster's block when the page does;
* runs every ``sh`` block with ``sh -e -c`` as written, with this checkout's ``broadgauge``
  and ``python3`` first on ``PATH``; starts the ``background`` ones (each host's ``run.sh``)
  as process groups and leaves them running; stops and starts again the ``restart`` one;
* before each foreground command after a background one, waits until every link of the
  topology has logged its registration (what a person watching the terminals waits for);
* checks each ``output`` block against what the command before it printed.

**The one rewrite:** every ``port = N`` in the TOML blocks gets a port that is free now
(each distinct N one new port, the same in every block), so that the test never collides with
anything else on the machine.  All hosts are 127.0.0.1 in the page itself.

Every process the test starts is stopped by its process group id (the ``run.sh`` shell and
the agents it started), even when the test fails.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from broadgauge.site.topology import load_topology
from tests.cli.processes import free_port
from tests.site.markdown import Block, blocks

COMMAND_TIMEOUT = 120.0
LINK_TIMEOUT = 60.0
_PORT = re.compile(r"^(\s*port\s*=\s*)(\d+)", re.MULTILINE)


class Background:
    """A ``sh -c`` command run in its own process group, its output in a file."""

    def __init__(self, command: str, cwd: Path, env: dict[str, str], index: int) -> None:
        self.command = command
        self.log = cwd / f"background-{index}.log"
        with self.log.open("w") as out:
            self.process = subprocess.Popen(
                ["sh", "-c", command],
                cwd=cwd,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: we stop it and its agents together
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        """SIGTERM the group (run.sh traps it and stops its agents); SIGKILL if it lingers."""
        if self.process.poll() is not None:
            return
        with _suppress_missing():
            os.killpg(self.process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=20)
        with _suppress_missing():
            # Agents that outlived their shell are still in the group.
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)


class _suppress_missing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: object, tb: object) -> bool:
        return isinstance(exc, ProcessLookupError)


class Reader:
    """Runs the page's blocks in order, in ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        bindir = str(Path(sys.executable).parent)
        self.env = {
            **os.environ,
            "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
            "HOME": str(root),
            "XDG_CONFIG_HOME": str(root / "xdg-config"),
            "XDG_DATA_HOME": str(root / "xdg-data"),
        }
        self.ports: dict[str, str] = {}
        self.background: list[Background] = []
        self.last_output = ""
        self.links_pending = False
        self.skipped: list[str] = []
        #: command -> what it printed, for every foreground sh block run
        self.outputs: dict[str, str] = {}

    def rewrite_ports(self, text: str) -> str:
        def fresh(match: re.Match[str]) -> str:
            port = self.ports.setdefault(match.group(2), str(free_port()))
            return match.group(1) + port

        return _PORT.sub(fresh, text)

    def run(self, block: Block) -> None:
        if block.marker in ("file", "append"):
            path = self.root / block.argument
            text = self.rewrite_ports(block.text) if block.lang == "toml" else block.text
            with path.open("w" if block.marker == "file" else "a", encoding="utf-8") as out:
                out.write(text)
            return
        if block.marker == "output":
            self.check_output(block)
            return
        if block.lang != "sh":
            return
        if block.marker == "skip":
            self.skipped.append(block.text.strip())
            return
        if block.marker == "background":
            self.start(block.text)
        elif block.marker == "restart":
            for earlier in self.background:
                if earlier.command == block.text:
                    earlier.stop()
            self.start(block.text)
        else:
            self.wait_for_links()
            self.foreground(block)

    def start(self, command: str) -> None:
        self.background.append(Background(command, self.root, self.env, len(self.background)))
        self.links_pending = True

    def foreground(self, block: Block) -> None:
        done = subprocess.run(
            ["sh", "-e", "-c", block.text],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
        self.last_output = done.stdout + done.stderr
        self.outputs[block.text.strip()] = self.last_output
        assert done.returncode == 0, (
            f"quickstart.md line {block.line}: {block.text!r} exited {done.returncode}:\n"
            f"{self.last_output}\n{self.logs()}"
        )

    def check_output(self, block: Block) -> None:
        for line in block.text.splitlines():
            expected = line.strip()
            if expected and expected != "...":
                assert expected in self.last_output, (
                    f"quickstart.md line {block.line}: {expected!r} is not in what the "
                    f"command printed:\n{self.last_output}"
                )

    def wait_for_links(self) -> None:
        """Until each listening agent logged each link's registration (newest processes)."""
        if not self.links_pending:
            return
        topology = load_topology(self.root / "topology.toml")
        deadline = time.monotonic() + LINK_TIMEOUT
        missing: list[str] = []
        while time.monotonic() < deadline:
            missing = []
            for link in topology.links:
                upper, lower = topology.agent(link.listens), topology.agent(link.dials)
                line = f"{upper.name}: {lower.name}@default registered as {lower.role.value}"
                if line not in self.host_output(upper.host):
                    missing.append(line)
            if not missing:
                self.links_pending = False
                return
            time.sleep(0.2)
        raise AssertionError(f"links never came up: {missing}\n{self.logs()}")

    def host_output(self, host: str) -> str:
        """The log of the newest background process that runs ``host``'s agents."""
        for process in reversed(self.background):
            if f"site/{host}/run.sh" in process.command:
                return process.output()
        return ""

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.command.strip()} (exit {p.process.poll()}):\n{p.output()[-4000:]}"
            for p in self.background
        )

    def stop_all(self) -> None:
        for process in reversed(self.background):
            process.stop()


def test_the_quickstart_runs_as_written(tmp_path: Path) -> None:
    reader = Reader(tmp_path)
    try:
        for block in blocks():
            reader.run(block)
    finally:
        reader.stop_all()
    # The page's path really was walked: configs written, agents started, users added on
    # both clusters, keys rotated.
    assert len(reader.background) == 5  # web, hub, cluster, hub again, cluster2
    second = reader.outputs["python3 add_user.py portal.provider.platform.instance2"]
    assert "add_user alice.physics.portal: alice.physics.portal:alice.physics:" in second
    assert (
        "rotated instance2 → platform"
        in reader.outputs["broadgauge site init topology.toml --rotate"]
    )
    for process in reader.background:
        assert process.process.poll() is not None, f"{process.command} is still running"
    # Each host folder holds exactly its agents' configs, private.
    site = tmp_path / "site"
    assert sorted(p.name for p in site.iterdir()) == ["cluster", "cluster2", "hub", "web"]
    for config in site.glob("*/*/config.toml"):
        assert config.stat().st_mode & 0o777 == 0o600, config
