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

Each entry is appended with one ``write``, not synced to disk.  An entry that cannot be
written whole (a full disk) is taken back, so the file never holds half a line written by a
running agent, and :class:`AuditWriteError` names the file and the ``errno``.  A power loss
can still leave a torn last line: opening the log cuts it off, keeps it in ``<log>.torn``,
logs it and records the cut as the next entry.  Anything else that breaks the chain stops
the agent at start with :class:`~.durable.DamagedFileError` (``docs/operators/storage.md``).
"""

from __future__ import annotations

import contextvars
import errno
import hashlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, cast

import msgspec

from broadgauge.jobs._json import I64_MIN, U64_MAX
from broadgauge.runtime.durable import DamagedFileError
from broadgauge.runtime.trace import TraceEvent

GENESIS = "0" * 64

log = logging.getLogger("broadgauge.storage")

#: What an operator does about an audit log whose chain is broken.
RECOVERY: Final = (
    "keep the file as evidence: it was changed after it was written, or damaged on disk "
    "(`broadgauge audit verify FILE` names the first broken line). To start the agent again, "
    "move the file aside (mv audit.jsonl audit.jsonl.broken) and note its last intact hash: "
    "the agent then begins a new chain in a new audit.jsonl"
)
#: Where the torn last line of a log is kept, next to the log.
TORN_SUFFIX: Final = ".torn"


class AuditWriteError(OSError):
    """An entry could not be appended (a full disk, say); the file is as it was before."""


#: The job a handler is running, so backend operations can be attributed to it.
CURRENT_JOB: contextvars.ContextVar[TraceEvent | None] = contextvars.ContextVar(
    "broadgauge_current_job", default=None
)


#: The canonical JSON of an entry, which its hash covers: sorted keys, compact, raw UTF-8.
#: ``json.dumps`` with these options would build an encoder for each call.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)

#: The same bytes, for the values an entry usually holds, about eight times faster: an agent
#: writes several entries for each job.  msgspec writes strings as ``json.dumps`` does (a test
#: checks every code point) and integers alike; floats alike only between 1e-4 and 1e16, where
#: neither uses an exponent (and at zero).
_QUICK = msgspec.json.Encoder(order="sorted")


def _quick_encodes(value: object) -> bool:
    """Whether msgspec writes ``value``, an entry's field, as :data:`_CANONICAL` does."""
    kind = type(value)
    if kind is str or value is None or kind is bool:
        return True
    if kind is int:  # msgspec writes the integers of Rust's i64 and u64
        return I64_MIN <= cast(int, value) <= U64_MAX
    if kind is float:
        number = cast(float, value)
        return number == 0.0 or 1e-4 <= abs(number) < 1e16
    if kind is list:
        return all(type(item) is str for item in cast(list[object], value))
    return False


def _canonical(entry: dict[str, Any]) -> bytes:
    # The keys are strings: keyword arguments, or read from a JSON object.
    for value in entry.values():
        if type(value) is not str and value is not None and not _quick_encodes(value):
            return _CANONICAL.encode(entry).encode()
    return _QUICK.encode(entry)


def _digest(entry: dict[str, Any]) -> str:
    body = {k: v for k, v in entry.items() if k != "hash"}
    return hashlib.sha256(_canonical(body)).hexdigest()


class AuditLog:
    """Appends hash-chained entries to a JSON-lines file (safe across threads).

    Opening it cuts off a torn last line (see the module's docstring) and verifies the whole
    chain: :class:`~.durable.DamagedFileError` if it is broken anywhere else.
    """

    def __init__(self, path: str | os.PathLike[str], agent: str) -> None:
        self.path = Path(path)
        self.agent = agent
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        torn = _cut_torn_tail(self.path)
        checked = verify(self.path) if self.path.exists() else Verification(0)
        if not checked.ok:
            problem = f"its hash chain breaks at line {checked.first_bad_line}: {checked.reason}"
            raise DamagedFileError(self.path, "the audit log", problem, RECOVERY)
        self._seq, self._head = checked.entries, checked.head
        #: Entries appended since this log was opened (metrics read it).
        self.written = 0
        # Append-only, owner-readable: the log names users and projects.
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        #: Where the last whole entry ends: a write that fails part-way is cut back to it.
        self._end = os.fstat(self._fd).st_size
        #: Whether bytes of a failed write may still follow ``_end`` (cut before the next).
        self._partial = False
        if torn:
            self.append(
                time=time.time(),
                job=None,
                instruction=None,
                path=[],
                peer=None,
                action="recovered",
                operation=None,
                outcome=f"cut off a torn last line of {torn} bytes, kept in "
                f"{self.path.name}{TORN_SUFFIX}",
            )

    def append(self, **fields: Any) -> dict[str, Any]:
        """Append one entry made of ``fields`` plus time, sequence and chain hashes.

        :class:`AuditWriteError` if it could not be written whole; the chain then goes on
        from the entry before, as if this one had never been tried.
        """
        with self._lock:
            entry = {"seq": self._seq + 1, "agent": self.agent, **fields, "prev": self._head}
            # The line is the hashed text itself, with the hash added last: one encoding
            # per entry instead of two (the entry's keys are therefore in sorted order).
            body = _canonical(entry)
            entry["hash"] = digest = hashlib.sha256(body).hexdigest()
            self._write(b'%b,"hash":"%b"}\n' % (body[:-1], digest.encode("ascii")))
            self._seq, self._head = entry["seq"], entry["hash"]
            self.written += 1
            return entry

    def _write(self, data: bytes) -> None:
        """Append ``data`` whole, or leave the file ending where the last entry ends."""
        if self._fd is None:
            raise AuditWriteError(errno.EBADF, "the audit log is closed", str(self.path))
        try:
            if self._partial:
                os.ftruncate(self._fd, self._end)
                self._partial = False
            written = 0
            while written < len(data):
                self._partial = True
                written += os.write(self._fd, data[written:])
        except OSError as exc:
            code = exc.errno or errno.EIO
            self._take_back()
            name = errno.errorcode.get(code, "?")
            raise AuditWriteError(code, f"{os.strerror(code)} ({name})", str(self.path)) from exc
        self._end += len(data)
        self._partial = False

    def _take_back(self) -> None:
        """Cut off what a failed write left after the last whole entry."""
        if not self._partial or self._fd is None:
            return
        try:
            os.ftruncate(self._fd, self._end)
            self._partial = False
        except OSError as exc:
            # Tried again before the next entry is written.
            log.error("%s: could not cut off a half-written entry: %s", self.path, exc)

    def record_event(self, event: TraceEvent) -> None:
        """The tracer's keeper: record an action of the runtime (raises if it cannot)."""
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
            size = self._end
        return verify(self.path, upto=size)

    @property
    def head(self) -> str:
        """The hash of the last entry (anchor it elsewhere to detect a rewritten file)."""
        return self._head

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def _cut_torn_tail(path: Path) -> int:
    """Cut off the bytes after the last newline (a line a power loss tore); how many.

    They are appended to ``<path>.torn`` first, so nothing is thrown away unseen.
    """
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return 0
    if size == 0:
        return 0
    with path.open("r+b") as handle:
        handle.seek(size - 1)
        if handle.read(1) == b"\n":
            return 0
        keep = 0
        position = size
        while position > 0:
            step = min(65536, position)
            position -= step
            handle.seek(position)
            newline = handle.read(step).rfind(b"\n")
            if newline >= 0:
                keep = position + newline + 1
                break
        handle.seek(keep)
        tail = handle.read()
        torn = path.with_name(path.name + TORN_SUFFIX)
        fd = os.open(torn, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "ab") as kept:
            kept.write(tail + b"\n")
            kept.flush()
            os.fsync(kept.fileno())
        handle.truncate(keep)
        handle.flush()
        os.fsync(handle.fileno())
    log.warning(
        "%s: the audit log ended in a torn line of %d bytes (as after a power loss mid-write); "
        "cut it off and kept it in %s; the chain goes on from the entry before it",
        path, len(tail), torn,
    )  # fmt: skip
    return len(tail)


@dataclass(frozen=True)
class Verification:
    """The result of :func:`verify`."""

    entries: int
    first_bad_line: int | None = None
    reason: str = ""
    #: The hash of the last intact entry (:data:`GENESIS` if there is none).
    head: str = GENESIS

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
            if not raw.endswith(b"\n"):
                # Only the last line can lack its newline.
                reason = "a torn last line (as after a power loss; the agent cuts it off)"
                return Verification(count, number, reason, previous)
            try:
                entry = json.loads(raw)
            except ValueError:
                return Verification(count, number, "not valid JSON", previous)
            if not isinstance(entry, dict) or not isinstance(entry.get("hash"), str):
                return Verification(count, number, "not an audit entry", previous)
            if entry.get("prev") != previous:
                return Verification(count, number, "does not follow the previous entry", previous)
            if entry.get("seq") != expected_seq:
                reason = f"sequence {entry.get('seq')}, expected {expected_seq}"
                return Verification(count, number, reason, previous)
            if _digest(entry) != entry["hash"]:
                reason = "content does not match its hash (altered)"
                return Verification(count, number, reason, previous)
            previous = entry["hash"]
            expected_seq += 1
            count += 1
    return Verification(count, head=previous)
