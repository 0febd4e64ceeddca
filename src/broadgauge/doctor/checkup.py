"""Checking one agent: its config, its port, its peers and their clocks, its back ends, its log.

:func:`check_config` is the single-config mode of ``broadgauge doctor CONFIG``; the topology
mode (:mod:`broadgauge.doctor.sitewide`) uses the same parts for every agent and adds what
needs both ends of a link.  The parts run probes (:mod:`broadgauge.doctor.probes`) and leave
the meaning of what they saw to :mod:`broadgauge.doctor.judge`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from broadgauge.doctor import judge, links, probes
from broadgauge.doctor.backends import backends, data_dir
from broadgauge.doctor.findings import DEFAULT_TIMEOUT, Finding, fail, ok
from broadgauge.doctor.settings import Context
from broadgauge.jobs.agent_type import AgentType
from broadgauge.runtime.audit import verify
from broadgauge.runtime.config import AgentConfig
from broadgauge.wire import ConfigError

#: The lock file ``broadgauge <role> run`` holds in the data directory while it runs.
LOCK_FILE = "agent.lock"
AUDIT_FILE = "audit.jsonl"


@dataclass(frozen=True)
class Target:
    """One agent to check: what to call it, its config file, and its data directory.

    ``local`` says the agent runs on this machine, so its port, back ends, data directory and
    audit log can be checked here (the topology mode clears it for other hosts' agents).
    ``base`` is the folder the agent runs in, from which relative paths in its config are
    read (``None``: this process's working directory).
    """

    agent: str
    config: Path
    data_dir: Path
    local: bool = True
    base: Path | None = None


@dataclass
class Probing:
    """The probes' timeout, and the peers already asked (each is asked once per run)."""

    timeout: float = DEFAULT_TIMEOUT
    answers: dict[str, probes.HttpAnswer] = field(default_factory=dict)

    def ask(self, url: str) -> probes.HttpAnswer:
        """The answer of the agent at ``url`` to an upgrade without salts (cached)."""
        if url not in self.answers:
            self.answers[url] = probes.upgrade_probe(url, self.timeout)
        return self.answers[url]


def load(target: Target) -> tuple[AgentConfig | None, list[Finding]]:
    """Read the config: valid (the error names the key), and private (mode 0600)."""
    path, agent = target.config, target.agent
    if not path.exists():
        return None, [
            fail(
                "config.valid",
                agent,
                f"there is no config at {path}",
                f"create one with `broadgauge <role> init -c {judge.q(path)}` (or `broadgauge "
                "site init` for a topology)",
            )
        ]
    findings: list[Finding] = []
    try:
        findings.append(judge.config_mode(agent, path, probes.file_mode(path)))
    except OSError as exc:
        findings.append(fail("config.mode", agent, f"cannot look at {path}: {exc}"))
    try:
        config = AgentConfig.load(path)
        config.timers()  # the [timers] table is read only at start: check it now
    except ConfigError as exc:
        findings.insert(
            0,
            fail(
                "config.valid",
                agent,
                f"{path}: {exc}",
                f"correct it in {judge.q(path)} (every key is described in "
                "docs/operators/agents.md and roles.md)",
            ),
        )
        return None, findings
    service = config.service
    findings.insert(
        0,
        ok(
            "config.valid",
            agent,
            f"{path} is a valid {config.agent.value} config (name {service.name}, "
            f"{len(service.servers)} server(s), {len(service.clients)} client(s))",
        ),
    )
    url = judge.config_url(agent, config, path)
    if url is not None:
        findings.append(url)
    return config, findings


def own_port(target: Target, config: AgentConfig, probing: Probing) -> Finding:
    """The agent's listen port: free, listening as an agent, or held by something else."""
    ip, port = config.service.ip, config.service.port
    bind = probes.try_bind(ip, port) if port else probes.Bind("free")
    answer = holder = None
    if bind.state == "in-use":
        holder = probes.port_holder(port)
        if judge.runs_config(holder, target.config) is None:
            # Ask only when the command line does not tell: the agent logs each probe.
            # A wildcard address is reached through loopback of the same family.
            host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(ip, ip)
            authority = f"[{host}]" if ":" in host else host
            answer = probing.ask(f"ws://{authority}:{port}/")
    locked = probes.lock_held(target.data_dir / LOCK_FILE)
    return judge.own_port(
        target.agent, config, target.config, bind=bind, answer=answer, holder=holder, locked=locked
    )


def peers(target: Target, config: AgentConfig, probing: Probing) -> list[Finding]:
    """Each server the agent dials: reachable, admitting this host, and its clock."""
    findings: list[Finding] = []
    for entry in config.service.servers:
        answer = probing.ask(entry.url)
        findings.append(
            judge.peer(
                target.agent, config, target.config, entry, answer, here_is_host=target.local
            )
        )
        skew = judge.clock(target.agent, entry.name, answer)
        if skew is not None:
            findings.append(skew)
    return findings


def audit_log(target: Target) -> Finding:
    """The hash chain of ``<data dir>/audit.jsonl``, when there is one."""
    path = target.data_dir / AUDIT_FILE
    if not path.exists():
        return judge.audit(target.agent, path, None)
    try:
        return judge.audit(target.agent, path, verify(path))
    except OSError as exc:
        return fail(
            "audit.log",
            target.agent,
            f"cannot read {path}: {exc}",
            "run the doctor as the agent's user",
        )


def local_checks(target: Target, config: AgentConfig, probing: Probing) -> list[Finding]:
    """What only the agent's own host can check: its port, data, back ends and audit log."""
    return [
        own_port(target, config, probing),
        data_dir(target.agent, target.data_dir),
        *backends(
            Context(
                target.agent,
                config,
                target.config,
                target.data_dir,
                timeout=probing.timeout,
                base=target.base,
            )
        ),
        audit_log(target),
    ]


def check_config(target: Target, *, timeout: float = DEFAULT_TIMEOUT) -> list[Finding]:
    """Every check of one agent from its config alone (``broadgauge doctor CONFIG``)."""
    config, findings = load(target)
    if config is None:
        # Without a config only the audit log can still be looked at.
        return [*findings, audit_log(target)]
    probing = Probing(timeout)
    findings.append(links.unchecked_far_end(target.agent, config))
    findings.extend(peers(target, config, probing))
    if config.agent is AgentType.INSTANCE:
        findings.append(links.leaves_from_names(target.agent, config, target.config))
    findings.extend(local_checks(target, config, probing))
    return findings
