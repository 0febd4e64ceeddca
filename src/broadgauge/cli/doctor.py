"""``broadgauge doctor``: check one agent's config, or every agent of a topology.

Prints one line per check (``ok``, ``warn`` or ``fail``, the agent, what was found and the
command that fixes it), or with ``--json`` a list of objects for scripts.  The exit status is
0 only if nothing failed.  Nothing is changed unless ``--fix`` is given; then only the
repairs the report lists as fixable are made, and each is printed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from broadgauge.cli.roles import default_data_dir
from broadgauge.doctor.findings import DEFAULT_TIMEOUT, Report
from broadgauge.runtime.config import AgentConfig
from broadgauge.wire import ConfigError


def add_doctor_command(commands: Any) -> None:
    """Add ``doctor`` to the top-level subcommands."""
    doctor = commands.add_parser(
        "doctor",
        help="check an agent's config, or a whole topology, and say what to fix",
        description=(
            "Check one agent (CONFIG) or every agent `broadgauge site init` wrote (--topology "
            "FILE --dir DIR). Changes nothing unless --fix is given."
        ),
    )
    doctor.add_argument("config", nargs="?", type=Path, metavar="CONFIG", help="an agent's config")
    doctor.add_argument(
        "--data-dir",
        type=Path,
        metavar="DIR",
        help="the agent's data directory (default: as `<role> run` uses)",
    )
    doctor.add_argument("--topology", type=Path, metavar="FILE", help="a topology file")
    doctor.add_argument(
        "--dir", type=Path, metavar="DIR", help="the folder `broadgauge site init` wrote"
    )
    doctor.add_argument(
        "--host",
        action="append",
        default=[],
        metavar="HOST",
        help="with --topology: the host this is (repeatable); only its agents' ports, back "
        "ends, data and audit logs are checked (default: every host, as on one machine)",
    )
    doctor.add_argument("--json", action="store_true", help="print the findings as JSON")
    doctor.add_argument(
        "--fix", action="store_true", help="make the repairs the report lists as fixable"
    )
    doctor.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"how long each probe may take (default {DEFAULT_TIMEOUT:g})",
    )


def _usage(message: str) -> int:
    print(f"broadgauge doctor: {message}", file=sys.stderr)
    return 2


def run_doctor(args: argparse.Namespace) -> int:
    """Run the checks; print the report; the exit status."""
    if (args.config is None) == (args.topology is None):
        return _usage("give either CONFIG or --topology FILE --dir DIR")
    if args.timeout <= 0:
        return _usage("--timeout must be a number of seconds > 0")
    report = Report()
    if args.topology is not None:
        if args.dir is None:
            return _usage("--topology needs --dir DIR, the folder `broadgauge site init` wrote")
        if args.data_dir is not None:
            return _usage("--data-dir is for one CONFIG; a topology gives each agent's")
        from broadgauge.doctor.sitewide import check_site
        from broadgauge.site.topology import TopologyError

        try:
            report.extend(
                check_site(args.topology, args.dir, hosts=args.host, timeout=args.timeout)
            )
        except TopologyError as exc:
            print(f"broadgauge: {exc}", file=sys.stderr)
            return 1
    else:
        if args.dir is not None or args.host:
            return _usage("--dir and --host are for --topology")
        from broadgauge.doctor.checkup import Target, check_config

        path: Path = args.config
        data = args.data_dir or _default_data_dir(path)
        report.extend(check_config(Target(_label(path), path, data), timeout=args.timeout))
    changes = report.apply_repairs() if args.fix else []
    if args.json:
        print(report.dumps())
        for line in changes:
            print(line, file=sys.stderr)
    else:
        for line in report.text_lines():
            print(line)
        for line in changes:
            print(line)
    return report.exit_status


def _label(path: Path) -> str:
    """What to call the agent in the report: the name in its config, else the file's stem."""
    try:
        return AgentConfig.load(path).service.name
    except ConfigError:
        return path.stem


def _default_data_dir(path: Path) -> Path:
    """The data directory ``broadgauge <role> run`` uses for this config's role."""
    try:
        role = AgentConfig.load(path).agent.display
    except ConfigError:
        role = path.stem
    return default_data_dir(role)
