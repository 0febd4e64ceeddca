"""Prometheus metrics: every series Broadgauge exports, defined in this one module.

Each agent has its own :class:`AgentMetrics`, with its own ``CollectorRegistry`` (the demo runs
ten agents in one process, so the global default registry is never used for agent series).
The runtime calls a few methods on it from the hot path (:meth:`AgentMetrics.recorded`,
:meth:`~AgentMetrics.executed`, ...), each a dictionary lookup and a counter increment; what
the runtime and the wire layer already count (links, boards, refusals, frames, bytes, the
audit log) is read only when ``/metrics`` is scraped, by :class:`_AgentCollector`, so it
costs nothing per message.  The wire layer and the ``jobs`` core never import this module.

:class:`BridgeMetrics` and :class:`PlannerMetrics` hold the HTTP-facing series; the bridge's
and the network planner's live in their agent's registry, the standalone planner's in a
registry of its own.  Labels are bounded: agent, peer (configured neighbours), instruction
keyword (the grammar's), state, reason, endpoint, status, outcome and the configured service
name, never a job id, a user or a project.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import (
    GC_COLLECTOR,
    CollectorRegistry,
    Counter,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.registry import Collector

from broadgauge.jobs.board import EXPIRED_MESSAGE, AddOutcome, AddResult
from broadgauge.jobs.job import Job

if TYPE_CHECKING:
    from broadgauge.runtime.agent import Agent

__all__ = [
    "AUDIT_VERIFY_INTERVAL",
    "AgentMetrics",
    "BridgeMetrics",
    "PlannerMetrics",
    "add_process_collectors",
    "connection_reason",
    "frame_reason",
]

log = logging.getLogger("broadgauge.metrics")

#: How often the audit chain is verified again after the check at start (seconds).
AUDIT_VERIFY_INTERVAL = 3600.0
#: Jobs this agent created and is waiting for; beyond it the oldest is forgotten, so a job
#: whose end is never seen (a soft restart clears boards) cannot grow the table for ever.
MAX_OPEN_JOBS = 100_000
#: Distinct backend operation labels per agent; any further one is counted as ``other``.
MAX_OPERATIONS = 64

JOB_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
STORE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1)
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

# The wire layer's refusal labels, folded into the few reasons an operator alerts on.
_CONNECTION_REASONS = {
    "ip-not-allowed": "ip_not_allowed",
    "bad-address": "ip_not_allowed",
    "no-proxy-header": "ip_not_allowed",
    "wrong-zone": "wrong_zone",
    "wrong-name": "wrong_name",
    "missing-salt": "bad_handshake",
    "bad-salt": "bad_handshake",
    "bad-frame": "bad_handshake",  # no key of ours opened the first frame: wrong keys
    "bad-handshake": "bad_handshake",
    "bad-peer-details": "bad_handshake",
    "out-of-order": "bad_handshake",
    "binary": "bad_handshake",
    "bad-standby": "bad_handshake",
    "standby-message": "bad_handshake",
}
CONNECTION_REASONS = ("ip_not_allowed", "bad_handshake", "wrong_zone", "wrong_name", "other")
_FRAME_REASONS = {
    "bad-auth": "tampered",
    "bad-hex": "tampered",
    "too-short": "tampered",
    "bad-json": "tampered",
    "oversized": "oversized",
    "replayed": "replay",
}
FRAME_REASONS = ("tampered", "oversized", "replay", "other")
_OPERATION = re.compile(r"[a-z][a-z0-9_-]{0,31}")


def connection_reason(wire_reason: str) -> str:
    """The bounded reason for a refused connection (the wire's label, e.g. ``wrong-zone``)."""
    return _CONNECTION_REASONS.get(wire_reason, "other")


def frame_reason(wire_reason: str) -> str:
    """The bounded reason for a refused frame (the wire's label, e.g. ``bad-auth``)."""
    return _FRAME_REASONS.get(wire_reason, "other")


def operation_keyword(operation: str) -> str:
    """The first word of an audited operation (``useradd``, ``sacctmgr``, ``ledger``).

    Only a lower-case word is kept: anything else (a count, a name) becomes ``other``, so no
    user or project name can become a label.
    """
    word = operation.split(None, 1)[0].rstrip(":") if operation.strip() else ""
    return word if _OPERATION.fullmatch(word) else "other"


def _outcome_word(outcome: str) -> str:
    word = outcome.split(":", 1)[0].strip().lower()
    return word if word in ("ok", "refused", "error", "failed") else "other"


def add_process_collectors(registry: CollectorRegistry) -> None:
    """prometheus-client's process, platform and GC collectors, on the process's main
    registry (one per process: they describe the process, not an agent)."""
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    if GC_COLLECTOR is not None:
        GCCollector(registry=registry)


class _Counts:
    """Counters or gauges of one family, by label values (after ``agent``)."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, ...], float] = {}

    def inc(self, key: tuple[str, ...], amount: float = 1.0) -> None:
        """Add ``amount`` (negative for a gauge going down)."""
        self.values[key] = self.values.get(key, 0.0) + amount

    def family(
        self,
        kind: type[CounterMetricFamily] | type[GaugeMetricFamily],
        name: str,
        documentation: str,
        agent: str,
        labels: list[str],
    ) -> Metric:
        """The family as prometheus-client renders it."""
        family = kind(name, documentation, labels=labels)
        for key, value in list(self.values.items()):
            family.add_metric([agent, *key], value)
        return family


class _Histograms:
    """Histograms of one family, by label values (after ``agent``)."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        #: per key: the count in each bucket (the last is +Inf), then the sum
        self.values: dict[tuple[str, ...], list[float]] = {}

    def observe(self, key: tuple[str, ...], value: float) -> None:
        """Count one observation."""
        row = self.values.get(key)
        if row is None:
            row = self.row(key)
        # le: the first bound not below the value (the +Inf bucket after the last).
        row[bisect.bisect_left(self.bounds, value)] += 1
        row[-1] += value

    def row(self, key: tuple[str, ...]) -> list[float]:
        """The counts of ``key`` (made empty if new), for a caller that observes into it
        directly: the store commits several times per job, and a lookup each time costs."""
        row = self.values.get(key)
        if row is None:
            row = self.values[key] = [0.0] * (len(self.bounds) + 2)
        return row

    def family(self, name: str, documentation: str, agent: str, labels: list[str]) -> Metric:
        """The family as prometheus-client renders it (cumulative buckets)."""
        family = HistogramMetricFamily(name, documentation, labels=labels)
        for key, row in list(self.values.items()):
            buckets = []
            total = 0.0
            for bound, count in zip((*self.bounds, float("inf")), row[:-1], strict=True):
                total += count
                buckets.append(("+Inf" if bound == float("inf") else repr(float(bound)), total))
            family.add_metric([agent, *key], buckets, row[-1])
        return family


class AgentMetrics:
    """One agent's registry and series, and the hooks the runtime calls."""

    def __init__(self, agent: Agent, *, process: bool = False) -> None:
        self.agent = agent
        self.name = agent.name
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        # Plain numbers, not prometheus-client series: those take a lock on every increment,
        # which on the job path cost more than the metrics are worth (bench/metrics.py).  The
        # event loop is their only writer; _AgentCollector renders them at scrape time.
        self.created = _Counts()
        self.finished = _Counts()
        self.in_flight = _Counts()
        self.durations = _Histograms(JOB_BUCKETS)
        self.calls = _Counts()
        self.call_seconds = _Histograms(JOB_BUCKETS)
        self.operations = _Counts()
        self.commits = _Histograms(STORE_BUCKETS)
        #: The commits' one histogram row, once the store has committed (no series before).
        self._commit_row: list[float] | None = None
        #: Jobs created here and not ended: id -> (keyword, monotonic start, duplicate?).
        self._open: dict[uuid.UUID, tuple[str, float, bool]] = {}
        #: The last audit chain check: (ok, unix time, entries), None until the first.
        self.audit_verification: tuple[bool, float, int] | None = None
        r.register(_AgentCollector(self))
        if process:
            add_process_collectors(r)

    @classmethod
    def attach(cls, agent: Agent, *, process: bool = False) -> AgentMetrics:
        """Give ``agent`` metrics (``process``: also the process collectors), and start the
        audit chain check if it keeps an audit log.  Call it from the agent's event loop."""
        metrics = cls(agent, process=process)
        agent.metrics = metrics
        if agent.store is not None:
            agent.store.on_commit = metrics.committed
        if agent.audit_log is not None:
            agent.spawn(metrics._verify_audit_forever())
        return metrics

    # --- hooks called by the runtime (keep them cheap) -------------------------------------

    def recorded(self, result: AddResult) -> None:
        """A job was added to or updated on a board (:meth:`Agent.record`)."""
        stored = result.stored
        if stored.command.destination.first != self.name:
            return  # only the agent that created a job counts it
        outcome = result.outcome
        if outcome is AddOutcome.ADDED or outcome is AddOutcome.DUPLICATE:
            self._opened(stored, duplicate=outcome is AddOutcome.DUPLICATE)
        elif stored.is_duplicate:
            # Answered by an identical job already running downstream.
            held = self._open.get(stored.id)
            if held is not None:
                self._open[stored.id] = (held[0], held[1], True)
        for job in result.finished:
            self._closed(job, "error" if job.is_error else "complete")

    def expired(self, job: Job) -> None:
        """The cleaner swept ``job`` from a board (:meth:`Agent.sweep`)."""
        if job.command.destination.first == self.name:
            self._closed(job, "expired")

    def executed(self, keyword: str, finished: Job, seconds: float) -> None:
        """This agent's handler ran a job for ``seconds`` (:meth:`Inbound.execute`)."""
        self.calls.inc((keyword, "error" if finished.is_error else "ok"))
        self.call_seconds.observe((keyword,), seconds)

    def operation(self, operation: str, outcome: str) -> None:
        """A back end reported an operation to the audit trail (:meth:`Agent.audit_operation`)."""
        key = (operation_keyword(operation), _outcome_word(outcome))
        if key not in self.operations.values and len(self.operations.values) >= MAX_OPERATIONS:
            key = ("other", key[1])
        self.operations.inc(key)

    def committed(self, seconds: float) -> None:
        """The durable store committed a transaction in ``seconds``."""
        row = self._commit_row
        if row is None:
            row = self._commit_row = self.commits.row(())
        row[bisect.bisect_left(STORE_BUCKETS, seconds)] += 1
        row[-1] += seconds

    # --- creation and end of the jobs this agent created ------------------------------------

    def _opened(self, job: Job, *, duplicate: bool) -> None:
        if job.id in self._open:
            return
        keyword = job.command.keyword
        self.created.inc((keyword,))
        self.in_flight.inc((keyword,))
        if len(self._open) >= MAX_OPEN_JOBS:
            oldest = next(iter(self._open))
            self.in_flight.inc((self._open.pop(oldest)[0],), -1)
        self._open[job.id] = (keyword, time.monotonic(), duplicate)
        if job.is_finished:  # refused at once (too many duplicates)
            self._closed(job, "error")

    def _closed(self, job: Job, state: str) -> None:
        held = self._open.pop(job.id, None)
        if held is None:
            return  # not created here, or its end was counted already
        keyword, started, duplicate = held
        if duplicate:
            state = "duplicate"
        elif state == "error" and job.error_message == EXPIRED_MESSAGE:
            state = "expired"
        self.in_flight.inc((keyword,), -1)
        self.durations.observe((keyword,), time.monotonic() - started)
        self.finished.inc((keyword, state))

    # --- the audit chain ---------------------------------------------------------------------

    async def _verify_audit_forever(self) -> None:
        while True:
            await self.verify_audit()
            await asyncio.sleep(AUDIT_VERIFY_INTERVAL)

    async def verify_audit(self) -> None:
        """Verify the audit log's chain now (in a worker thread) and keep the result."""
        audit = self.agent.audit_log
        if audit is None:
            return
        try:
            result = await asyncio.to_thread(audit.verify_written)
        except OSError as exc:
            log.warning("%s: could not verify the audit log: %s", self.name, exc)
            self.audit_verification = (False, time.time(), 0)
            return
        if not result.ok:
            log.error(
                "%s: audit log broken at line %s: %s",
                self.name,
                result.first_bad_line,
                result.reason,
            )
        self.audit_verification = (result.ok, time.time(), result.entries)


class _AgentCollector(Collector):
    """Reads, at scrape time, what the agent and its wire service already keep."""

    def __init__(self, metrics: AgentMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        """The series computed from the agent's state now."""
        agent = self.metrics.agent
        name = agent.name
        yield from self._jobs(name)
        stats = agent.service.stats
        yield _counter(
            "broadgauge_connections_refused",
            "Incoming connections refused, by reason.",
            name,
            _folded(stats.connections_rejected.items(), connection_reason, CONNECTION_REASONS),
        )
        yield _counter(
            "broadgauge_frames_refused",
            "Frames refused on a live link (tampered, oversized, replayed), by reason.",
            name,
            _folded(stats.frames_rejected.items(), frame_reason, FRAME_REASONS),
        )
        frames = CounterMetricFamily(
            "broadgauge_frames",
            "Frames received and sent after the handshake (keepalives included).",
            labels=["agent", "direction"],
        )
        frames.add_metric([name, "in"], stats.frames_received)
        frames.add_metric([name, "out"], stats.messages_sent)
        yield frames
        sizes = CounterMetricFamily(
            "broadgauge_frame_bytes", "Bytes of those frames.", labels=["agent", "direction"]
        )
        sizes.add_metric([name, "in"], stats.bytes_received)
        sizes.add_metric([name, "out"], stats.bytes_sent)
        yield sizes
        yield from self._links(agent)
        boards = GaugeMetricFamily(
            "broadgauge_board_jobs",
            "Jobs on the board shared with each neighbour.",
            labels=["agent", "peer"],
        )
        for peer, board in agent.boards_by_peer():
            boards.add_metric([name, str(peer)], len(board))
        yield boards
        yield from self._audit(agent)

    def _jobs(self, name: str) -> Iterable[Metric]:
        m = self.metrics
        keyword = ["agent", "keyword"]
        yield m.created.family(
            CounterMetricFamily,
            "broadgauge_jobs_created",
            "Jobs this agent created (it is the first agent of their path), by instruction.",
            name,
            keyword,
        )
        yield m.finished.family(
            CounterMetricFamily,
            "broadgauge_jobs_finished",
            "Jobs this agent created that ended, by instruction and final state.",
            name,
            [*keyword, "state"],
        )
        yield m.in_flight.family(
            GaugeMetricFamily,
            "broadgauge_jobs_in_flight",
            "Jobs this agent created that have not ended yet, by instruction.",
            name,
            keyword,
        )
        yield m.durations.family(
            "broadgauge_job_duration_seconds",
            "From creating a job to learning its end, at the agent that created it.",
            name,
            keyword,
        )
        yield m.calls.family(
            CounterMetricFamily,
            "broadgauge_backend_calls",
            "Jobs run by this agent's handlers (on a leaf agent: its back end), by outcome.",
            name,
            [*keyword, "outcome"],
        )
        yield m.call_seconds.family(
            "broadgauge_backend_call_duration_seconds",
            "How long this agent's handler took to run a job, by instruction.",
            name,
            keyword,
        )
        yield m.operations.family(
            CounterMetricFamily,
            "broadgauge_backend_operations",
            "Audited back-end operations (first word: useradd, sacctmgr, ledger ...).",
            name,
            ["agent", "operation", "outcome"],
        )
        yield m.commits.family(
            "broadgauge_store_commit_duration_seconds",
            "One transaction of the durable board store, BEGIN to COMMIT.",
            name,
            ["agent"],
        )

    def _links(self, agent: Agent) -> Iterable[Metric]:
        name = agent.name
        service = agent.service
        config = service.config
        peers = {f"{e.name}@{e.zone}": (e.name, e.zone) for e in config.servers}
        peers.update({f"{e.name}@{e.zone}": (e.name, e.zone) for e in config.clients})
        connected = {str(p) for p in service.connected_peers()}
        stats = service.stats
        up = GaugeMetricFamily(
            "broadgauge_peer_up",
            "1 while the link to a configured neighbour is up, else 0.",
            labels=["agent", "peer"],
        )
        reconnects = CounterMetricFamily(
            "broadgauge_peer_reconnects",
            "Links to a neighbour established again after the first one.",
            labels=["agent", "peer"],
        )
        standby = GaugeMetricFamily(
            "broadgauge_peer_standby",
            "1 while this agent's connection to a neighbour is held as a hot-spare standby.",
            labels=["agent", "peer"],
        )
        waiting = GaugeMetricFamily(
            "broadgauge_peer_standbys_waiting",
            "Standby connections of a neighbour waiting behind its primary (hot spares).",
            labels=["agent", "peer"],
        )
        for peer, (peer_name, zone) in sorted(peers.items()):
            up.add_metric([name, peer], 1.0 if peer in connected else 0.0)
            reconnects.add_metric([name, peer], max(0, stats.links_opened[peer] - 1))
            standby.add_metric([name, peer], 1.0 if peer in stats.held_as_standby else 0.0)
            waiting.add_metric([name, peer], service.standbys(peer_name, zone))
        return (up, reconnects, standby, waiting)

    def _audit(self, agent: Agent) -> Iterable[Metric]:
        audit = agent.audit_log
        if audit is None:
            return ()
        name = agent.name
        written = CounterMetricFamily(
            "broadgauge_audit_entries", "Audit entries written since start.", labels=["agent"]
        )
        written.add_metric([name], audit.written)
        found: list[Metric] = [written]
        verification = self.metrics.audit_verification
        if verification is not None:
            ok, at, entries = verification
            result = GaugeMetricFamily(
                "broadgauge_audit_verification_ok",
                "1 if the last check of the audit log's hash chain found it intact, else 0.",
                labels=["agent"],
            )
            result.add_metric([name], 1.0 if ok else 0.0)
            stamp = GaugeMetricFamily(
                "broadgauge_audit_verification_timestamp_seconds",
                "When the audit log's hash chain was last checked (Unix time).",
                labels=["agent"],
            )
            stamp.add_metric([name], at)
            checked = GaugeMetricFamily(
                "broadgauge_audit_verified_entries",
                "Entries the last check of the chain found intact.",
                labels=["agent"],
            )
            checked.add_metric([name], entries)
            found += [result, stamp, checked]
        return found


def _folded(
    counts: Iterable[tuple[str, int]], fold: Callable[[str], str], reasons: tuple[str, ...]
) -> dict[str, int]:
    folded = dict.fromkeys(reasons, 0)
    for reason, count in counts:
        folded[fold(reason)] += count
    return folded


def _counter(name: str, documentation: str, agent: str, counts: dict[str, int]) -> Metric:
    family = CounterMetricFamily(name, documentation, labels=["agent", "reason"])
    for reason, count in counts.items():
        family.add_metric([agent, reason], count)
    return family


# --- the bridge's HTTP API -------------------------------------------------------------------

#: Why the bridge refused a signed request: the four an operator watches for, and the rest.
BRIDGE_REASONS = ("signature", "date", "nonce", "rate_limit", "malformed", "too_large")


class BridgeMetrics:
    """Requests to the bridge's HTTP API, in the bridge agent's registry."""

    def __init__(self, registry: CollectorRegistry, agent: str) -> None:
        self.agent = agent
        self._requests = Counter(
            "broadgauge_bridge_requests",
            "Requests to the bridge's signed endpoints, by endpoint and HTTP status.",
            ["agent", "endpoint", "status"],
            registry=registry,
        )
        self._seconds = Histogram(
            "broadgauge_bridge_request_duration_seconds",
            "How long the bridge took to answer a signed request, by endpoint.",
            ["agent", "endpoint"],
            buckets=HTTP_BUCKETS,
            registry=registry,
        )
        refusals = Counter(
            "broadgauge_bridge_refusals",
            "Requests the bridge refused before running them, by reason.",
            ["agent", "reason"],
            registry=registry,
        )
        self._refusals = {reason: refusals.labels(agent, reason) for reason in BRIDGE_REASONS}
        self._children: dict[tuple[str, int], Counter] = {}
        self._timers: dict[str, Histogram] = {}

    def request(self, endpoint: str, status: int, seconds: float) -> None:
        """One answered request to ``/endpoint`` (a name from the bridge's routes)."""
        child = self._children.get((endpoint, status))
        if child is None:
            child = self._children[(endpoint, status)] = self._requests.labels(
                self.agent, endpoint, str(status)
            )
        child.inc()
        timer = self._timers.get(endpoint)
        if timer is None:
            timer = self._timers[endpoint] = self._seconds.labels(self.agent, endpoint)
        timer.observe(seconds)

    def refused(self, reason: str) -> None:
        """One request refused for ``reason`` (one of :data:`BRIDGE_REASONS`)."""
        self._refusals[reason].inc()


# --- the Execution Planner -------------------------------------------------------------------

PLANNER_OUTCOMES = ("yes", "no", "forbidden", "unauthorized", "invalid", "error")


class PlannerMetrics:
    """``/accepts`` answers, and the aggregator's fan-out, in one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        answers = Counter(
            "broadgauge_planner_answers",
            "Answers to /accepts, by outcome (yes, no, forbidden: 403, or NO with httpcode 403).",
            ["outcome"],
            registry=registry,
        )
        self._answers = {outcome: answers.labels(outcome) for outcome in PLANNER_OUTCOMES}
        self._fanout = Counter(
            "broadgauge_aggregator_requests",
            "Questions the aggregator put to each service, by outcome (yes, no, timeout, ...).",
            ["service", "outcome"],
            registry=registry,
        )
        self._fanout_seconds = Histogram(
            "broadgauge_aggregator_request_duration_seconds",
            "How long each service took to answer the aggregator.",
            ["service"],
            buckets=HTTP_BUCKETS,
            registry=registry,
        )
        self._failures = Counter(
            "broadgauge_aggregator_failures",
            "Services that gave the aggregator no usable answer (timeout, error, HTTP error).",
            ["service"],
            registry=registry,
        )

    @classmethod
    def standalone(cls) -> PlannerMetrics:
        """Metrics in a registry of their own, with the process collectors (a planner that
        runs without an agent)."""
        registry = CollectorRegistry(auto_describe=True)
        add_process_collectors(registry)
        return cls(registry)

    def answered(self, status: int, body_start: bytes) -> None:
        """One ``/accepts`` answer: its HTTP status and the first bytes of its body."""
        if status == 200:
            # Every planner writes the answer word first; a NO for a caller the rules turn
            # away carries httpcode 403 right after it.
            head = body_start[:96]
            if b'"YES"' in head[:48]:
                outcome = "yes"
            else:
                outcome = "forbidden" if b'"httpcode":403' in head else "no"
        else:
            outcome = {403: "forbidden", 401: "unauthorized"}.get(
                status, "invalid" if status < 500 else "error"
            )
        self._answers[outcome].inc()

    def asked(self, service: str, outcome: str, seconds: float | None) -> None:
        """The aggregator asked ``service`` (the configured name) and got ``outcome``."""
        bounded = outcome if outcome in ("yes", "no", "timeout", "invalid", "error") else None
        if bounded is None:
            bounded = "http_error" if outcome.startswith("http-") else "deadline"
        self._fanout.labels(service, bounded).inc()
        if bounded not in ("yes", "no"):
            self._failures.labels(service).inc()
        if seconds is not None:
            self._fanout_seconds.labels(service).observe(seconds)
