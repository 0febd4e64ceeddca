"""Exceptions raised by the jobs layer.

The hierarchy separates *bad input from a peer* (:class:`ProtocolError`, which a
receiver logs and drops) from *a local programming or sequencing problem*
(:class:`InvalidStateError`, :class:`ExpiredError`), mirroring the split between
``Error::SerdeJson``/``Error::Parse`` and ``Error::InvalidState``/``Error::Expired``
in templemeads.
"""

from __future__ import annotations

__all__ = [
    "ExpiredError",
    "InvalidStateError",
    "JobDecodeError",
    "JobsError",
    "ProtocolError",
    "StoreError",
]


class JobsError(Exception):
    """Base class of every error raised by :mod:`broadgauge.jobs`."""


class ProtocolError(JobsError, ValueError):
    """Text received from a peer is not a valid templemeads command, job or value.

    The message names the part that is wrong (``Put.job.version: expected an
    unsigned 64-bit integer, got 2.5``).  Decoders never raise anything else for
    malformed input.
    """


class JobDecodeError(ProtocolError):
    """A Job's JSON form is malformed (bad field, bad type or unparseable command)."""


class InvalidStateError(JobsError):
    """A state transition was requested from a state that does not allow it.

    The message follows Rust's wording, e.g. ``Cannot set complete on job in
    state: Duplicate``.
    """


class ExpiredError(JobsError):
    """An expired job was offered to a board (Rust refuses these everywhere)."""


class StoreError(JobsError):
    """The durable store did not accept a change to a board, so the board was left as it was.

    Raised with the store's own exception as its cause (``sqlite3.OperationalError`` for a
    locked database or a full disk, ``UnicodeEncodeError`` for text that cannot be written).
    """
