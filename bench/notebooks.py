"""Notebook platform benchmark: end-to-end ``add_user`` on the notebook instance.

    python bench/notebooks.py [--samples 100] [--warmup 10] [--real-samples 30] [--no-real]

Prints numbers, asserts nothing.  Each ``add_user`` is sent the way portal software sends it:
from the bridge, as ``submit portal.provider.notebooks.jupyter add_user U``, through bridge →
portal → provider → notebooks → jupyter and back.  The notebook instance makes the project's
hub group if it is missing and the hub user in it.

1. **Embedded stand-in**: the demo network as ``broadgauge demo`` runs it (the hub's users and
   groups in SQLite).
2. **Real JupyterHub**: the same network with the instance pointed at a JupyterHub 5+ with
   ``configurable-http-proxy`` on loopback, started as the test suite starts it
   (``tests/backends/jupyterhub.py``).  Skipped, with the reason, when it cannot run here.

Each user is new (one sample = one new hub user); users are added one at a time.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import broadgauge
from broadgauge.demo import NOTEBOOKS, Configure, start_network, use_jupyterhub

ROOT = Path(__file__).resolve().parents[1]


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100)."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q / 100 * len(ordered)) - 1))]


async def measure(
    root: Path, samples: int, warmup: int, configure: Configure | None
) -> list[float]:
    """Milliseconds of each of ``samples`` add_user jobs (after ``warmup`` unmeasured)."""
    network = await start_network(root, configure=configure)
    try:
        await network.submit("add_project bench.portal", path=NOTEBOOKS)
        times = []
        for i in range(warmup + samples):
            started = time.perf_counter()
            await network.submit(f"add_user u{i}.bench.portal", path=NOTEBOOKS, timeout=120)
            if i >= warmup:
                times.append((time.perf_counter() - started) * 1000)
        return times
    finally:
        await network.stop()


def report(label: str, times: list[float]) -> None:
    print(
        f"{label:<28} n={len(times):<4} p50 {statistics.median(times):7.1f} ms   "
        f"p99 {percentile(times, 99):7.1f} ms   min {min(times):7.1f} ms"
    )


def real_hub(run: Callable[[Configure], list[float]]) -> list[float] | str:
    """Run with a real hub, or say why not."""
    sys.path.insert(0, str(ROOT))
    try:
        from tests.backends.jupyterhub import HubUnavailable, running_hub
    except ImportError as exc:
        return f"tests/backends fixtures not importable: {exc}"
    with tempfile.TemporaryDirectory(prefix="bench-hub-") as tmp:
        try:
            with running_hub(Path(tmp)) as hub:
                return run(use_jupyterhub(hub.url, hub.token))
        except (HubUnavailable, RuntimeError) as exc:
            return str(exc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--real-samples", type=int, default=30)
    parser.add_argument("--no-real", action="store_true")
    args = parser.parse_args()
    print(
        f"broadgauge {broadgauge.__version__}, Python {platform.python_version()}, "
        f"{platform.machine()}"
    )
    with tempfile.TemporaryDirectory(prefix="bench-notebooks-") as tmp:
        times = asyncio.run(measure(Path(tmp), args.samples, args.warmup, None))
    report("add_user, embedded stand-in", times)
    if args.no_real:
        return

    def with_hub(configure: Configure) -> list[float]:
        with tempfile.TemporaryDirectory(prefix="bench-notebooks-") as tmp:
            return asyncio.run(
                measure(Path(tmp), args.real_samples, min(args.warmup, 3), configure)
            )

    outcome = real_hub(with_hub)
    if isinstance(outcome, str):
        print(f"add_user, real JupyterHub: skipped: {outcome}")
    else:
        report("add_user, real JupyterHub", outcome)


if __name__ == "__main__":
    main()
