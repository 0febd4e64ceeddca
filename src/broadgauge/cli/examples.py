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
    _add_roles(
        echo,
        ("server", "write an invite for 'client' and serve"),
        ("client", "connect with an invite and start the bounce"),
    )


def _add_job(examples: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    job = examples.add_parser(
        "job",
        help="a portal agent sends jobs to a cluster agent (one process unless a role is given)",
        description="Example 2 (docs/examples/job.md). Without a ROLE, the portal and the "
        "cluster run in one process. The portal exits 1: its second job is refused.",
    )
    _add_roles(
        job,
        ("portal", "write an invite for 'cluster', serve, and send it two jobs"),
        ("cluster", "connect with an invite and answer the jobs"),
    )


def _add_roles(
    example: argparse.ArgumentParser, serving: tuple[str, str], dialling: tuple[str, str]
) -> None:
    """An example's two ROLEs, each ``(name, help)``: one writes an invite and serves, the
    other connects with that invite."""
    roles = example.add_subparsers(dest="role", metavar="ROLE")
    server = roles.add_parser(serving[0], help=serving[1])
    server.add_argument("--invitation", type=Path, required=True, help="where to write the invite")
    server.add_argument(
        "--url", default="ws://127.0.0.1:0", help="listen URL (default: a free loopback port)"
    )
    server.add_argument(
        "--client-ip", default="127.0.0.1", help=f"address or CIDR the {dialling[0]} connects from"
    )
    client = roles.add_parser(dialling[0], help=dialling[1])
    client.add_argument("--invitation", type=Path, required=True, help="the invite to use")


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
