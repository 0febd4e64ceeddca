"""``broadgauge site init``: write a topology's configs into one folder per host.

The layout under the output folder ``OUT``::

    OUT/<host>/run.sh                  starts the host's agents (mode 0700)
    OUT/<host>/<agent>/config.toml     the agent's config with its keys (mode 0600)
    OUT/<host>/<bridge>/client.toml    a bridge's client file for portal software (0600)
    OUT/<host>/<agent>/data/           the agent's data, made by `run` (unless data_dir is set)

Folders are mode 0700.  Paths inside a host folder are relative to it, so the folder can be
copied anywhere on its host; ``run.sh`` changes into it before starting anything.  Running
again reads the configs already there and keeps their keys (see
:func:`broadgauge.site.build.build_configs`); only files whose content changes are rewritten.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from broadgauge.runtime.config import AgentConfig
from broadgauge.site.build import Built, build_configs, site_data_dir
from broadgauge.site.topology import AgentSpec, Topology, TopologyError
from broadgauge.wire import ConfigError
from broadgauge.wire.files import write_private

CONFIG = "config.toml"
CLIENT_FILE = "client.toml"
RUN_SCRIPT = "run.sh"


@dataclass
class SiteReport:
    """What :func:`init_site` did, for the command to print."""

    out: Path
    written: list[Path] = field(default_factory=list)
    unchanged: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: Agents whose config changed: restart them (after copying their host's folder).
    changed: list[str] = field(default_factory=list)
    #: host -> the command that starts all its agents.
    commands: dict[str, str] = field(default_factory=dict)


def config_path(out: Path, spec: AgentSpec) -> Path:
    """``OUT/<host>/<agent>/config.toml``."""
    return out / spec.host / spec.name / CONFIG


def run_command(spec: AgentSpec) -> list[str]:
    """The ``broadgauge <role> run`` command of ``spec``, relative to its host folder."""
    config = f"{spec.name}/{CONFIG}"
    return [
        "broadgauge",
        spec.role.display,
        "run",
        "-c",
        config,
        "--data-dir",
        str(site_data_dir(spec)),
    ]


def read_existing(topology: Topology, out: Path) -> dict[str, AgentConfig]:
    """The configs a previous run wrote (their keys are kept)."""
    existing = {}
    for spec in topology.agents:
        path = config_path(out, spec)
        if path.exists():
            try:
                existing[spec.name] = AgentConfig.load(path)
            except ConfigError as exc:
                raise TopologyError(
                    f"{path}: {exc}; fix it or move it away to write a new one"
                ) from None
    return existing


def _private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)  # an existing folder keeps its mode otherwise


def _write_if_changed(path: Path, text: str, report: SiteReport) -> None:
    if path.exists() and path.read_text(encoding="utf-8") == text:
        # Still tighten the mode of a file someone loosened.
        os.chmod(path, 0o600)
        report.unchanged.append(path)
        return
    write_private(path, text)
    report.written.append(path)


def run_script(topology: Topology, host: str) -> str:
    """``run.sh`` of ``host``: all its agents (Ctrl-C stops them all), or one by name."""
    agents = [spec for spec in topology.top_down() if spec.host == host]
    names = " ".join(spec.name for spec in agents)
    cases = "\n".join(
        f"        {spec.name}) exec {shlex.join(run_command(spec))} ;;" for spec in agents
    )
    return f"""#!/bin/sh
# The agents of host {host}, written by `broadgauge site init` from {topology.source}.
#   sh run.sh          start them all; Ctrl-C (or SIGTERM) stops them all
#   sh run.sh NAME     run one agent in the foreground (for example from a systemd unit)
# Paths in the configs are relative to this folder, so the agents always run from it.
cd "$(dirname "$0")" || exit 1
agent() {{
    case "$1" in
{cases}
        *) echo "run.sh: no agent $1 on host {host}; agents: {names}" >&2; exit 2 ;;
    esac
}}
if [ $# -gt 0 ]; then agent "$1"; fi
pids=""
for name in {names}; do
    agent "$name" &
    pids="$pids $!"
done
stop() {{ kill $pids 2>/dev/null; wait; exit 0; }}
trap stop INT TERM
wait
"""


def init_site(topology: Topology, out: Path, *, rotate: bool = False) -> SiteReport:
    """Write every agent's config, client file and ``run.sh`` under ``out``; what was done."""
    report = SiteReport(out)
    existing = read_existing(topology, out)
    built: Built = build_configs(topology, existing, rotate=rotate)
    _private_dir(out)
    for host in topology.hosts():
        _private_dir(out / host)
        for spec in topology.on_host(host):
            _private_dir(out / host / spec.name)
            path = config_path(out, spec)
            _write_if_changed(path, built.configs[spec.name].dumps(), report)
            client_file = built.client_files.get(spec.name)
            if client_file is not None:
                _write_if_changed(path.with_name(CLIENT_FILE), client_file.dumps(), report)
        script = out / host / RUN_SCRIPT
        _write_if_changed(script, run_script(topology, host), report)
        os.chmod(script, 0o700)
        report.commands[host] = f"sh {script}"
    report.notes = built.notes + topology.warnings()
    report.changed = [name for name in existing if name in built.changed]
    return report
