"""Lustre quota engine overhead per ``lfs`` call, through the stand-in ``lfs``.

For each user, a project quota is set once (which assigns the project id), then set again
(``lfs project -d``, ``lfs setquota``, ``lfs quota``) and reported (``lfs project -d``,
``lfs quota``) through :class:`LustreQuotaEngine`, each ``--repeat`` times.  The exact
command lines the engine ran are then run directly, the same way (a subprocess each, one at a
time), right after each engine run so both see the same load.  Engine time minus stand-in
time, divided by the number of ``lfs`` calls, is Broadgauge's own overhead per call (runner
slot, argument building, output parsing, event loop); the median of the ``--repeat`` pairs
is kept per user.  The stand-in is a Python process (tens of milliseconds to start), so
single differences are noisy at the millisecond level: read the medians.

    python bench/lustre.py [--users 20] [--repeat 5]
"""

from __future__ import annotations

import asyncio
import json
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchlib import main_parser
from broadgauge.agents.filesystem.agent import build_engines
from broadgauge.agents.filesystem.ids import StaticResolver
from broadgauge.agents.filesystem.layout import parse_layout
from broadgauge.agents.filesystem.lustre import LustreQuotaEngine
from broadgauge.grammar import QuotaLimit

STANDIN = Path(__file__).resolve().parents[1] / "tests" / "backends" / "lfs_standin.py"


async def run_direct(argv: list[str]) -> float:
    """Seconds for one stand-in run started as the engine starts it, without the engine."""
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    await process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"{shlex.join(argv)} failed with {process.returncode}")
    return time.perf_counter() - started


class Bench:
    """One stand-in state directory, one engine, and the calls it made."""

    def __init__(self, root: Path, users: int) -> None:
        self.state, mount = root / "state", root / "lustre"
        self.state.mkdir()
        self.names = {f"user{i}": 100_000 + i for i in range(users)}
        (self.state / "names.json").write_text(json.dumps({"users": self.names}))
        self.command = ["env", f"LFS_STANDIN_STATE={self.state}", sys.executable, str(STANDIN)]
        (mount / "home" / "proj").mkdir(parents=True)
        tables = {
            "quota_engines": {
                "lustre": {
                    "type": "lustre",
                    "lfs_command": shlex.join(self.command),
                    "id_strategies": {"home": "{UID-100000}01"},
                }
            },
            "user_volumes": {
                "home": {
                    "roots": [str(mount / "home")],
                    "quota_engine": "lustre",
                    "mount_point": str(mount),
                }
            },
        }
        resolver = StaticResolver(self.names, {})
        engine = build_engines(parse_layout(tables), resolver=resolver)["lustre"]
        assert isinstance(engine, LustreQuotaEngine)
        self.engine, self.mount = engine, mount

    def calls(self) -> list[list[str]]:
        lines = (self.state / "calls.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines]

    async def measure(self, operation: str, user: str, repeat: int) -> tuple[float, int]:
        """``(overhead per lfs call, calls)`` for one engine operation on ``user``."""
        path = str(self.mount / "home" / "proj" / user)
        differences = []
        for _ in range(repeat):
            before = len(self.calls())
            started = time.perf_counter()
            if operation == "set":
                await self.engine.set_quota(path, user, False, QuotaLimit.parse("10GB"))
            else:
                await self.engine.get_quota(path, user, False)
            through_engine = time.perf_counter() - started
            made = self.calls()[before:]
            alone = 0.0
            for args in made:  # right after, so both see the same machine load
                alone += await run_direct([*self.command, *args])
            differences.append((through_engine - alone) / len(made))
        return statistics.median(differences), len(made)


async def bench(users: int, repeat: int) -> None:
    """Measure and print (see module doc)."""
    with tempfile.TemporaryDirectory() as directory:
        b = Bench(Path(directory), users)
        for user in b.names:
            (b.mount / "home" / "proj" / user).mkdir()
            await b.engine.set_quota(str(b.mount / "home" / "proj" / user), user, False,
                                     QuotaLimit.parse("10GB"))  # fmt: skip
        results: dict[str, list[float]] = {"set": [], "report": []}
        counts: dict[str, int] = {}
        for user in b.names:
            for operation in ("set", "report"):
                overhead, calls = await b.measure(operation, user, repeat)
                results[operation].append(overhead)
                counts[operation] = calls
        quota = [*b.command, "quota", "-p", "1", str(b.mount)]
        alone = [await run_direct(quota) for _ in range(20)]
    print(f"users: {users}, repeat: {repeat}; the stand-in alone, one `lfs quota`: "
          f"median {statistics.median(alone) * 1e3:.1f} ms")  # fmt: skip
    for operation, values in results.items():
        us = sorted(v * 1e6 for v in values)
        print(
            f"quota {operation:6s}: {counts[operation]} lfs calls; Broadgauge overhead per "
            f"lfs call, per user: median {statistics.median(us):.0f} us, "
            f"p90 {us[int(len(us) * 0.9) - 1]:.0f} us, max {us[-1]:.0f} us"
        )


def main() -> None:
    """Parse the arguments and run."""
    parser = main_parser(__doc__, lambda _: None)
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(bench(args.users, args.repeat))


if __name__ == "__main__":
    main()
