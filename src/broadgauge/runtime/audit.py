"""A tamper-evident audit trail: one hash-chained JSON line per action an agent takes.

Each entry records the time, the job, its instruction, the full path of agents the job came
through, the neighbour that asked, the action or backend operation, and the outcome.  Each
entry also carries the SHA-256 of the previous entry and its own hash over its canonical
JSON, so changing, removing or reordering any entry breaks the chain from that point:
:func:`verify` finds the first such entry.

What the chain does not prove: someone able to rewrite the *whole* file can recompute every
hash.  Ship the log off the host (or record its head hash elsewhere) to close that gap.

Backend operations (``useradd fred.proj``, ``sacctmgr add user ...``) are tied to the job
being run through a context variable that the runtime sets around each handler.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from broadgauge.runtime.trace import TraceEvent

GENESIS = "0" * 64

#: The job a handler is running, so backend operations can be attributed to it.
CURRENT_JOB: contextvars.ContextVar[TraceEvent | None] = contextvars.ContextVar(
    "broadgauge_current_job", default=None
)


def _canonical(entry: dict[str, Any]) -> bytes:
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _digest(entry: dict[str, Any]) -> str:
    body = {k: v for k, v in entry.items() if k != "hash"}
    return hashlib.sha256(_canonical(body)).hexdigest()


class AuditLog:
    """Appends hash-chained entries to a JSON-lines file (safe across threads)."""

    def __init__(self, path: str | os.PathLike[str], agent: str) -> None:
        self.path = Path(path)
        self.agent = agent
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._seq, self._head = _tail(self.path)
        #: Entries appended since this log was opened (metrics read it).
        self.written = 0
        # Append-only, owner-readable: the log names users and projects.
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._file = os.fdopen(fd, "a", encoding="utf-8")

    def append(self, **fields: Any) -> dict[str, Any]:
        """Append one entry made of ``fields`` plus time, sequence and chain hashes."""
        with self._lock:
            entry = {"seq": self._seq + 1, "agent": self.agent, **fields, "prev": self._head}
            entry["hash"] = _digest(entry)
            self._file.write(json.dumps(entry, ensure_ascii=False, separators=(",", ":")) + "\n")
            self._file.flush()
            self._seq, self._head = entry["seq"], entry["hash"]
            self.written += 1
            return entry

    def record_event(self, event: TraceEvent) -> None:
        """A trace sink: record an action of the runtime."""
        self.append(
            time=event.time,
            job=event.job_id,
            instruction=event.instruction,
            path=event.path.split("."),
            peer=event.peer,
            action=event.action.value,
            operation=None,
            outcome=event.detail or event.state,
        )

    def record_operation(self, operation: str, outcome: str = "ok", *, time: float) -> None:
        """Record a backend operation, attributed to the job running in this context."""
        job = CURRENT_JOB.get()
        self.append(
            time=time,
            job=job.job_id if job else None,
            instruction=job.instruction if job else None,
            path=job.path.split(".") if job else [],
            peer=job.peer if job else None,
            action="operation",
            operation=operation,
            outcome=outcome,
        )

    def verify_written(self) -> Verification:
        """:func:`verify` the entries written so far (an entry being appended meanwhile is
        left for the next check, never read half-written)."""
        with self._lock:
            size = os.fstat(self._file.fileno()).st_size
        return verify(self.path, upto=size)

    @property
    def head(self) -> str:
        """The hash of the last entry (anchor it elsewhere to detect a rewritten file)."""
        return self._head

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            self._file.close()


def _tail(path: Path) -> tuple[int, str]:
    """The sequence number and hash of the last entry, to continue the chain after a restart."""
    if not path.exists() or path.stat().st_size == 0:
        return 0, GENESIS
    with path.open("rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        handle.seek(max(0, size - 65536))
        lines = handle.read().splitlines()
    for raw in reversed(lines):
        try:
            entry = json.loads(raw)
            return int(entry["seq"]), str(entry["hash"])
        except (ValueError, KeyError, TypeError):
            continue  # a torn last line from a crash; the verifier will report it
    return 0, GENESIS


@dataclass(frozen=True)
class Verification:
    """The result of :func:`verify`."""

    entries: int
    first_bad_line: int | None = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        """Whether every entry is intact and chained."""
        return self.first_bad_line is None


def verify(path: str | os.PathLike[str], *, upto: int | None = None) -> Verification:
    """Check every entry's hash and its link to the previous entry (in the first ``upto``
    bytes, if given)."""
    previous = GENESIS
    expected_seq = 1
    count = 0
    read = 0
    with Path(path).open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            read += len(raw)
            if upto is not None and read > upto:
                break
            try:
                entry = json.loads(raw)
            except ValueError:
                return Verification(count, number, "not valid JSON")
            if not isinstance(entry, dict) or not isinstance(entry.get("hash"), str):
                return Verification(count, number, "not an audit entry")
            if entry.get("prev") != previous:
                return Verification(count, number, "does not follow the previous entry")
            if entry.get("seq") != expected_seq:
                return Verification(
                    count, number, f"sequence {entry.get('seq')}, expected {expected_seq}"
                )
            if _digest(entry) != entry["hash"]:
                return Verification(count, number, "content does not match its hash (altered)")
            previous = entry["hash"]
            expected_seq += 1
            count += 1
    return Verification(count)
