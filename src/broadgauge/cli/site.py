"""``broadgauge site init TOPOLOGY [--out DIR] [--rotate]``: a whole site from one file.

It replaces the ``init``, ``client --add`` and ``server --add`` commands of every agent: see
:mod:`broadgauge.site.topology` for the file and :mod:`broadgauge.site.files` for what is
written.  A topology that cannot be built is reported as ``broadgauge: <file> line N: ...``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from broadgauge.site.files import SiteReport, init_site
from broadgauge.site.topology import TopologyError, load_topology

DEFAULT_OUT = "site"


def add_site_commands(commands: Any) -> None:
    """Add ``site init`` to the top-level subcommands."""
    site = commands.add_parser("site", help="configure a whole site from one topology file")
    actions = site.add_subparsers(dest="site_action", metavar="ACTION", required=True)
    init = actions.add_parser(
        "init",
        help="write every agent's config, keys exchanged, into one folder per host",
        description="Read a topology file (agents and links) and write each agent's config, "
        "with every invite exchanged, into OUT/<host>/<agent>/. Running it again keeps "
        "existing keys and adds what is new.",
    )
    init.add_argument("topology", type=Path, help="the topology file (TOML)")
    init.add_argument(
        "-o",
        "--out",
        type=Path,
        metavar="DIR",
        help=f"where to write (default: [site] output of the file, relative to it, "
        f"else ./{DEFAULT_OUT})",
    )
    init.add_argument(
        "--rotate",
        action="store_true",
        help="give every link (and every bridge API key) new keys",
    )


def run_site(args: argparse.Namespace) -> int:
    """Run ``site init``; the exit status (1 with the reason for a bad topology)."""
    try:
        topology = load_topology(args.topology)
        out: Path = args.out or (
            args.topology.parent / topology.output if topology.output else Path(DEFAULT_OUT)
        )
        report = init_site(topology, out, rotate=args.rotate)
    except TopologyError as exc:
        print(f"broadgauge: {exc}", file=sys.stderr)
        return 1
    _print_report(report, len(topology.agents), len(topology.links), rotate=args.rotate)
    return 0


def _print_report(report: SiteReport, agents: int, links: int, *, rotate: bool) -> None:
    hosts = len(report.commands)
    print(f"{agents} agents, {links} links, {hosts} host(s) in {report.out}/")
    for path in report.written:
        print(f"  wrote     {path}")
    if report.unchanged:
        print(f"  unchanged {len(report.unchanged)} file(s)")
    for note in report.notes:
        print(f"  {note}")
    if rotate:
        print(
            "Every link has new keys, and every bridge a new API key: the old ones stop "
            "working when the agents restart. Copy every host's folder again, restart every "
            "agent, and give portal software the new client.toml."
        )
    elif report.written and report.changed:
        print(f"Changed configs: {', '.join(report.changed)} (restart these agents).")
    print(
        "Each host's folder holds keys: copy it to that host over a secure channel (e.g. scp -r)."
    )
    print("Then, on each host, start its agents (top of the tree first):")
    for host, command in report.commands.items():
        print(f"  {host}: {command}")
