"""The soak on separate hosts: the network-namespace harness as a soak site, and its injector.

:class:`NetnsSoakSite` is :class:`tests.netns.harness.Network` (every agent and the bridge
a ``broadgauge <role> run`` process on a host of its own, 198.18.0.0/24 veth links, the
short :data:`~tests.netns.harness.FAULT_TIMERS`) with its leaf agents moved onto the same
real back ends as :class:`.loopback.RealBackendSite`:

* the account agent keeps users in a real slapd that runs **inside the account agent's
  namespace** (``ip netns exec <account host> slapd``), listening on that namespace's
  ``127.0.0.1``, which is the URL the agent is given.  No agent namespace can reach the
  root namespace's loopback, and the root namespace must not get a 198.18 address, so slapd
  also listens on a socket file (``ldapi://``): the test process reads the directory through
  it when it checks the invariants.
* the scheduler agent manages a real Slurm accounting stack through ``sacctmgr`` under the
  stack's ``command-prefix`` (``nsenter --net=<stack namespace>``), which works from any
  namespace: the agent runs as root, and the prefix moves only the child command.
* the filesystem agent makes real directories in its sandbox, with its quota ledger.

Every link has a latency proxy (:class:`~tests.netns.faults.LatencyLink`), forwarding
without delay until a latency fault sets one, so the schedule can slow any link it draws.

:class:`NetnsInjector` implements every kind of :class:`~.schedule.FaultInjector`: kills
(at random, during the first Sync after a restart, during ``sacctmgr``), partitions and
isolation and random loss (nftables), latency with jitter (the proxy).  It also notes, for
each cut link whose watchdog fired, how long the link took to come back after the heal
(:attr:`NetnsInjector.relinks`).

:func:`netns_site` is the factory :func:`.soak.run_soak` takes; the caller must
:meth:`~NetnsSoakSite.close` the site afterwards (the soak stops the processes, but slapd
must outlive them so the checks can read it, and the namespaces must go in any case).
"""

from __future__ import annotations

import asyncio
import shlex
import sqlite3
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from broadgauge.bridge.runtime import RUN_LIFETIME
from broadgauge.jobs.job import DEFAULT_LIFETIME_SECONDS, Job
from tests.agents_crash.site import AGENTS, TOPOLOGY
from tests.backends.slapd import Slapd, start_slapd, stop_slapd
from tests.backends.slurm import SlurmStack
from tests.netns.harness import HOSTS, LINKS, Network, link_neighbours, watchdog_time
from tests.netns.namespaces import delete_leftovers

from . import invariants as inv
from . import readers
from .loopback import (
    CHILD_POLL,
    RELINK_TIMEOUT,
    LdapTarget,
    ServerAndClockFaults,
    children,
    ldap_target,
    rss_kib,
)
from .mix import Names
from .schedule import FaultInjector, FaultKind
from .soak import SiteFactory, SoakSite

#: How long the driver waits for a job's final state: the bridge expires a job this long
#: after making it, so by then it has one either way.
JOB_WAIT = DEFAULT_LIFETIME_SECONDS + 30.0
#: What the watchdog logs when it closes a silent link (:mod:`broadgauge.wire.link`).
WATCHDOG_LINE = "silent for"

#: How long a partition or an isolation lasts here: 1-6 s longer than the watchdog, so every
#: cut closes the links it cuts.
CUT_SECONDS = (watchdog_time() + 1.0, watchdog_time() + 6.0)


class NetnsSoakSite(Network):
    """The harness's network on slapd (in the account host), Slurm accounting and a sandbox."""

    def __init__(self, root: Path, stack: SlurmStack, *, seed: int = 0) -> None:
        super().__init__(root, latency_links=LINKS, seed=seed)
        self.stack = stack
        self.slapd: Slapd | None = None
        #: where the account agent finds slapd (its namespace's loopback)
        self.ldap: LdapTarget | None = None
        #: the same directory through slapd's socket file, for this process
        self.ldap_socket: LdapTarget | None = None
        #: filled in by this site's :class:`NetnsInjector`
        self.relinks: list[Relink] = []
        #: when the last job was sent (``time.time()``)
        self.last_sent = 0.0
        #: the bridge gives the jobs it makes for ``POST /run`` five minutes, not the default
        self.job_lifetime = RUN_LIFETIME
        #: the bridge is a process here: it is killed like any agent
        self.kill_targets = HOSTS
        #: every cut outlasts the watchdog, so it closes the links it cuts
        self.cut_seconds = CUT_SECONDS
        #: the server behind each agent's back end (set once slapd runs)
        self.backend_pids: dict[str, int] = {}

    # --- configuring ---------------------------------------------------------------------

    def configure(self) -> None:
        """Make the hosts and the fault tables, start slapd in the account host, then
        configure every agent with the CLI as the harness does, on the real back ends."""
        delete_leftovers()
        self.hosts.create()
        self.faults.install()
        self.slapd = start_slapd(self.root / "slapd", wrapper=self.hosts.exec_prefix("account"))
        self.ldap_socket = ldap_target(replace(self.slapd, url=self.slapd.socket_url))
        self.ldap = replace(self.ldap_socket, url=self.slapd.url)
        self.backend_pids = {"account": self.slapd.pid, "scheduler": self.stack.pid("slurmdbd")}
        super().configure()
        account = str(self.config("account"))
        # The LDAP password is a secret: it needs a scheme to be encrypted with.
        self.cli("account", "encryption", "-c", account, "--simple")
        self.cli(
            "account", "secret", "-c", account, "-k", "ldap-password", "-v", self.ldap.password
        )

    def backend_extras(self) -> dict[str, dict[str, str]]:
        """The embedded settings, overridden as :class:`.loopback.RealBackendSite` does."""
        assert self.ldap is not None, "slapd has not started"
        stack = self.stack
        real = {
            "account": {
                "account-backend": "ldap",
                "ldap-url": self.ldap.url,
                "ldap-bind-dn": self.ldap.admin_dn,
                "ldap-base-dn": self.ldap.base,
            },
            # slapd's users are not in this host's NSS: leave owners alone.
            "filesystem": {"id-resolver": "nss", "chown": "false"},
            "scheduler": {
                "scheduler-backend": "slurm",
                "slurm-cluster": stack.cluster,
                "slurm-conf": str(stack.conf),
                "slurm-default-node": f'{{"cpus": {stack.cpus}}}',
                "command-prefix": shlex.join(stack.command_prefix),
            },
        }
        merged = super().backend_extras()
        for name, settings in real.items():
            merged[name] = {**merged.get(name, {}), **settings}
        return merged

    # --- what the soak asks of a site (soak.SoakSite) ------------------------------------

    async def send(self, instruction: str, job_id: uuid.UUID) -> Job:
        """Send ``instruction`` to the instance through the bridge's HTTP API.

        ``job_id`` is not used: over HTTP the bridge chooses the id (``POST /run``), and the
        job comes back with it.  Its first 32 bits are random, so two jobs of a 1,000-job
        run share a trace with a chance of about one in ten thousand.
        """
        self.last_sent = time.time()
        return await self.submit(instruction, JOB_WAIT)

    async def board_counts(self) -> dict[str, int]:
        """Jobs and queued commands in each agent's durable store (-1: not readable)."""
        held = {}
        for name, folder in self.data_dirs().items():
            try:
                figures = await asyncio.to_thread(readers.read_store, folder)
            except sqlite3.Error:  # being written this instant: asked again shortly
                held[name] = -1
                continue
            held[name] = figures.jobs + figures.outbox
        return held

    def alive(self, name: str) -> bool:
        """Whether the agent's newest process is running."""
        return name in self.processes and self.current(name).process.poll() is None

    def pid(self, name: str) -> int:
        """The agent's newest process (``ip netns exec`` execs it: the same pid)."""
        return self.current(name).process.pid

    def rss(self) -> dict[str, int]:
        """Every running agent's (and the bridge's) resident set size in KiB."""
        found = {}
        for name in HOSTS:
            if self.alive(name):
                try:
                    found[name] = rss_kib(self.pid(name))
                except (FileNotFoundError, RuntimeError):  # it died this instant
                    continue
        return found

    def data_dirs(self) -> dict[str, Path]:
        """Every agent's data directory, the bridge's included."""
        return {name: self.data_dir(name) for name in (*AGENTS, "bridge")}

    def read_backends(self, names: Names) -> inv.Backends:
        """What slapd (through its socket), ``sacctmgr`` and the sandbox hold now."""
        ldap = self.ldap_socket
        assert ldap is not None, "slapd has not started"
        return inv.Backends(
            readers.read_ldap(ldap.url, ldap.admin_dn, ldap.password, ldap.base),
            readers.read_slurm(self.stack.run, self.stack.cluster, names),
            readers.read_sandbox(self.sandbox),
            cpus=self.stack.cpus,
        )

    async def close(self) -> None:
        """Stop every process and slapd, and delete every namespace (after anything)."""
        try:
            if self.slapd is not None:
                stop_slapd(self.slapd)
        finally:
            await super().close()


@dataclass(frozen=True)
class Relink:
    """How long one cut link took to come back after its heal."""

    dialler: str
    listener: str
    #: seconds from the heal to both ends seeing the other register; None if the
    #: watchdog never closed the link (the cut was shorter than it)
    seconds: float | None


@dataclass
class _Cut:
    links: list[tuple[str, str]]
    registrations: dict[tuple[str, str], tuple[int, int]]
    silences: dict[tuple[str, str], int]


class NetnsInjector(ServerAndClockFaults):
    """Every fault of :class:`~.schedule.FaultInjector`, on a :class:`NetnsSoakSite`."""

    site: NetnsSoakSite

    def __init__(self, site: NetnsSoakSite) -> None:
        self.site = site
        #: each cut link, after its heal (kept on the site, which outlives the soak)
        self.relinks = site.relinks
        self._cuts: list[_Cut] = []

    def available(self) -> frozenset[FaultKind]:
        """Every kind."""
        return frozenset(FaultKind)

    async def kill(self, agent: str) -> None:
        """SIGKILL the agent's process and reap it."""
        await asyncio.to_thread(self.site.kill, agent)

    async def restart(self, agent: str) -> None:
        """``broadgauge <agent> run`` on its host again; return once every link is up."""
        await self.site.start(agent)
        await self.site.wait_linked([agent], timeout=RELINK_TIMEOUT)

    async def kill_during_sync(self, agent: str) -> None:
        """Start the agent; SIGKILL it the moment its first neighbour registers (Register
        and Sync go out together on a new link, so the boards are being reconciled)."""
        await self.site.start(agent)
        process = self.site.current(agent)
        await asyncio.to_thread(process.wait_for, " registered as ", RELINK_TIMEOUT)
        await self.kill(agent)

    async def kill_during_backend_call(self, agent: str, wait: float) -> bool:
        """SIGKILL the agent as soon as it has a child process (``nsenter … sacctmgr``),
        or after ``wait`` seconds without one (False).  The child is left to finish."""
        pid = self.site.pid(agent)
        deadline = time.monotonic() + wait
        caught = False
        while time.monotonic() < deadline:
            if children(pid):
                caught = True
                break
            await asyncio.sleep(CHILD_POLL)
        await self.kill(agent)
        return caught

    async def partition(self, a: str, b: str) -> None:
        """Drop everything between ``a`` and ``b`` (nftables in both hosts)."""
        self._note_cut([(a, b)])
        await asyncio.to_thread(self.site.partition, a, b)

    async def heal(self, a: str, b: str) -> None:
        """Let ``a`` and ``b`` reach each other; wait for the link if the watchdog cut it."""
        await asyncio.to_thread(self.site.heal, a, b)
        await self._wait_relinked()

    async def isolate(self, agent: str) -> None:
        """Cut ``agent`` off from every other host."""
        self._note_cut([_oriented(agent, peer) for peer in link_neighbours(agent)])
        await asyncio.to_thread(self.site.isolate, agent)

    async def heal_all(self) -> None:
        """Heal every cut, stop loss and latency, restart any agent that is not running."""
        await asyncio.to_thread(self.site.heal_all)
        await asyncio.to_thread(self.site.clear_loss)
        for dialler, listener in self.site.latency:
            await self.site.clear_latency(dialler, listener)
        await self._wait_relinked()
        for name in (*(name for name, _ in TOPOLOGY), "bridge"):
            if not self.site.alive(name):
                await self.restart(name)

    async def set_loss(self, percent: float) -> None:
        """Drop ``percent`` % (a whole number) of the packets on every link."""
        if percent != round(percent):
            raise ValueError(f"the loss rules take whole percentages, not {percent}")
        await asyncio.to_thread(self.site.set_loss, round(percent))

    async def clear_loss(self) -> None:
        """No more random loss."""
        await asyncio.to_thread(self.site.clear_loss)

    async def set_latency(self, a: str, b: str, delay: float, jitter: float) -> None:
        """Delay the link ``a``→``b`` (dialler, listener) by ``delay`` + up to ``jitter``."""
        await self.site.set_latency(a, b, delay, jitter)

    async def clear_latency(self, a: str, b: str) -> None:
        """Forward the link without delay again."""
        await self.site.clear_latency(a, b)

    # --- how long cut links took to come back ----------------------------------------------

    def _note_cut(self, links: Iterable[tuple[str, str]]) -> None:
        site = self.site
        links = list(links)
        self._cuts.append(
            _Cut(
                links,
                {(a, b): (site.registrations(a, b), site.registrations(b, a)) for a, b in links},
                {link: self._silences(*link) for link in links},
            )
        )

    def _silences(self, a: str, b: str) -> int:
        """Watchdog closures of the link that either end has logged (newest processes)."""
        count = 0
        for me, peer in ((a, b), (b, a)):
            for line in self.site.current(me).output.splitlines():
                if WATCHDOG_LINE in line and f" {peer}" in line:
                    count += 1
        return count

    async def _wait_relinked(self) -> None:
        """For each link cut since the last heal that the watchdog closed, wait until it is
        back (the schedule waits for this before its next fault)."""
        cuts, self._cuts = self._cuts, []
        for cut in cuts:
            for link in cut.links:
                if self._silences(*link) == cut.silences[link]:
                    self.relinks.append(Relink(*link, None))
                    continue
                seconds = await self.site.wait_relinked(
                    *link, cut.registrations[link], timeout=RELINK_TIMEOUT
                )
                self.relinks.append(Relink(*link, seconds))


def _oriented(agent: str, peer: str) -> tuple[str, str]:
    """The link between ``agent`` and ``peer`` as (dialler, listener)."""
    return (agent, peer) if (agent, peer) in LINKS else (peer, agent)


def netns_site(stack: SlurmStack, sites: list[NetnsSoakSite], *, seed: int) -> SiteFactory:
    """The factory :func:`.soak.run_soak` takes: a :class:`NetnsSoakSite` on ``stack`` and its
    injector.  Each site made is appended to ``sites``: the caller closes it afterwards."""

    def build(root: Path) -> tuple[SoakSite, FaultInjector]:
        site = NetnsSoakSite(root, stack, seed=seed)
        sites.append(site)
        return site, NetnsInjector(site)

    return build
