"""``broadgauge planner serve|check|aggregate``: run and inspect Execution Planner services.

* ``serve --config FILE [--host H] [--port P]`` - one service's ``/accepts`` over HTTP;
* ``check --config FILE TASKTYPE [KEY=VALUE ...] [--claims JSON] [--account yes|no]`` -
  evaluate the rules offline and print which rule decided (exit 0 for YES, 3 for NO);
* ``aggregate --config FILE [--host H] [--port P]`` - ``/accepts`` over many services;
* ``ask URL TASKTYPE [KEY=VALUE ...]`` - ask a planner (one service, an aggregator or a
  network planner) where a task can run, as a researcher would; the token, if any, comes
  from ``$BROADGAUGE_TOKEN`` (exit 0 for YES, 3 for NO).
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
        action.add_argument(
            "--no-metrics", action="store_true", help="serve no /metrics (on by default)"
        )
    ask = actions.add_parser("ask", help="ask a planner where a task can run")
    ask.add_argument("url", help="the planner's base URL or its /accepts URL")
    ask.add_argument("tasktype", help="the task type, e.g. jupyter-notebook")
    ask.add_argument("taskinfo", nargs="*", metavar="KEY=VALUE", help="taskinfo details")
    ask.add_argument("--json", action="store_true", help="print the answer as JSON")
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
        if args.planner_action == "ask":
            return _ask(args)
        from broadgauge.planner.metrics import instrument
        from broadgauge.runtime.metrics import PlannerMetrics

        # /metrics on the app's own address; process metrics too (this is the main server).
        metrics = None if args.no_metrics else PlannerMetrics.standalone()
        if args.planner_action == "serve":
            from broadgauge.planner.app import create_app
            from broadgauge.planner.config import load

            app = create_app(load(args.config))
            if metrics is not None:
                instrument(app, metrics)
            return _serve(app, args.host, args.port)
        from broadgauge.planner.aggregate import create_aggregator_app, load_aggregator

        app = create_aggregator_app(load_aggregator(args.config), metrics=metrics)
        return _serve(app, args.host, args.port)
    except RuleError as exc:
        print(f"broadgauge: {exc}", file=sys.stderr)
        return 1


def _taskinfo_pairs(items: list[str]) -> list[tuple[str, str]] | None:
    pairs = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            print(f"broadgauge: taskinfo {item!r} is not KEY=VALUE", file=sys.stderr)
            return None
        pairs.append((f"taskinfo.{key.removeprefix('taskinfo.')}", value))
    return pairs


def _ask(args: argparse.Namespace) -> int:
    import os

    import httpx
    from rich.console import Console
    from rich.table import Table

    pairs = _taskinfo_pairs(args.taskinfo)
    if pairs is None:
        return 2
    url = args.url.rstrip("/")
    url = url if url.endswith("/accepts") else url + "/accepts"
    headers = {"Accept": "application/json"}
    token = os.environ.get("BROADGAUGE_TOKEN")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        reply = httpx.get(url, params=[("tasktype", args.tasktype), *pairs], headers=headers)
    except httpx.HTTPError as exc:
        print(f"broadgauge: cannot ask {url}: {exc}", file=sys.stderr)
        return 1
    try:
        body = reply.json()
    except ValueError:
        body = None
    if reply.status_code != 200 or not isinstance(body, dict) or "reponseword" not in body:
        print(
            f"broadgauge: {url} answered HTTP {reply.status_code}: {reply.text[:300]}",
            file=sys.stderr,
        )
        return 1
    if args.json:
        print(json.dumps(body, indent=2))
    else:
        _show_answer(Console(), Table, args.tasktype, body)
    return 0 if body["reponseword"] == "YES" else 3


def _endpoint(answer: dict[str, Any]) -> str:
    return f"{answer.get('servicetype')} at {answer.get('serviceinfo', {}).get('endpoint')}"


def _show_answer(console: Any, table_type: Any, tasktype: str, body: dict[str, Any]) -> None:
    if body["reponseword"] == "YES":
        console.print(f"[green]YES[/]: {tasktype} can run on {_endpoint(body)}")
    else:
        info = body.get("reponseinfo") or {}
        reason = f" ({info['reason']})" if info.get("reason") else ""
        console.print(f"[red]NO[/]: nowhere to run {tasktype}{reason}")
    rows = []
    for answer in body.get("answers", []):
        rows.append((answer, "YES", _endpoint(answer)))
    for answer in body.get("provisionable", []):
        hint = answer.get("reponseinfo", {}).get("provision", {})
        rows.append((answer, "provision", f"{hint.get('destination')} {hint.get('instruction')}"))
    for failure in body.get("failures", []):
        rows.append((failure, str(failure.get("status")), str(failure.get("detail") or "")))
    if not rows:
        return
    table = table_type()
    for column in ("where", "answer", "details"):
        table.add_column(column)
    for where, word, detail in rows:
        table.add_row(str(where.get("destination") or where.get("service") or ""), word, detail)
    console.print(table)


def _serve(app: Any, host: str, port: int) -> int:
    import socket

    import uvicorn

    from broadgauge.serving import PortInUse

    # uvicorn only logs a port in use; say which setting to change (it serves /metrics too).
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise PortInUse(
                f"port {port} on {host} is already in use (set by --host/--port, which also "
                f"serve /metrics): {exc.strerror}"
            ) from None
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
    return 0


def _check(args: argparse.Namespace) -> int:
    from broadgauge.planner.answers import TaskError, task_from_pairs
    from broadgauge.planner.config import load
    from broadgauge.planner.rules import Identity, evaluate

    config = load(args.config)
    extra = _taskinfo_pairs(args.taskinfo)
    if extra is None:
        return 2
    pairs: list[tuple[str, Any]] = [("tasktype", args.tasktype), *extra]
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
