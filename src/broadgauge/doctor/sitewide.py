"""Checking a whole site: every agent ``broadgauge site init`` wrote, and both ends of each link.

The configs are read from ``DIR/<host>/<agent>/config.toml`` and each agent's data directory
is the topology's ``data_dir`` or ``DIR/<host>/<agent>/data``.  Beyond what
:mod:`broadgauge.doctor.checkup` checks for each agent, knowing every config lets the doctor
compare the two ends of every link (keys, zone, allowlist, URL), see each instance's leaf
agents from the links, and match a filesystem agent's ``id-resolver`` to its account agent.

Agents on a host not named with ``--host`` (when any is) get only the checks that can be made
from here: their config, their links, and whether their peers answer.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from broadgauge.doctor import judge, links
from broadgauge.doctor.checkup import Probing, Target, load, local_checks, peers
from broadgauge.doctor.findings import DEFAULT_TIMEOUT, Finding, fail, warn
from broadgauge.jobs.agent_type import AgentType
from broadgauge.runtime.config import AgentConfig
from broadgauge.site.topology import AgentSpec, Topology, TopologyError, load_topology

CONFIG_FILE = "config.toml"


def target(spec: AgentSpec, out: Path, local: bool = True) -> Target:
    """Where ``site init`` put ``spec``'s config, and its data directory."""
    # run.sh runs every agent of a host from the host's folder: relative paths start there.
    host = out / spec.host
    data = host / spec.name / "data"
    if spec.data_dir is not None:
        data = Path(spec.data_dir) if os.path.isabs(spec.data_dir) else host / spec.data_dir
    return Target(spec.name, host / spec.name / CONFIG_FILE, data, local, base=host)


def check_site(
    topology_path: Path,
    out: Path,
    *,
    hosts: Iterable[str] = (),
    timeout: float = DEFAULT_TIMEOUT,
) -> list[Finding]:
    """Every check of every agent of the topology at ``topology_path``, written under ``out``.

    ``hosts``: the hosts this machine is (default: all of them, as when every host is a
    folder on one machine).  Raises :class:`TopologyError` for a topology that does not parse.
    """
    topology = load_topology(topology_path)
    return check_topology(topology, topology_path, out, hosts=hosts, timeout=timeout)


def check_topology(
    topology: Topology,
    topology_path: Path,
    out: Path,
    *,
    hosts: Iterable[str] = (),
    timeout: float = DEFAULT_TIMEOUT,
) -> list[Finding]:
    """:func:`check_site` for a topology already parsed (or built in code)."""
    chosen = set(hosts)
    unknown = chosen - set(topology.hosts())
    if unknown:
        raise TopologyError(
            f"--host {', '.join(sorted(unknown))}: {topology_path} has no such host; "
            f"its hosts are {', '.join(topology.hosts())}"
        )
    local = chosen or set(topology.hosts())
    targets = {spec.name: target(spec, out, spec.host in local) for spec in topology.agents}
    configs: dict[str, AgentConfig] = {}
    loaded: dict[str, list[Finding]] = {}
    for spec in topology.agents:
        config, found = load(targets[spec.name])
        loaded[spec.name] = found
        if config is not None:
            configs[spec.name] = config
            found.extend(_as_written(spec, config, targets[spec.name].config, topology_path, out))
    probing = Probing(timeout)
    findings: list[Finding] = []
    for spec in topology.agents:
        findings.extend(loaded[spec.name])
        config = configs.get(spec.name)
        if config is None:
            continue
        here = targets[spec.name]
        for upper in topology.servers_of(spec.name):
            if upper.name in configs:
                findings.extend(
                    links.link_keys(
                        (upper.name, configs[upper.name], targets[upper.name].config),
                        (spec.name, config, here.config),
                        spec.address,
                    )
                )
        if spec.role is AgentType.INSTANCE:
            below: dict[AgentType, list[str]] = {}
            for client in topology.clients_of(spec.name):
                below.setdefault(client.role, []).append(client.name)
            findings.append(links.leaves_from_links(spec.name, below, topology_path))
            findings.extend(_id_resolvers(topology, spec, configs, targets))
        findings.extend(peers(here, config, probing))
        if here.local:
            findings.extend(local_checks(here, config, probing))
    return findings


def _as_written(
    spec: AgentSpec, config: AgentConfig, path: Path, topology_path: Path, out: Path
) -> list[Finding]:
    """The config must still be the one ``site init`` wrote for this agent."""
    again = f"broadgauge site init {judge.q(topology_path)} --out {judge.q(out)}"
    differences = []
    if config.agent is not spec.role:
        differences.append(
            f"it is a {config.agent.display} config, the topology says {spec.role.display}"
        )
    if config.service.name != spec.name:
        differences.append(f"its name is {config.service.name}, the topology says {spec.name}")
    if spec.port is not None and config.service.port not in (spec.port, 0):
        differences.append(f"its port is {config.service.port}, the topology says {spec.port}")
    if not differences:
        return []
    return [
        fail(
            "config.topology",
            spec.name,
            f"{path} is not what {topology_path} line {spec.line} describes: "
            + "; ".join(differences),
            f"write it again: {again}",
        )
    ]


def _id_resolvers(
    topology: Topology,
    instance: AgentSpec,
    configs: dict[str, AgentConfig],
    targets: dict[str, Target],
) -> list[Finding]:
    """A filesystem agent must find the ids of users a local account agent creates."""
    below = topology.clients_of(instance.name)
    accounts = [
        a
        for a in below
        if a.role is AgentType.ACCOUNT
        and a.name in configs
        and (configs[a.name].extra("account-backend", "local") or "local") == "local"
    ]
    findings: list[Finding] = []
    for fs in below:
        if fs.role is not AgentType.FILESYSTEM or fs.name not in configs or not accounts:
            continue
        resolver = configs[fs.name].extra("id-resolver", "nss") or "nss"
        if resolver != "nss":
            continue
        account = accounts[0]
        directory = configs[account.name].extra("directory") or str(
            targets[account.name].data_dir / "directory.sqlite3"
        )
        findings.append(
            warn(
                "backend.id-resolver",
                fs.name,
                f"{fs.name} looks up user and group ids through NSS, but {account.name} keeps "
                "its users in its own directory, which NSS does not read: directories of new "
                "users cannot be given their owners (needed when the agents run as root)",
                f'set "id-resolver" = "directory:{directory}" in [agent.settings] of {fs.name} '
                f"in the topology (both agents on one host), then `broadgauge site init` again",
            )
        )
    return findings
