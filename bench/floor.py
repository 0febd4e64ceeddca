"""The floor under the hot path: the work the protocol demands of each frame, and nothing more.

    python bench/floor.py [--jobs 2000] [--warmup 200] [--windows 1 64] [--repeat 3]

Prints numbers, asserts nothing.  Chains of the same processes and loopback websockets
(portal here, every other hop in a child process, as ``bench/jobs.py`` runs them), measured in
one run, side by side:

* **bare**: ``bench/jobs.py``'s bare websockets relay: plain JSON text passed on;
* **encrypted wire only**: each hop opens each frame and seals its payload for the next link
  (both AEAD layers, a key derived per message, the replay check), and nothing else.  Every
  implementation of the protocol pays this, whatever it is written in;
* **protocol floor**: the wire, plus what the protocol demands of a hop, done with Broadgauge's
  own pure cores and no runtime around them: decode and check the command and its Job (the
  quick reader, which hands any text not in canonical form to the strict one, and the
  instruction parsed by the grammar), check that the job has not
  expired and where it is on its path, record it on the boards of both links it passes,
  encode it.  The leaf answers ``add_user`` with a ``UserMapping``.  No trace or audit line,
  no metrics, no logging, no error handling, no durability, no tasks;
* **durable floor**: the protocol floor, and each board change durable before the frame
  that carries it leaves: one upsert of the job's row per change, with the columns and the
  statement of the agents' board store, and one commit for all the changes made in a turn
  of the event loop (SQLite in WAL mode, ``synchronous=NORMAL``, as the agents' stores).
  The least a peer can do that keeps the agents' promise: nothing leaves an agent that a
  crash could take back.  No audit line, no execution marker;
* **durable traced floor**: the durable floor, and what else the agents must keep of each
  job: one hash-chained audit line for each action (the agents' own audit log, with their
  fields: 2 at the portal, 3 at each other hop), and, where the job runs, the markers of its
  run with the store's own statements, committed as the agents' promises need: the start
  with the job before the handler runs, the end before its audit line, the finished job
  before the result leaves (``floor_hops.TracedHop`` says why);
* **broadgauge**: the real agents with in-memory boards (``bench/jobs.py``'s row), and, next
  to the durable floor, with SQLite boards.

Rows: the 4-hop chain (portal → provider → platform → instance) at each window, and the
1-hop chain (portal → instance) at the largest window.  Then each 4-hop row against the bare
relay, the 1-hop rates with the most the cores allow at their CPU per job, and the CPU of each
step of one forwarded Put timed on its own, next to the standard library's json doing the
same bytes.  A goal below the floor cannot be met by trimming the runtime: only by faster
cores (the pure steps) or a cheaper wire.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import pstats
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve

import jobs as chain
from benchlib import main_parser, read_channel, write_link
from broadgauge.grammar.destination import Position
from broadgauge.jobs import Board, Job, Put, Update, encode_command
from broadgauge.jobs.commands import decode_command
from broadgauge.jobs.job import PEER_COMMANDS_KEPT
from broadgauge.runtime.audit import AuditLog
from floor_hops import HOPS, DurableBoards, answer, audit_action, checked, opened, opened_job

WS_OPTIONS: dict[str, object] = {"compression": None, "max_size": None, "ping_interval": None}


# --- children -----------------------------------------------------------------------------


async def hop_child(role: str, name: str, upper: str, lower: str, workdir: Path) -> None:
    """One process of a chain: dial ``upper``, accept ``lower`` (unless ``-``), pass frames on."""
    url = (await chain.wait_file(workdir / f"{name}.url")).read_text()
    up_channel = read_channel(workdir / f"{name}.link")
    up: ClientConnection = await connect(url, **WS_OPTIONS)  # type: ignore[arg-type]
    tasks: list[asyncio.Task[None]] = []
    if lower == "-":
        hop = HOPS[role](name, upper, lower, up_channel, None, workdir=workdir)

        async def serve_leaf() -> None:
            async for frame in up:
                await hop.serve_leaf(up, frame)

        tasks.append(asyncio.create_task(serve_leaf()))
    else:
        write_link(workdir / f"{lower}.link")
        down_channel = read_channel(workdir / f"{lower}.link")
        hop = HOPS[role](name, upper, lower, up_channel, down_channel, workdir=workdir)
        below: asyncio.Future[ServerConnection] = asyncio.get_running_loop().create_future()

        async def from_below(ws: ServerConnection) -> None:
            below.set_result(ws)
            async for frame in ws:
                await hop.pass_on(up, hop.upward(frame))

        server = await serve(from_below, "127.0.0.1", 0, **WS_OPTIONS)  # type: ignore[arg-type]
        port = server.sockets[0].getsockname()[1]
        chain.write_atomic(workdir / f"{lower}.url", f"ws://127.0.0.1:{port}/")
        down = await asyncio.wait_for(below, 60)

        async def from_above() -> None:
            async for frame in up:
                await hop.pass_on(down, hop.downward(frame))

        tasks.append(asyncio.create_task(from_above()))
    chain.write_atomic(workdir / f"{name}.ready", "ok")
    await chain.control_loop(dict)
    for task in tasks:
        task.cancel()
    await up.close()


def child_main(argv: list[str]) -> None:
    role, name, lower, workdir, upper = argv[0], argv[1], argv[2], Path(argv[3]), argv[4]
    chain.run_child(name, hop_child(role, name, upper, lower, workdir))


# --- the driver ---------------------------------------------------------------------------


async def bench_chain(
    role: str, path: tuple[str, ...], windows: list[int], jobs: int, warmup: int
) -> list[chain.Row]:
    """One chain of ``role`` hops along ``path`` (the portal here), measured at every window."""
    workdir = Path(tempfile.mkdtemp(prefix=f"bg-bench-{role}-"))
    children = chain.Children(workdir, script=__file__)
    first = path[1]
    board = Board(first)
    waiting: dict[str, asyncio.Future[None]] = {}
    below: asyncio.Future[ServerConnection] = asyncio.get_running_loop().create_future()
    destination = ".".join(path)
    write_link(workdir / f"{first}.link")
    channel = read_channel(workdir / f"{first}.link")
    keeper = DurableBoards(workdir / "portal.data") if role in ("durable", "traced") else None
    audit = AuditLog(workdir / "portal.audit.jsonl", "portal") if role == "traced" else None

    def record(job: Job, now: float) -> None:
        """Record ``job`` on the portal's board (and store it, in the durable chain)."""
        if keeper is None:
            board.add(job, now)
        else:
            keeper.keep(board, job, now)

    texts: list[str] = []
    if role == "wire":  # the Puts as our portal encodes them, built untimed as the bare relay's
        texts = chain.bare_texts(len(windows) * (warmup + jobs))[0]

    def answered(frame: str | bytes) -> str:
        """The id of the job a reply answers, as each role's portal learns it."""
        if role == "wire":
            return str(json.loads(opened(channel, frame))["Update"]["job"]["id"])
        now = time.time()
        job = checked(opened_job(channel, frame, Update), "portal", first, Position.UPSTREAM, now)
        record(job, now)
        if audit is not None:
            audit_action(audit, "finished", job, first, now)
        return str(job.id)

    def sent(i: int) -> tuple[str, str]:
        """The frame of job ``i`` and its id."""
        if role == "wire":
            return channel.seal(texts[i]), str(json.loads(texts[i])["Put"]["job"]["id"])
        now = time.time()
        job = Job.parse(f"{destination} {chain.instruction(i)}", now=now).pending(now=now)
        record(job, now)
        if audit is not None:
            audit_action(audit, "forwarded", job, first, now)
        return channel.seal(encode_command(Put(job))), str(job.id)

    async def from_below(ws: ServerConnection) -> None:
        below.set_result(ws)
        async for frame in ws:
            waiter = waiting.pop(answered(frame))
            if keeper is None:
                waiter.set_result(None)
            else:  # the job is done once the portal's record of its result is committed
                keeper.committed().add_done_callback(lambda _, w=waiter: w.set_result(None))

    server = await serve(from_below, "127.0.0.1", 0, **WS_OPTIONS)  # type: ignore[arg-type]
    rows = []
    try:
        port = server.sockets[0].getsockname()[1]
        chain.write_atomic(workdir / f"{first}.url", f"ws://127.0.0.1:{port}/")
        for index, name in enumerate(path[1:], start=1):
            lower = path[index + 1] if index + 1 < len(path) else "-"
            children.spawn(role, name, lower, path[index - 1])
        await children.ready()
        ws = await asyncio.wait_for(below, 60)
        loop = asyncio.get_running_loop()
        for n, window in enumerate(windows):
            offset = n * (warmup + jobs)

            async def call(i: int, offset: int = offset) -> None:
                frame, job_id = sent(offset + i)
                future = loop.create_future()
                waiting[job_id] = future
                if keeper is not None:
                    await keeper.committed()
                await ws.send(frame)
                await future

            name = ROW_NAMES[role]
            row = await chain.measure(name, call, children, window=window, jobs=jobs, warmup=warmup)
            rows.append(row)
    finally:
        await children.close()
        server.close()
        await server.wait_closed()
        shutil.rmtree(workdir, ignore_errors=True)
    return rows


ROW_NAMES = {
    "wire": "encrypted wire only",
    "floor": "protocol floor",
    "durable": "durable floor",
    "traced": "durable traced floor",
}


def step_costs() -> list[tuple[str, float, int]]:
    """µs of each step of one forwarded Put, each timed on its own, unprofiled; and how many
    times a forwarded Put takes the step."""
    workdir = Path(tempfile.mkdtemp(prefix="bg-bench-floor-keys-"))
    write_link(workdir / "link")
    sender = read_channel(workdir / "link")
    receivers = [read_channel(workdir / "link") for _ in range(BATCHES)]  # each opens once
    shutil.rmtree(workdir)
    now = time.time()
    fresh = [
        Job.parse(f"{chain.FOUR_HOPS} {chain.instruction(i)}", now=now).pending(now=now)
        for i in range(STEPS)
    ]
    puts = [encode_command(Put(job)) for job in fresh]
    frames = [sender.seal(text) for text in puts]
    seen = puts[-PEER_COMMANDS_KEPT:]  # jobs whose instructions the parse cache still holds
    updates = [encode_command(Update(answer(job, now))) for job in fresh[-PEER_COMMANDS_KEPT:]]
    plain = [json.loads(text) for text in puts]
    batches = iter(receivers)

    def check(job: Job) -> Job:
        return checked(job, "provider", "portal", Position.DOWNSTREAM, now)

    def open_all(items: list[str]) -> None:
        receiver = next(batches)  # a frame opened twice is refused as a replay
        for frame in items:
            receiver.open(frame)

    def decode_updates(items: list[str]) -> None:
        for text in seen:  # the Put brought the instruction first
            decode_command(text)
        for text in items:
            decode_command(text)

    decode_seen = best_of(lambda items: [decode_command(text) for text in items], seen)
    return [
        (
            "open the frame (2 AEAD layers, 2 derived keys, replay check)",
            best_of(open_all, frames),
            1,
        ),
        (
            "decode a Put: JSON read, Job checks, instruction parsed",
            best_of(each(decode_command), puts),
            1,
        ),
        (
            "  (an Update of a job seen: its instruction already parsed)",
            best_of(decode_updates, updates) - decode_seen,
            0,
        ),
        ("check expiry and position", best_of(each(check), fresh), 1),
        ("record on one board (twice per forwarded frame)", best_of(_fill_board, fresh), 2),
        ("encode the Put", best_of(each(lambda job: encode_command(Put(job))), fresh), 1),
        ("seal the frame", best_of(each(sender.seal), puts), 1),
        ("  (stdlib json.loads of the same Put, for scale)", best_of(each(json.loads), puts), 0),
        ("  (stdlib json.dumps of it, for scale)", best_of(each(json.dumps), plain), 0),
    ]


#: Items per timed batch of :func:`step_costs`, and batches (the fastest is kept).
STEPS = 20000
BATCHES = 5


def each(step: Callable[[Any], object]) -> Callable[[list[Any]], None]:
    """A batch that applies ``step`` to every item."""

    def run(items: list[Any]) -> None:
        for item in items:
            step(item)

    return run


def best_of(batch: Callable[[list[Any]], object], items: list[Any]) -> float:
    """µs per item of the fastest of :data:`BATCHES` runs of ``batch`` over ``items``."""
    times = []
    for _ in range(BATCHES):
        started = time.perf_counter()
        batch(items)
        times.append(time.perf_counter() - started)
    return min(times) / len(items) * 1e6


def _fill_board(jobs: list[Job]) -> None:
    board = Board("portal")
    now = time.time()
    for job in jobs:
        board.add(job, now)


# --- reporting ----------------------------------------------------------------------------


#: The chains measured beside the bare relay, in the order printed.
STACKS = ("wire", "floor", "ours", "durable", "traced", "ours durable")


async def main(args: argparse.Namespace) -> None:
    cores = os.cpu_count() or 1
    print(f"host: {cores} CPUs, Python {sys.version.split()[0]}; broadgauge git {chain.revision()}")
    print(chain.load_average(), "(anything else running skews every row)")
    print(f"{args.jobs} jobs per row after {args.warmup} warm-up; median of {args.repeat} runs")
    windows = sorted(set(args.windows))
    widest = max(windows)
    one_hop = ("portal", "instance")
    runs: dict[tuple[str, int, int], list[chain.Row]] = {}

    def keep(stack: str, hops: int, rows: list[chain.Row]) -> None:
        for row in rows:
            runs.setdefault((stack, hops, row.window), []).append(row)

    for _ in range(args.repeat):
        keep("bare", 4, await chain.bench_bare(windows, args.jobs, args.warmup))
        for role in ("wire", "floor", "durable", "traced"):
            keep(role, 4, await bench_chain(role, chain.CHAIN, windows, args.jobs, args.warmup))
            keep(role, 1, await bench_chain(role, one_hop, [widest], args.jobs, args.warmup))
        for durable, stack in ((False, "ours"), (True, "ours durable")):
            for window in windows:
                row = await chain.bench_agents(chain.CHAIN, window, args.jobs, args.warmup, durable)
                keep(stack, 4, [row])
            row = await chain.bench_agents(one_hop, widest, args.jobs, args.warmup, durable)
            keep(stack, 1, [row])
    median = {key: chain.median_row(rows) for key, rows in runs.items()}

    print("\n4 hops: portal → provider → platform → instance and back")
    chain.header(chain.CHAIN)
    for window in windows:
        for stack in ("bare", *STACKS):
            chain.print_row(median[(stack, 4, window)], chain.CHAIN)
    print("\n1 hop: portal → instance and back")
    chain.header(one_hop)
    for stack in STACKS:
        chain.print_row(median[(stack, 1, widest)], one_hop)

    print("\n4 hops against the bare relay (time per job = 1 / jobs/s; CPU summed over processes):")
    for window in windows:
        bare = median[("bare", 4, window)]
        print(f"  {window} in flight:")
        for stack in STACKS:
            row = median[(stack, 4, window)]
            time_ratio = bare.rate / row.rate
            cpu_ratio = sum(row.cpu.values()) / sum(bare.cpu.values())
            print(f"    {row.name:<26} {time_ratio:5.2f}x time {cpu_ratio:5.2f}x CPU")
    print(
        f"1 hop, {widest} in flight: jobs/s, and the most {cores} cores allow at that CPU per job:"
    )
    for stack in STACKS:
        row = median[(stack, 1, widest)]
        cpu = sum(row.cpu.values())
        print(
            f"  {row.name:<26} {row.rate:7.0f} jobs/s   {cpu * 1e6:5.0f} µs CPU per job"
            f"   ≤ {cores / cpu:6.0f} jobs/s"
        )

    print("\none forwarded Put, step by step (µs, unprofiled, fastest of 5 batches of 20,000):")
    total = 0.0
    for name, micros, times in step_costs():
        print(f"  {micros:7.1f}  {name}")
        total += micros * times
    print(f"  {total:7.1f}  in all: open, decode, check, two boards, encode, seal")


# --- where the floor's time goes ----------------------------------------------------------

#: The steps of a hop, as the functions that do them (file suffix, function name).
STEPS_PROFILED = (
    ("open the frame", "wire/handshake.py", "open"),
    ("decode the command and its Job", "jobs/commands.py", "decode_command"),
    ("record on a board", "jobs/board.py", "add"),
    ("encode the command", "jobs/commands.py", "encode_command"),
    ("seal the frame", "wire/handshake.py", "seal"),
    ("make the job (the portal)", "jobs/job.py", "parse"),
    ("websockets: send a frame", "websockets/asyncio/connection.py", "send"),
    ("websockets: parse what arrived", "websockets/asyncio/connection.py", "data_received"),
    ("asyncio: wait for sockets (epoll)", "selectors.py", "select"),
)


async def profile(args: argparse.Namespace) -> None:
    """The 4-hop floor chain once, every process under cProfile: each step's share."""
    window = args.windows[0]
    with tempfile.TemporaryDirectory(prefix="bg-bench-floor-profile-") as tmp:
        stats_dir = Path(tmp)
        os.environ[chain.PROFILE_DIR] = tmp
        profiler = cProfile.Profile(time.process_time)
        profiler.enable()
        try:
            rows = await bench_chain("floor", chain.CHAIN, [window], args.jobs, args.warmup)
        finally:
            profiler.disable()
            del os.environ[chain.PROFILE_DIR]
        profiler.dump_stats(stats_dir / "portal.pstats")
        merged = pstats.Stats(str(stats_dir / "portal.pstats"), stream=io.StringIO())
        for name in chain.CHAIN[1:]:
            merged.add(str(stats_dir / f"{name}.pstats"))
    table = merged.stats  # type: ignore[attr-defined]
    jobs = args.jobs + args.warmup
    total = sum(entry[2] for entry in table.values())
    print(
        f"under cProfile: {rows[0].rate:.0f} jobs/s, {window} in flight; {jobs} jobs in all"
        " (start-up and warm-up included; cProfile slows Python calls most: read the shares)"
    )
    print(f"\nthe 4-hop floor, all four processes: {total / jobs * 1e6:.0f} µs per job profiled")
    print("each step's time, its callees included (µs per job, share):")
    for label, suffix, function in STEPS_PROFILED:
        seconds = sum(
            entry[3]
            for (filename, _line, name), entry in table.items()
            if name == function and filename.endswith(suffix)
        )
        print(f"  {seconds / jobs * 1e6:8.1f}  {seconds / total:6.1%}  {label}")


if __name__ == "__main__":
    parser = main_parser(__doc__, child_main)
    parser.add_argument("--jobs", type=int, default=2000, help="measured jobs per row")
    parser.add_argument("--warmup", type=int, default=200, help="warm-up jobs per row")
    parser.add_argument("--windows", type=int, nargs="+", default=[1, 64], help="jobs in flight")
    parser.add_argument("--repeat", type=int, default=3, help="runs per row; the median is shown")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="profile the 4-hop floor chain (first window) instead: where its time goes",
    )
    arguments = parser.parse_args()
    print("command:", " ".join(["python", *sys.argv]))
    os.environ[chain.EVENT_LOOP] = "asyncio"
    asyncio.run(profile(arguments) if arguments.profile else main(arguments))
