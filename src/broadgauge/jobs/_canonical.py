"""The quick reader for a job command in the one form every writer produces.

serde_json writes a ``Put``, ``Update`` or ``Delete`` in exactly one way: compact, the
Job's fields in its struct's order, each present, ``null`` for ``None``, raw UTF-8, and only
the escapes JSON demands.  :func:`~broadgauge.jobs.commands.encode_command` writes the same
bytes.  Nearly every command an agent receives is in that form, and the strict reader
(:mod:`._json` with the typed readers) spends most of its time on cases that form cannot
hold.

:func:`read_job_command` decodes such a text with msgspec into typed fields, builds the
:class:`~broadgauge.jobs.job.Job` with the same checks the strict reader applies, and then
proves the text was in that form: msgspec writes the decoded fields back, and the bytes must
equal the text.  A duplicated key, whitespace, an escaped key, ``-0``, a missing or unknown
field, a float where an integer belongs: each makes the bytes differ or the decode fail.
The id, the command and ``forwarded_for`` must also be spelt as :meth:`Job.to_json` spells
them.  Anything else returns ``None``, and the strict reader judges the text with its own
errors, so a text is accepted here only where the strict reader accepts it, with the same
Job.

Because the text is then exactly what :meth:`Job.to_json` would write, the Job remembers it
and is never encoded again to be stored or sent on.  msgspec's string escaping equals
``json.dumps(..., ensure_ascii=False)`` for every code point; a test checks that for each
one, against the installed msgspec.
"""

from __future__ import annotations

import functools
import uuid
from typing import Final

import msgspec

from broadgauge.grammar import Destination, GrammarError

from ._job_json import ENCODER, WireJob
from ._json import same_int
from .job import Job, canonical_peer_command, remember_json, shared_text
from .status import Status

__all__ = ["read_job_command"]


class _Body(msgspec.Struct, forbid_unknown_fields=True):
    job: WireJob


class _JobCommand(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """The three commands that carry a job; exactly one is set in a canonical text."""

    Put: _Body | None = None
    Update: _Body | None = None
    Delete: _Body | None = None


_DECODER: Final = msgspec.json.Decoder(_JobCommand)

_STATES: Final[dict[str, Status]] = {status.value: status for status in Status}

#: Where the Job's object starts in a canonical text, by tag: ``{"Put":{"job":``.
_JOB_STARTS: Final[dict[str, int]] = {
    tag: len(f'{{"{tag}":{{"job":') for tag in _JobCommand.__struct_fields__
}


@functools.lru_cache(maxsize=256)
def _destination(text: str) -> Destination | None:
    """``text`` as a destination, if it is spelt as the destination writes itself."""
    try:
        destination = Destination.parse(text)
    except GrammarError:
        return None
    return destination if str(destination) == text else None


@functools.lru_cache(maxsize=1024)
def _job_id(text: str) -> uuid.UUID | None:
    """``text`` as a UUID, if it is in the hyphenated lowercase form Job.to_json writes.

    Kept by text: a job's Put and each of its Updates cross an agent with the same id.
    """
    try:
        job_id = uuid.UUID(text)
    except ValueError:
        return None
    return job_id if str(job_id) == text else None


def read_job_command(text: str | bytes) -> tuple[str, Job] | None:
    """The tag and Job of a canonical ``Put``/``Update``/``Delete`` text, else ``None``.

    ``None`` says nothing about the text's validity: the strict reader decides.
    """
    try:
        decoded = _DECODER.decode(text)
    except (msgspec.DecodeError, UnicodeError):
        return None
    # Exactly one variant: the encoder below would write two back just as they came.
    bodies = [
        (tag, body)
        for tag, body in (
            ("Put", decoded.Put),
            ("Update", decoded.Update),
            ("Delete", decoded.Delete),
        )
        if body is not None
    ]
    if len(bodies) != 1:
        return None
    ((tag, body),) = bodies
    raw = ENCODER.encode(decoded)
    if isinstance(text, str):
        # A str that decoded holds no lone surrogate (msgspec refuses one), so it encodes.
        if raw != text.encode("utf-8"):
            return None
        job_text = text[_JOB_STARTS[tag] : -2]
    else:
        if raw != text:
            return None
        job_text = raw[_JOB_STARTS[tag] : -2].decode("utf-8")
    wire = body.job
    state = _STATES.get(wire.state)
    command = canonical_peer_command(wire.command)
    if state is None or command is None:
        return None
    forwarded = None
    if wire.forwarded_for is not None:
        forwarded = _destination(wire.forwarded_for)
        if forwarded is None:
            return None
    job_id = _job_id(wire.id)
    if job_id is None:
        return None
    try:
        job = Job(
            id=job_id,
            created=same_int(wire.created),
            changed=same_int(wire.changed),
            expires=same_int(wire.expires),
            version=wire.version,
            command=command,
            state=state,
            result=shared_text(wire.result),
            result_type=shared_text(wire.result_type),
            forwarded_for=forwarded,
        )
    except (ValueError, TypeError):  # out of range: the strict reader names the field
        return None
    remember_json(job, job_text)
    return tag, job
