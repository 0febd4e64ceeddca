"""Pure judgements about links: both ends of each, and the leaf agents an instance needs.

The topology mode knows every config, so it compares the listener's client entry with the
dialler's server entry (:func:`link_keys`) and reads an instance's leaves from the links
(:func:`leaves_from_links`).  One config alone can only guess its leaves from its clients'
names (:func:`leaves_from_names`) and say that the far ends were not checked.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from pathlib import Path

from broadgauge.doctor.findings import Finding, fail, ok, warn
from broadgauge.doctor.judge import q, role_command
from broadgauge.jobs.agent_type import AgentType
from broadgauge.runtime.config import AgentConfig
from broadgauge.wire import IpAllow

#: The leaf agents an instance needs below it: add_user and add_project use all three.
REQUIRED_LEAVES = (AgentType.ACCOUNT, AgentType.FILESYSTEM, AgentType.SCHEDULER)
#: Words that, in a client's name, suggest which leaf role it has (names carry no type).
LEAF_WORDS: Mapping[AgentType, tuple[str, ...]] = {
    AgentType.ACCOUNT: ("account", "ldap", "ipa", "user", "directory", "slapd"),
    AgentType.FILESYSTEM: ("filesystem", "fs", "storage", "lustre", "quota", "disk", "home"),
    AgentType.SCHEDULER: ("scheduler", "slurm", "sched", "batch", "queue", "sacct"),
}


# --- the leaf agents an instance needs -------------------------------------------------------


def _named(kind: AgentType, names: Sequence[str]) -> str:
    """``scheduler`` when the agent is named after its role, else ``slurm1 (scheduler)``."""
    if list(names) == [kind.display]:
        return kind.display
    return f"{'/'.join(names)} ({kind.display})"


def _none_of(kinds: Sequence[AgentType]) -> str:
    """``no account agent and no scheduler agent``."""
    return " and ".join(f"no {kind.display} agent" for kind in kinds)


def _any_of(kinds: Sequence[AgentType]) -> str:
    """``an account agent or a scheduler agent``."""
    return " or ".join(
        f"{'an' if kind.display[0] in 'aeiou' else 'a'} {kind.display} agent" for kind in kinds
    )


def leaves_from_links(
    agent: str, below: Mapping[AgentType, Sequence[str]], topology: Path
) -> Finding:
    """An instance needs an account, a filesystem and a scheduler agent linked below it."""
    missing = [kind for kind in REQUIRED_LEAVES if not below.get(kind)]
    if not missing:
        names = ", ".join(_named(kind, below[kind]) for kind in REQUIRED_LEAVES)
        return ok("leaves.required", agent, f"has the leaf agents add_user needs: {names}")
    example = missing[0].display
    return fail(
        "leaves.required",
        agent,
        f"the instance has {_none_of(missing)} below it: add_user and add_project "
        "fail without one of each",
        f'add to {q(topology)} an [[agent]] with role = "{example}" and a [[link]] with '
        f'dials = "<its name>" and listens = "{agent}" for each, then `broadgauge site init '
        f"{q(topology)}` again",
    )


def leaves_from_names(agent: str, config: AgentConfig, path: Path) -> Finding:
    """The same, guessed from the names of an instance's clients (a config has no types)."""
    names = [entry.name for entry in config.service.clients]
    found: dict[AgentType, list[str]] = {
        kind: [n for n in names if any(word in n.lower() for word in LEAF_WORDS[kind])]
        for kind in REQUIRED_LEAVES
    }
    missing = [kind for kind in REQUIRED_LEAVES if not found[kind]]
    if not missing:
        names_text = ", ".join(_named(kind, found[kind]) for kind in REQUIRED_LEAVES)
        return ok(
            "leaves.required",
            agent,
            f"clients named like the leaf agents add_user needs: {names_text} (by name only)",
        )
    first = missing[0].display
    return warn(
        "leaves.required",
        agent,
        f"no client of this instance is named like {_any_of(missing)}; an instance needs an "
        "account, a filesystem and a scheduler agent (add_user fails without them). "
        "A config does not say a client's role: if one is, ignore this",
        f"{role_command(config)} client -c {q(path)} --add {first} --ip ADDRESS, then on the "
        f"{first} agent's host `broadgauge {first} server --add invite_{first}_"
        f"{config.service.zone}.toml`",
    )


# --- both ends of a link -----------------------------------------------------------------------


def link_keys(
    listener: tuple[str, AgentConfig, Path],
    dialler: tuple[str, AgentConfig, Path],
    dialler_address: str | None = None,
) -> list[Finding]:
    """The listener's client entry and the dialler's server entry of one link must agree.

    Every finding is the dialler's (the link is listed with the agent that dials), and each
    message names both ends.
    """
    l_agent, l_config, l_path = listener
    d_agent, d_config, d_path = dialler
    check = f"link.{d_agent}->{l_agent}"
    l_name, d_name = l_config.service.name, d_config.service.name
    servers = [s for s in d_config.service.servers if s.name == l_name]
    new_invite = (
        f"{role_command(l_config)} client -c {q(l_path)} --add {d_name} --ip ADDRESS "
        f"--invitation invite_{d_name}.toml && {role_command(d_config)} server -c {q(d_path)} "
    )
    if not servers:
        return [
            fail(
                check,
                d_agent,
                f"{d_agent} has no server entry for {l_name}: it will never dial it",
                new_invite + f"--add invite_{d_name}.toml (if {l_name} already has a client "
                f"{d_name}, use client --rotate instead of --add)",
            )
        ]
    findings: list[Finding] = []
    for server in servers:
        client = l_config.service.client(d_name, server.zone)
        if client is None:
            zones = [c.zone for c in l_config.service.clients if c.name == d_name]
            where = f" (only in zone {', '.join(zones)})" if zones else ""
            findings.append(
                fail(
                    check,
                    d_agent,
                    f"{l_agent} has no client entry for {d_name}@{server.zone}{where}: "
                    f"it refuses {d_name}'s handshake",
                    new_invite + f"--rotate invite_{d_name}.toml",
                )
            )
            continue
        if client.inner_key != server.inner_key or client.outer_key != server.outer_key:
            findings.append(
                fail(
                    check,
                    d_agent,
                    f"the keys of link {d_name} -> {l_name} ({server.zone}) differ: {l_name}'s "
                    f"client entry for {d_name} and {d_name}'s server entry for {l_name} do not "
                    "match, so the handshake is refused (stale keys after a rotation?)",
                    f"{role_command(l_config)} client -c {q(l_path)} --rotate {d_name} "
                    f"--invitation rotate_{d_name}.toml && {role_command(d_config)} server -c "
                    f"{q(d_path)} --rotate rotate_{d_name}.toml, then restart both agents",
                )
            )
            continue
        findings.append(
            ok(check, d_agent, f"keys and zone {server.zone} match at both ends of the link")
        )
        if dialler_address is not None:
            findings.extend(
                _allowlist(
                    check, d_agent, l_path, allow=client.ip, name=d_name, address=dialler_address
                )
            )
        if server.url.rstrip("/") != l_config.service.url.rstrip("/"):
            findings.append(
                warn(
                    check,
                    d_agent,
                    f"{d_name} dials {l_name} at {server.url}, but {l_name}'s service.url is "
                    f"{l_config.service.url} (fine only behind a proxy)",
                    f"correct the url of the {l_name} server entry in {q(d_path)}",
                )
            )
    return findings


def _allowlist(
    check: str, agent: str, path: Path, *, allow: IpAllow, name: str, address: str
) -> list[Finding]:
    """The listener's allowlist for ``name`` must admit the address ``name`` dials from."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return []  # a host name: the allowlist holds addresses, the doctor cannot compare
    if allow.matches(ip):
        return []
    return [
        fail(
            check,
            agent,
            f"{path} allows {name} only from {allow}, but {name}'s address is {address}",
            f"correct the ip of client {name} in {q(path)}",
        )
    ]


def unchecked_far_end(agent: str, config: AgentConfig) -> Finding:
    """Single-config mode: the other end of each link is in another file."""
    links = len(config.service.servers) + len(config.service.clients)
    return warn(
        "link.keys",
        agent,
        f"{links} link(s) in this config; the keys at their far ends are in other configs, "
        "which one config cannot check",
        "run `broadgauge doctor --topology TOPOLOGY --dir DIR` to compare both ends",
    )
