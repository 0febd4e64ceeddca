"""Gathering what the console shows, from the bridge agent (and the planner beside it).

One *network view* is a health sweep from the bridge plus the diagnostics report of every
agent in it, asked all at once and checked against that one sweep (so 50 agents cost one
sweep and 50 small round trips, not 50 sweeps).  A view is reused for ``ttl`` seconds and
shared by the requests that arrive while it is being taken, so ten open browsers cost what
one does.  Nothing is gathered while no one is looking.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from broadgauge.bridge.console.model import (
    AgentRow,
    JobEvent,
    Memory,
    TraceRow,
    agent_rows,
    event_from_trace,
    events_from_report,
    mark_errors,
    traces,
)
from broadgauge.jobs.health import DiagnosticsReport, HealthInfo
from broadgauge.jobs.job import Job
from broadgauge.runtime.agent import Agent
from broadgauge.runtime.audit import Verification
from broadgauge.runtime.rules_sweep import SweepResult

__all__ = ["AnswerRing", "Gatherer", "NetworkView"]

log = logging.getLogger("broadgauge.bridge.console")

#: How long one agent's diagnostics may take before the view is drawn without them.
DIAGNOSTICS_BUDGET = 2.0
#: How long the published rules are reused (a sweep goes down the whole hierarchy).
RULES_TTL = 10.0
AUDIT_PAGE = 200


@runtime_checkable
class AnswerRing(Protocol):
    """The network planner's recent ``/accepts`` answers (newest last)."""

    recent: deque[dict[str, Any]]


@dataclass(frozen=True)
class NetworkView:
    """One moment of the network, as the bridge sees it."""

    taken_at: float
    took: float
    tree: HealthInfo
    reports: Mapping[str, DiagnosticsReport | None]
    rows: list[AgentRow]
    events: list[JobEvent]

    @property
    def up(self) -> int:
        """Agents that answered."""
        return sum(1 for row in self.rows if row.up)


@dataclass(frozen=True)
class AuditPage:
    """A page of the bridge's audit log and the chain's verification."""

    path: str
    entries: list[dict[str, Any]]
    total: int
    verification: Verification | None
    verified_at: float | None


@dataclass
class Gatherer:
    """Takes network views, sweeps rules and reads the audit log, with caches."""

    agent: Agent
    held: Callable[[], list[Job]] = list
    ttl: float = 2.0
    stale: float = 30.0
    clock: Callable[[], float] = time.time
    answers: AnswerRing | None = None
    memory: Memory = field(default_factory=Memory)
    _view: NetworkView | None = None
    _taking: asyncio.Task[NetworkView] | None = None
    _rules: tuple[float, SweepResult] | None = None
    _verified: tuple[int, float, Verification] | None = None

    # --- the network ---------------------------------------------------------------------

    async def view(self) -> NetworkView:
        """A view at most ``ttl`` seconds old, or, up to ``stale`` seconds old, the last one
        while a new one is taken in the background (so a page never waits for the sweep
        once the first view exists).  One taking at a time, shared."""
        current = self._view
        age = self.clock() - current.taken_at if current is not None else None
        if current is not None and age is not None and age < self.ttl:
            return current
        taking = self._start()
        if current is not None and age is not None and age < self.stale:
            return current
        return await asyncio.shield(taking)

    async def refresh(self) -> NetworkView:
        """A view taken from now on (waits for it)."""
        if self._taking is not None and not self._taking.done():
            await asyncio.shield(self._taking)  # it may have started before what we wait for
        self._taking = None
        return await asyncio.shield(self._start())

    def _start(self) -> asyncio.Task[NetworkView]:
        if self._taking is None or self._taking.done():
            self._taking = asyncio.ensure_future(self._take())
            self._taking.add_done_callback(_log_failure)
        return self._taking

    async def _take(self) -> NetworkView:
        started = time.perf_counter()
        agent = self.agent
        tree = await agent.health()
        paths = _paths(tree)
        names = list(paths)
        answers = await asyncio.gather(*(self._report(paths[n], tree, n) for n in names))
        reports = dict(zip(names, answers, strict=True))
        now = self.clock()
        events = [event_from_trace(e) for e in agent.recent_events]
        for name, report in reports.items():
            if report is not None and name != agent.name:
                events.extend(mark_errors(report, events_from_report(report)))
        view = NetworkView(
            taken_at=now,
            took=time.perf_counter() - started,
            tree=tree,
            reports=reports,
            rows=agent_rows(tree, reports, self.memory, now),
            events=events,
        )
        self._view = view
        return view

    async def _report(self, path: str, tree: HealthInfo, name: str) -> DiagnosticsReport | None:
        try:
            async with asyncio.timeout(DIAGNOSTICS_BUDGET):
                report = await self.agent.control.diagnostics(path, tree)
        except Exception as exc:  # one silent agent must not blank the page
            log.info("console: no diagnostics from %s: %s", name, exc or type(exc).__name__)
            return None
        # Reports come back in order per neighbour; one lost on the way would shift the
        # rest, so a report from another agent than asked for is dropped, never misfiled.
        if report.agent_name != name:
            log.info("console: asked %s for diagnostics, %s answered", name, report.agent_name)
            return None
        return report

    # --- jobs ----------------------------------------------------------------------------

    def board_jobs(self) -> list[Job]:
        """Every job on the bridge's boards and held for the portal software."""
        jobs = [job for _, board in self.agent.boards_by_peer() for job in board.jobs()]
        known = {job.id for job in jobs}
        return jobs + [job for job in self.held() if job.id not in known]

    async def traces(self) -> tuple[NetworkView, list[TraceRow]]:
        """The recent traces across the network, newest first."""
        view = await self.view()
        return view, traces(self.board_jobs(), view.events, self.clock())

    # --- the planner ---------------------------------------------------------------------

    async def rules(self) -> tuple[float, SweepResult]:
        """The published rules below the bridge, and when they were swept."""
        if self._rules is None or self.clock() - self._rules[0] >= RULES_TTL:
            self._rules = (self.clock(), await self.agent.planner_rules.collect())
        return self._rules

    def recent_answers(self) -> list[dict[str, Any]] | None:
        """The planner's recent answers, newest first (None: no planner beside the bridge)."""
        if self.answers is None:
            return None
        return list(reversed(self.answers.recent))

    # --- the audit log -------------------------------------------------------------------

    async def audit(self, page: int = 0) -> AuditPage | None:
        """A page of the bridge's audit log, newest first, and its chain verification
        (verified again only when the file has grown); None if it keeps no audit log."""
        audit = self.agent.audit_log
        if audit is None:
            return None
        size = os.stat(audit.path).st_size
        if self._verified is None or self._verified[0] != size:
            result = await asyncio.to_thread(audit.verify_written)
            self._verified = (size, self.clock(), result)
        entries, total = await asyncio.to_thread(_read_page, audit.path, page)
        return AuditPage(str(audit.path), entries, total, self._verified[2], self._verified[1])


def _log_failure(task: asyncio.Task[NetworkView]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("console: taking a view of the network failed", exc_info=task.exception())


def _paths(tree: HealthInfo) -> dict[str, str]:
    """Each agent's path from the root (``""`` for the root itself)."""
    paths = {tree.name: ""}

    def walk(node: HealthInfo, path: str) -> None:
        for name, child in node.peers.items():
            if name not in paths:
                paths[name] = f"{path}.{name}" if path else name
                walk(child, paths[name])

    walk(tree, "")
    return paths


def _tail_lines(path: Path, count: int) -> list[bytes]:
    """The last ``count`` lines of ``path``, read backwards in blocks (the log only grows)."""
    with path.open("rb") as handle:
        handle.seek(0, os.SEEK_END)
        position = handle.tell()
        data = b""
        while position > 0 and data.count(b"\n") <= count:
            step = min(65536, position)
            position -= step
            handle.seek(position)
            data = handle.read(step) + data
    lines = data.splitlines()
    return lines[-count:] if position > 0 else lines


def _read_page(path: Path, page: int) -> tuple[list[dict[str, Any]], int]:
    """Page ``page`` (0: newest) of the log, newest first, and the last entry's sequence."""
    lines: Sequence[bytes] = _tail_lines(path, (page + 1) * AUDIT_PAGE)
    chosen = lines[: max(0, len(lines) - page * AUDIT_PAGE)][-AUDIT_PAGE:]
    entries = []
    for raw in reversed(chosen):
        try:
            value = json.loads(raw)
        except ValueError:
            value = {"unreadable": raw[:200].decode("utf-8", "replace")}
        entries.append(value if isinstance(value, dict) else {"unreadable": str(value)[:200]})
    last = _tail_lines(path, 1)
    try:
        total = int(json.loads(last[0])["seq"]) if last else 0
    except (ValueError, KeyError, TypeError):
        total = 0
    return entries, total
