"""How long a job that needs a missing leaf agent takes to fail, as the bridge sees it.

    python bench/missing_agent.py [--role filesystem] [--samples 3] [--stopped]

Starts the in-process demo network (:func:`broadgauge.demo.start_network`) and takes one of
the instance's leaf agents (the filesystem agent by default) away:

* by default it is **not linked**, the situation of a site that never linked one: its client
  entry is removed from the instance and the agent stopped;
* with ``--stopped`` it stays linked and is only stopped (an agent that is down).

Then it sends ``add_user`` the way portal software does, from the bridge
(``submit portal.provider.platform.instance add_user U``), and prints the seconds until the
error arrives back at the bridge, with the error text and the backend operations the account
agent recorded meanwhile (none, when the instance checks its agents before any backend).
Prints numbers, asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

from broadgauge.demo import start_network
from broadgauge.runtime.agent import JobFailed


def _operations(root: Path, agent: str) -> list[str]:
    """The backend operations ``agent`` recorded in its audit log."""
    path = root / agent / "audit.jsonl"
    entries = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return [e["operation"] for e in entries if e["action"] == "operation"]


async def measure(role: str, samples: int, *, stopped: bool) -> None:
    """Run ``samples`` add_user jobs with ``role``'s agent away; print the timings."""
    with tempfile.TemporaryDirectory(prefix="bg-missing-") as tmp:
        root = Path(tmp)
        network = await start_network(root)
        try:
            instance = network.agents["instance"]
            if not stopped:
                instance.service.remove_client(role)
            await network.agents[role].stop()
            while role in {p.name for p in instance.service.connected_peers()}:
                await asyncio.sleep(0.01)
            seconds: list[float] = []
            message = ""
            for index in range(samples):
                user = f"user{index}.physics.portal"
                started = time.perf_counter()
                try:
                    await network.submit(f"add_user {user}", timeout=60)
                    message = "(it succeeded)"
                except JobFailed as exc:
                    message = str(exc)
                seconds.append(time.perf_counter() - started)
            how = "stopped (still linked)" if stopped else "not linked"
            print(f"{role} agent {how}; add_user through the bridge, {samples} sample(s)")
            print(
                f"  seconds until the error reached the bridge: median "
                f"{statistics.median(seconds):.3f} (each: "
                f"{', '.join(f'{s:.3f}' for s in seconds)})"
            )
            print(f"  error: {message}")
            print(f"  account backend operations meanwhile: {_operations(root, 'account')}")
        finally:
            await network.stop()


def main() -> None:
    """Parse the arguments and run the measurement."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--role", default="filesystem", choices=("filesystem", "scheduler"))
    parser.add_argument("--samples", type=int, default=3)
    parser.add_argument("--stopped", action="store_true", help="stop the agent but leave it linked")
    args = parser.parse_args()
    asyncio.run(measure(args.role, args.samples, stopped=args.stopped))


if __name__ == "__main__":
    main()
