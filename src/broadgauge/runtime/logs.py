"""Structured logs: one JSON object per line, and a job's trace id on every line about it.

``broadgauge --log-format json`` (or ``[logging] format = "json"`` in an agent's config)
writes each log record as one JSON object:

``time``, ``level``, ``logger``, ``agent``, ``event``, ``message``
    always (``agent`` is empty for lines that belong to no agent);
``job``, ``trace``, ``keyword``, ``peer``, ``path``, ``state``, ``outcome``
    where they apply.

**Following a job.**  Every action an agent takes on a job is logged (the trace events of
:mod:`broadgauge.runtime.trace`), and so is every back-end operation done for it.  A job
started while an agent runs another job (the portal's inner job for a ``submit``, the
instance's jobs for its account, filesystem and scheduler agents) gets an id that begins with
the same 8 hex digits as the job it serves (:func:`child_job_id`): that prefix is the
``trace`` field.  ``grep`` for the first 8 hex digits of the bridge's job id, in the logs of
every agent, shows each hop from the bridge to the back end and back.

**Secrets.**  Every secret an agent decrypts from its config is remembered
(:func:`remember_secret`) and replaced by ``***`` in every line, in either format; keys
render as ``Key(<redacted>)`` and the bridge never logs signatures or API keys.
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime as _dt
import json
import logging
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any, Final, TextIO

from broadgauge.runtime.trace import Action, TraceEvent

__all__ = [
    "FORMATS",
    "JsonFormatter",
    "child_job_id",
    "configure_logging",
    "log_trace_event",
    "remember_secret",
    "trace_fields",
    "trace_id",
    "trace_line",
]

FORMATS: Final = ("human", "json")
HUMAN_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"

#: The fields a record may carry (``logging``'s ``extra=``) that the JSON line includes.
FIELDS: Final = ("agent", "event", "job", "trace", "keyword", "peer", "path", "state", "outcome")

#: Secret values to scrub from every line, longest first: a short secret that is part of a
#: longer one must not be replaced first, or the rest of the longer one would be logged.
_SECRETS: list[str] = []
#: Secrets shorter than this are not scrubbed: replacing "a" everywhere would garble logs.
MIN_SECRET = 6

#: The job whose handler is running in this task (its id starts the ids of jobs it starts).
PARENT_JOB: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "broadgauge_parent_job", default=None
)

trace_log = logging.getLogger("broadgauge.trace")


def remember_secret(value: str) -> None:
    """Scrub ``value`` from every log line from now on."""
    if len(value) >= MIN_SECRET and value not in _SECRETS:
        _SECRETS.append(value)
        _SECRETS.sort(key=len, reverse=True)


def scrub(text: str) -> str:
    """``text`` with every remembered secret replaced by ``***``."""
    for secret in _SECRETS:
        if secret in text:
            text = text.replace(secret, "***")
    return text


def trace_id(job_id: str) -> str:
    """The trace a job belongs to: the first 8 hex digits of its id."""
    return job_id[:8]


def child_job_id(parent: str | None = None) -> uuid.UUID:
    """A new random (version 4) job id in the trace of ``parent`` (default: the job running
    in this task, if any): its first 32 bits are the parent's, the rest random."""
    parent = parent if parent is not None else PARENT_JOB.get()
    fresh = uuid.uuid4()
    if not parent:
        return fresh
    try:
        prefix = uuid.UUID(parent).int >> 96
    except ValueError:
        return fresh
    # The version and variant bits live in the random part, so the id stays a valid UUIDv4.
    return uuid.UUID(int=(prefix << 96) | (fresh.int & ((1 << 96) - 1)))


#: The actions logged at INFO: where a job went (forwarded, queued), how it ended
#: (finished, returned, refused, expired, duplicate) and resumes after a restart.  Receiving
#: and starting a job are implied by the hop before and the end after, so they are logged at
#: DEBUG only: a line costs about as much as routing the job once more.
INFO_ACTIONS: Final = frozenset(
    {
        Action.FORWARDED,
        Action.QUEUED,
        Action.FINISHED,
        Action.RETURNED,
        Action.REFUSED,
        Action.EXPIRED,
        Action.DUPLICATE,
        Action.RESUMED,
    }
)


def log_trace_event(event: TraceEvent) -> None:
    """A trace sink: log one action on a job, with its fields."""
    level = logging.INFO if event.action in INFO_ACTIONS else logging.DEBUG
    if not trace_log.isEnabledFor(level):
        return
    handlers = logging.getLogger().handlers
    if len(handlers) == 1 and isinstance(handlers[0], _JsonHandler) and not trace_log.handlers:
        # The JSON handler is the only one: write the line straight to it.  A LogRecord and
        # the logging machinery cost more than the job's own routing (bench/metrics.py).
        handlers[0].write_trace(event, _LEVEL_NAMES[level], time.time())
        return
    message, fields = trace_fields(event)
    trace_log.log(level, "%s", message, extra=fields)


def trace_fields(event: TraceEvent) -> tuple[str, dict[str, str]]:
    """The message and the fields of the log line for one action on a job."""
    keyword = event.instruction.split(" ", 1)[0]
    outcome = event.detail or event.state
    fields = {
        "agent": event.agent,
        "event": event.action.value,
        "job": event.job_id,
        "trace": trace_id(event.job_id),
        "keyword": keyword,
        "peer": event.peer,
        "path": event.path,
        "state": event.state,
        "outcome": outcome,
    }
    return f"{event.agent}: {event.action.value} {keyword} {event.job_id} ({outcome})", fields


#: JSON string literal of a text (the json module's own C encoder, as ``ensure_ascii=False``).
_quote: Final[Callable[[str], str]] = json.encoder.encode_basestring
#: The whole-second part of the last timestamp written, and its text.
_second: list[Any] = [None, ""]


def _timestamp(created: float) -> str:
    # Formatting a datetime costs more than the rest of a line; lines come many per second,
    # so the seconds are formatted once and the milliseconds appended.
    whole = int(created)
    if _second[0] != whole:
        stamp = _dt.datetime.fromtimestamp(whole, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _second[0], _second[1] = whole, stamp
    millis = min(999, int((created - whole) * 1000))
    return f"{_second[1]}.{millis:03d}+00:00"


def json_line(created: float, level: str, logger: str, message: str, fields: dict[str, Any]) -> str:
    """One log line as JSON (see the module), secrets scrubbed.

    Assembled from JSON string literals rather than through ``json.dumps`` of a dict: every
    action on every job writes one, and this way costs a third as much; each value still
    goes through the json module's own string encoder, so the line is the same JSON.
    """
    parts = [
        '{"time":"',
        _timestamp(created),
        '","level":',
        _quote(str(level)),
        ',"logger":',
        _quote(str(logger)),
        ',"agent":',
        _quote(scrub(str(fields.get("agent") or ""))),
        ',"event":',
        _quote(scrub(str(fields.get("event") or "log"))),
        ',"message":',
        _quote(scrub(message)),
    ]
    for field in FIELDS[2:]:
        value = fields.get(field)
        if value is not None:
            parts += (',"', field, '":', _quote(scrub(str(value))))
    parts.append("}")
    return "".join(parts)


_LEVEL_NAMES: Final = {logging.INFO: "INFO", logging.DEBUG: "DEBUG"}
_TRACE_LOGGER: Final = _quote(trace_log.name)


def trace_line(event: TraceEvent, level: str, created: float) -> str:
    """The line :func:`json_line` writes for one action on a job, the same text, assembled
    in one format string: every job writes several, and the general path's dict of fields
    and loop over them cost more than the line itself."""
    action = event.action.value
    job = event.job_id
    keyword = event.instruction.split(" ", 1)[0]
    outcome = event.detail or event.state
    values: tuple[str, ...] = (
        event.agent,
        action,
        f"{event.agent}: {action} {keyword} {job} ({outcome})",
        job,
        trace_id(job),
        keyword,
        event.peer,
        event.path,
        event.state,
        outcome,
    )
    if _SECRETS:
        values = tuple(scrub(value) for value in values)
    agent, action, message, job, trace, keyword, peer, path, state, outcome = map(_quote, values)
    return (
        f'{{"time":"{_timestamp(created)}","level":{_quote(level)},"logger":{_TRACE_LOGGER},'
        f'"agent":{agent},"event":{action},"message":{message},"job":{job},"trace":{trace},'
        f'"keyword":{keyword},"peer":{peer},"path":{path},"state":{state},"outcome":{outcome}}}'
    )


class JsonFormatter(logging.Formatter):
    """One JSON object per record (see the module), secrets scrubbed."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        fields = {field: getattr(record, field, None) for field in FIELDS}
        text = json_line(record.created, record.levelname, record.name, record.getMessage(), fields)
        if record.exc_info:
            line = json.loads(text)
            line["error"] = scrub(self.formatException(record.exc_info))
            text = json.dumps(line, ensure_ascii=False)
        return text


#: A line waiting to be written: its text, or a trace event's (event, level, time).
_Pending = str | tuple[TraceEvent, str, float]


class _JsonHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The JSON handler; trace lines are handed to it directly (:func:`log_trace_event`).

    On an event loop, lines are written and the stream flushed once per loop iteration
    instead of once per line: a busy agent writes several lines per job, and a flush is a
    system call each.  Trace lines are also only formatted then, all together: one at a time
    between a job's other work, formatting a line costs several times as much.  A line is
    therefore in the file at the latest when the loop next turns; a process killed in
    between loses the lines of that one iteration (the audit log, not this, is the durable
    record).  Lines from other threads, or with no loop running, are written at once, after
    any still waiting, so lines keep their order.
    """

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self._pending: list[_Pending] = []
        self._flush_pending = False

    def emit(self, record: logging.LogRecord) -> None:
        """Write the record's line (see the class for when it is flushed)."""
        try:
            text = self.format(record)
        except Exception:  # as logging.StreamHandler.emit does: a bad record never raises
            self.handleError(record)
            return
        self._add(text)

    def write_trace(self, event: TraceEvent, level: str, created: float) -> None:
        """Write :func:`trace_line` of ``event`` (see the class for when)."""
        self._add((event, level, created))

    def _add(self, line: _Pending) -> None:
        self.acquire()
        try:
            self._pending.append(line)
        finally:
            self.release()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        if not self._flush_pending:
            self._flush_pending = True
            loop.call_soon(self._flush_now)

    def flush(self) -> None:
        """Write the lines waiting, then flush the stream."""
        self.acquire()
        try:
            pending, self._pending = self._pending, []
            if pending:
                end = self.terminator
                self.stream.write(
                    "".join(
                        (line if isinstance(line, str) else trace_line(*line)) + end
                        for line in pending
                    )
                )
            super().flush()
        finally:
            self.release()

    def write_waiting(self) -> None:
        """Write the lines held for the loop's next turn now, if any."""
        if self._pending:
            self.flush()

    def _flush_now(self) -> None:
        self._flush_pending = False
        self.flush()


class _ScrubbingFormatter(logging.Formatter):
    """The human format, secrets scrubbed."""

    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record))


def configure_logging(level: int, log_format: str = "human", stream: TextIO | None = None) -> None:
    """Send log records to ``stream`` (stderr) in ``log_format`` (``human`` or ``json``) at
    ``level``."""
    if log_format not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {log_format!r}")
    target = stream if stream is not None else sys.stderr
    handler: logging.StreamHandler  # type: ignore[type-arg]
    if log_format == "json":
        handler = _JsonHandler(target)
        handler.setFormatter(JsonFormatter())
    else:
        handler = logging.StreamHandler(target)
        handler.setFormatter(_ScrubbingFormatter(HUMAN_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        if isinstance(old, _JsonHandler):
            old.write_waiting()  # lines it holds for the loop's next turn
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
