"""The templemeads Job: an instruction travelling along a destination path.

A :class:`Job` is an immutable value.  Every transition returns a new Job with
the version arithmetic of templemeads ``job.rs`` (notes §3.2): +1 for
``pending``/``running``/``duplicate``/``increment_version`` and +1000 for every
terminal transition, so a finished copy always beats any in-flight copy on a
board.

Time is never read from the system clock here: each transition takes ``now``
(Unix seconds, ``int`` or ``float``).  Stored timestamps are whole seconds,
because the wire form (chrono ``ts_seconds``) only carries whole seconds;
``is_expired`` compares with the caller's ``now`` directly, like Rust's
``expires < Utc::now()``.

JSON is byte-compatible with ``serde_json::to_string(&job)``: keys in the
order ``id, created, changed, expires, version, command, state, result,
result_type, forwarded_for``, compact, raw UTF-8, and the command re-rendered
in canonical form from its parsed value.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import math
import re
import sys
import uuid
from dataclasses import dataclass
from typing import Any, Final

from broadgauge.grammar import (
    Command,
    Destination,
    GrammarError,
    Instruction,
    ResultError,
    decode_result,
    encode_result,
)
from broadgauge.text import has_lone_surrogate

from . import _json
from ._job_json import ENCODER, WireJob
from .errors import InvalidStateError, JobDecodeError, ProtocolError
from .status import Status

__all__ = [
    "DEFAULT_LIFETIME_SECONDS",
    "TIMESTAMP_MAX",
    "TIMESTAMP_MIN",
    "VERSION_MAX",
    "Job",
    "parse_uuid",
    "whole_seconds",
]

#: Every parsed job expires two minutes after creation (``Job::parse``); only the
#: bridge ``/run`` wrapper is re-lifed to five minutes (notes §0 erratum 33).
DEFAULT_LIFETIME_SECONDS: Final = 120

#: Range of whole seconds chrono's ``DateTime<Utc>`` accepts from ``ts_seconds``
#: (found by bisection against the official wheel); anything outside is rejected
#: by Rust peers, so we refuse to read or produce it.
TIMESTAMP_MIN: Final = -8_334_601_228_800
TIMESTAMP_MAX: Final = 8_210_266_876_799

#: Versions are Rust ``u64``.
VERSION_MAX: Final = _json.U64_MAX

_FIELDS: Final = frozenset(
    {
        "id",
        "created",
        "changed",
        "expires",
        "version",
        "command",
        "state",
        "result",
        "result_type",
        "forwarded_for",
    }
)

# The textual UUID forms the Rust ``uuid`` crate parses (verified against the
# official wheel): simple, hyphenated, braced-hyphenated and lowercase
# ``urn:uuid:``-hyphenated, hex in either case.  Python's ``uuid.UUID`` is laxer
# (hyphens anywhere, ``URN:UUID:``, braced-simple), so we match first.
_HEX = "[0-9a-fA-F]"
_HYPHENATED = f"{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}"
_UUID_RE: Final = re.compile(
    rf"(?:{_HEX}{{32}}|{_HYPHENATED}|\{{{_HYPHENATED}\}}|urn:uuid:{_HYPHENATED})"
)


def parse_uuid(text: str) -> uuid.UUID:
    """Parse a UUID in one of the forms Rust accepts; ``ValueError`` otherwise."""
    if not _UUID_RE.fullmatch(text):
        raise ValueError(f"invalid UUID {text!r}")
    return uuid.UUID(text)


def whole_seconds(now: float) -> int:
    """Whole Unix seconds for ``now`` (chrono's ``timestamp()`` floors); range-checked."""
    if isinstance(now, float) and not math.isfinite(now):
        raise ValueError(f"time must be finite, got {now!r}")
    stamp = math.floor(now)
    if not TIMESTAMP_MIN <= stamp <= TIMESTAMP_MAX:
        raise ValueError(f"time {now!r} is outside the range Rust peers accept")
    return _json.same_int(stamp)


def _bump(version: int, by: int) -> int:
    # Rust release builds would wrap a u64 overflow back to a tiny version,
    # which would make the job look stale everywhere; we saturate instead so
    # versions never decrease.
    return min(version + by, VERSION_MAX)


#: How many parsed commands each agent keeps (see :func:`peer_command`): enough for the
#: jobs in flight through a busy agent; a parsed command weighs about 1 KiB.
PEER_COMMANDS_KEPT: Final = 1024


def peer_command(text: str) -> Command:
    """``Command.parse(text)`` without the portal check (notes §4.4), parsed once per text.

    The same job reaches an agent many times (Put, Update, Sync, duplicates) and a Command
    is immutable, so the latest texts are kept, with the local date (a named date range
    resolves against it): parsing was half the cost of decoding a job.
    """
    return _parse_on(text, datetime.date.today().toordinal())


def canonical_peer_command(text: str) -> Command | None:
    """:func:`peer_command`, or ``None`` if ``text`` does not parse or is not spelt as the
    command writes itself back."""
    return _canonical_on(text, datetime.date.today().toordinal())


@functools.lru_cache(maxsize=PEER_COMMANDS_KEPT)
def _parse_on(text: str, day: int) -> Command:
    return Command.parse(text, portal_check=False)


@functools.lru_cache(maxsize=PEER_COMMANDS_KEPT)
def _canonical_on(text: str, day: int) -> Command | None:
    try:
        command = _parse_on(text, day)
    except GrammarError:
        return None
    return command if str(command) == text else None


#: The text of the latest job ids (see :attr:`Job.id_text`): ``str`` of a UUID is Python code.
_id_text: Final = functools.lru_cache(maxsize=4096)(uuid.UUID.__str__)

#: How many of the latest jobs encoded keep their JSON (see :data:`_ENCODED`).
ENCODED_KEPT: Final = 256

#: The JSON of the latest jobs encoded, by identity.  A job is stored and then sent, or sent
#: on, right after it is made: its JSON is then written once.  Each entry holds its job, so
#: an id is never reused while it is here; a job leaves after 256 newer ones were encoded.
_ENCODED: dict[int, tuple[Job, str]] = {}

#: Results and result types at most this long are interned (see :func:`shared_text`).
SHARED_TEXT_LENGTH: Final = 64


def shared_text(text: str | None) -> str | None:
    """``text``, interned if short: one object for every job with that result or type.

    Most results are a few words (``true``, a mapping) and result types a handful of names;
    a board keeps thousands of finished jobs until they expire.  Python frees an interned
    string once nothing refers to it, so this keeps nothing alive.
    """
    if text is None or len(text) > SHARED_TEXT_LENGTH:
        return text
    return sys.intern(text)


def remember_json(job: Job, text: str) -> None:
    """Keep ``text`` as ``job``'s JSON; it must be exactly what :meth:`Job.to_json` writes."""
    _ENCODED[id(job)] = (job, text)
    if len(_ENCODED) > ENCODED_KEPT:
        # A store shared with a worker thread may race us here; losing an entry is fine.
        # (contextlib.suppress would cost a context manager for every job encoded.)
        try:  # noqa: SIM105
            del _ENCODED[next(iter(_ENCODED))]
        except (KeyError, RuntimeError, StopIteration):
            pass


@dataclass(frozen=True, slots=True)
class Job:
    """One job as it appears on a board and on the wire (templemeads ``Job``).

    Construct new jobs with :meth:`create` or :meth:`parse`; decode received
    ones with :meth:`from_json`.  ``result`` holds, by state: Complete - a JSON
    document encoded as a string; Error - the error text; Running - optional
    progress text; Duplicate - the original job's id.
    """

    id: uuid.UUID
    created: int
    changed: int
    expires: int
    version: int
    command: Command
    state: Status = Status.CREATED
    result: str | None = None
    result_type: str | None = None
    forwarded_for: Destination | None = None

    def __post_init__(self) -> None:
        # Every Job is checked, and a job changes state (a new Job) several times on each
        # agent it crosses: one test for the usual case, the detailed ones to name a fault.
        result, result_type = self.result, self.result_type
        if (
            type(self.id) is uuid.UUID
            and type(self.created) is int
            and type(self.changed) is int
            and type(self.expires) is int
            and type(self.version) is int
            and TIMESTAMP_MIN <= self.created <= TIMESTAMP_MAX
            and TIMESTAMP_MIN <= self.changed <= TIMESTAMP_MAX
            and TIMESTAMP_MIN <= self.expires <= TIMESTAMP_MAX
            and 0 <= self.version <= VERSION_MAX
            and type(self.state) is Status
            and isinstance(self.command, Command)
            and (result is None or (type(result) is str and result.isascii()))
            and (result_type is None or (type(result_type) is str and result_type.isascii()))
        ):
            return
        self._check_fields()

    def _check_fields(self) -> None:
        if not isinstance(self.id, uuid.UUID):
            raise TypeError(f"Job.id must be a uuid.UUID, got {type(self.id).__name__}")
        for name in ("created", "changed", "expires"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"Job.{name} must be whole Unix seconds (int)")
            if not TIMESTAMP_MIN <= value <= TIMESTAMP_MAX:
                raise ValueError(f"Job.{name} {value} is outside the range Rust peers accept")
        if isinstance(self.version, bool) or not isinstance(self.version, int):
            raise TypeError("Job.version must be an int")
        if not 0 <= self.version <= VERSION_MAX:
            raise ValueError(f"Job.version {self.version} is not a u64")
        if not isinstance(self.command, Command):
            raise TypeError("Job.command must be a parsed grammar Command")
        if not isinstance(self.state, Status):
            raise TypeError("Job.state must be a Status")
        for name in ("result", "result_type"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or has_lone_surrogate(value)):
                raise ValueError(f"Job.{name} must be None or a UTF-8 encodable string")

    # ------------------------------------------------------------------ creation

    @classmethod
    def create(
        cls,
        command: Command,
        *,
        now: float,
        lifetime: int = DEFAULT_LIFETIME_SECONDS,
        job_id: uuid.UUID | None = None,
    ) -> Job:
        """A new job in state Created, version 1, expiring ``lifetime`` s after ``now``."""
        created = whole_seconds(now)
        return cls(
            id=job_id if job_id is not None else uuid.uuid4(),
            created=created,
            changed=created,
            expires=whole_seconds(created + lifetime),
            version=1,
            command=command,
        )

    @classmethod
    def parse(
        cls,
        text: str,
        *,
        now: float,
        portal_check: bool = False,
        lifetime: int = DEFAULT_LIFETIME_SECONDS,
        job_id: uuid.UUID | None = None,
    ) -> Job:
        """Parse ``"<destination> <instruction>"`` into a new job (``Job::parse``).

        Raises :class:`~broadgauge.grammar.GrammarError` for an invalid command
        (including a failed portal check, and text holding a lone UTF-16 surrogate).
        """
        # A Rust String cannot hold a lone surrogate, so the reference never accepts one;
        # the grammar would, and the job could then be neither stored nor sent.  Constant
        # time for ASCII text.
        if has_lone_surrogate(text):
            raise GrammarError("Invalid command: it contains a lone UTF-16 surrogate")
        # Named date ranges resolve against the local date at ``now``, as Rust
        # resolves them at parse time in the host's time zone (notes §4.2).
        today: datetime.date | None
        stamp = whole_seconds(now)
        try:
            today = datetime.date.fromtimestamp(stamp)
        except (OverflowError, OSError, ValueError):
            today = None  # beyond Python's calendar: let the grammar use today's date
        command = Command.parse(text, portal_check=portal_check, today=today)
        return cls.create(command, now=now, lifetime=lifetime, job_id=job_id)

    # ---------------------------------------------------------------- accessors

    @property
    def id_text(self) -> str:
        """The id as the wire spells it; each agent writes it in several places per job."""
        return _id_text(self.id)

    @property
    def destination(self) -> Destination:
        """The destination path of the job's command."""
        return self.command.destination

    @property
    def instruction(self) -> Instruction:
        """The parsed instruction of the job's command."""
        return self.command.instruction

    @property
    def is_created(self) -> bool:
        """State is Created (never valid on the wire)."""
        return self.state is Status.CREATED

    @property
    def is_pending(self) -> bool:
        """State is Pending."""
        return self.state is Status.PENDING

    @property
    def is_running(self) -> bool:
        """State is Running."""
        return self.state is Status.RUNNING

    @property
    def is_duplicate(self) -> bool:
        """State is Duplicate."""
        return self.state is Status.DUPLICATE

    @property
    def is_error(self) -> bool:
        """State is Error."""
        return self.state is Status.ERROR

    @property
    def is_finished(self) -> bool:
        """State is Complete or Error (Duplicate and expiry do not count)."""
        return self.state.is_finished

    def is_expired(self, now: float) -> bool:
        """Whether ``expires`` lies strictly before ``now`` (Rust ``expires < now``)."""
        return self.expires < now

    @property
    def error_message(self) -> str | None:
        """The error text of an errored job, else ``None``."""
        return self.result if self.state is Status.ERROR else None

    @property
    def progress_message(self) -> str:
        """Human progress text, as Rust ``progress_message`` (Duplicate reads "Pending")."""
        if self.state is Status.RUNNING:
            return self.result if self.result is not None else "Running"
        if self.state is Status.DUPLICATE:
            return "Pending"
        return str(self.state)

    @property
    def original_id(self) -> uuid.UUID | None:
        """For a Duplicate job, the id of the job it duplicates (if readable)."""
        if self.state is not Status.DUPLICATE or self.result is None:
            return None
        try:
            return parse_uuid(self.result)
        except ValueError:
            return None

    def is_duplicate_of(self, original: Job, now: float) -> bool:
        """Duplicate rule of ``board.rs`` (notes §3.5).

        Both jobs Pending, the original not expired, the same *last* destination
        hop and equal parsed instructions.
        """
        return (
            self.is_pending
            and original.is_pending
            and not original.is_expired(now)
            and self.destination.last == original.destination.last
            and self.instruction == original.instruction
        )

    # -------------------------------------------------------------- transitions

    def _moved(self, now: float, by: int, **changes: Any) -> Job:
        return dataclasses.replace(
            self, changed=whole_seconds(now), version=_bump(self.version, by), **changes
        )

    def _refuse(self, action: str) -> InvalidStateError:
        return InvalidStateError(f"Cannot set {action} on job in state: {self.state.value}")

    def pending(self, *, now: float) -> Job:
        """Created -> Pending (+1); a Pending job is returned unchanged."""
        if self.state is Status.PENDING:
            return self
        if self.state is not Status.CREATED:
            raise self._refuse("pending")
        return self._moved(now, 1, state=Status.PENDING)

    def running(self, progress: str | None = None, *, now: float) -> Job:
        """Pending/Running -> Running (+1) with optional progress text."""
        if self.state not in (Status.PENDING, Status.RUNNING):
            raise self._refuse("running")
        return self._moved(now, 1, state=Status.RUNNING, result=progress, result_type=None)

    def duplicate(self, original: Job, *, now: float) -> Job:
        """Pending -> Duplicate of ``original`` (+1).

        ``result`` becomes the original's id and the command is replaced by the
        original's (Rust does the same, so both render identically).
        """
        if not self.is_duplicate_of(original, now):
            raise InvalidStateError(f"Job {self} is not a duplicate of job {original}")
        return self._moved(
            now,
            1,
            state=Status.DUPLICATE,
            command=original.command,
            result=str(original.id),
            result_type=None,
        )

    def completed(self, result: str, result_type: str, *, now: float) -> Job:
        """Pending/Running -> Complete (+1000).

        ``result`` is the JSON text of the value and ``result_type`` its Rust
        type name (notes §3.8); use :func:`broadgauge.grammar.encode_result` to
        produce both from a grammar value.
        """
        if self.state not in (Status.PENDING, Status.RUNNING):
            raise self._refuse("complete")
        try:
            _json.loads(result, "result")
        except ProtocolError as exc:
            raise ValueError(f"completed() needs the JSON text of the result: {exc}") from None
        if not result_type:
            raise ValueError("completed() needs a result type name")
        return self._moved(now, 1000, state=Status.COMPLETE, result=result, result_type=result_type)

    def complete_with(self, value: object, *, now: float, result_type: str | None = None) -> Job:
        """Finish with a grammar value, like Rust's generic ``completed(value)``.

        The JSON text and type name come from
        :func:`broadgauge.grammar.encode_result`; ``None`` finishes with
        :meth:`completed_none` and a :class:`~broadgauge.grammar.ResultError`
        with :meth:`errored`.  Raises :class:`GrammarError` for a value that has
        no OpenPortal result type.
        """
        result, name = encode_result(value, result_type)
        if name == "None":
            return self.completed_none(now=now)
        if name == "Error":
            return self.errored(result or "", now=now)
        assert result is not None
        return self.completed(result, name, now=now)

    def result_value(self) -> object:
        """The decoded result of a finished job.

        Complete -> the grammar value (``None`` for ``result_type`` "None");
        Error -> a :class:`~broadgauge.grammar.ResultError`.  Raises
        :class:`InvalidStateError` while unfinished and :class:`GrammarError`
        when the stored result does not decode.
        """
        if self.state is Status.ERROR:
            return ResultError(self.result or "")
        if self.state is not Status.COMPLETE:
            raise InvalidStateError(f"Job {self.id} is not finished: {self.state.value}")
        return decode_result(self.result, self.result_type or "None")

    def completed_none(self, *, now: float) -> Job:
        """Pending/Running -> Complete with no value (+1000, result_type ``"None"``)."""
        if self.state not in (Status.PENDING, Status.RUNNING):
            raise self._refuse("complete")
        return self._moved(now, 1000, state=Status.COMPLETE, result=None, result_type="None")

    def errored(self, message: str, *, now: float) -> Job:
        """Pending/Running/Duplicate -> Error (+1000, result_type ``"Error"``)."""
        if self.state not in (Status.PENDING, Status.RUNNING, Status.DUPLICATE):
            raise self._refuse("error")
        return self._moved(now, 1000, state=Status.ERROR, result=message, result_type="Error")

    def copy_result_from(self, other: Job, *, now: float) -> Job:
        """Pending/Running/Duplicate -> ``other``'s finished state and result (+1000)."""
        if not other.is_finished:
            raise InvalidStateError(f"Cannot copy result from job in state: {other.state.value}")
        if self.state not in (Status.PENDING, Status.RUNNING, Status.DUPLICATE):
            raise InvalidStateError(f"Cannot copy result from job in state: {self.state.value}")
        return self._moved(
            now, 1000, state=other.state, result=other.result, result_type=other.result_type
        )

    def increment_version(self, *, now: float) -> Job:
        """Any state: version +1, ``changed`` = now."""
        return self._moved(now, 1)

    def set_lifetime(self, seconds: int) -> Job:
        """Expire ``seconds`` after creation (the bridge uses 300 for ``/run``)."""
        return dataclasses.replace(self, expires=whole_seconds(self.created + seconds))

    def with_forwarded_for(self, destination: Destination | None) -> Job:
        """Record the original destination of a job re-issued on another path."""
        return dataclasses.replace(self, forwarded_for=destination)

    # ------------------------------------------------------------ serialisation

    def to_json_value(self) -> dict[str, Any]:
        """The JSON object, keys in Rust's field order."""
        return {
            "id": str(self.id),
            "created": self.created,
            "changed": self.changed,
            "expires": self.expires,
            "version": self.version,
            "command": str(self.command),
            "state": self.state.value,
            "result": self.result,
            "result_type": self.result_type,
            # Rust always writes this key, null when unset.
            "forwarded_for": None if self.forwarded_for is None else str(self.forwarded_for),
        }

    def to_json(self) -> str:
        """Compact JSON, byte-identical to ``serde_json::to_string`` in Rust."""
        recent = _ENCODED.get(id(self))
        if recent is not None and recent[0] is self:
            return recent[1]
        forwarded = self.forwarded_for
        fields = WireJob(
            _id_text(self.id),
            self.created,
            self.changed,
            self.expires,
            self.version,
            str(self.command),
            self.state.value,
            self.result,
            self.result_type,
            None if forwarded is None else str(forwarded),
        )
        text = ENCODER.encode(fields).decode("utf-8")
        remember_json(self, text)
        return text

    @classmethod
    def from_json(cls, text: str | bytes) -> Job:
        """Decode a Job; raises :class:`JobDecodeError` naming the bad field."""
        value = _json.loads(text, "job", JobDecodeError)
        return cls.from_json_value(value, "job")

    @classmethod
    def from_json_value(cls, value: object, path: str = "job") -> Job:
        """Decode an already-parsed JSON value (as embedded in a command)."""
        r = _json.Reader(value, path, _FIELDS, JobDecodeError)
        id_text = r.text("id")
        try:
            job_id = parse_uuid(id_text)
        except ValueError as exc:
            r.fail(str(exc), "id")
        stamps = {
            key: r.integer(key, TIMESTAMP_MIN, TIMESTAMP_MAX, "a unix timestamp in seconds")
            for key in ("created", "changed", "expires")
        }
        version = r.u64("version")
        command_text = r.text("command")
        try:
            command = peer_command(command_text)
        except GrammarError as exc:
            r.fail(f"could not parse command {command_text!r}: {exc}", "command")
        try:
            state = Status.from_wire(r.raw("state"))
        except ValueError as exc:
            r.fail(str(exc), "state")
        forwarded_text = r.opt_text("forwarded_for")
        forwarded: Destination | None = None
        if forwarded_text is not None:
            try:
                forwarded = Destination.parse(forwarded_text)
            except GrammarError as exc:
                r.fail(str(exc), "forwarded_for")
        return cls(
            id=job_id,
            created=stamps["created"],
            changed=stamps["changed"],
            expires=stamps["expires"],
            version=version,
            command=command,
            state=state,
            result=shared_text(r.opt_text("result")),
            result_type=shared_text(r.opt_text("result_type")),
            forwarded_for=forwarded,
        )

    def __str__(self) -> str:
        # Rust ``Display for Job``; handy in logs and error texts.
        cmd = str(self.command)
        if self.state is Status.COMPLETE and self.result is not None:
            return f"{{{cmd}: Complete - {self.result}}}"
        if self.state is Status.ERROR:
            if self.result is None:
                return f"{{{cmd}: Unknown Error}}"
            return f"{{{cmd}: Error - {self.result}}}"
        if self.state is Status.DUPLICATE:
            original = "None" if self.result is None else f'Some("{self.result}")'
            return f"{{{cmd}: Duplicate of {original}}}"
        return f"{{{cmd}: {self.state.value}}}"
