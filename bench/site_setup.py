"""Setting up a site: commands and wall time from nothing to a first completed ``add_user``.

    python bench/site_setup.py [--repeat 3]

Prints numbers, asserts nothing.  The site is the quickstart's (docs/operators/quickstart.md):
eight agents on three hosts, here three folders on loopback (web: bridge, portal; hub:
provider, platform; cluster: instance, account, filesystem, scheduler), embedded back ends.
Each flow starts from an empty folder and ends when ``add_project`` and ``add_user`` sent
through the bridge's HTTP API (``broadgauge.client``) come back Complete.  Commands are run
one after another with no think time, so the wall time is the machines' share only: what a
person spends reading and typing comes on top, and grows with the number of commands.

* **before**: the per-role commands, as docs/examples/cli.md and agents.md teach them, for
  all eight agents: ``<role> init`` (8), ``client --add`` and ``server --add`` per link (14),
  the filesystem's ``extra -k id-resolver`` (the step the docs never mentioned), the bridge's
  ``bridge --client-file``, one ``<role> run`` per agent (8), and the add_user script (1).
* **after**: ``site init topology.toml`` (1), one ``sh site/<host>/run.sh`` per host (3), and
  the add_user script (1).

Both flows write the same configs (the same ports, picked free at the start) and start the
same agents.  The add_user step retries until the bridge answers (the agents are linking up)
and counts as one command.  On real hosts, "before" also copies 2 invites between hosts
(provider → portal and instance → platform cross hosts), and "after" copies 3 folders.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "docs" / "operators" / "quickstart.md"
BROADGAUGE = [sys.executable, "-m", "broadgauge"]
PATH = "portal.provider.platform.instance"
#: (name, which is also its role; its host; the agent it dials)
AGENTS = (
    ("portal", "web", None),
    ("bridge", "web", "portal"),
    ("provider", "hub", "portal"),
    ("platform", "hub", "provider"),
    ("instance", "cluster", "platform"),
    ("account", "cluster", "instance"),
    ("filesystem", "cluster", "instance"),
    ("scheduler", "cluster", "instance"),
)


def free_port() -> int:
    """A TCP port that was free a moment ago on loopback."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def example_topology() -> str:
    """The quickstart's topology.toml block."""
    text = QUICKSTART.read_text(encoding="utf-8")
    after = text.split("<!-- quickstart-test: file topology.toml -->", 1)[1]
    return after.split("```toml\n", 1)[1].split("```", 1)[0]


class Flow:
    """One run from an empty folder: commands run, processes started, the clock."""

    def __init__(self, root: Path, ports: dict[str, int]) -> None:
        self.root = root
        self.ports = ports
        self.commands = 0
        self.processes: list[subprocess.Popen[bytes]] = []
        self.env = {
            **os.environ,
            "HOME": str(root),
            "XDG_CONFIG_HOME": str(root / "x"),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        }

    def run(self, *args: str, cwd: Path | None = None) -> None:
        self.commands += 1
        subprocess.run(
            args, cwd=cwd or self.root, env=self.env, check=True, stdout=subprocess.DEVNULL
        )

    def broadgauge(self, *args: str, cwd: Path | None = None) -> None:
        self.run(*BROADGAUGE, *args, cwd=cwd)

    def start(self, *args: str, cwd: Path | None = None) -> None:
        self.commands += 1
        self.processes.append(
            subprocess.Popen(
                args,
                cwd=cwd or self.root,
                env=self.env,
                start_new_session=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )

    def add_user(self, client_file: Path, timeout: float = 60.0) -> None:
        """add_project and add_user through the bridge, retried until the network answers."""
        import broadgauge.client as op
        from broadgauge.client import BridgeError

        self.commands += 1
        op.load_config(client_file)
        deadline = time.monotonic() + timeout
        for instruction in ("add_project physics.portal", "add_user alice.physics.portal"):
            while True:
                try:
                    job = op.run(f"{PATH} {instruction}", max_ms=30000)
                    if job.is_finished and not job.is_error:
                        break
                except (BridgeError, OSError):
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{instruction} never completed")
                time.sleep(0.05)

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def before(flow: Flow) -> None:
    """The per-role commands."""
    root, ports = flow.root, flow.ports
    config = {name: root / host / f"{name}.toml" for name, host, _ in AGENTS}
    for name, host, _ in AGENTS:
        (root / host).mkdir(parents=True, exist_ok=True)
        port = str(ports.get(name, free_port()))
        extra = ["-q", str(ports["http"]), "-r", f"http://127.0.0.1:{ports['http']}"]
        flow.broadgauge(
            name, "init", "-c", str(config[name]), "-p", port, *(extra if name == "bridge" else [])
        )
    for name, host, upper in AGENTS:
        if upper is None:
            continue
        invite = root / host / f"invite_{name}.toml"
        flow.broadgauge(
            upper,
            "client",
            "-c",
            str(config[upper]),
            "--add",
            name,
            "--ip",
            "127.0.0.1",
            "--invitation",
            str(invite),
        )
        flow.broadgauge(name, "server", "-c", str(config[name]), "--add", str(invite))
    directory = root / "cluster" / "account" / "directory.sqlite3"
    flow.broadgauge(
        "filesystem",
        "extra",
        "-c",
        str(config["filesystem"]),
        "-k",
        "id-resolver",
        "-v",
        f"directory:{directory}",
    )
    client_file = root / "web" / "client.toml"
    flow.broadgauge(
        "bridge", "bridge", "-c", str(config["bridge"]), "--client-file", str(client_file)
    )
    for name, host, _ in AGENTS:
        flow.start(
            *BROADGAUGE, name, "run", "-c", str(config[name]), "--data-dir", str(root / host / name)
        )
    flow.add_user(client_file)


def after(flow: Flow) -> None:
    """The topology file and ``site init``."""
    root, ports = flow.root, flow.ports
    by_number = {
        "8040": "portal",
        "8041": "provider",
        "8045": "platform",
        "8046": "instance",
        "3000": "http",
    }
    text = re.sub(
        r"(?m)^(port = )(\d+)", lambda m: m[1] + str(ports[by_number[m[2]]]), example_topology()
    )
    (root / "topology.toml").write_text(text)
    flow.broadgauge("site", "init", "topology.toml")
    for host in ("web", "hub", "cluster"):
        flow.start("sh", f"site/{host}/run.sh")
    flow.add_user(root / "site" / "web" / "bridge" / "client.toml")


def measure(kind: str) -> tuple[int, float]:
    """Commands and seconds for one run of the flow ``kind``."""
    ports = {n: free_port() for n in ("portal", "provider", "platform", "instance", "http")}
    with tempfile.TemporaryDirectory(prefix=f"bg-site-{kind}-") as tmp:
        started = time.perf_counter()
        flow = Flow(Path(tmp), ports)
        try:
            (before if kind == "before" else after)(flow)
            seconds = time.perf_counter() - started
        finally:
            flow.stop()
    return flow.commands, seconds


def main() -> None:
    """Run both flows ``--repeat`` times; print commands and median wall time."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"site setup, 8 agents on 3 hosts (folders on loopback), {args.repeat} runs each")
    for kind in ("before", "after"):
        runs = [measure(kind) for _ in range(args.repeat)]
        times = sorted(seconds for _, seconds in runs)
        print(
            f"  {kind:<7} {runs[0][0]:>3} commands   wall time to a completed add_user: "
            f"median {statistics.median(times):.1f} s (min {times[0]:.1f}, max {times[-1]:.1f})"
        )


if __name__ == "__main__":
    main()
