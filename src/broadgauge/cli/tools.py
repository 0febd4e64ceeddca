"""``broadgauge demo`` and ``broadgauge audit verify``."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any


def add_tool_commands(commands: Any) -> None:
    """Add ``demo`` and ``audit`` to the top-level subcommands."""
    demo = commands.add_parser(
        "demo", help="run a whole network on loopback with embedded backends, and a scenario"
    )
    demo.add_argument(
        "--serve", action="store_true", help="keep the network running until interrupted"
    )
    demo.add_argument(
        "--dir", type=Path, help="where agents keep their data (default: a temporary folder)"
    )
    demo.add_argument(
        "--jupyterhub-url",
        metavar="URL",
        help="manage this JupyterHub (its public URL) instead of the embedded stand-in; "
        "the API token is read from JUPYTERHUB_API_TOKEN",
    )
    audit = commands.add_parser("audit", help="check an agent's hash-chained audit log")
    actions = audit.add_subparsers(dest="audit_action", metavar="ACTION", required=True)
    verify = actions.add_parser("verify", help="report the first broken or altered entry")
    verify.add_argument("path", type=Path, help="an audit.jsonl file")


def run_tool(args: argparse.Namespace) -> int:
    """Run ``demo`` or ``audit``; the exit status."""
    if args.command == "audit":
        return _verify(args.path)
    from rich.console import Console

    from broadgauge import demo

    console = Console()
    configure = None
    if args.jupyterhub_url:
        token = os.environ.get("JUPYTERHUB_API_TOKEN")
        if not token:
            print(
                "broadgauge: demo --jupyterhub-url needs the hub's API token in "
                "JUPYTERHUB_API_TOKEN",
                file=sys.stderr,
            )
            return 2
        configure = demo.use_jupyterhub(args.jupyterhub_url, token)
    if args.serve:
        if args.dir is None:
            print("broadgauge: demo --serve needs --dir DIR", file=sys.stderr)
            return 2
        args.dir.mkdir(parents=True, exist_ok=True)
        return asyncio.run(_serve(demo, args.dir, console, configure))
    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
        return asyncio.run(demo.run_demo(args.dir, console, configure))
    with tempfile.TemporaryDirectory(prefix="broadgauge-demo-") as tmp:
        return asyncio.run(demo.run_demo(Path(tmp), console, configure))


async def _serve(demo: Any, root: Path, console: Any, configure: Any) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    status: int = await demo.serve_demo(root, console, stop, configure)
    return status


def _verify(path: Path) -> int:
    from broadgauge.runtime.audit import verify

    if not path.is_file():
        print(f"broadgauge: no audit log at {path}", file=sys.stderr)
        return 1
    result = verify(path)
    if result.ok:
        print(f"{path}: {result.entries} entries, chain intact")
        return 0
    print(
        f"{path}: entry on line {result.first_bad_line} is broken: {result.reason} "
        f"({result.entries} entries before it are intact)"
    )
    return 1
