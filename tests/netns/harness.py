"""A Broadgauge site on separate hosts, on one machine: one network namespace per agent.

The site is :mod:`tests.agents_crash.site`'s, configured the same way with the CLI and run
the same way (``broadgauge <role> run``), with three differences:

* **Each agent is on a host of its own.**  :class:`~tests.netns.namespaces.Hosts` makes a
  namespace per agent, joined to a switch namespace by a veth link, with addresses in
  198.18.0.0/24 (RFC 2544's benchmarking range, used only inside those namespaces).  Every
  agent is started with ``ip netns exec <its namespace>``, listens on its own address, and
  reaches the others only over its link.  Each listening agent's client entries allow
  exactly the dialling agent's address (``client --add NAME --ip ADDRESS``), so the wire
  layer's allowlist is checked against real peer addresses.

* **The bridge is a process too** (``broadgauge bridge run``), on its own host like the
  others, so it can be killed and partitioned like any agent.  Its HTTP API listens on the
  loopback of its namespace, where nothing outside that namespace can reach it; the portal
  software is :mod:`tests.netns.driver`, a small process in the same namespace that calls
  the API with :class:`broadgauge.client.AsyncClient`.  The test talks to the driver over
  its stdin and stdout.  So every endpoint that talks over the fake network is inside a
  namespace the test made, and the root namespace has no 198.18 address at all.

* **Short timers** (:data:`FAULT_TIMERS`, written to each config's ``[timers]`` table):
  a keepalive every second and a link closed after 5 s of silence, so that a partition
  longer than the watchdog takes seconds, not the defaults' five minutes, and a healed link
  is redialled within two seconds.

Faults: :meth:`Network.partition`, :meth:`~Network.heal`, :meth:`~Network.isolate`,
:meth:`~Network.heal_all`, :meth:`~Network.set_loss`, :meth:`~Network.clear_loss` (nftables,
see :mod:`tests.netns.faults`), :meth:`~Network.set_latency` (the latency proxy, on links
chosen when the network is made), :meth:`~Network.kill` and :meth:`~Network.restart`.
Jobs: :meth:`Network.submit` (an instruction for the instance) and
:meth:`Network.run_command` (any command) return the completed Job, or raise ``JobFailed``
(it ended in error, and says why) or ``JobExpired`` (not finished in time), as
:meth:`Site.submit` does, so :class:`~tests.agents_crash.site.Bulk` drives a network too.

Use it as ``async with Network.up(tmp_path) as network:``: every namespace, process and
proxy it made is gone when the block ends, whether the test passed, failed or was
interrupted (and an ``atexit`` hook deletes the namespaces if the interpreter exits first).
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from broadgauge.cli.roles import ROLES_BY_NAME
from broadgauge.jobs.job import Job
from broadgauge.runtime.agent import JobExpired, JobFailed
from broadgauge.runtime.config import AgentConfig
from broadgauge.wire import Invite
from tests.agents_crash.site import AGENTS, PATH, TOPOLOGY, Site, neighbours, registered
from tests.cli.processes import Broadgauge
from tests.netns.child import JsonChild
from tests.netns.driver import READY
from tests.netns.faults import Faults, LatencyLink
from tests.netns.latency_proxy import LatencySettings
from tests.netns.namespaces import Hosts, delete_leftovers

REPO = Path(__file__).resolve().parents[2]
#: Every agent listens on this port of its own address (each host has its own ports).
AGENT_PORT = 8040
#: The bridge's HTTP API, on the loopback of the bridge's namespace.
BRIDGE_HTTP_PORT = 3000
#: Hosts in address order: the bridge is 198.18.0.1, the portal .2, ... the scheduler .8.
HOSTS = ("bridge", *AGENTS)
#: (dialler, listener) for every link, the bridge's included.
LINKS: tuple[tuple[str, str], ...] = (
    ("bridge", "portal"),
    *((name, upper) for name, uppers in TOPOLOGY for upper in uppers),
)
#: Seconds; see the module docstring.  The watchdog closes a silent link within
#: inactivity + watchdog_tick.
FAULT_TIMERS: Mapping[str, float] = {
    "keepalive": 1.0,
    "watchdog_tick": 1.0,
    "inactivity": 5.0,
    "handshake": 3.0,
    "reconnect_initial": 0.2,
    "reconnect_max": 2.0,
    "close": 1.0,
}
START_TIMEOUT = 60.0
#: How much longer than the job's own timeout the driver may take to answer.
ANSWER_MARGIN = 10.0


def watchdog_time(timers: Mapping[str, float] = FAULT_TIMERS) -> float:
    """The longest a dead link can stay up before the watchdog closes it."""
    return timers["inactivity"] + timers["watchdog_tick"]


def link_neighbours(name: str) -> list[str]:
    """Every agent linked to ``name`` (the bridge's only neighbour is the portal)."""
    return ["portal"] if name == "bridge" else neighbours(name)


class Network(Site):
    """A site whose agents (bridge included) each run on a host of their own."""

    def __init__(
        self,
        root: Path,
        *,
        extra_hosts: Iterable[str] = (),
        latency_links: Iterable[tuple[str, str]] = (),
        timers: Mapping[str, float] = FAULT_TIMERS,
        seed: int = 0,
    ) -> None:
        super().__init__(root)
        self.hosts = Hosts([*HOSTS, *extra_hosts])
        self.faults = Faults(self.hosts)
        self.timers = dict(timers)
        self.seed = seed
        self.latency: dict[tuple[str, str], LatencyLink] = {}
        for dialler, listener in latency_links:
            if (dialler, listener) not in LINKS:
                raise ValueError(f"{dialler} does not dial {listener}; links: {LINKS}")
            self.latency[dialler, listener] = LatencyLink(self.hosts, dialler, listener, AGENT_PORT)
        self.client_file = root / "config" / "portal-software.toml"
        # The helpers are modules of this test package: they import it from the checkout.
        self.helper_env = {**self.env, "PYTHONPATH": str(REPO)}
        self.driver: JsonChild | None = None

    @classmethod
    @asynccontextmanager
    async def up(
        cls,
        root: Path,
        *,
        extra_hosts: Iterable[str] = (),
        latency_links: Iterable[tuple[str, str]] = (),
        timers: Mapping[str, float] = FAULT_TIMERS,
        seed: int = 0,
    ) -> AsyncIterator[Network]:
        """Build the hosts, configure and start every agent, and yield the running network;
        at the end (passed, failed or interrupted) stop every process and delete every
        namespace.  Options as for the constructor."""
        delete_leftovers()
        network = cls(
            root, extra_hosts=extra_hosts, latency_links=latency_links, timers=timers, seed=seed
        )
        try:
            network.hosts.create()
            network.faults.install()
            network.configure()
            await network.start_all()
            yield network
        except BaseException:
            print(network.diagnostics())
            raise
        finally:
            await network.close()

    # --- where things are ----------------------------------------------------------------

    def address(self, name: str) -> str:
        """The address of ``name``'s host."""
        return self.hosts.address(name)

    # --- configuring, with the CLI (as Site.configure, with real addresses) --------------

    def configure(self) -> None:
        """``init`` every agent on its address, link them, set the backends and timers."""
        (self.root / "invites").mkdir(parents=True)
        self.directory.parent.mkdir(parents=True)
        for name in AGENTS:
            self.cli(*self._init(name))
        self.cli(
            *self._init("bridge"), "--bridge-ip", "127.0.0.1",
            "--bridge-port", str(BRIDGE_HTTP_PORT),
            "--bridge-url", f"http://127.0.0.1:{BRIDGE_HTTP_PORT}/",
        )  # fmt: skip
        for lower, upper in LINKS:
            invite = self.root / "invites" / f"{lower}-to-{upper}.toml"
            self.cli(
                upper, "client", "-c", str(self.config(upper)),
                "--add", lower, "--ip", self.address(lower), "--invitation", str(invite),
            )  # fmt: skip
            proxy = self.latency.get((lower, upper))
            if proxy is not None:
                # The dialler's operator points it at the proxy on its own host.
                replace(Invite.load(invite), url=proxy.url).save(invite)
            self.cli(lower, "server", "-c", str(self.config(lower)), "--add", str(invite))
        for name, settings in self.backend_extras().items():
            for key, value in settings.items():
                self.cli(name, "extra", "-c", str(self.config(name)), "-k", key, "-v", value)
        for name in HOSTS:
            config = AgentConfig.load(self.config(name))
            replace(config, other={**config.other, "timers": self.timers}).save(self.config(name))
        self.cli("bridge", "bridge", "-c", str(self.config("bridge")), "--client-file",
                 str(self.client_file))  # fmt: skip

    def _init(self, name: str) -> list[str]:
        address = self.address(name)
        return [
            name, "init", "-c", str(self.config(name)),
            "-i", address, "-p", str(AGENT_PORT), "-u", f"ws://{address}:{AGENT_PORT}/",
        ]  # fmt: skip

    # --- running ---------------------------------------------------------------------------

    async def start(self, name: str) -> Broadgauge:
        """``broadgauge <name> run`` on ``name``'s host; return once it listens."""
        process = Broadgauge(
            name, "run", "-c", str(self.config(name)), "--data-dir", str(self.data_dir(name)),
            env={**self.env, **self.agent_env.get(name, {})}, cwd=self.root,
            wrapper=self.hosts.exec_prefix(name),
        )  # fmt: skip
        self.processes.setdefault(name, []).append(process)
        kind = ROLES_BY_NAME[name].agent_type.value
        listening = f"{name} ({kind}) listening on {self.address(name)}:{AGENT_PORT}"
        await asyncio.to_thread(process.wait_for, listening, START_TIMEOUT)
        return process

    async def start_all(self) -> None:
        """Proxies, then every agent and the bridge at once, then the driver; return when
        every link is up.

        All at once, not level by level as :meth:`Site.start_all` does: a dialler that
        starts before its listener redials within :data:`FAULT_TIMERS`' two seconds, and
        the processes' start-up (a second of CPU each) overlaps.
        """
        for seed, link in enumerate(self.latency.values(), start=self.seed):
            await link.start(self.helper_env, self.root, seed)
        await asyncio.gather(*(self.start(name) for name in HOSTS))
        await self.wait_linked(HOSTS)
        command = [
            *self.hosts.exec_prefix("bridge"),
            *(sys.executable, "-m", "tests.netns.driver", str(self.client_file)),
        ]
        self.driver = await JsonChild.start(
            "driver", command, env=self.helper_env, cwd=self.root, ready=READY,
            timeout=START_TIMEOUT,
        )  # fmt: skip

    async def wait_linked(self, names: Iterable[str], timeout: float = START_TIMEOUT) -> None:
        """Wait until each of ``names`` has seen every neighbour's Register (newest process)."""
        waits = [
            asyncio.to_thread(self.current(name).wait_for, registered(name, peer), timeout)
            for name in names
            for peer in link_neighbours(name)
        ]
        await asyncio.gather(*waits)

    def registrations(self, name: str, peer: str) -> int:
        """How many times ``name``'s newest process has seen ``peer`` register (link up)."""
        line = registered(name, peer)
        return self.current(name).output.count(line)

    async def wait_relinked(
        self, a: str, b: str, before: tuple[int, int], timeout: float = START_TIMEOUT
    ) -> float:
        """Wait until ``a`` and ``b`` have both seen the other register again since
        ``before`` (their :meth:`registrations` counts then); the seconds it took."""
        began = time.monotonic()
        while True:
            now = (self.registrations(a, b), self.registrations(b, a))
            if now[0] > before[0] and now[1] > before[1]:
                return time.monotonic() - began
            if time.monotonic() - began > timeout:
                raise AssertionError(
                    f"the link {a}-{b} did not come back within {timeout:g} s "
                    f"(registrations {before} before, {now} now)"
                )
            await asyncio.sleep(0.05)

    async def wait_logged(self, name: str, *parts: str, timeout: float) -> str:
        """Wait until ``name``'s newest process logs a line holding every one of ``parts``;
        that line."""
        process = self.current(name)
        deadline = time.monotonic() + timeout
        while True:
            for line in process.output.splitlines():
                if all(part in line for part in parts):
                    return line
            if time.monotonic() > deadline:
                raise AssertionError(f"{name} never logged a line with {parts} in {timeout:g} s")
            await asyncio.sleep(0.05)

    async def restart(self, name: str) -> Broadgauge:
        """Start ``name`` again from its config and data directory; return once relinked."""
        process = await self.start(name)
        await self.wait_linked([name])
        return process

    async def stop(self) -> dict[str, int]:
        """Stop the driver, then SIGTERM the bridge and every agent; their exit statuses."""
        if self.driver is not None:
            await self.driver.stop()
            self.driver = None
        running = [
            name
            for name in HOSTS
            if name in self.processes and self.current(name).process.poll() is None
        ]
        codes = await asyncio.gather(
            *(asyncio.to_thread(self.current(name).terminate) for name in running)
        )
        statuses = dict(zip(running, codes, strict=True))
        for link in self.latency.values():
            await link.stop()
        return statuses

    async def close(self) -> None:
        """Make sure every process is gone and delete every namespace (after anything)."""
        try:
            if self.driver is not None:
                self.driver.kill()
                await self.driver.stop()
            for link in self.latency.values():
                if link.child is not None:
                    link.child.kill()
                    await link.child.stop()
            self.kill_leftovers()
        finally:
            self.hosts.delete()

    # --- faults ----------------------------------------------------------------------------

    def partition(self, a: str, b: str) -> None:
        """Drop all traffic between ``a`` and ``b`` (see :class:`Faults`)."""
        self.faults.partition(a, b)

    def heal(self, a: str, b: str) -> None:
        """Undo :meth:`partition`."""
        self.faults.heal(a, b)

    def isolate(self, name: str) -> None:
        """Cut ``name`` off from every other host."""
        self.faults.isolate(name)

    def heal_all(self) -> None:
        """Heal every partition and isolation."""
        self.faults.heal_all()

    def set_loss(self, percent: int) -> None:
        """Drop ``percent`` % of packets at random on every link."""
        self.faults.set_loss(percent)

    def clear_loss(self) -> None:
        """Stop dropping packets at random."""
        self.faults.clear_loss()

    async def set_latency(
        self,
        dialler: str,
        listener: str,
        delay: float,
        jitter: float = 0.0,
        stall: tuple[float, float] | None = None,
    ) -> None:
        """Delay the link's traffic by ``delay`` + up to ``jitter`` s per chunk, in order;
        ``stall=(every, duration)`` also holds it all for ``duration`` s every ``every`` s.
        The link must have been given a proxy (``latency_links``) when the network was made.
        """
        link = self.latency.get((dialler, listener))
        if link is None:
            raise KeyError(
                f"no latency proxy on {dialler}->{listener}; made with {list(self.latency)}"
            )
        every, duration = stall or (0.0, 0.0)
        await link.set(LatencySettings(delay, jitter, every, duration))

    async def clear_latency(self, dialler: str, listener: str) -> None:
        """Forward the link's traffic without delay again."""
        await self.set_latency(dialler, listener, 0.0)

    async def latency_stats(self, dialler: str, listener: str) -> dict[str, Any]:
        """The counters of the link's latency proxy (connections, chunks, stalls, ...)."""
        link = self.latency.get((dialler, listener))
        if link is None:
            raise KeyError(f"no latency proxy on {dialler}->{listener}")
        return await link.stats()

    # --- jobs ------------------------------------------------------------------------------

    async def run_command(self, command: str, timeout: float) -> Job:
        """Run ``command`` (``portal.… instruction``) through the bridge's HTTP API.

        Returns the ``Complete`` job; raises :class:`JobFailed` if it ends in error (its
        message says why) and :class:`JobExpired` if it is not finished in ``timeout`` s.
        """
        assert self.driver is not None, "the network is not running"
        answer = await self.driver.request(
            timeout + ANSWER_MARGIN, command=command, timeout=timeout
        )
        job = Job.from_json(answer["job"])
        if not answer["finished"]:
            raise JobExpired(job)
        if job.is_error:
            raise JobFailed(job)
        return job

    async def status(self, job_id: uuid.UUID | str) -> Job:
        """The job's latest version as the bridge reports it now (one ``POST /status``);
        :class:`~tests.netns.child.ChildError` with the bridge's answer if it has none."""
        assert self.driver is not None, "the network is not running"
        answer = await self.driver.request(ANSWER_MARGIN, status=str(job_id))
        return Job.from_json(answer["job"])

    async def submit(self, instruction: str, timeout: float) -> Job:
        """Send ``instruction`` to the instance, as :meth:`Site.submit` does (so
        :class:`~tests.agents_crash.site.Bulk` works on a network too)."""
        return await self.run_command(f"{PATH} {instruction}", timeout)

    # --- reading what happened -------------------------------------------------------------

    def diagnostics(self) -> str:
        """Logs, unfinished jobs and drop counters, for a failing test's output."""
        parts = [self.logs()]
        for child in [self.driver, *(link.child for link in self.latency.values())]:
            if child is not None:
                parts.append(f"===== {child.name} =====\n{child.output}")
        try:
            parts.append(self.unfinished())
            parts.append(f"packet counters: {self.faults.counters()}")
        except Exception as exc:  # diagnostics of a half-built network: say what is missing
            parts.append(f"(no more diagnostics: {type(exc).__name__}: {exc})")
        return "\n".join(parts)
