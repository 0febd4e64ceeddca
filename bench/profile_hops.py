"""Where a 4-hop job's CPU goes: every process of the chain under cProfile, merged.

    python bench/profile_hops.py [--jobs 2000] [--window 64] [--store memory|sqlite] [--top 10]

Runs the 4-hop chain of ``bench/jobs.py`` (portal here, provider, platform and instance in
child processes) once, with each process under cProfile, and prints the functions with the
most own time summed over the four processes, in µs per job, and each process's profiled
total.  The profiles cover the whole run (start-up and warm-up included) and cProfile
slows everything down about threefold, so read the shares, not the absolute times; the
unprofiled figures are ``bench/jobs.py``'s.  Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import shlex
import sys
import tempfile
import time
from pathlib import Path

import jobs as chain
from benchlib import main_parser


def _no_child(argv: list[str]) -> None:
    raise SystemExit("bench/profile_hops.py starts its children through bench/jobs.py")


async def run(args: argparse.Namespace, stats_dir: Path) -> cProfile.Profile:
    """One 4-hop row with every process profiled; the parent's (portal's) profile."""
    os.environ[chain.PROFILE_DIR] = str(stats_dir)
    profiler = cProfile.Profile(time.process_time)  # CPU time: idle waits cost nothing
    profiler.enable()
    try:
        row = await chain.bench_agents(
            chain.CHAIN, args.window, args.jobs, args.warmup, args.store == "sqlite"
        )
    finally:
        profiler.disable()
        del os.environ[chain.PROFILE_DIR]
    print(
        f"under cProfile: {row.rate:.0f} jobs/s, {args.window} in flight, {args.store} boards;"
        f" {args.jobs} measured jobs after {args.warmup} warm-up"
    )
    return profiler


def main(argv: list[str] | None = None) -> None:
    """Profile the chain and print the merged top functions."""
    parser = main_parser(__doc__, _no_child)
    parser.add_argument("--jobs", type=int, default=2000, help="measured jobs")
    parser.add_argument("--warmup", type=int, default=200, help="warm-up jobs")
    parser.add_argument("--window", type=int, default=64, help="jobs in flight")
    parser.add_argument("--store", choices=("memory", "sqlite"), default="memory")
    parser.add_argument("--top", type=int, default=10, help="functions to show")
    args = parser.parse_args(argv)
    print(f"command: {shlex.join([Path(sys.executable).name, *sys.argv])}")
    with tempfile.TemporaryDirectory(prefix="bg-profile-hops-") as tmp:
        stats_dir = Path(tmp)
        portal = asyncio.run(run(args, stats_dir))
        portal.dump_stats(stats_dir / "portal.pstats")
        per_job = args.jobs + args.warmup
        merged: pstats.Stats | None = None
        print("\nprofiled own time per process (µs per job, start-up included):")
        for name in chain.CHAIN:
            stats = pstats.Stats(str(stats_dir / f"{name}.pstats"), stream=io.StringIO())
            total = sum(entry[2] for entry in stats.stats.values())  # type: ignore[attr-defined]
            print(f"  {name:<9} {total / per_job * 1e6:8.0f}")
            merged = stats if merged is None else merged.add(stats)
    assert merged is not None
    total = sum(entry[2] for entry in merged.stats.values())  # type: ignore[attr-defined]
    print(f"  {'all':<9} {total / per_job * 1e6:8.0f}")
    ranked = sorted(merged.stats.items(), key=lambda item: -item[1][2])  # type: ignore[attr-defined]
    print(f"\ntop {args.top} functions by own time, all four processes (µs per job, share):")
    for (filename, line, function), entry in ranked[: args.top]:
        where = f"{chain.module_of(filename)}:{line}({function})"
        share = entry[2] / total
        print(f"  {entry[2] / per_job * 1e6:8.1f}  {share:6.1%}  {entry[1]:>8} calls  {where}")
    by_module: dict[str, float] = {}
    for (filename, _line, _function), entry in merged.stats.items():  # type: ignore[attr-defined]
        module = chain.module_of(filename)
        by_module[module] = by_module.get(module, 0.0) + entry[2]
    print(f"\ntop {args.top} modules by own time (µs per job, share):")
    for module, seconds in sorted(by_module.items(), key=lambda kv: -kv[1])[: args.top]:
        print(f"  {seconds / per_job * 1e6:8.1f}  {seconds / total:6.1%}  {module}")


if __name__ == "__main__":
    main()
