"""A whole site as real processes: configured with the CLI, run with ``broadgauge <role> run``.

Seven agents, one process each, linked as a site links them (an arrow points from the agent
that dials to the one that listens)::

    bridge ─▶ portal ◀─ provider ◀─ platform ◀─ instance ◀─ account    (local SQLite directory)
                                                        ◀─ filesystem (sandbox; ids from
                                                                       the account directory)
                                                        ◀─ scheduler  (SQLite ledger)

Every config is written by the command line the way an operator would do it
(``broadgauge <role> init -c FILE``, ``client --add``, ``server --add``, ``extra``), into a
temporary directory that is also the agents' HOME and XDG directories, so nothing outside
it is read or written.  Each agent keeps its boards in its own ``--data-dir``; the backends'
files (directory, sandbox, ledger) are named with ``extra`` so the test can read them.

The bridge is not a process: it is an :class:`~broadgauge.runtime.agent.Agent` in the test's
event loop (configured with the same CLI), dialling the portal with short reconnect timers.
The CLI's ``run`` uses the default timers (reconnect backoff from 0.5 s, doubling, with
jitter), which is what the restarted agents' neighbours use to find them again.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterable
from contextlib import closing
from pathlib import Path

from broadgauge.cli import main
from broadgauge.cli.roles import ROLES_BY_NAME
from broadgauge.jobs.agent_type import AgentType
from broadgauge.jobs.health import HealthInfo
from broadgauge.jobs.job import Job
from broadgauge.runtime.agent import Agent, JobFailed
from broadgauge.runtime.config import AgentConfig
from broadgauge.runtime.store import DB_FILENAME, BoardStore
from broadgauge.wire import Timers
from tests.cli.processes import Broadgauge, free_port

#: (agent, the agents it dials); the bridge (in the test process) dials the portal.
TOPOLOGY: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("portal", ()),
    ("provider", ("portal",)),
    ("platform", ("provider",)),
    ("instance", ("platform",)),
    ("account", ("instance",)),
    ("filesystem", ("instance",)),
    ("scheduler", ("instance",)),
)
#: Started level by level, so that nobody's first dial meets a closed port (and backs off).
LEVELS: tuple[tuple[str, ...], ...] = (
    ("portal",),
    ("provider",),
    ("platform",),
    ("instance",),
    ("account", "filesystem", "scheduler"),
)
AGENTS = tuple(name for name, _ in TOPOLOGY)
PATH = "portal.provider.platform.instance"
#: The in-test bridge redials fast; the processes use the CLI's defaults (0.5 s, doubling).
BRIDGE_TIMERS = Timers(reconnect_initial=0.05, reconnect_max=1.0)
START_TIMEOUT = 15.0
LOG_TAIL = 80


def _type(name: str) -> str:
    return ROLES_BY_NAME[name].agent_type.value


def neighbours(name: str) -> list[str]:
    """Every agent linked to ``name``, either way (the portal's include the bridge)."""
    found = [upper for agent, uppers in TOPOLOGY if agent == name for upper in uppers]
    found += [agent for agent, uppers in TOPOLOGY if name in uppers]
    if name == "portal":
        found.append("bridge")
    return found


def everyone(tree: HealthInfo) -> dict[str, HealthInfo]:
    """Every agent in a health sweep (``Agent.health()``), by name: the tree flattened."""
    found = {tree.name: tree}
    for peer in tree.peers.values():
        found.update(everyone(peer))
    return found


def registered(me: str, peer: str) -> str:
    """The line ``me`` logs once ``peer``'s Register has arrived over an authenticated link."""
    kind = AgentType.BRIDGE.value if peer == "bridge" else _type(peer)
    return f"{me}: {peer}@default registered as {kind}"


class Site:
    """The configs, data directories and processes of one site under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.directory = root / "backends" / "directory.sqlite3"
        self.sandbox = root / "backends" / "sandbox"
        self.ledger = root / "backends" / "ledger.sqlite3"
        self.env = {
            **os.environ,
            "HOME": str(root),
            "XDG_CONFIG_HOME": str(root / "xdg-config"),
            "XDG_DATA_HOME": str(root / "xdg-data"),
        }
        #: Every process started for each agent, oldest first (a restart adds one).
        self.processes: dict[str, list[Broadgauge]] = {}
        #: Extra environment for one agent's processes (``faketime``'s, say), by agent.
        self.agent_env: dict[str, dict[str, str]] = {}
        self.bridge: Agent | None = None
        #: The in-test bridge's clock (an injected one runs it ahead or behind).
        self.bridge_clock: Callable[[], float] = time.time

    # --- where things are ------------------------------------------------------------

    def config(self, name: str) -> Path:
        """The agent's config file (``-c``)."""
        return self.root / "config" / f"{name}.toml"

    def data_dir(self, name: str) -> Path:
        """The agent's ``--data-dir`` (boards, outbox, execution markers, audit log)."""
        return self.root / "data" / name

    def current(self, name: str) -> Broadgauge:
        """The newest process of agent ``name``."""
        return self.processes[name][-1]

    # --- configuring, with the CLI -----------------------------------------------------

    def cli(self, *args: str) -> None:
        """Run one ``broadgauge`` command in-process, as test_role_run does."""
        status = main(list(args))
        assert status == 0, f"broadgauge {' '.join(args)} exited with {status}"

    def configure(self) -> None:
        """``init`` every agent, link each to the agents it dials, set the backends."""
        (self.root / "invites").mkdir(parents=True)
        self.directory.parent.mkdir(parents=True)
        for name in (*AGENTS, "bridge"):
            self.cli(name, "init", "-c", str(self.config(name)), "-p", str(free_port()))
        links = [(name, upper) for name, uppers in TOPOLOGY for upper in uppers]
        for lower, upper in [*links, ("bridge", "portal")]:
            invite = self.root / "invites" / f"{lower}-to-{upper}.toml"
            self.cli(
                upper, "client", "-c", str(self.config(upper)),
                "--add", lower, "--ip", "127.0.0.1", "--invitation", str(invite),
            )  # fmt: skip
            self.cli(lower, "server", "-c", str(self.config(lower)), "--add", str(invite))
        for name, settings in self.backend_extras().items():
            for key, value in settings.items():
                self.cli(name, "extra", "-c", str(self.config(name)), "-k", key, "-v", value)

    def backend_extras(self) -> dict[str, dict[str, str]]:
        """Each leaf agent's ``extra`` settings: its embedded backend and that backend's file."""
        return {
            "account": {"account-backend": "local", "directory": str(self.directory)},
            "filesystem": {
                "sandbox": str(self.sandbox),
                # The sandbox's users are not in /etc/passwd: take uids from the directory.
                "id-resolver": f"directory:{self.directory}",
            },
            "scheduler": {"scheduler-backend": "ledger", "ledger": str(self.ledger)},
        }

    # --- running -----------------------------------------------------------------------

    async def start(self, name: str) -> Broadgauge:
        """``broadgauge <name> run -c … --data-dir …``; return once it listens."""
        process = Broadgauge(
            name, "run", "-c", str(self.config(name)), "--data-dir", str(self.data_dir(name)),
            env={**self.env, **self.agent_env.get(name, {})}, cwd=self.root,
        )  # fmt: skip
        self.processes.setdefault(name, []).append(process)
        listening = f"{name} ({_type(name)}) listening on"
        await asyncio.to_thread(process.wait_for, listening, START_TIMEOUT)
        return process

    async def wait_linked(self, names: Iterable[str], timeout: float = START_TIMEOUT) -> None:
        """Wait until each of ``names`` has seen every neighbour's Register (newest process)."""
        waits = []
        for name in names:
            for peer in neighbours(name):
                if peer == "bridge" and self.bridge is None:
                    continue
                line = registered(name, peer)
                waits.append(asyncio.to_thread(self.current(name).wait_for, line, timeout))
        await asyncio.gather(*waits)

    async def start_all(self) -> None:
        """Every agent, level by level, then the bridge; return when all links are up."""
        for level in LEVELS:
            await asyncio.gather(*(self.start(name) for name in level))
        await self.start_bridge()
        await self.wait_linked(AGENTS)

    async def start_bridge(self) -> Agent:
        """The bridge: an in-test agent from the CLI-written config, with its own boards."""
        config = AgentConfig.load(self.config("bridge"))
        self.bridge = Agent(
            config, data_dir=self.data_dir("bridge"), timers=BRIDGE_TIMERS, clock=self.bridge_clock
        )
        await self.bridge.start(listen=False)
        await self.bridge.peer_of_type(AgentType.PORTAL, wait=START_TIMEOUT)
        return self.bridge

    async def submit(self, instruction: str, timeout: float) -> Job:
        """Send ``instruction`` to the instance as portal software does: via the bridge."""
        assert self.bridge is not None
        return await self.bridge.run("bridge.portal", f"submit {PATH} {instruction}", timeout)

    def freeze(self, name: str) -> None:
        """SIGSTOP the agent's process: it holds whatever it was doing, its links stay open."""
        process = self.current(name)
        assert process.process.poll() is None, f"{name} had already exited:\n{process.output}"
        os.kill(process.process.pid, signal.SIGSTOP)

    def kill(self, name: str) -> None:
        """SIGKILL the agent's process (no clean-up of any kind) and reap it."""
        process = self.current(name)
        assert process.process.poll() is None, f"{name} had already exited:\n{process.output}"
        os.kill(process.process.pid, signal.SIGKILL)
        status = process.finish(timeout=10)
        assert status == -signal.SIGKILL, f"{name} exited with {status}, not by SIGKILL"

    async def stop(self) -> dict[str, int]:
        """Stop the bridge, then SIGTERM every agent (leaves first); their exit statuses."""
        if self.bridge is not None:
            await self.bridge.stop()
            self.bridge = None
        statuses = {}
        for name in reversed(AGENTS):
            if name in self.processes and self.current(name).process.poll() is None:
                statuses[name] = await asyncio.to_thread(self.current(name).terminate)
        return statuses

    def kill_leftovers(self) -> None:
        """SIGKILL any process of ours still running (after a failure)."""
        for started in self.processes.values():
            for process in started:
                process.kill()

    # --- reading what happened -----------------------------------------------------------

    def logs(self, tail: int = LOG_TAIL) -> str:
        """The last ``tail`` lines of every process's output; full logs go to ``root/logs``."""
        folder = self.root / "logs"
        folder.mkdir(exist_ok=True)
        parts = []
        for name, started in self.processes.items():
            for generation, process in enumerate(started, start=1):
                text = process.output
                (folder / f"{name}-{generation}.log").write_text(text + "\n", encoding="utf-8")
                lines = text.splitlines()
                status = process.process.poll()
                parts.append(
                    f"===== {name} (process {generation}, pid {process.process.pid}, "
                    f"exit {status}; last {min(tail, len(lines))} of {len(lines)} lines) ====="
                )
                parts.extend(lines[-tail:])
        parts.append(f"(full logs in {folder})")
        return "\n".join(parts)

    def unfinished(self) -> str:
        """Every job still unfinished on any agent's boards (where a lost job is stuck)."""
        lines = []
        for name in ("bridge", *AGENTS):
            if not (self.data_dir(name) / DB_FILENAME).exists():
                continue
            with closing(BoardStore(self.data_dir(name))) as store:
                boards = store.load_all()
            for peer, jobs in boards.items():
                for job in jobs:
                    if not job.is_finished:
                        lines.append(
                            f"  {name}, on its board with {peer}: {job.id} {job.state.value} "
                            f"v{job.version} {job.destination} {job.instruction}"
                        )
        return "\n".join(
            ["unfinished jobs on the boards:", *lines] if lines else ["no unfinished jobs"]
        )

    def audit(self, name: str) -> list[dict[str, object]]:
        """Every entry of the agent's audit log (a torn line is skipped: verify reports it)."""
        path = self.data_dir(name) / "audit.jsonl"
        entries = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                entries.append(json.loads(line))
            except ValueError:
                continue
        return entries

    def operations(self, name: str) -> list[str]:
        """Every backend operation the agent's audit log recorded (``created user …``)."""
        return [
            str(entry["operation"])
            for entry in self.audit(name)
            if entry.get("action") == "operation" and entry.get("operation")
        ]

    def resumed(self, name: str) -> int:
        """How many jobs the agent ran again after a restart (cut off mid-run by the kill)."""
        return sum(1 for entry in self.audit(name) if entry.get("action") == "resumed")


class Bulk:
    """``add_user`` for many users through the bridge, ``concurrency`` at a time.

    A job that ends in error or expires is resubmitted, as portal software does: the portal
    only knows what the bridge told it, and OpenPortal instructions are idempotent by design
    (``add_user`` of an existing user returns its mapping and changes nothing), so the way to
    make sure an instruction took effect is to send it again until it completes.  At-least-once
    delivery on top of idempotent handlers is what gives an exactly-once *effect*; the test
    checks that effect on the backends, not the number of attempts.

    A resubmission only helps once the original is *finished* (or expired): while the
    original is still Pending on a board, the boards' duplicate rule (same instruction, same
    last hop) turns the new job into a duplicate that waits for the original's result.  So a
    job the network lost cannot be rescued by sending it again before it expires (120 s);
    the test then fails with the unfinished jobs listed, which is the point.
    """

    def __init__(
        self,
        site: Site,
        users: list[str],
        *,
        concurrency: int,
        attempt_timeout: float,
        max_attempts: int = 4,
        retry_pause: float = 0.5,
    ) -> None:
        self.site = site
        self.users = users
        self.attempt_timeout = attempt_timeout
        self.max_attempts = max_attempts
        self.retry_pause = retry_pause
        self._slots = asyncio.Semaphore(concurrency)
        self.finished: dict[str, Job] = {}
        #: (user, attempt, why it had to be sent again)
        self.resubmitted: list[tuple[str, int, str]] = []
        self._progress = asyncio.Condition()

    async def run(self) -> None:
        """Onboard every user (raises if one never completes)."""
        await asyncio.gather(*(self._one(user) for user in self.users))

    async def completed(self, count: int) -> None:
        """Return once at least ``count`` users have completed."""
        async with self._progress:
            await self._progress.wait_for(lambda: len(self.finished) >= count)

    async def _one(self, user: str) -> None:
        async with self._slots:
            for attempt in range(1, self.max_attempts + 1):
                try:
                    job = await self.site.submit(f"add_user {user}", self.attempt_timeout)
                except JobFailed as exc:  # JobExpired (no answer in time) is a JobFailed too
                    self.resubmitted.append((user, attempt, str(exc)))
                    await asyncio.sleep(self.retry_pause)
                    continue
                async with self._progress:
                    self.finished[user] = job
                    self._progress.notify_all()
                return
        raise AssertionError(f"add_user {user} did not complete in {self.max_attempts} attempts")

    def summary(self) -> str:
        """How many attempts it took, and why jobs were sent again."""
        reasons = Counter(reason for _, _, reason in self.resubmitted)
        lines = [f"{len(self.finished)}/{len(self.users)} completed, {len(reasons)} kinds of error"]
        lines += [f"  resubmitted {n}x after: {reason}" for reason, n in reasons.most_common()]
        return "\n".join(lines)
