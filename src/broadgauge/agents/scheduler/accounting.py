"""What Slurm accounting's text means, in OpenPortal's unit: node-seconds of the default node.

Pure functions and values, no commands: the default node (:class:`NodeFactors`) converts a
limit to and from ``GrpTRESMins``; :func:`parse_tres` reads a TRES string;
:func:`parse_sacct_line` reads one line of ``sacct -P -n --format=`` :data:`SACCT_FORMAT`;
:func:`daily_reports` bills those jobs per UTC day, as OpenPortal does (see
:mod:`broadgauge.agents.scheduler.slurm`).
"""

from __future__ import annotations

import calendar
import datetime as _dt
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from broadgauge.grammar import DailyProjectUsageReport, Date, Usage

__all__ = [
    "DAY",
    "SACCT_FORMAT",
    "NodeFactors",
    "SlurmJob",
    "daily_reports",
    "parse_sacct_line",
    "parse_tres",
]

#: Seconds in a (UTC) day.
DAY = 86400
#: The fields :func:`parse_sacct_line` reads, in order.
SACCT_FORMAT = "JobID,User,Account,Start,End,ElapsedRaw,AllocTRES,State,Submit,Eligible"
_MEM_UNITS = {"K": Fraction(1, 1024), "M": Fraction(1), "G": Fraction(1024), "T": Fraction(1024**2)}


@dataclass(frozen=True)
class NodeFactors:
    """The default node (the reference's ``slurm-default-node``): what one node holds.

    ``mem`` is in MB.  A component left at 0 is not part of the node: it is neither written
    to ``GrpTRESMins`` nor used for the node fraction.
    """

    cpus: int = 0
    mem: int = 0
    gpus: int = 0
    billing: int = 0

    def __post_init__(self) -> None:
        values = (self.cpus, self.mem, self.gpus, self.billing)
        if any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in values):
            raise ValueError(f"node factors must be whole numbers >= 0: {self}")
        if not any(values):
            raise ValueError("the default node must define cpus, mem, gpus or billing")

    @classmethod
    def from_json(cls, value: str | Mapping[str, Any]) -> NodeFactors:
        """Read ``{"cpus": 128, "mem": 256000, "gpus": 4, "billing": 128}`` (keys optional)."""
        data = json.loads(value) if isinstance(value, str) else value
        if not isinstance(data, Mapping):
            raise ValueError("slurm-default-node must be a JSON object")
        return cls(**{key: data.get(key, 0) for key in ("cpus", "mem", "gpus", "billing")})

    def factors(self) -> dict[str, int]:
        """TRES name -> amount per node, for the defined components, in GrpTRESMins order."""
        pairs = (("cpu", self.cpus), ("gres/gpu", self.gpus), ("mem", self.mem))
        return {name: amount for name, amount in (*pairs, ("billing", self.billing)) if amount}

    def grp_tres_mins(self, limit: Usage) -> str:
        """The ``GrpTRESMins`` value for a limit in node-seconds (zero clears: ``-1``)."""
        if limit.seconds == 0:
            return ",".join(f"{name}=-1" for name in self.factors())
        return ",".join(
            f"{name}={amount * limit.seconds // 60}" for name, amount in self.factors().items()
        )

    def limit_from_tres(self, tres: Mapping[str, int]) -> Usage:
        """Node-seconds from stored TRES-minutes: the first defined component present wins."""
        for name, amount in self.factors().items():
            if name in tres:
                return Usage(max(0, tres[name]) * 60 // amount)
        return Usage(0)

    def node_fraction(self, alloc: Mapping[str, int]) -> Fraction:
        """How much of one node an allocation holds (the largest per-component share)."""
        shares = (Fraction(alloc.get(name, 0), amount) for name, amount in self.factors().items())
        return max(shares, default=Fraction(0))


def parse_tres(text: str) -> dict[str, int]:
    """``billing=2,cpu=2,mem=1000M,gres/gpu=1`` -> amounts (mem in MB); junk is skipped."""
    result: dict[str, int] = {}
    for item in text.split(","):
        name, sep, raw = item.strip().partition("=")
        if not sep:
            continue
        unit = Fraction(1)
        if name == "mem" and raw[-1:].upper() in _MEM_UNITS:
            unit, raw = _MEM_UNITS[raw[-1].upper()], raw[:-1]
        try:
            result[name] = math.floor(Fraction(raw) * unit)
        except (ValueError, ZeroDivisionError):
            continue
    return result


@dataclass(frozen=True)
class SlurmJob:
    """One allocation as sacct reports it (times in UTC epoch seconds)."""

    job_id: str
    user: str
    start: int
    end: int | None  # None while running
    elapsed: int
    alloc: Mapping[str, int]
    queued_since: int | None  # Eligible, else Submit


def _epoch(text: str) -> int | None:
    """sacct's ``2026-11-23T11:00:30`` (UTC, because we run sacct with ``TZ=UTC``)."""
    try:
        moment = _dt.datetime.fromisoformat(text)
    except ValueError:
        return None  # "Unknown", "None"
    return calendar.timegm(moment.timetuple())


def parse_sacct_line(line: str) -> SlurmJob | None:
    """Parse one line of ``sacct -P -n --format=`` :data:`SACCT_FORMAT`; None if unusable."""
    fields = line.split("|")
    if len(fields) < 10:
        return None
    job_id, user, _account, start, end, elapsed, alloc, _state, submit, eligible = fields[:10]
    started = _epoch(start)
    if started is None:
        return None  # never ran (pending, or cancelled while pending)
    try:
        seconds = int(elapsed)
    except ValueError:
        seconds = 0
    queued = _epoch(eligible)
    return SlurmJob(
        job_id=job_id,
        user=user,
        start=started,
        end=_epoch(end),
        elapsed=seconds,
        alloc=parse_tres(alloc),
        queued_since=queued if queued is not None else _epoch(submit),
    )


def daily_reports(
    jobs: Iterable[SlurmJob], days: Iterable[Date], node: NodeFactors, now: int
) -> dict[Date, DailyProjectUsageReport]:
    """Per-day, per-user usage in node-seconds; days that have not begun are left out.

    A job counts on every day it ran, clipped to that day; it adds to the job count and the
    wait time only on the day it started (wait = start - eligible, as OpenPortal).
    """
    job_list = list(jobs)
    result: dict[Date, DailyProjectUsageReport] = {}
    for day in days:
        day_start = day.days * DAY
        if day_start > now:
            continue
        window_end = min(day_start + DAY, now)
        usage: dict[str, int] = {}
        components: dict[str, dict[str, Usage]] = {}
        counts: dict[str, int] = {}
        waits: dict[str, int] = {}
        for job in job_list:
            if job.elapsed <= 0:
                continue  # as OpenPortal: a job that consumed nothing is not a consumer
            end = min(job.end if job.end is not None else now, window_end)
            seconds = end - max(job.start, day_start)
            if seconds <= 0:
                continue
            billed = math.ceil(seconds * node.node_fraction(job.alloc))
            usage[job.user] = usage.get(job.user, 0) + max(billed, 1)
            for name, tres in (("cpu", "cpu"), ("memory", "mem"), ("gpu", "gres/gpu")):
                _add_component(components, name, job.user, job.alloc.get(tres, 0) * seconds)
            _add_component(components, "billing", job.user, job.alloc.get("billing", 0) * seconds)
            if job.start >= day_start:
                counts[job.user] = counts.get(job.user, 0) + 1
                queued = job.queued_since if job.queued_since is not None else job.start
                waits[job.user] = waits.get(job.user, 0) + max(0, job.start - queued)
        result[day] = DailyProjectUsageReport(
            reports={user: Usage(seconds) for user, seconds in usage.items()},
            components=components,
            user_job_counts=counts,
            user_wait_seconds=waits,
            num_jobs=sum(counts.values()),
            total_wait_seconds=sum(waits.values()),
            is_complete=day_start + DAY <= now,
        )
    return result


def _add_component(
    components: dict[str, dict[str, Usage]], name: str, user: str, seconds: int
) -> None:
    # As OpenPortal: zero contributions leave no entry.
    if seconds > 0:
        per_user = components.setdefault(name, {})
        per_user[user] = Usage(per_user.get(user, Usage(0)).seconds + seconds)
