"""The soak's site on loopback: real processes, real back ends, kill and restart.

:class:`RealBackendSite` is :class:`tests.agents_crash.site.Site` (seven ``broadgauge <role>
run`` processes configured with the CLI, and an in-test bridge) with its leaf agents moved,
again with the CLI (``extra``, ``encryption``, ``secret``), onto real back ends:

* the account agent keeps users in a real slapd (``account-backend = ldap``), under an
  organisational unit of its own (:func:`ldap_target`), so runs sharing one slapd never meet;
* the scheduler agent manages a real Slurm accounting stack (``scheduler-backend = slurm``:
  ``sacctmgr`` in the stack's network namespace);
* the filesystem agent makes real directories in its sandbox; its quotas are kept by the
  sandbox's ledger engine (SQLite), because no quota-enabled filesystem or ``setquota`` is
  available here.  The LDAP users are not in this host's NSS, so ownership is left alone
  (``chown = false``), as in ``tests/hierarchy``.

:class:`LoopbackInjector` implements the kills of :class:`~.schedule.FaultInjector`, and (with
:class:`ServerAndClockFaults`, which the namespace harness's injector shares) slow back ends
and clock steps.  On one loopback interface there is no link to cut, so the network faults
raise :class:`~.schedule.FaultUnavailable` (the namespace harness provides them).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import signal
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from broadgauge.jobs.job import DEFAULT_LIFETIME_SECONDS, Job
from tests.agents_crash.site import AGENTS, PATH, TOPOLOGY, Site
from tests.backends.faketime import faketime_env
from tests.backends.slapd import Slapd
from tests.backends.slurm import SlurmStack

from . import invariants as inv
from . import readers
from .mix import Names
from .schedule import CUT_SECONDS, FaultKind, FaultUnavailable

#: Every link of the site as (lower, upper); the bridge's link to the portal included.
LINKS: tuple[tuple[str, str], ...] = (
    *((lower, upper) for lower, uppers in TOPOLOGY for upper in uppers),
    ("bridge", "portal"),
)
#: What :class:`LoopbackInjector` can do (the rest needs network namespaces).
LOOPBACK_KINDS = frozenset(
    {
        FaultKind.KILL,
        FaultKind.KILL_DURING_SYNC,
        FaultKind.KILL_DURING_BACKEND_CALL,
        FaultKind.SLOW_BACKEND,
        FaultKind.CLOCK_STEP,
    }
)
#: How long a restarted agent may take to see every neighbour again.  Its neighbours redial
#: with exponential backoff (0.5 s doubling, up to 8 s); a generous bound, because a slow
#: start under load (a second of CPU per process) comes on top.
RELINK_TIMEOUT = 120.0
#: A process younger than this is left out of RSS readings (see RealBackendSite.rss).
STARTUP_SECONDS = 3.0
#: How often a backend-call kill looks for a child process of the agent.
CHILD_POLL = 0.002


@dataclass(frozen=True)
class LdapTarget:
    """Where the account agent keeps its users: a slapd and a base DN of its own."""

    url: str
    admin_dn: str
    password: str
    base: str


def ldap_target(slapd: Slapd, name: str | None = None) -> LdapTarget:
    """A fresh ``ou=<name>`` under the server's suffix with ``ou=people`` and ``ou=groups``."""
    from ldap3 import Connection, Server  # type: ignore[import-untyped, unused-ignore]

    unit = name or f"chaos{uuid.uuid4().hex[:10]}"
    base = f"ou={unit},{slapd.suffix}"
    admin = Connection(Server(slapd.url), slapd.admin_dn, slapd.password, auto_bind=True)
    try:
        for dn, ou in (
            (base, unit),
            (f"ou=people,{base}", "people"),
            (f"ou=groups,{base}", "groups"),
        ):
            if not admin.add(dn, ["organizationalUnit"], {"ou": ou}):
                raise RuntimeError(f"could not add {dn}: {admin.result}")
    finally:
        admin.unbind()
    return LdapTarget(slapd.url, slapd.admin_dn, slapd.password, base)


class RealBackendSite(Site):
    """The crash suite's site, its leaf agents on slapd, Slurm accounting and a sandbox."""

    #: the in-test bridge's jobs live the default lifetime
    job_lifetime = DEFAULT_LIFETIME_SECONDS
    #: the bridge runs in the test: only the agents' processes can be killed
    kill_targets = AGENTS
    #: no link can be cut on one interface
    cut_seconds = CUT_SECONDS

    def __init__(self, root: Path, ldap: LdapTarget, slurm: SlurmStack, slapd_pid: int) -> None:
        super().__init__(root)
        self.ldap = ldap
        self.slurm = slurm
        #: the server behind each agent's back end, which a slow-backend fault freezes
        self.backend_pids = {"account": slapd_pid, "scheduler": slurm.pid("slurmdbd")}

    def configure(self) -> None:
        """Configure as the crash suite does, then point the leaves at the real back ends."""
        super().configure()
        account = str(self.config("account"))
        # The LDAP password is a secret: it needs a scheme to be encrypted with.
        self.cli("account", "encryption", "-c", account, "--simple")
        settings = {
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
                "slurm-cluster": self.slurm.cluster,
                "slurm-conf": str(self.slurm.conf),
                "slurm-default-node": json.dumps({"cpus": self.slurm.cpus}),
                "command-prefix": shlex.join(self.slurm.command_prefix),
            },
        }
        for name, extras in settings.items():
            for key, value in extras.items():
                self.cli(name, "extra", "-c", str(self.config(name)), "-k", key, "-v", value)
        self.cli(
            "account", "secret", "-c", account, "-k", "ldap-password", "-v", self.ldap.password
        )

    def pid(self, name: str) -> int:
        """The process id of the agent's newest process."""
        return self.current(name).process.pid

    def alive(self, name: str) -> bool:
        """Whether the agent's newest process is running."""
        return name in self.processes and self.current(name).process.poll() is None

    # --- what the soak asks of a site (soak.SoakSite) ------------------------------------

    async def send(self, instruction: str, job_id: uuid.UUID) -> Job:
        """Send ``instruction`` to the instance through the bridge as job ``job_id``; the
        finished job (:class:`JobFailed` / :class:`JobExpired` as :meth:`Agent.submit`)."""
        bridge = self.bridge
        assert bridge is not None, "the site is not running"
        text = f"bridge.portal submit {PATH} {instruction}"
        return await bridge.submit(Job.parse(text, now=bridge.clock(), job_id=job_id))

    async def board_counts(self) -> dict[str, int]:
        """Jobs and queued commands on every agent's boards, by the bridge's health sweep
        (-1 for an agent that did not answer)."""
        bridge = self.bridge
        assert bridge is not None, "the site is not running"
        tree = await bridge.health()
        held = {"bridge": tree.active_jobs + tree.queued_jobs}
        pending = list(tree.peers.values())
        while pending:
            node = pending.pop()
            held[node.name] = node.active_jobs + node.queued_jobs
            pending.extend(node.peers.values())
        for name in AGENTS:
            held.setdefault(name, -1)
        return held

    def rss(self) -> dict[str, int]:
        """Every running agent's resident set size in KiB.

        A process in its first :data:`STARTUP_SECONDS` is left out: until it has replaced
        itself with ``broadgauge`` it is a fork of this process, and while importing it
        briefly holds some 60 MiB more than it keeps (the bridge console's Argon2 hash,
        made at import, takes 64 MiB), which is no measure of what the agent holds.
        """
        found = {}
        for name in AGENTS:
            if not self.alive(name):
                continue
            pid = self.pid(name)
            with contextlib.suppress(FileNotFoundError, ProcessLookupError, RuntimeError):
                if process_age(pid) >= STARTUP_SECONDS:
                    found[name] = rss_kib(pid)
        return found

    def data_dirs(self) -> dict[str, Path]:
        """Every agent's data directory (boards, audit log), the bridge's included."""
        return {name: self.data_dir(name) for name in (*AGENTS, "bridge")}

    def read_backends(self, names: Names) -> inv.Backends:
        """What slapd, ``sacctmgr`` and the sandbox hold now."""
        ldap = self.ldap
        return inv.Backends(
            readers.read_ldap(ldap.url, ldap.admin_dn, ldap.password, ldap.base),
            readers.read_slurm(self.slurm.run, self.slurm.cluster, names),
            readers.read_sandbox(self.sandbox),
            cpus=self.slurm.cpus,
        )

    def diagnostics(self) -> str:
        """Unfinished jobs and the processes' logs, for a failure's output."""
        return f"{self.unfinished()}\n{self.logs()}"


def rss_kib(pid: int) -> int:
    """The resident set size of process ``pid`` in KiB (``VmRSS`` in /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/{pid}/status has no VmRSS (a zombie?)")


def process_age(pid: int) -> float:
    """Seconds since process ``pid`` started (``starttime`` in /proc/<pid>/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name may hold spaces and parentheses: count fields after the last ")".
    started_ticks = int(stat.rsplit(")", 1)[1].split()[19])
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return uptime - started_ticks / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """The process ids of ``pid``'s children (threads' children included)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except FileNotFoundError:  # the thread ended meanwhile
            continue
    return found


class _ServersAndClocks(Protocol):
    #: the server behind each agent's back end (slapd, slurmdbd), by agent
    backend_pids: dict[str, int]
    #: extra environment for an agent's next process, by agent
    agent_env: dict[str, dict[str, str]]


class ServerAndClockFaults:
    """Slow back ends and clock steps, for an injector whose site has ``backend_pids`` and
    ``agent_env``, and which can :meth:`kill` and :meth:`restart` agents."""

    site: _ServersAndClocks

    async def kill(self, agent: str) -> None:
        """SIGKILL the agent's process."""
        raise NotImplementedError

    async def restart(self, agent: str) -> None:
        """Start the agent again; return once linked."""
        raise NotImplementedError

    async def stall_backend(self, agent: str) -> None:
        """SIGSTOP the server behind ``agent`` (slapd, slurmdbd): every call to it hangs, as
        a server stuck on a lock or a dead disk does, until :meth:`resume_backend`."""
        os.kill(self.site.backend_pids[agent], signal.SIGSTOP)

    async def resume_backend(self, agent: str) -> None:
        """SIGCONT the server behind ``agent``."""
        os.kill(self.site.backend_pids[agent], signal.SIGCONT)

    async def step_clock(self, agent: str, ahead: float) -> None:
        """Restart ``agent`` under libfaketime, ``ahead`` seconds ahead; return once linked."""
        await self.kill(agent)
        self.site.agent_env[agent] = faketime_env(f"+{round(ahead)}s")
        await self.restart(agent)

    async def restore_clock(self, agent: str) -> None:
        """Restart ``agent`` on the right clock; return once linked."""
        await self.kill(agent)
        self.site.agent_env.pop(agent, None)
        await self.restart(agent)


class LoopbackInjector(ServerAndClockFaults):
    """:class:`~.schedule.FaultInjector` for a :class:`RealBackendSite`: kills, slow back
    ends and clock steps."""

    site: RealBackendSite

    def __init__(self, site: RealBackendSite) -> None:
        self.site = site
        #: (time, what) for every action taken, for the report
        self.actions: list[tuple[float, str]] = []

    def _note(self, what: str) -> None:
        self.actions.append((time.time(), what))

    def available(self) -> frozenset[FaultKind]:
        """Kills of every kind, slow back ends, clock steps; no network fault exists on one
        loopback interface."""
        return LOOPBACK_KINDS

    async def kill(self, agent: str) -> None:
        """SIGKILL the agent's process and reap it."""
        await asyncio.to_thread(self.site.kill, agent)
        self._note(f"SIGKILL {agent}")

    async def restart(self, agent: str) -> None:
        """``broadgauge <agent> run`` again; return once every neighbour is linked."""
        await self.site.start(agent)
        self._note(f"started {agent}")
        await self.site.wait_linked([agent], timeout=RELINK_TIMEOUT)
        self._note(f"{agent} linked")

    async def kill_during_sync(self, agent: str) -> None:
        """Start the agent; SIGKILL it the moment its first neighbour registers.

        Register and Sync go out together on every new link, so at that moment the two
        boards are being reconciled (and the outbox replayed).
        """
        await self.site.start(agent)
        process = self.site.current(agent)
        await asyncio.to_thread(process.wait_for, " registered as ", RELINK_TIMEOUT)
        await self.kill(agent)
        self._note(f"{agent} killed as its first link synced")

    async def kill_during_backend_call(self, agent: str, wait: float) -> bool:
        """SIGKILL the agent as soon as it has a child process (``sacctmgr`` and the like).

        The child is not killed: it finishes its change with nobody to record it, which is
        the case the restarted agent must handle.
        """
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

    async def heal_all(self) -> None:
        """Restart any agent that is not running."""
        for name, _ in TOPOLOGY:
            if not self.site.alive(name):
                await self.restart(name)

    async def partition(self, a: str, b: str) -> None:
        """Unavailable: every agent shares the loopback interface."""
        raise FaultUnavailable("partition needs the network-namespace harness")

    async def heal(self, a: str, b: str) -> None:
        """Unavailable (see :meth:`partition`)."""
        raise FaultUnavailable("heal needs the network-namespace harness")

    async def isolate(self, agent: str) -> None:
        """Unavailable (see :meth:`partition`)."""
        raise FaultUnavailable("isolate needs the network-namespace harness")

    async def set_loss(self, percent: float) -> None:
        """Unavailable: loss rules need a link of the agent's own."""
        raise FaultUnavailable("packet loss needs the network-namespace harness")

    async def clear_loss(self) -> None:
        """Unavailable (see :meth:`set_loss`)."""
        raise FaultUnavailable("packet loss needs the network-namespace harness")

    async def set_latency(self, a: str, b: str, delay: float, jitter: float) -> None:
        """Unavailable: the latency proxy belongs to the namespace harness."""
        raise FaultUnavailable("latency needs the network-namespace harness")

    async def clear_latency(self, a: str, b: str) -> None:
        """Unavailable (see :meth:`set_latency`)."""
        raise FaultUnavailable("latency needs the network-namespace harness")
