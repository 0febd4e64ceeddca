"""The chaos soak's figures: jobs/s with and without faults, latency, losses, recovery, RSS.

    python bench/chaos.py [--site loopback|netns] [--jobs 10000] [--users 2000]
                          [--projects 20] [--seed N] [--no-faults | --only-faults]
                          [--concurrency 24] [--extra-faults K]

Runs the soak of ``tests/chaos`` (see ``tests/chaos/soak.py``), with the account agent on a
slapd and the scheduler on a Slurm accounting stack that this script starts (and stops)
itself: first without faults, then, unless ``--no-faults``, with the same seed and a seeded
schedule of faults.  Two sites:

* ``loopback`` (the default): seven ``broadgauge <role> run`` processes and an in-process
  bridge on loopback.  Only kills are possible there (at a random moment, while the first
  link Syncs after a restart, while the scheduler runs ``sacctmgr``), plus the slow
  backend and the clock step; the network faults are listed as unavailable.
* ``netns``: every agent and the bridge a process on a host of its own (network
  namespaces, ``tests/netns``), slapd inside the account agent's host; every kind of
  fault, partitions, isolation, 1 % and 10 % loss and latency included.

Prints, for each run: the seed, jobs/s, p50/p99/max latency of the completed jobs, jobs
lost and jobs run twice (both should be 0), the time from each restart to the first job
completing through the restarted agent, RSS per agent after the warm-up and at the end,
the stores' sizes, and every invariant that did not hold.  Numbers, not assertions.
Needs root (the Slurm stack runs in a network namespace of its own).
"""

from __future__ import annotations

import asyncio
import os
import platform
import random
import shlex
import signal
import sys
import tempfile
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from benchlib import main_parser

ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")


def _no_child(argv: list[str]) -> None:
    raise SystemExit("bench/chaos.py starts no child processes of its own")


def main(argv: list[str] | None = None) -> None:
    """Parse the options, start the back ends, run the soak(s), print the figures."""
    parser = main_parser(__doc__, _no_child)
    parser.add_argument("--jobs", type=int, default=10_000, help="jobs in the mix")
    parser.add_argument("--users", type=int, help="users (default: jobs / 5)")
    parser.add_argument("--projects", type=int, default=20, help="projects")
    parser.add_argument("--seed", type=int, help="seed of the mix and the faults (default: random)")
    parser.add_argument(
        "--site", choices=("loopback", "netns"), default="loopback", help="where the agents run"
    )
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--no-faults", action="store_true", help="only the run without faults")
    only.add_argument("--only-faults", action="store_true", help="only the run with faults")
    parser.add_argument("--concurrency", type=int, default=24, help="jobs in flight")
    parser.add_argument(
        "--extra-faults", type=int, help="faults beyond one of each kind (default: jobs / 200)"
    )
    args = parser.parse_args(argv)
    # SIGTERM as Ctrl-C: the soak's clean-up (processes, namespaces, slapd, the Slurm stack)
    # runs either way.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    users = args.users or max(1, args.jobs // 5)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 2**31)
    extra = args.extra_faults if args.extra_faults is not None else max(1, args.jobs // 200)

    print(f"command: {shlex.join([Path(sys.executable).name, *sys.argv])}")
    print(f"Python {platform.python_version()}, {os.cpu_count()} CPUs, {platform.platform()}")
    print(f"seed {seed}")
    sys.path.insert(0, str(ROOT))
    from tests.backends import slapd, slurm

    missing = slapd._missing() or ", ".join(slurm.missing_requirements())
    if missing:
        print(f"not available: {missing}")
        sys.exit(1)
    from tests.chaos.loopback import ldap_target
    from tests.chaos.netns import NetnsSoakSite, netns_site
    from tests.chaos.soak import SoakSettings, figures, real_site, run_soak, violations

    began = time.perf_counter()
    runs = [False] if args.no_faults else [True] if args.only_faults else [False, True]
    with slurm.running_stack() as stack, tempfile.TemporaryDirectory(prefix="bgchaos-") as tmp:
        server = slapd.start_slapd(Path(tmp) / "slapd") if args.site == "loopback" else None
        try:
            print(f"(back ends started in {time.perf_counter() - began:.1f} s; site {args.site})")
            for faults in runs:
                settings = SoakSettings(
                    seed=seed, jobs=args.jobs, users=users, projects=args.projects,
                    faults=faults, concurrency=args.concurrency, extra_faults=extra,
                )  # fmt: skip
                root = Path(tmp) / ("faults" if faults else "calm")
                sites: list[NetnsSoakSite] = []
                factory = (
                    real_site(ldap_target(server), stack, server.pid)
                    if server is not None
                    else netns_site(stack, sites, seed=seed)
                )
                print(f"\n== soak {'with' if faults else 'without'} faults", flush=True)
                report = asyncio.run(
                    _soak_and_close(run_soak(root, settings, factory, say=_quiet), sites)
                )
                print(figures(report))
                broken = violations(report)
                print("invariants: all hold" if not broken else "\n".join(broken), flush=True)
        finally:
            if server is not None:
                slapd.stop_slapd(server)
    print(f"\nwhole run: {time.perf_counter() - began:.0f} s")


async def _soak_and_close(soak: Coroutine[Any, Any, T], sites: list[Any]) -> T:
    """Run the soak, then close the sites it made (namespaces, slapd) on the same loop."""
    try:
        return await soak
    finally:
        for site in sites:
            await site.close()


def _quiet(line: str) -> None:
    """The soak's progress lines, without the site's configuration chatter."""
    if line.startswith(("soak seed", "warm-up", "faults over", "mix done", "boards still")):
        print(line, flush=True)


if __name__ == "__main__":
    main()
