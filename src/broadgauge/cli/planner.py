"""``broadgauge planner serve|check|aggregate``: run and inspect Execution Planner services.

* ``serve --config FILE [--host H] [--port P]`` - one service's ``/accepts`` over HTTP;
* ``check --config FILE TASKTYPE [KEY=VALUE ...] [--claims JSON] [--account yes|no]`` -
  evaluate the rules offline and print which rule decided (exit 0 for YES, 3 for NO);
* ``aggregate --config FILE [--host H] [--port P]`` - ``/accepts`` over many services.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def add_planner_commands(commands: Any) -> None:
    """Add ``planner`` and its actions to the top-level subcommands."""
    planner = commands.add_parser("planner", help="Execution Planner: /accepts services")
    actions = planner.add_subparsers(dest="planner_action", metavar="ACTION", required=True)
    for name, help_text in (
        ("serve", "serve one service's /accepts from its TOML rules"),
        ("aggregate", "serve /accepts over a list of registered planner services"),
    ):
        action = actions.add_parser(name, help=help_text)
        action.add_argument("--config", type=Path, required=True, help="the TOML file")
        action.add_argument("--host", default="127.0.0.1", help="address to listen on")
        action.add_argument("--port", type=int, default=8400, help="port to listen on")
    check = actions.add_parser("check", help="evaluate the rules offline and explain")
    check.add_argument("--config", type=Path, required=True, help="the service's TOML file")
    check.add_argument("tasktype", help="the task type, e.g. jupyter-notebook")
    check.add_argument("taskinfo", nargs="*", metavar="KEY=VALUE", help="taskinfo details")
    check.add_argument(
        "--claims", help='the caller\'s claims as JSON, e.g. \'{"sub": "a", "groups": ["x"]}\''
    )
    check.add_argument(
        "--account",
        choices=("yes", "no"),
        help="whether the caller has an account here (for rules with requires_account; "
        "unset, such rules are skipped as a standalone service does)",
    )


def run_planner(args: argparse.Namespace) -> int:
    """Run a ``planner`` action; the exit status."""
    from broadgauge.planner.rules import RuleError

    try:
        if args.planner_action == "check":
            return _check(args)
        if args.planner_action == "serve":
            from broadgauge.planner.app import create_app
            from broadgauge.planner.config import load

            return _serve(create_app(load(args.config)), args.host, args.port)
        from broadgauge.planner.aggregate import create_aggregator_app, load_aggregator

        return _serve(create_aggregator_app(load_aggregator(args.config)), args.host, args.port)
    except RuleError as exc:
        print(f"broadgauge: {exc}", file=sys.stderr)
        return 1


def _serve(app: Any, host: str, port: int) -> int:
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
    return 0


def _check(args: argparse.Namespace) -> int:
    from broadgauge.planner.answers import TaskError, task_from_pairs
    from broadgauge.planner.config import load
    from broadgauge.planner.rules import Identity, evaluate

    config = load(args.config)
    pairs: list[tuple[str, Any]] = [("tasktype", args.tasktype)]
    for item in args.taskinfo:
        key, sep, value = item.partition("=")
        if not sep:
            print(f"broadgauge: taskinfo {item!r} is not KEY=VALUE", file=sys.stderr)
            return 2
        pairs.append((f"taskinfo.{key.removeprefix('taskinfo.')}", value))
    try:
        task = task_from_pairs(pairs)
    except TaskError as exc:
        print(f"broadgauge: {exc}", file=sys.stderr)
        return 2
    identity = None
    if args.claims:
        claims = json.loads(args.claims)
        if not isinstance(claims, dict):
            print("broadgauge: --claims must be a JSON object", file=sys.stderr)
            return 2
        identity = Identity(subject=str(claims.get("sub", "")), claims=claims)
    has_account = None if args.account is None else args.account == "yes"
    answer, why = evaluate(config.ruleset, task, identity, has_account)
    print(json.dumps({"answer": answer.to_json(), "explain": why.to_json()}, indent=2))
    return 0 if answer.accepted else 3
