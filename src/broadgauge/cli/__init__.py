"""The ``broadgauge`` command: one entry point for every agent, example and tool."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from broadgauge import __version__
from broadgauge.wire import WireError


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, exposed for tests and documentation."""
    parser = argparse.ArgumentParser(
        prog="broadgauge",
        description="OpenPortal-compatible agent network and Execution Planner.",
    )
    parser.add_argument("--version", action="version", version=f"broadgauge {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="log more (-v info, -vv debug)"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    example = commands.add_parser("example", help="run a teaching example")
    examples = example.add_subparsers(dest="example", metavar="EXAMPLE", required=True)
    echo = examples.add_parser(
        "echo",
        help="two wire services bounce a counter (both in one process unless a role is given)",
    )
    echo.add_argument("--hops", type=int, default=10, help="how far to count (default 10)")
    roles = echo.add_subparsers(dest="role", metavar="ROLE")
    server = roles.add_parser("server", help="write an invite for 'client' and serve")
    server.add_argument("--invitation", type=Path, required=True, help="where to write the invite")
    server.add_argument(
        "--url", default="ws://127.0.0.1:0", help="listen URL (default: a free loopback port)"
    )
    server.add_argument(
        "--client-ip", default="127.0.0.1", help="address or CIDR the client connects from"
    )
    client = roles.add_parser("client", help="connect with an invite and start the bounce")
    client.add_argument("--invitation", type=Path, required=True, help="the invite to use")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``broadgauge`` console script."""
    args = build_parser().parse_args(argv)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "example" and args.example == "echo":
            return _echo(args)
    except WireError as exc:
        print(f"broadgauge: {exc}", file=sys.stderr)
        return 1
    except TimeoutError:
        print("broadgauge: timed out", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 2


def _echo(args: argparse.Namespace) -> int:
    from broadgauge.examples import echo

    if args.role == "server":
        asyncio.run(
            echo.run_server(args.invitation, args.url, client_ip=args.client_ip, hops=args.hops)
        )
    elif args.role == "client":
        asyncio.run(echo.run_client(args.invitation, hops=args.hops))
    else:
        asyncio.run(echo.run_both(hops=args.hops))
    return 0


if __name__ == "__main__":
    sys.exit(main())
