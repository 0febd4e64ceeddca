"""Offerings at scale, and what a large offerings request costs everybody else.

Usage: ``python bench/offerings.py [--sizes 1000,10000,100000] [--compare REF]``

Two figures:

* **add and remove.**  The bridge's own work for ``/add_offerings`` and
  ``/remove_offerings`` with N entries (the runtime's ``change_offerings`` on N fresh
  destinations, then on the same N; the limit lifted so that every size can be timed).
* **add_user under load.**  A normal ``add_user`` through the bridge's HTTP API, alone and
  while the largest offerings request the bridge allows is being served (``max_offerings``
  entries, or as many as fit in ``max_body`` where there is no such limit).  The portal's
  side runs in a process of its own, so its clock keeps going while the bridge is busy.

``--compare REF`` runs the same measurements on another commit too (a temporary
``git worktree``, removed afterwards) and prints both side by side.  A measurement that
runs past ``--budget`` seconds is stopped and reported as ``> budget``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


class Budget(Exception):
    """A measurement ran past its time budget."""


@contextlib.contextmanager
def budget(seconds: float) -> Iterator[None]:
    """Interrupt the main thread after ``seconds`` (the work is pure Python, so it can be)."""

    def expire(_: int, __: FrameType | None) -> None:
        raise Budget

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def offerings(count: int, tag: str = "r") -> list[str]:
    """``count`` distinct short destinations (short, so that a 1 MiB body holds the most)."""
    return [f"{tag}{i}.l.x" for i in range(count)]


async def measure_change(sizes: list[int], seconds: float) -> dict[str, Any]:
    """Time ``change_offerings`` add then remove for each size."""
    from broadgauge.demo import start_network

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as root:
        network = await start_network(Path(root))
        try:
            runtime = network.bridge.runtime
            if hasattr(runtime.settings, "max_offerings"):
                runtime.settings = dataclasses.replace(runtime.settings, max_offerings=10**9)
            for size in sizes:
                texts = offerings(size)
                row: dict[str, Any] = {}
                for how in ("add", "remove"):
                    started = time.perf_counter()
                    try:
                        with budget(seconds):
                            runtime.change_offerings(how, texts)
                        row[how] = time.perf_counter() - started
                    except Budget:
                        row[how] = None
                        runtime.offerings = []
                        break
                results[str(size)] = row
        finally:
            await network.stop()
    return results


def _add_user(client: Any, user: str) -> tuple[float, str]:
    from broadgauge.demo import PATH

    started = time.perf_counter()
    try:
        job = client.run(f"{PATH} add_user {user}", max_ms=120_000)
        outcome = str(job.state)
    except OSError as exc:
        outcome = _failure(exc)
    return time.perf_counter() - started, outcome


def _failure(exc: OSError) -> str:
    """A short name for a failed call: the HTTP status, or that no answer came."""
    status = getattr(exc, "status", None)
    return f"HTTP {status}" if status is not None else "no answer"


def largest_body(max_offerings: int | None, max_body: int) -> tuple[int, bytes]:
    """The largest offerings request the bridge allows: (entries, compact JSON body)."""
    if max_offerings is not None:
        items = offerings(max_offerings, tag="big")
    else:  # no count limit: as many as fit in the body limit
        each = len(json.dumps(offerings(1, tag="big")[0])) + 1
        items = offerings(max_body // each, tag="big")
        while len(json.dumps(items, separators=(",", ":"))) > max_body:
            items.pop()
    return len(items), json.dumps(items, separators=(",", ":")).encode()


def client_side(path: Path, max_offerings: int | None, max_body: int, seconds: float) -> None:
    """The portal's side, in a process of its own: add_user alone, then beside the load."""
    from broadgauge.client._protocol import Request
    from broadgauge.client.config import ClientConfig
    from broadgauge.client.sync import Client
    from broadgauge.demo import PROJECT

    entries, body = largest_body(max_offerings, max_body)
    heavy_request = Request("post", "add_offerings", body)
    done: dict[str, Any] = {"largest request": entries}
    config = ClientConfig.load(path)
    with Client(config, timeout=seconds) as client, Client(config, timeout=seconds) as loader:
        done["alone"] = _add_user(client, f"alone.{PROJECT}")

        def load() -> None:
            started = time.perf_counter()
            try:
                loader.call(heavy_request)
                done["offerings"] = (time.perf_counter() - started, "ok")
            except OSError as exc:
                done["offerings"] = (time.perf_counter() - started, _failure(exc))

        heavy = threading.Thread(target=load, daemon=True)
        heavy.start()
        time.sleep(0.2)  # the request is on its way, and being parsed
        done["under load"] = _add_user(client, f"loaded.{PROJECT}")
        heavy.join(seconds)
        done.setdefault("offerings", (None, "still running"))
    print(json.dumps(done), flush=True)


async def measure_under_load(seconds: float) -> None:
    """Serve the network while :func:`client_side` runs in another process; print its figures."""
    from broadgauge.demo import PROJECT, start_network

    with tempfile.TemporaryDirectory() as root:
        network = await start_network(Path(root))
        bridge = network.bridge
        await bridge.start()
        await network.submit(f"add_project {PROJECT}")
        path = Path(root) / "client.toml"
        bridge.client_file().save(path)
        limit = getattr(bridge.settings, "max_offerings", None)
        command = [sys.executable, __file__, "--part", "client", "--budget", str(seconds)]
        command += ["--client-file", str(path), "--max-body", str(bridge.settings.max_body)]
        if limit is not None:
            command += ["--max-offerings", str(limit)]

        def watch() -> None:
            # A thread, so the figures are printed even while the loop is stuck serving.
            done = subprocess.run(command, check=True, capture_output=True, text=True)
            print(done.stdout.strip().splitlines()[-1], flush=True)
            os._exit(0)  # the loop may still be busy: this process has done its job

        threading.Thread(target=watch, daemon=True).start()
        while True:
            await asyncio.sleep(1)


def measure_part(part: str, sizes: list[int], seconds: float) -> None:
    """Print one part's figures as JSON (run in a process of its own)."""
    if part == "change":
        print(json.dumps(asyncio.run(measure_change(sizes, seconds))), flush=True)
    else:
        asyncio.run(measure_under_load(seconds))


def measure(src: Path, sizes: list[int], seconds: float) -> dict[str, Any]:
    """Both parts with the ``broadgauge`` under ``src``, each in a fresh process."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    figures: dict[str, Any] = {}
    for part in ("change", "load"):
        args = ["--sizes", ",".join(map(str, sizes)), "--budget", str(seconds), "--part", part]
        done = subprocess.run(
            [sys.executable, __file__, *args], env=env, check=True, capture_output=True, text=True
        )
        figures[part] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def measure_at(ref: str, sizes: list[int], seconds: float) -> dict[str, Any]:
    """The same measurements on commit ``ref``, in a temporary worktree."""
    with tempfile.TemporaryDirectory() as place:
        tree = Path(place) / "tree"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), ref],
            check=True,
            capture_output=True,
        )
        try:
            return measure(tree / "src", sizes, seconds)
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                check=False,
                capture_output=True,
            )


def _time(value: float | None, seconds: float) -> str:
    if value is None:
        return f"> {seconds:.0f} s"
    return f"{value * 1000:,.1f} ms" if value < 10 else f"{value:,.1f} s"


def report(columns: dict[str, dict[str, Any]], sizes: list[int], seconds: float) -> None:
    """Print the figures, one column per code version."""
    names = list(columns)
    print(f"{'':32}" + "".join(f"{name:>28}" for name in names))
    for size in sizes:
        for how in ("add", "remove"):
            cells = [
                _time(column["change"][str(size)].get(how), seconds) for column in columns.values()
            ]
            print(f"{how + '_offerings, ' + format(size, ',') + ' entries':32}", end="")
            print("".join(f"{cell:>28}" for cell in cells))
    for key in ("alone", "under load", "offerings"):
        cells = []
        for column in columns.values():
            took, outcome = column["load"].get(key, (None, "-"))
            cells.append(f"{_time(took, seconds)} {outcome[:12]}")
        label = {
            "alone": "add_user alone",
            "under load": "add_user beside it",
            "offerings": "largest offerings request",
        }[key]
        print(f"{label:32}" + "".join(f"{cell:>28}" for cell in cells))
    sizes_row = [str(column["load"].get("largest request")) for column in columns.values()]
    print(f"{'(entries in that request)':32}" + "".join(f"{c:>28}" for c in sizes_row))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--budget", type=float, default=60.0, help="seconds per measurement")
    parser.add_argument("--compare", metavar="REF", help="also measure this commit")
    parser.add_argument("--part", choices=("change", "load", "client"), help=argparse.SUPPRESS)
    parser.add_argument("--client-file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--max-offerings", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--max-body", type=int, help=argparse.SUPPRESS)
    options = parser.parse_args()
    sizes = [int(s) for s in options.sizes.split(",")]
    if options.part == "client":
        client_side(options.client_file, options.max_offerings, options.max_body, options.budget)
        return
    if options.part:
        measure_part(options.part, sizes, options.budget)
        return
    columns: dict[str, dict[str, Any]] = {}
    if options.compare:
        columns[options.compare] = measure_at(options.compare, sizes, options.budget)
    columns["this tree"] = measure(ROOT / "src", sizes, options.budget)
    report(columns, sizes, options.budget)


if __name__ == "__main__":
    main()
