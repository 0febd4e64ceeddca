"""The ``broadgauge`` command: one entry point for every agent, example and tool.

* ``broadgauge demo [--serve --dir DIR]`` - a whole network on loopback (:mod:`broadgauge.demo`);
* ``broadgauge audit verify PATH`` - check an agent's hash-chained audit log;
* ``broadgauge site init TOPOLOGY`` - every agent's config of a site, keys exchanged (:mod:`.site`);
* ``broadgauge doctor CONFIG | --topology FILE --dir DIR`` - check agents, say what to fix;
* ``broadgauge example echo|job [ROLE ...]`` - the teaching examples (:mod:`.examples`);
* ``broadgauge <role> init|client|server|encryption|secret|extra|run`` - configure and run
  an agent of that role (:mod:`.roles`, :mod:`.run`).

Every failure the user can fix (a bad or missing config, an unreadable invite, a port in use,
a damaged store or audit log) is reported as ``broadgauge: <message>`` on stderr with exit
status 1.
"""

from __future__ import annotations

import argparse
import logging
import sys

from broadgauge import __version__
from broadgauge.cli.doctor import add_doctor_command, run_doctor
from broadgauge.cli.examples import add_example_commands, run_example
from broadgauge.cli.planner import add_planner_commands, run_planner
from broadgauge.cli.roles import ROLES_BY_NAME, add_role_commands, run_role
from broadgauge.cli.site import add_site_commands, run_site
from broadgauge.cli.tools import add_tool_commands, run_tool
from broadgauge.runtime.durable import DamagedFileError
from broadgauge.runtime.logs import FORMATS, configure_logging
from broadgauge.wire import WireError

_LEVELS = [logging.WARNING, logging.INFO, logging.DEBUG]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, exposed for tests and documentation."""
    parser = argparse.ArgumentParser(
        prog="broadgauge",
        description="OpenPortal-compatible agent network and Execution Planner.",
    )
    parser.add_argument("--version", action="version", version=f"broadgauge {__version__}")
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="log more (-v info, -vv debug, -vvv also websockets; `run` starts at info)",
    )
    parser.add_argument(
        "--log-format",
        choices=FORMATS,
        default=None,
        help="human (the default) or json: one JSON object per line, with agent, event, job, "
        "trace and outcome fields (`run` also reads [logging] format from its config)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_tool_commands(commands)
    add_site_commands(commands)
    add_doctor_command(commands)
    add_planner_commands(commands)
    add_example_commands(commands)
    add_role_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``broadgauge`` console script."""
    args = build_parser().parse_args(argv)
    # A long-running agent reports connections at INFO, like OpenPortal's default RUST_LOG.
    verbosity = args.verbose + (1 if getattr(args, "action", None) == "run" else 0)
    configure_logging(_LEVELS[min(verbosity, 2)], args.log_format or "human")
    # The websockets library logs every connection at INFO and every frame at DEBUG.
    logging.getLogger("websockets").setLevel(logging.DEBUG if args.verbose > 2 else logging.WARNING)
    try:
        if args.command in ("demo", "audit"):
            return run_tool(args)
        if args.command == "doctor":
            return run_doctor(args)
        if args.command == "site":
            return run_site(args)
        if args.command == "planner":
            return run_planner(args)
        if args.command == "example":
            return run_example(args)
        if args.command in ROLES_BY_NAME:
            return run_role(args)
    except TimeoutError:  # before OSError, of which it is a subclass
        print("broadgauge: timed out", file=sys.stderr)
        return 1
    except (WireError, OSError, DamagedFileError) as exc:
        print(f"broadgauge: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
