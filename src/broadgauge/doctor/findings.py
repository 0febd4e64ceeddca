"""What the doctor found: one :class:`Finding` per check, and the report made of them.

A finding says, in plain words, what was checked and what is wrong, and the command that
fixes it.  A few findings also carry a :class:`Repair`: a change so safe and so plainly
right (``chmod 600`` on a config, ``mkdir`` of a missing data directory) that ``--fix``
may make it.  Nothing here touches the disk except :meth:`Repair.apply`, which only
``--fix`` calls.
"""

from __future__ import annotations

import enum
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

#: Seconds each probe (TCP connect, HTTP answer, LDAP bind, ...) may take.
DEFAULT_TIMEOUT = 3.0


class Status(enum.StrEnum):
    """How a check came out: ``ok``, ``warn`` (works, but look at it) or ``fail``."""

    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True)
class Repair:
    """A change ``--fix`` may make: set a file's mode, or create a directory with a mode."""

    kind: str  # "chmod" or "mkdir"
    path: Path
    mode: int

    def __post_init__(self) -> None:
        if self.kind not in ("chmod", "mkdir"):
            raise ValueError(f"unknown repair {self.kind!r}")

    def describe(self) -> str:
        """The shell command that makes the same change."""
        if self.kind == "chmod":
            return f"chmod {self.mode:o} {self.path}"
        return f"mkdir -p -m {self.mode:o} {self.path}"

    def apply(self) -> None:
        """Make the change (raises :class:`OSError` if it cannot be made)."""
        if self.kind == "chmod":
            os.chmod(self.path, self.mode)
        else:
            self.path.mkdir(parents=True, exist_ok=True)
            # mkdir's mode is filtered by the umask; say exactly what we mean.
            os.chmod(self.path, self.mode)


@dataclass(frozen=True)
class Finding:
    """The outcome of one check of one agent."""

    check: str
    agent: str
    status: Status
    message: str
    fix: str = ""
    repair: Repair | None = None

    @property
    def fixable(self) -> bool:
        """Whether ``--fix`` can make the repair itself."""
        return self.repair is not None

    def line(self) -> str:
        """One line of the text report: status, agent, check, message and the fix."""
        text = f"{self.status.value:<4}  {self.agent}  {self.check}: {self.message}"
        if self.fix:
            text += f"  -> fix: {self.fix}"
            if self.fixable:
                text += " (--fix does this)"
        return text

    def to_json(self) -> dict[str, object]:
        """The machine-readable form (no keys or secrets ever appear in a finding)."""
        return {
            "check": self.check,
            "agent": self.agent,
            "status": self.status.value,
            "message": self.message,
            "fix": self.fix,
            "fixable": self.fixable,
        }


def ok(check: str, agent: str, message: str) -> Finding:
    """A passed check."""
    return Finding(check, agent, Status.OK, message)


def warn(
    check: str, agent: str, message: str, fix: str = "", repair: Repair | None = None
) -> Finding:
    """A check that works but deserves a look."""
    return Finding(check, agent, Status.WARN, message, fix, repair)


def fail(
    check: str, agent: str, message: str, fix: str = "", repair: Repair | None = None
) -> Finding:
    """A check that failed: the agent will not work as configured."""
    return Finding(check, agent, Status.FAIL, message, fix, repair)


@dataclass
class Report:
    """Every finding of one run, and the repairs ``--fix`` made."""

    findings: list[Finding] = field(default_factory=list)
    fixed: dict[int, str] = field(default_factory=dict)  # finding index -> error, "" if done

    def extend(self, findings: Iterable[Finding]) -> None:
        """Add findings in the order they were made."""
        self.findings.extend(findings)

    def count(self, status: Status) -> int:
        """How many findings have ``status``."""
        return sum(1 for finding in self.findings if finding.status is status)

    def repairs(self) -> list[tuple[int, Finding]]:
        """The findings ``--fix`` may act on (with their index), in report order."""
        return [(i, f) for i, f in enumerate(self.findings) if f.repair is not None]

    def apply_repairs(self) -> list[str]:
        """Make every listed repair; one line per change made or refused."""
        lines: list[str] = []
        for index, finding in self.repairs():
            assert finding.repair is not None
            try:
                finding.repair.apply()
            except OSError as exc:
                self.fixed[index] = str(exc)
                lines.append(f"could not fix ({finding.agent} {finding.check}): {exc}")
            else:
                self.fixed[index] = ""
                lines.append(
                    f"fixed ({finding.agent} {finding.check}): {finding.repair.describe()}"
                )
        return lines

    def _resolved(self, index: int) -> bool:
        return self.fixed.get(index) == ""

    @property
    def exit_status(self) -> int:
        """0 when nothing failed (or every failure was repaired by ``--fix``), else 1."""
        failed = [
            i
            for i, finding in enumerate(self.findings)
            if finding.status is Status.FAIL and not self._resolved(i)
        ]
        return 1 if failed else 0

    def text_lines(self) -> list[str]:
        """The text report: one line per check, then a summary."""
        lines = [finding.line() for finding in self.findings]
        lines.append(self.summary())
        return lines

    def summary(self) -> str:
        """``N ok, N warn, N fail`` and what to do next."""
        counts = ", ".join(f"{self.count(s)} {s.value}" for s in Status)
        fixable = len(self.repairs()) - len([i for i in self.fixed if self._resolved(i)])
        hint = f"; {fixable} fixable with --fix" if fixable > 0 and not self.fixed else ""
        return f"{counts}{hint}"

    def to_json(self) -> list[dict[str, object]]:
        """The findings as a list of objects (with ``fixed`` once ``--fix`` ran)."""
        items: list[dict[str, object]] = []
        for index, finding in enumerate(self.findings):
            item = finding.to_json()
            if index in self.fixed:
                item["fixed"] = self._resolved(index)
            items.append(item)
        return items

    def dumps(self) -> str:
        """The JSON report."""
        return json.dumps(self.to_json(), indent=2)


def by_agent(findings: Sequence[Finding], agent: str) -> list[Finding]:
    """The findings about one agent (for tests and callers that group them)."""
    return [finding for finding in findings if finding.agent == agent]
