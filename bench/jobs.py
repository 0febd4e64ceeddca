"""Jobs-layer benchmark: prints numbers, asserts nothing.

    python bench/jobs.py [--jobs 1000] [--windows 1 64] [--warmup 200] [--repeat 3]
    python bench/jobs.py --profile [memory|sqlite] [--jobs 1000]
    python bench/jobs.py --event-loop uvloop   (every process on uvloop: the fast extra)

A job travels the 4-hop chain portal → provider → platform → instance and its result comes
back the same way.  The instance runs a no-op ``add_user u{i}.proj.portal`` handler that
returns a ``UserMapping``.  The portal (the driver) runs in this process; every other agent
runs in its own child process, so the hops share the machine's cores as real agents would.
Agents are linked with invites passed through files: the upper agent is the server of the
lower one.  For each row it measures jobs/s and p50/p99 round trip with 1 job in flight
(latency) and with 64 in flight (throughput):

* through our stack (``broadgauge.jobs.Agent`` over the encrypted wire), with in-memory
  boards and with durable boards (``data_dir`` in a temp dir: SQLite WAL, synchronous=NORMAL,
  the agents' default);
* through a bare ``websockets`` relay of the same JSON: each relay process forwards the
  Put-shaped text downstream and the Update-shaped reply upstream (no encryption, no boards);
  the leaf decodes the Put with ``json.loads`` and answers with ``json.dumps``;
* through a single hop (portal → instance), 64 in flight, for both stores.

Each run gets freshly started agents (so boards start empty) and a warm-up before the clock
starts; each row shows the run with the median jobs/s of ``--repeat`` runs (four processes
sharing two cores make single runs vary by up to 2x).  CPU seconds per job are reported for
every process (``time.process_time`` deltas over the measured jobs): their sum over the core
count bounds the throughput.

``--profile`` instead runs the single-hop case in one process (portal and instance on one
event loop) under cProfile and prints the top functions by own time, a per-module summary,
and what ``Board.add`` costs as a board fills up.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import dataclasses
import importlib.metadata
import io
import json
import os
import platform
import pstats
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve

from benchlib import crypto_floor, main_parser
from broadgauge.grammar import UserMapping
from broadgauge.jobs import Board, Job, Put, encode_command
from broadgauge.jobs.agent_type import AgentType
from broadgauge.runtime.agent import Agent, Envelope
from broadgauge.runtime.config import AgentConfig
from broadgauge.runtime.loop import EVENT_LOOPS
from broadgauge.runtime.loop import run as run_on_loop
from broadgauge.wire import Invite, ServiceConfig

CHAIN = ("portal", "provider", "platform", "instance")
TYPES = {
    "portal": AgentType.PORTAL,
    "provider": AgentType.PROVIDER,
    "platform": AgentType.PLATFORM,
    "instance": AgentType.INSTANCE,
}
FOUR_HOPS = ".".join(CHAIN)
ONE_HOP = "portal.instance"
JOB_TIMEOUT = 60.0
ROW_TIMEOUT = 600.0
#: The goals of the hot-path issue: 4-hop time per job over the bare relay's, and jobs/s
#: through one hop with 64 in flight, by board store.  ``bench/floor.py`` shows how far the
#: protocol's own work already is from them.
GOAL_RATIO = {"memory": 2.5, "sqlite": 3.0}
GOAL_ONE_HOP = {"memory": 8000.0, "sqlite": 5000.0}


# --- shared helpers -----------------------------------------------------------------------


async def wait_file(path: Path, timeout: float = 60.0) -> Path:
    """Wait until ``path`` exists (files are written atomically: temp + rename)."""
    async with asyncio.timeout(timeout):
        while not path.exists():
            await asyncio.sleep(0.01)
    return path


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def instruction(i: int) -> str:
    return f"add_user u{i}.proj.portal"


def make_agent(name: str, data_dir: Path | None) -> Agent:
    agent = Agent(
        AgentConfig(TYPES[name], ServiceConfig.create(name, port=0)),
        data_dir=data_dir,
    )
    if TYPES[name] is AgentType.INSTANCE:

        @agent.handler("add_user")
        async def add_user(envelope: Envelope) -> UserMapping:
            user = envelope.job.instruction.user  # type: ignore[attr-defined]
            return UserMapping(user, user.username, user.project)

    return agent


async def control_loop(extra: Callable[[], dict[str, object]]) -> None:
    """Serve the parent's requests on stdin until it closes: ``mark`` and ``report``."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    mark = time.process_time()
    while line := await reader.readline():
        command = line.strip()
        if command == b"mark":
            mark = time.process_time()
        elif command == b"report":
            report = {"cpu": time.process_time() - mark, **extra()}
            print(json.dumps(report), flush=True)


# --- children -----------------------------------------------------------------------------


async def agent_child(name: str, lower: str, workdir: Path, durable: bool) -> None:
    """One agent: dial the upper agent's invite, invite ``lower`` (unless ``-``), serve."""
    data_dir = workdir / f"{name}.data" if durable else None
    agent = make_agent(name, data_dir)
    invite = Invite.load(await wait_file(workdir / f"{name}.invite"))
    agent.service.add_server(invite)
    await agent.start(listen=lower != "-")
    if lower != "-":
        agent.service.add_client(lower, "127.0.0.1").save(workdir / f"{lower}.invite")
    async with asyncio.timeout(60):
        await agent.service.wait_for_peer(invite.name)
    write_atomic(workdir / f"{name}.ready", "ok")

    def boards() -> dict[str, object]:
        peers = agent.service.connected_peers()
        return {"board_jobs": sum(len(agent.board(peer)) for peer in peers)}

    await control_loop(boards)
    await agent.stop()


def bare_reply(text: str) -> str:
    """The leaf of the bare relay: decode the Put, answer an Update-shaped completed job."""
    job = json.loads(text)["Put"]["job"]
    user = job["command"].rsplit(" ", 1)[1]
    username, project, _portal = user.split(".")
    job["state"] = "Complete"
    job["version"] += 1000
    job["result"] = json.dumps(f"{user}:{username}:{project}")
    job["result_type"] = "UserMapping"
    return json.dumps({"Update": {"job": job}}, separators=(",", ":"), ensure_ascii=False)


async def relay_child(name: str, lower: str, workdir: Path) -> None:
    """One bare relay: dial the upper relay, accept ``lower`` (unless ``-``), pass text on."""
    url = (await wait_file(workdir / f"{name}.url")).read_text()
    up: ClientConnection = await connect(url, compression=None, max_size=None, ping_interval=None)
    tasks: list[asyncio.Task[None]] = []
    if lower == "-":

        async def answer() -> None:
            async for message in up:
                await up.send(bare_reply(str(message)))

        tasks.append(asyncio.create_task(answer()))
    else:
        below: asyncio.Future[ServerConnection] = asyncio.get_running_loop().create_future()

        async def from_below(ws: ServerConnection) -> None:
            below.set_result(ws)
            async for message in ws:
                await up.send(message)

        server = await serve(
            from_below, "127.0.0.1", 0, compression=None, max_size=None, ping_interval=None
        )
        port = server.sockets[0].getsockname()[1]
        write_atomic(workdir / f"{lower}.url", f"ws://127.0.0.1:{port}/")
        down = await asyncio.wait_for(below, 60)

        async def from_above() -> None:
            async for message in up:
                await down.send(message)

        tasks.append(asyncio.create_task(from_above()))
    write_atomic(workdir / f"{name}.ready", "ok")
    await control_loop(dict)
    for task in tasks:
        task.cancel()
    await up.close()


@dataclass
class Children:
    """Child processes of one row, driven over stdin/stdout."""

    workdir: Path
    procs: dict[str, subprocess.Popen[str]] = field(default_factory=dict)
    #: The script the children run (its ``--child`` mode): this one unless another bench's.
    script: str = __file__

    def spawn(self, role: str, name: str, lower: str, *extra: str) -> None:
        self.procs[name] = subprocess.Popen(
            [sys.executable, self.script, "--child", role, name, lower, str(self.workdir), *extra],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    async def ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        for name, proc in self.procs.items():
            while not (self.workdir / f"{name}.ready").exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"benchmark child {name} failed to start")
                await asyncio.sleep(0.01)

    def tell(self, line: str) -> None:
        for proc in self.procs.values():
            assert proc.stdin is not None
            proc.stdin.write(line + "\n")
            proc.stdin.flush()

    def report(self) -> dict[str, dict[str, float]]:
        self.tell("report")
        answers = {}
        for name, proc in self.procs.items():
            assert proc.stdout is not None
            answers[name] = json.loads(proc.stdout.readline())
        return answers

    async def close(self) -> None:
        """Close stdin (children stop politely) while our event loop keeps serving."""
        for proc in self.procs.values():
            with contextlib.suppress(OSError):
                assert proc.stdin is not None
                proc.stdin.close()
        deadline = time.monotonic() + 15
        while any(proc.poll() is None for proc in self.procs.values()):
            if time.monotonic() > deadline:
                for proc in self.procs.values():
                    if proc.poll() is None:
                        proc.terminate()
                        proc.wait(timeout=10)
                break
            await asyncio.sleep(0.01)


# --- load generation ----------------------------------------------------------------------


@dataclass
class Row:
    name: str
    window: int
    elapsed: float
    latencies: list[float]
    cpu: dict[str, float]  # process name -> CPU seconds per job
    board_jobs: int = 0

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.elapsed

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies)

    @property
    def p99(self) -> float:
        ordered = sorted(self.latencies)
        return ordered[int(0.99 * (len(ordered) - 1))]


async def drive(
    call: Callable[[int], Awaitable[object]], first: int, count: int, window: int
) -> tuple[float, list[float]]:
    """Keep ``window`` jobs in flight until jobs ``first .. first+count-1`` are done."""
    latencies: list[float] = []
    clock = time.perf_counter
    next_job = first
    end = first + count

    async def worker() -> None:
        nonlocal next_job
        while next_job < end:
            i = next_job
            next_job += 1
            started = clock()
            await call(i)
            latencies.append(clock() - started)

    started = clock()
    await asyncio.gather(*(worker() for _ in range(min(window, count))))
    return clock() - started, latencies


async def measure(
    name: str,
    call: Callable[[int], Awaitable[object]],
    children: Children,
    *,
    window: int,
    jobs: int,
    warmup: int,
) -> Row:
    """Warm up, then run ``jobs`` jobs with CPU accounting in every process."""
    async with asyncio.timeout(ROW_TIMEOUT):
        await drive(call, 0, warmup, window)
        children.tell("mark")
        await asyncio.sleep(0.05)  # let the children read "mark" before the first job
        cpu_started = time.process_time()
        elapsed, latencies = await drive(call, warmup, jobs, window)
        parent_cpu = time.process_time() - cpu_started
    reports = children.report()
    cpu = {"portal": parent_cpu / jobs}
    cpu.update({child: report["cpu"] / jobs for child, report in reports.items()})
    board_jobs = max((int(r.get("board_jobs", 0)) for r in reports.values()), default=0)
    return Row(name, window, elapsed, latencies, cpu, board_jobs)


async def bench_agents(
    path: tuple[str, ...], window: int, jobs: int, warmup: int, durable: bool
) -> Row:
    """Fresh agents along ``path`` (portal here, the rest in children), then measure."""
    workdir = Path(tempfile.mkdtemp(prefix="bg-bench-jobs-"))
    children = Children(workdir)
    portal = make_agent("portal", workdir / "portal.data" if durable else None)
    try:
        await portal.start()
        portal.service.add_client(path[1], "127.0.0.1").save(workdir / f"{path[1]}.invite")
        for upper_index, name in enumerate(path[1:], start=1):
            lower = path[upper_index + 1] if upper_index + 1 < len(path) else "-"
            children.spawn("agent", name, lower, "durable" if durable else "memory")
        await children.ready()
        async with asyncio.timeout(60):
            await portal.service.wait_for_peer(path[1])
        destination = ".".join(path)

        async def call(i: int) -> object:
            return await portal.run(destination, instruction(i), timeout=JOB_TIMEOUT)

        store = "SQLite WAL" if durable else "in-memory"
        return await measure(
            f"broadgauge, {store}", call, children, window=window, jobs=jobs, warmup=warmup
        )
    finally:
        await children.close()
        await portal.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def bare_texts(count: int) -> tuple[list[str], list[str]]:
    """Put payloads (exactly as our portal encodes them) and their job ids, built untimed."""
    now = time.time()
    texts, ids = [], []
    for i in range(count):
        job = Job.parse(f"{FOUR_HOPS} {instruction(i)}", now=now).pending(now=now)
        texts.append(encode_command(Put(job)))
        ids.append(str(job.id))
    return texts, ids


async def bench_bare(windows: list[int], jobs: int, warmup: int) -> list[Row]:
    """One bare relay chain, measured at every window."""
    workdir = Path(tempfile.mkdtemp(prefix="bg-bench-relay-"))
    children = Children(workdir)
    texts, ids = bare_texts(len(windows) * (warmup + jobs))
    waiting: dict[str, asyncio.Future[None]] = {}
    below: asyncio.Future[ServerConnection] = asyncio.get_running_loop().create_future()

    async def from_below(ws: ServerConnection) -> None:
        below.set_result(ws)
        async for message in ws:
            job_id = json.loads(message)["Update"]["job"]["id"]
            waiting.pop(job_id).set_result(None)

    server = await serve(
        from_below, "127.0.0.1", 0, compression=None, max_size=None, ping_interval=None
    )
    rows = []
    try:
        port = server.sockets[0].getsockname()[1]
        write_atomic(workdir / "provider.url", f"ws://127.0.0.1:{port}/")
        for index, name in enumerate(CHAIN[1:], start=1):
            children.spawn("relay", name, CHAIN[index + 1] if index + 1 < len(CHAIN) else "-")
        await children.ready()
        ws = await asyncio.wait_for(below, 60)
        loop = asyncio.get_running_loop()
        for n, window in enumerate(windows):
            offset = n * (warmup + jobs)

            async def call(i: int, offset: int = offset) -> None:
                future = loop.create_future()
                waiting[ids[offset + i]] = future
                await ws.send(texts[offset + i])
                await future

            row = await measure(
                "bare websockets relay", call, children, window=window, jobs=jobs, warmup=warmup
            )
            rows.append(row)
    finally:
        await children.close()
        server.close()
        await server.wait_closed()
        shutil.rmtree(workdir, ignore_errors=True)
    return rows


# --- reporting ----------------------------------------------------------------------------


def median_row(runs: list[Row]) -> Row:
    """The run with the median throughput (runs of a row vary: 4 processes share 2 cores)."""
    return sorted(runs, key=lambda row: row.rate)[len(runs) // 2]


def load_average() -> str:
    """The host's 1/5/15-minute load averages (other work on the box distorts the figures)."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f}"


def revision() -> str:
    """The git revision of the tree measured, ``+dirty`` if it has uncommitted changes."""
    here = Path(__file__).resolve().parent

    def git(*args: str) -> str:
        run = subprocess.run(["git", *args], check=False, cwd=here, capture_output=True, text=True)
        return run.stdout.strip()

    try:
        head = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except OSError:
        return "unknown"
    return (head or "unknown") + ("+dirty" if dirty else "")


def print_row(row: Row, order: tuple[str, ...]) -> None:
    cpu = " ".join(f"{row.cpu.get(name, 0.0) * 1e6:6.0f}" for name in order)
    total = sum(row.cpu.values()) * 1e6
    board = f"{row.board_jobs:>6}" if row.board_jobs else "     -"
    print(
        f"  {row.name:<26} {row.window:>3} {row.rate:>8.0f} {row.p50 * 1e3:>8.2f}"
        f" {row.p99 * 1e3:>8.2f}   {cpu} = {total:6.0f}  {board}"
    )


def header(order: tuple[str, ...]) -> None:
    names = " ".join(f"{name[:6]:>6}" for name in order)
    print(
        f"  {'stack':<26} {'win':>3} {'jobs/s':>8} {'p50 ms':>8} {'p99 ms':>8}"
        f"   CPU µs/job: {names} =  total  board"
    )


def fs_type(path: str) -> str:
    best, kind = "", "?"
    with contextlib.suppress(OSError), open("/proc/mounts", encoding="utf-8") as mounts:
        for line in mounts:
            parts = line.split()
            mount = parts[1]
            if path.startswith(mount) and len(mount) > len(best):
                best, kind = mount, parts[2]
    return kind


async def main(args: argparse.Namespace) -> None:
    jobs, warmup, windows = args.jobs, args.warmup, sorted(set(args.windows))
    tmp = tempfile.gettempdir()
    print(
        f"host: {os.cpu_count()} CPUs, Python {platform.python_version()},"
        f" websockets {importlib.metadata.version('websockets')}; temp dir {tmp} ({fs_type(tmp)});"
        f" broadgauge git {revision()}"
    )
    print(f"{load_average()} (anything else running on the host skews every row)")
    print(
        f"{jobs} jobs per row after {warmup} warm-up jobs; fresh agents per run (boards start"
        " empty); handler: add_user u{i}.proj.portal -> UserMapping"
    )
    if args.repeat > 1:
        print(f"each row: the run with the median jobs/s of {args.repeat} runs")
    print("'board' = jobs on the busiest child's boards at the end of the row")
    started = time.perf_counter()

    print(f"\n4 hops: {' → '.join(CHAIN)} and back")
    header(CHAIN)
    four: dict[tuple[str, int], Row] = {}
    bare_runs = [await bench_bare(windows, jobs, warmup) for _ in range(args.repeat)]
    for n, window in enumerate(windows):
        bare = median_row([rows[n] for rows in bare_runs])
        four["bare", window] = bare
        print_row(bare, CHAIN)
        for durable in (False, True):
            runs = [
                await bench_agents(CHAIN, window, jobs, warmup, durable) for _ in range(args.repeat)
            ]
            row = median_row(runs)
            four["sqlite" if durable else "memory", window] = row
            print_row(row, CHAIN)
    floor = crypto_floor(len(bare_texts(1)[0][0]), repeat=5000) * (len(CHAIN) - 1)
    print(
        f"  (crypto floor of the encrypted wire alone: {floor * 1e6:.0f} µs/job over"
        f" {len(CHAIN) - 1} links, Put + Update each sealed and opened, both layers)"
    )

    goals = ", ".join(f"{store} ≤ {ratio:.1f}x" for store, ratio in GOAL_RATIO.items())
    print(f"\nratio 4-hop broadgauge / bare relay (goals: {goals})")
    for window in windows:
        bare = four["bare", window]
        for store in ("memory", "sqlite"):
            row = four[store, window]
            per_job = bare.rate / row.rate
            p50 = row.p50 / bare.p50
            verdict = "met" if max(per_job, p50) <= GOAL_RATIO[store] else "NOT met"
            print(
                f"  {window:>3} in flight, {store:<6}:  time per job {per_job:6.2f}x"
                f"   p50 {p50:6.2f}x   p99 {row.p99 / bare.p99:6.2f}x   goal {verdict}"
            )

    hop_window = max(windows)
    single = ("portal", "instance")
    print(f"\n1 hop: portal → instance and back, {hop_window} in flight")
    header(single)
    for durable in (False, True):
        runs = [
            await bench_agents(single, hop_window, jobs, warmup, durable)
            for _ in range(args.repeat)
        ]
        row = median_row(runs)
        goal = GOAL_ONE_HOP["sqlite" if durable else "memory"]
        verdict = "met" if row.rate >= goal else "NOT met"
        print_row(row, single)
        cores = os.cpu_count() or 1
        ceiling = cores / sum(row.cpu.values())
        print(
            f"    goal ≥ {goal:.0f} jobs/s on 2 cores: {verdict}"
            f"  (CPU bound on {cores} cores: ≤ {ceiling:.0f} jobs/s)"
        )
    print(f"\ntotal benchmark time {time.perf_counter() - started:.0f} s; {load_average()}")


# --- profile ------------------------------------------------------------------------------


def board_add_cost() -> None:
    """What one Board.add of a new Pending job costs as the board fills with finished jobs."""
    print("\nBoard.add of a new Pending job vs jobs already on the board (finished, distinct):")
    now = time.time()
    template = Job.parse(f"portal.instance {instruction(0)}", now=now).pending(now=now)
    for size in (0, 1000, 10000, 100000):
        board = Board("bench")
        for i in range(size):
            job = Job.parse(f"portal.instance {instruction(i)}", now=now).pending(now=now)
            board.add(job.completed_none(now=now), now)
        fresh = [dataclasses.replace(template, id=uuid.uuid4()) for _ in range(50)]
        started = time.perf_counter()
        for job in fresh:
            board.add(job, now)
        cost = (time.perf_counter() - started) / len(fresh)
        print(f"  {size:>7} jobs on the board: {cost * 1e6:9.1f} µs")


def module_of(filename: str) -> str:
    marker = f"{os.sep}broadgauge{os.sep}"
    if marker in filename:
        return "broadgauge/" + filename.split(marker, 1)[1]
    for lib in ("websockets", "asyncio", "sqlite3", "cryptography", "nacl", "json", "uuid"):
        if f"{os.sep}{lib}{os.sep}" in filename or filename.endswith(f"{os.sep}{lib}.py"):
            return lib
    if filename == "~":
        return "(builtins / C)"
    return "(other) " + os.path.basename(filename)


async def profile(args: argparse.Namespace) -> None:
    durable = args.profile == "sqlite"
    workdir = Path(tempfile.mkdtemp(prefix="bg-bench-profile-"))
    portal = make_agent("portal", workdir / "portal.data" if durable else None)
    instance = make_agent("instance", workdir / "instance.data" if durable else None)
    window = max(args.windows)
    try:
        await portal.start()
        instance.service.add_server(portal.service.add_client("instance", "127.0.0.1"))
        await instance.start(listen=False)
        async with asyncio.timeout(60):
            await portal.service.wait_for_peer("instance")

        async def call(i: int) -> object:
            return await portal.run(ONE_HOP, instruction(i), timeout=JOB_TIMEOUT)

        store = "SQLite WAL" if durable else "in-memory boards"
        print(f"profile: 1 hop in one process ({store}), {window} in flight, {args.jobs} jobs")
        await drive(call, 0, args.warmup, window)
        elapsed, _ = await drive(call, args.warmup, args.jobs, window)
        print(f"  unprofiled, one process / one core: {args.jobs / elapsed:8.0f} jobs/s")
        profiler = cProfile.Profile()
        first = args.warmup + args.jobs
        profiler.enable()
        elapsed, _ = await drive(call, first, args.jobs, window)
        profiler.disable()
        print(f"  under cProfile:                     {args.jobs / elapsed:8.0f} jobs/s")
    finally:
        await instance.stop()
        await portal.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    stats = pstats.Stats(profiler, stream=io.StringIO())
    total = sum(entry[2] for entry in stats.stats.values())  # type: ignore[attr-defined]
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
    print(f"\ntop 25 functions by own time (tottime); {total / args.jobs * 1e6:.0f} µs/job total")
    print("\n".join(line for line in out.getvalue().splitlines() if line.strip()))

    by_module: dict[str, float] = {}
    for (filename, _line, _func), entry in stats.stats.items():  # type: ignore[attr-defined]
        module = module_of(filename)
        by_module[module] = by_module.get(module, 0.0) + entry[2]
    print("\nown time by module (µs per job, share):")
    for module, seconds in sorted(by_module.items(), key=lambda kv: -kv[1])[:25]:
        print(f"  {seconds / args.jobs * 1e6:8.1f} µs  {seconds / total:6.1%}  {module}")

    mine = io.StringIO()
    ours = pstats.Stats(profiler, stream=mine).sort_stats("cumulative")
    ours.print_stats(r"broadgauge", 25)
    print("\nbroadgauge functions by cumulative time (top 25):")
    lines = mine.getvalue().splitlines()
    start = next((n for n, line in enumerate(lines) if "ncalls" in line), 0)
    print("\n".join(line for line in lines[start:] if line.strip()))
    board_add_cost()


#: Set by ``bench/profile_hops.py``: each child runs under cProfile and leaves its stats here.
PROFILE_DIR = "BG_BENCH_PROFILE_DIR"
#: The event loop of every process of a run (``--event-loop``), passed on to the children.
EVENT_LOOP = "BG_BENCH_EVENT_LOOP"


def run_child(name: str, main: Coroutine[Any, Any, None]) -> None:
    """Run a child's ``main`` on the run's event loop, under cProfile when
    ``bench/profile_hops.py`` (or ``bench/floor.py --profile``) asks, leaving
    ``<name>.pstats`` in its directory."""
    # CPU time, not wall time: a relay waiting in epoll is idle, not busy.
    profiler = cProfile.Profile(time.process_time) if os.environ.get(PROFILE_DIR) else None
    if profiler is not None:
        profiler.enable()
    run_on_loop(main, os.environ.get(EVENT_LOOP, "asyncio"))
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(Path(os.environ[PROFILE_DIR]) / f"{name}.pstats")


def child_main(argv: list[str]) -> None:
    role, name, lower, workdir = argv[0], argv[1], argv[2], Path(argv[3])
    if role == "agent":
        run_child(name, agent_child(name, lower, workdir, argv[4] == "durable"))
    elif role == "relay":
        run_child(name, relay_child(name, lower, workdir))


if __name__ == "__main__":
    parser = main_parser(__doc__, child_main)
    parser.add_argument("--jobs", type=int, default=1000, help="measured jobs per row")
    parser.add_argument("--warmup", type=int, default=200, help="warm-up jobs per row")
    parser.add_argument(
        "--windows", type=int, nargs="+", default=[1, 64], help="jobs in flight, one row each"
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs per row; the median run is shown"
    )
    parser.add_argument(
        "--profile",
        nargs="?",
        const="memory",
        choices=("memory", "sqlite"),
        help="profile the single hop in one process instead (default store: memory)",
    )
    parser.add_argument(
        "--event-loop",
        choices=EVENT_LOOPS,
        default="asyncio",
        help="event loop of every process, the bare relay's included (uvloop: the fast extra)",
    )
    arguments = parser.parse_args()
    print("command:", shlex.join([os.path.basename(sys.executable), *sys.argv]))
    os.environ[EVENT_LOOP] = arguments.event_loop
    print(f"event loop: {arguments.event_loop} in every process")
    run_on_loop(profile(arguments) if arguments.profile else main(arguments), arguments.event_loop)
