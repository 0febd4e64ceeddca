"""The systemd units in ``deploy/systemd``, read as systemd reads them, and checked with
``systemd-analyze`` (by the tests in this folder and by ``bench/systemd_security.py``).

The units name the installed command, ``/opt/broadgauge/bin/broadgauge`` (docs/operators/
install.md), which does not exist on a test machine; ``systemd-analyze verify`` refuses a unit
whose command is missing. So each unit is checked as a copy whose ``ExecStart`` names this
checkout's ``broadgauge`` instead; the files in the repository stay as they are installed.
The template ``broadgauge@.service`` is checked as the instance ``broadgauge@portal.service``,
so that its ``%i`` specifiers are expanded as they are on a host.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
UNITS = REPO / "deploy" / "systemd"
EXAMPLES = UNITS / "examples"
#: The command every unit runs, where docs/operators/install.md installs it.
INSTALLED = "/opt/broadgauge/bin/broadgauge"
#: The instance name the template is checked under.
TEMPLATE_INSTANCE = "portal"

_SCORE = re.compile(r"Overall exposure level for (\S+): (\d+(?:\.\d+)?) (\S+)")


def unit_files() -> list[Path]:
    """Every unit file shipped in ``deploy/systemd``."""
    return sorted(UNITS.glob("*.service"))


def is_template(unit: Path) -> bool:
    """Whether ``unit`` is a template (``name@.service``)."""
    return unit.name.endswith("@.service")


def directives(unit: Path) -> dict[str, dict[str, list[str]]]:
    """The unit's settings, ``{section: {key: [value, ...]}}``, values in file order.

    Comments and blank lines are skipped; the units use no line continuations.
    """
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for number, raw in enumerate(unit.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, sep, value = line.partition("=")
        if current is None or not sep:
            raise ValueError(f"{unit}:{number}: not a setting inside a section: {raw!r}")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def service(unit: Path) -> dict[str, list[str]]:
    """The ``[Service]`` section of ``unit``."""
    return directives(unit)["Service"]


def environment(unit: Path) -> dict[str, str]:
    """The variables set with ``Environment=`` (space-separated ``NAME=value`` words)."""
    found: dict[str, str] = {}
    for line in service(unit).get("Environment", []):
        for word in line.split():
            name, _, value = word.partition("=")
            found[name] = value
    return found


def checkout_command() -> str:
    """This checkout's ``broadgauge`` command (beside the running interpreter)."""
    beside = Path(sys.executable).parent / "broadgauge"
    if beside.exists():
        return str(beside)
    found = shutil.which("broadgauge")
    if found is None:
        raise FileNotFoundError("no broadgauge command beside python or on PATH")
    return found


def analysable_copy(unit: Path, into: Path, *, drop_ins: Sequence[Path] = ()) -> Path:
    """A copy of ``unit`` in ``into`` that names this checkout's command, with ``drop_ins``
    installed as its drop-in files; the path to give ``systemd-analyze``."""
    text = unit.read_text()
    if INSTALLED not in text:
        raise ValueError(f"{unit.name} does not run {INSTALLED}")
    name = unit.name.replace("@.", f"@{TEMPLATE_INSTANCE}.") if is_template(unit) else unit.name
    copy = into / name
    copy.write_text(text.replace(INSTALLED, checkout_command()))
    if drop_ins:
        folder = into / f"{name}.d"
        folder.mkdir(exist_ok=True)
        for drop_in in drop_ins:
            shutil.copy(drop_in, folder / f"{drop_in.stem}.conf")
    return copy


def systemd_analyze() -> str | None:
    """The ``systemd-analyze`` program, if installed."""
    return shutil.which("systemd-analyze")


def verify(program: str, unit_copy: Path) -> subprocess.CompletedProcess[str]:
    """``systemd-analyze verify`` on one unit (man pages are not looked for: none is named)."""
    return subprocess.run(
        [program, "verify", "--man=no", str(unit_copy)],
        capture_output=True,
        text=True,
        check=False,
        cwd=unit_copy.parent,
    )


@dataclass(frozen=True)
class Exposure:
    """What ``systemd-analyze security`` says of one unit."""

    unit: str
    #: The overall exposure level, 0.0 (locked down) to 10.0 (fully exposed).
    score: float
    #: Its word for it: OK, MEDIUM, EXPOSED, UNSAFE.
    rating: str
    #: Each check: ``set`` (the unit has the protection), ``json_field``, ``exposure`` ...
    checks: list[dict[str, Any]]

    def unprotected(self) -> set[str]:
        """The ``json_field`` of every check the unit does not pass."""
        return {check["json_field"] for check in self.checks if not check["set"]}


def security(program: str, unit_copy: Path) -> Exposure:
    """``systemd-analyze security --offline=yes`` on one unit file: the score and each check.

    Raises :class:`RuntimeError` with the program's output if either run fails or no score
    is printed.
    """
    base = [program, "security", "--offline=yes", "--no-pager"]
    text = _run([*base, str(unit_copy)], unit_copy.parent)
    found = _SCORE.search(text)
    if found is None:
        raise RuntimeError(f"no overall exposure level in the output:\n{text}")
    checks = json.loads(_run([*base, "--json=short", str(unit_copy)], unit_copy.parent))
    return Exposure(found.group(1), float(found.group(2)), found.group(3), checks)


def _run(argv: list[str], cwd: Path) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=cwd)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}:\n{done.stderr}")
    return done.stdout
