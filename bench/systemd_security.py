"""The exposure score `systemd-analyze security` gives each unit in deploy/systemd.

    python bench/systemd_security.py [--checks]

Runs ``systemd-analyze security --offline=yes`` on each unit (a copy naming this checkout's
``broadgauge``, as the tests check them; the template as ``broadgauge@portal.service``) and
prints one row per unit: the overall exposure level (0.0 locked down, 10.0 fully exposed),
systemd's word for it, and how many of its checks the unit does not pass. ``--checks`` also
lists those checks. Also scores the units with the example drop-ins of
deploy/systemd/examples: the filesystem unit with its volumes and quota capability, and the
template fitted to a filesystem agent. Prints numbers, asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--checks", action="store_true", help="list the checks each unit fails")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from tests.deploy.systemd_units import (
        EXAMPLES,
        UNITS,
        Exposure,
        analysable_copy,
        security,
        systemd_analyze,
        unit_files,
    )

    program = systemd_analyze()
    if program is None:
        sys.exit("systemd-analyze is not installed (apt-get install systemd)")
    version = _version(program)
    rows: list[tuple[str, Exposure]] = []
    with tempfile.TemporaryDirectory() as scratch:
        for unit in unit_files():
            into = Path(scratch) / unit.stem
            into.mkdir()
            rows.append((unit.name, security(program, analysable_copy(unit, into))))
        for unit_name, example_name in (
            ("broadgauge-filesystem.service", "filesystem-volumes.conf"),
            ("broadgauge@.service", "template-filesystem.conf"),
        ):
            into = Path(scratch) / f"with-{example_name}"
            into.mkdir()
            example = EXAMPLES / example_name
            copy = analysable_copy(UNITS / unit_name, into, drop_ins=[example])
            rows.append((f"{unit_name} + {example.name}", security(program, copy)))
    print(f"systemd-analyze security --offline=yes ({version})")
    width = max(len(name) for name, _ in rows)
    print(f"{'unit':<{width}}  exposure  rating  checks not passed")
    for name, exposure in rows:
        failed = sorted(exposure.unprotected())
        print(f"{name:<{width}}  {exposure.score:8.1f}  {exposure.rating:<6}  {len(failed)}")
        if args.checks:
            for check in failed:
                print(f"{'':<{width}}    {check}")


def _version(program: str) -> str:
    import subprocess

    done = subprocess.run([program, "--version"], capture_output=True, text=True, check=False)
    return done.stdout.splitlines()[0] if done.stdout else "version unknown"


if __name__ == "__main__":
    main()
