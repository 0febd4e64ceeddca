"""Building a :class:`DiagnosticsReport` from an agent's boards and recent trace events.

Pure: the caller passes the jobs, the events and the time.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from broadgauge.jobs.health import (
    DiagnosticsReport,
    ExpiredJobEntry,
    FailedJobEntry,
    LogEntry,
    RunningJobEntry,
    SlowJobEntry,
)
from broadgauge.jobs.job import Job
from broadgauge.runtime.trace import Action, TraceEvent

SLOWEST = 10
RECENT = 50
_WARNING_ACTIONS = (Action.REFUSED, Action.EXPIRED)


def _at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def build_report(
    agent_name: str,
    jobs: Iterable[Job],
    events: Sequence[TraceEvent],
    warnings: Sequence[str],
    now: float,
) -> DiagnosticsReport:
    """Aggregate failures, running work, expiries and the slowest jobs, as OpenPortal does."""
    failed: dict[tuple[str, str], FailedJobEntry] = {}
    running: dict[tuple[str, str], RunningJobEntry] = {}
    finished: list[Job] = []
    for job in jobs:
        key = (job.command.destination_text, job.command.instruction_text)
        if job.is_error:
            seen = failed.get(key)
            failed[key] = FailedJobEntry(
                destination=key[0],
                instruction=key[1],
                error_message=job.error_message or "",
                count=(seen.count if seen else 0) + 1,
                first_seen=min(seen.first_seen, _at(job.changed)) if seen else _at(job.changed),
                last_seen=max(seen.last_seen, _at(job.changed)) if seen else _at(job.changed),
            )
        elif job.is_finished:
            finished.append(job)
        else:
            current = running.get(key)
            started = min(current.started_at, _at(job.created)) if current else _at(job.created)
            running[key] = RunningJobEntry(
                destination=key[0],
                instruction=key[1],
                started_at=started,
                count=(current.count if current else 0) + 1,
                running_for_seconds=int(now - started.timestamp()),
            )
    expired: dict[tuple[str, str], ExpiredJobEntry] = {}
    for event in events:
        if event.action is Action.EXPIRED:
            key = (event.path, event.instruction)
            seen_expired = expired.get(key)
            expired[key] = ExpiredJobEntry(
                destination=event.path,
                instruction=event.instruction,
                created_at=seen_expired.created_at if seen_expired else _at(event.time),
                expired_at=_at(event.time),
                count=(seen_expired.count if seen_expired else 0) + 1,
            )
    slowest = sorted(finished, key=lambda j: j.changed - j.created, reverse=True)[:SLOWEST]
    return DiagnosticsReport(
        agent_name=agent_name,
        generated_at=_at(now),
        failed_jobs=tuple(failed.values()),
        slowest_jobs=tuple(
            SlowJobEntry(
                destination=str(j.destination),
                instruction=j.command.instruction_text,
                duration_ms=float((j.changed - j.created) * 1000),
                completed_at=_at(j.changed),
            )
            for j in slowest
        ),
        expired_jobs=tuple(expired.values()),
        running_jobs=tuple(running.values()),
        warnings=tuple(warnings),
        recent_logs=tuple(
            LogEntry(
                timestamp=_at(e.time),
                level="WARN" if e.action in _WARNING_ACTIONS else "INFO",
                target=f"broadgauge::{e.agent}",
                # The job id lets a reader (the operator console) follow one job's trace
                # across the agents' reports: jobs started for another share its prefix.
                message=(
                    f"{e.action.value} {e.job_id} {e.path} {e.instruction} ({e.peer}) {e.detail}"
                ).rstrip(),
            )
            for e in events[-RECENT:]
        ),
    )
