"""What the console shows, derived from what the bridge agent can see (pure: no I/O).

* The network: the bridge's health sweep (:class:`~broadgauge.jobs.health.HealthInfo`, one
  node per agent that answered), each agent's diagnostics report (its warnings name the
  configured neighbours that are not connected), and the agents this console saw before.
* Jobs: the jobs on the bridge's boards (whole :class:`~broadgauge.jobs.job.Job` values),
  the bridge's own trace, and each agent's recent trace from its diagnostics report (whose
  log lines carry the job id).  Jobs an agent starts for another share the first 8 hex
  digits of their ids (see :mod:`broadgauge.runtime.logs`): that prefix is a *trace*, and
  the jobs page lists traces.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from broadgauge.jobs.health import DiagnosticsReport, HealthInfo
from broadgauge.jobs.job import Job
from broadgauge.runtime.trace import TraceEvent

__all__ = [
    "AgentRow",
    "JobEvent",
    "Link",
    "TraceRow",
    "agent_rows",
    "errors_within",
    "events_from_report",
    "traces",
]

HOUR = 3600.0
#: A diagnostics log line: ``<action> <job id> <path> <instruction> (<peer>) <detail>``.
_LOG_LINE = re.compile(
    r"^(?P<action>[a-z]+) (?P<job>[0-9a-f-]{36}) (?P<path>\S+) (?P<instruction>.*?)"
    r" \((?P<peer>[^()\s]*)\)(?: (?P<detail>.*))?$"
)
_NOT_CONNECTED = " is not connected"
_ERROR_ACTIONS = ("refused", "expired")


@dataclass(frozen=True)
class Link:
    """One neighbour of an agent, and whether the link is up."""

    peer: str
    up: bool


@dataclass(frozen=True)
class AgentRow:
    """One agent in the network tree, as the console shows it."""

    name: str
    depth: int
    #: ``up``; ``down`` (a neighbour reports it configured but not connected); or
    #: ``unreachable`` (seen before, and now neither in the sweep nor reported down).
    status: str
    role: str = ""
    version: str = ""
    uptime: int | None = None
    active_jobs: int = 0
    queued_jobs: int = 0
    errors_hour: int | None = None
    links: tuple[Link, ...] = ()
    warnings: tuple[str, ...] = ()
    path: str = ""
    last_seen: float | None = None

    @property
    def up(self) -> bool:
        """Whether the agent answered the sweep."""
        return self.status == "up"


def _peer_name(text: str) -> str:
    return text.partition("@")[0]


def not_connected(report: DiagnosticsReport | None) -> list[str]:
    """The configured neighbours a report says are not connected."""
    if report is None:
        return []
    return [
        _peer_name(w[: -len(_NOT_CONNECTED)]) for w in report.warnings if w.endswith(_NOT_CONNECTED)
    ]


def errors_within(report: DiagnosticsReport, now: float, seconds: float = HOUR) -> int:
    """Errors an agent reports within ``seconds``: failed jobs still on its boards last
    changed then, plus jobs it saw expire then (both as its diagnostics report counts them)."""
    since = now - seconds
    failed = sum(f.count for f in report.failed_jobs if f.last_seen.timestamp() >= since)
    expired = sum(e.count for e in report.expired_jobs if e.expired_at.timestamp() >= since)
    return failed + expired


@dataclass
class _Seen:
    parent: str | None
    role: str
    last_seen: float


@dataclass
class Memory:
    """Agents this console has seen, so one that vanished is still listed (as unreachable)."""

    seen: dict[str, _Seen] = field(default_factory=dict)


def agent_rows(
    tree: HealthInfo,
    reports: Mapping[str, DiagnosticsReport | None],
    memory: Memory,
    now: float,
) -> list[AgentRow]:
    """The network, depth first from the bridge, children by name; dead agents included.

    ``memory`` is updated with every agent in ``tree``.
    """
    order: list[tuple[HealthInfo, int, str]] = []
    parents: dict[str, str] = {}

    def walk(node: HealthInfo, depth: int, path: str) -> None:
        order.append((node, depth, path))
        for name in sorted(node.peers):
            parents.setdefault(name, node.name)
            walk(node.peers[name], depth + 1, f"{path}.{name}" if path else name)

    walk(tree, 0, "")
    in_tree = {node.name for node, _, _ in order}
    # Down: configured neighbours that an answering agent says are not connected, and that
    # the sweep did not reach another way.  Listed under the agent that reports them.
    down_under: dict[str, list[str]] = {}
    for node, _, _ in order:
        for name in not_connected(reports.get(node.name)):
            names = down_under.setdefault(node.name, [])
            if name not in in_tree and name not in names:
                names.append(name)
    down = {name for names in down_under.values() for name in names}
    for node, _, _ in order:
        memory.seen[node.name] = _Seen(parents.get(node.name), node.agent_type.display, now)
    # Unreachable: seen before, now neither answering nor reported down (most often the
    # agents below one that is down), listed under the parent they last had.
    lost_under: dict[str | None, list[str]] = {}
    for name, seen in memory.seen.items():
        if name not in in_tree and name not in down:
            lost_under.setdefault(seen.parent, []).append(name)
    rows: list[AgentRow] = []

    def absent(name: str, parent: str, depth: int, status: str, path: str) -> None:
        seen = memory.seen.get(name)
        rows.append(
            AgentRow(
                name=name,
                depth=depth,
                status=status,
                role=seen.role if seen else "",
                path=path,
                last_seen=seen.last_seen if seen else None,
                links=(Link(parent, False),),
            )
        )
        for child in sorted(lost_under.get(name, [])):
            absent(child, name, depth + 1, "unreachable", f"{path}.{child}")

    for node, depth, path in order:
        report = reports.get(node.name)
        links = [Link(parents[node.name], True)] if node.name in parents else []
        links += [Link(name, True) for name in sorted(node.peers)]
        links += [Link(name, False) for name in not_connected(report)]
        warnings = report.warnings if report is not None else ()
        rows.append(
            AgentRow(
                name=node.name,
                depth=depth,
                status="up",
                role=node.agent_type.display,
                version=f"{node.engine} {node.version}",
                uptime=node.uptime_seconds,
                active_jobs=node.active_jobs,
                queued_jobs=node.queued_jobs,
                errors_hour=errors_within(report, now) if report is not None else None,
                links=tuple(links),
                warnings=tuple(w for w in warnings if not w.endswith(_NOT_CONNECTED)),
                path=path,
                last_seen=now,
            )
        )
        # Neighbours that are gone come right below the agent that last saw them.
        for name in sorted(down_under.get(node.name, [])):
            absent(name, node.name, depth + 1, "down", f"{path}.{name}" if path else name)
        for name in sorted(lost_under.get(node.name, [])):
            absent(name, node.name, depth + 1, "unreachable", f"{path}.{name}" if path else name)
    return rows


# --- jobs and traces --------------------------------------------------------------------------


@dataclass(frozen=True)
class JobEvent:
    """One action on one job, at one agent."""

    time: float
    agent: str
    action: str
    job_id: str
    path: str
    instruction: str
    peer: str
    detail: str

    @property
    def is_error(self) -> bool:
        """A refusal, an expiry, or a job that finished with an error."""
        return self.action in _ERROR_ACTIONS or self.detail.startswith("error")


def event_from_trace(event: TraceEvent) -> JobEvent:
    """A local trace event as a :class:`JobEvent`."""
    return JobEvent(
        event.time,
        event.agent,
        event.action.value,
        event.job_id,
        event.path,
        event.instruction,
        _peer_name(event.peer),
        event.detail,
    )


def events_from_report(report: DiagnosticsReport) -> list[JobEvent]:
    """The job events in a diagnostics report's recent log lines (others are skipped)."""
    events = []
    for entry in report.recent_logs:
        match = _LOG_LINE.match(entry.message)
        if match is None:
            continue
        events.append(
            JobEvent(
                entry.timestamp.timestamp(),
                report.agent_name,
                match["action"],
                match["job"],
                match["path"],
                match["instruction"],
                _peer_name(match["peer"]),
                match["detail"] or "",
            )
        )
    return events


def mark_errors(report: DiagnosticsReport, events: list[JobEvent]) -> list[JobEvent]:
    """``events`` with ``finished`` ones marked as errors where the report lists the same
    destination, instruction and message among its failed jobs."""
    failed = {(f.destination, f.instruction, f.error_message) for f in report.failed_jobs}
    return [
        JobEvent(
            e.time, e.agent, e.action, e.job_id, e.path, e.instruction, e.peer, f"error: {e.detail}"
        )
        if (e.path, e.instruction, e.detail) in failed and not e.detail.startswith("error")
        else e
        for e in events
    ]


@dataclass
class TraceRow:
    """One trace: the jobs sharing a job-id prefix, and every event seen for them."""

    trace: str
    root: str
    instruction: str
    destination: str
    state: str
    created: float
    changed: float
    hops: list[str]
    events: list[JobEvent]
    jobs: list[Job]

    @property
    def failed(self) -> bool:
        """Whether the trace ended in an error (or holds a refused or expired job)."""
        return self.state in ("error", "expired")


def _split_submit(destination: str, instruction: str) -> tuple[str, str]:
    """``submit <dest> <instruction>`` wrappers shown as what they carry."""
    if instruction.startswith("submit "):
        _, _, rest = instruction.partition(" ")
        inner_destination, _, inner = rest.partition(" ")
        return inner_destination, inner
    return destination, instruction


def _state(jobs: Sequence[Job], events: Sequence[JobEvent], root: str, now: float) -> str:
    root_job = next((j for j in jobs if str(j.id) == root), None)
    if root_job is not None:
        if root_job.is_finished:
            return "error" if root_job.is_error else "complete"
        return "expired" if root_job.is_expired(now) else root_job.state.value.lower()
    if any(e.action == "expired" for e in events):
        return "expired"
    if any(e.is_error for e in events):
        return "error"
    finished = [e for e in events if e.job_id == root and e.action in ("finished", "returned")]
    return "complete" if finished else "running"


def traces(jobs: Iterable[Job], events: Iterable[JobEvent], now: float) -> list[TraceRow]:
    """Every trace the jobs and events belong to, newest first."""
    by_trace: dict[str, tuple[list[Job], list[JobEvent]]] = {}
    for job in jobs:
        by_trace.setdefault(str(job.id)[:8], ([], []))[0].append(job)
    seen: set[tuple[str, str, str, float]] = set()
    for event in events:
        key = (event.agent, event.job_id, event.action, event.time)
        if key in seen:  # the bridge's own events arrive locally and in its report
            continue
        seen.add(key)
        by_trace.setdefault(event.job_id[:8], ([], []))[1].append(event)
    rows = []
    for trace, (trace_jobs, trace_events) in by_trace.items():
        trace_events.sort(key=lambda e: e.time)
        firsts: dict[str, float] = {}
        for job in trace_jobs:
            firsts[str(job.id)] = min(firsts.get(str(job.id), job.created), float(job.created))
        for event in trace_events:
            firsts[event.job_id] = min(firsts.get(event.job_id, event.time), event.time)
        root = min(firsts, key=lambda job_id: firsts[job_id])
        root_job = next((j for j in trace_jobs if str(j.id) == root), None)
        if root_job is not None:
            destination = root_job.command.destination_text
            instruction = root_job.command.instruction_text
        else:
            first = next(e for e in trace_events if e.job_id == root)
            destination, instruction = first.path, first.instruction
        destination, instruction = _split_submit(destination, instruction)
        hops: list[str] = []
        for event in trace_events:
            if event.agent not in hops:
                hops.append(event.agent)
        times = [e.time for e in trace_events] + [float(j.changed) for j in trace_jobs]
        rows.append(
            TraceRow(
                trace=trace,
                root=root,
                instruction=instruction,
                destination=destination,
                state=_state(trace_jobs, trace_events, root, now),
                created=firsts[root],
                changed=max(times) if times else firsts[root],
                hops=hops,
                events=trace_events,
                jobs=sorted(trace_jobs, key=lambda j: j.created),
            )
        )
    rows.sort(key=lambda r: r.created, reverse=True)
    return rows


def age(seconds: float) -> str:
    """``42 s``, ``3 min``, ``2 h 5 min``, ``4 d``."""
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 86400:
        hours, rest = divmod(int(seconds), 3600)
        return f"{hours} h {rest // 60} min"
    return f"{seconds / 86400:.0f} d"


def stamp(value: float | datetime) -> str:
    """A UTC time of day with the date, for tables."""
    when = value if isinstance(value, datetime) else datetime.fromtimestamp(value).astimezone()
    return when.strftime("%Y-%m-%d %H:%M:%S")


def clock(value: float) -> str:
    """The local time of day to the millisecond, for the steps of a trace."""
    when = datetime.fromtimestamp(value).astimezone()
    return when.strftime("%H:%M:%S.") + f"{when.microsecond // 1000:03d}"
