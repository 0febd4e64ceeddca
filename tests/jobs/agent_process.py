"""An instance agent in its own process, for tests that SIGKILL it (test_agent_recovery.py).

Run from the repository root::

    python -m tests.jobs.agent_process CONFIG DATA_DIR LEDGER [--delay S] [--trace FILE]
                                       [--crash-after-finish USER]

It loads the agent config, keeps its boards in DATA_DIR, dials its servers and serves until
killed (SIGTERM stops it cleanly).  ``add_user`` appends ``<user>`` to LEDGER when it starts
executing, so the ledger has one line per *execution*, sleeps ``--delay`` seconds and returns
the user's mapping.  Jobs run one at a time, so a kill interrupts at most one.

``--trace`` appends every trace event as a JSON line tagged with this process's pid.
``--crash-after-finish USER`` SIGKILLs the process as soon as the job for USER has been
recorded as finished, before its result can be sent anywhere.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
from pathlib import Path

from broadgauge.runtime.agent import Agent, Envelope
from broadgauge.runtime.config import AgentConfig
from broadgauge.runtime.trace import Action, TraceEvent

from .agent_helpers import FAST, mapping_for


def append_line(path: Path, line: str) -> None:
    """Append one line, synchronously: it is in the file before the handler yields."""
    with path.open("a", encoding="utf-8") as out:
        out.write(f"{line}\n")


def build(args: argparse.Namespace) -> Agent:
    """The agent, with its ``add_user`` handler and trace sinks."""
    agent = Agent(AgentConfig.load(args.config), data_dir=args.data_dir, timers=FAST, max_workers=1)
    ledger = Path(args.ledger)

    @agent.handler("add_user")
    async def add_user(envelope: Envelope) -> object:
        user = str(envelope.job.instruction).split()[1]
        append_line(ledger, user)
        await asyncio.sleep(args.delay)
        return mapping_for(user)

    if args.trace:
        trace_file = Path(args.trace)

        @agent.on_trace
        def record(event: TraceEvent) -> None:
            append_line(trace_file, json.dumps({"pid": os.getpid(), **event.as_dict()}))

    if args.crash_after_finish:
        victim = f"add_user {args.crash_after_finish}"

        @agent.on_trace
        def crash(event: TraceEvent) -> None:
            # FINISHED is traced after the result is stored and before it is sent.
            if event.action is Action.FINISHED and event.instruction == victim:
                os.kill(os.getpid(), signal.SIGKILL)

    return agent


async def serve(args: argparse.Namespace) -> None:
    """Serve until SIGTERM."""
    agent = build(args)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await agent.start(listen=False)
    try:
        await stop.wait()
    finally:
        await agent.stop()


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and serve."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("data_dir")
    parser.add_argument("ledger")
    parser.add_argument("--delay", type=float, default=0.1)
    parser.add_argument("--trace")
    parser.add_argument("--crash-after-finish")
    asyncio.run(serve(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
