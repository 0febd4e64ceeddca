"""``broadgauge example ...``: the teaching examples (echo, job)."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path


def add_example_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``example echo`` and ``example job`` to the top-level command list."""
    example = commands.add_parser("example", help="run a teaching example")
    examples = example.add_subparsers(dest="example", metavar="EXAMPLE", required=True)
    _add_echo(examples)
    _add_job(examples)


def _add_echo(examples: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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


def _add_job(examples: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    job = examples.add_parser(
        "job",
        help="a portal agent sends jobs to a cluster agent (one process unless a role is given)",
        description="Example 2 (docs/examples/job.md). Without a ROLE, the portal and the "
        "cluster run in one process. The portal exits 1: its second job is refused.",
    )
    roles = job.add_subparsers(dest="role", metavar="ROLE")
    portal = roles.add_parser(
        "portal", help="write an invite for 'cluster', serve, and send it two jobs"
    )
    portal.add_argument("--invitation", type=Path, required=True, help="where to write the invite")
    portal.add_argument(
        "--url", default="ws://127.0.0.1:0", help="listen URL (default: a free loopback port)"
    )
    portal.add_argument(
        "--client-ip", default="127.0.0.1", help="address or CIDR the cluster connects from"
    )
    cluster = roles.add_parser("cluster", help="connect with an invite and answer the jobs")
    cluster.add_argument("--invitation", type=Path, required=True, help="the invite to use")


def run_example(args: argparse.Namespace) -> int:
    """Run the example named in ``args``; its exit status."""
    if args.example == "echo":
        return _echo(args)
    if args.example == "job":
        return _job(args)
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


def _job(args: argparse.Namespace) -> int:
    from broadgauge.examples import job

    if args.role == "portal":
        return asyncio.run(job.run_portal(args.invitation, args.url, client_ip=args.client_ip))
    if args.role == "cluster":
        return asyncio.run(job.run_cluster(args.invitation))
    return asyncio.run(job.run_both())
