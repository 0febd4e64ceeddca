"""Opening the files an agent keeps across restarts, and refusing one that is damaged.

An agent reads its durable files when it starts: the boards store (``boards.sqlite3``), the
audit log (``audit.jsonl``) and, for the leaf agents with embedded back ends, the local
account directory and the scheduler ledger.  What a crash or a power loss can leave behind
is recovered here, and said in the log: SQLite replays the committed transactions of a
write-ahead log and drops its torn tail (:func:`open_sqlite` reports how many frames it
dropped), and the audit log cuts off a torn last line (:mod:`.audit`).  Damage that no
crash explains - a file cut short, pages overwritten, an audit chain broken in the middle -
is not guessed around: :class:`DamagedFileError` names the file, what is wrong and how to
recover, and the agent does not start.  ``docs/operators/storage.md`` is the operator's
side of this.
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = ["DamagedFileError", "no_space", "open_sqlite"]

log = logging.getLogger("broadgauge.storage")

#: What SQLite says when a file is not a database or a page of it is damaged.
_DAMAGE_CODES: Final = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})

#: The two magic numbers a write-ahead log starts with (the last bit: big-endian checksums).
_WAL_MAGIC: Final = frozenset({0x377F0682, 0x377F0683})
_WAL_HEADER: Final = 32
_FRAME_HEADER: Final = 24


class DamagedFileError(Exception):
    """A durable file is damaged in a way no crash explains: the agent will not start on it.

    The message names the file, what is wrong with it and the operator's way out.
    """

    def __init__(self, path: str | os.PathLike[str], what: str, problem: str, recovery: str):
        self.path = Path(path)
        self.what = what
        self.problem = problem
        self.recovery = recovery
        super().__init__(
            f"{self.path}: {what} is damaged ({problem}), so the agent will not start on it. "
            f"To recover: {recovery}"
        )


def no_space(exc: sqlite3.Error, path: str | os.PathLike[str]) -> OSError | None:
    """``exc`` as the ``ENOSPC`` it stands for, naming ``path``, if SQLite ran out of space.

    SQLite reports a full disk as ``database or disk is full`` without the file or the errno;
    an operator reading the log needs both.
    """
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None or code & 0xFF != sqlite3.SQLITE_FULL:
        return None
    return OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} (ENOSPC; SQLite: {exc})", str(path))


def open_sqlite(
    path: str | os.PathLike[str], *, what: str, recovery: str, timeout: float = 10.0
) -> sqlite3.Connection:
    """Open the SQLite file at ``path`` in WAL mode and check it before anything uses it.

    ``what`` names the file for an operator ("the boards store") and ``recovery`` says what
    to do if it is damaged.  A write-ahead log left by an unclean stop is replayed by SQLite;
    what it had to drop is logged.  A file SQLite cannot read, or whose ``quick_check``
    finds damage, raises :class:`DamagedFileError`.  ``":memory:"`` is opened unchecked.
    The connection is in autocommit mode (``isolation_level=None``): callers issue their
    own ``BEGIN IMMEDIATE``.
    """
    memory = str(path) == ":memory:"
    wal = None if memory else _read_wal(Path(f"{path}-wal"))
    if not memory and wal is None and Path(path).exists() and Path(path).stat().st_size == 0:
        # SQLite would take it for a new database; but it writes its first page the moment
        # it creates one, so an empty file was cut short, and starting afresh would lose
        # everything it held without a word.
        raise DamagedFileError(path, what, "it is empty: cut short to 0 bytes", recovery)
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=timeout)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        problems = [row[0] for row in db.execute("PRAGMA quick_check").fetchall()]
        if problems != ["ok"]:
            raise DamagedFileError(
                path, what, "SQLite's quick_check: " + "; ".join(problems[:5]), recovery
            )
        if wal is not None:
            _report_wal(db, path, what, wal)
    except sqlite3.DatabaseError as exc:
        db.close()
        code = getattr(exc, "sqlite_errorcode", None)
        if code is not None and code & 0xFF in _DAMAGE_CODES:
            raise DamagedFileError(path, what, f"SQLite: {exc}", recovery) from exc
        raise
    except BaseException:
        db.close()
        raise
    return db


@dataclass(frozen=True)
class _WalFile:
    """What a write-ahead log on disk holds, read before SQLite opens it."""

    path: Path
    size: int
    #: Whether its header is intact (SQLite ignores the whole file otherwise).
    header_ok: bool
    #: Whole frames carrying the header's salts: the current generation, valid or not.
    frames: int
    #: Bytes of a frame cut short at the end of the file (a write torn part-way).
    partial: int = 0


def _read_wal(path: Path) -> _WalFile | None:
    """Read the header and frame headers of ``path``, if there is such a file to replay."""
    try:
        with path.open("rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        return None
    if not data:
        return None
    if len(data) < _WAL_HEADER:
        return _WalFile(path, len(data), header_ok=False, frames=0)
    magic, _version, page_size, _seq, salt1, salt2, sum1, sum2 = struct.unpack(">8I", data[:32])
    if magic not in _WAL_MAGIC or _checksum(data[:24], big_endian=bool(magic & 1)) != (sum1, sum2):
        return _WalFile(path, len(data), header_ok=False, frames=0)
    frames = 0
    offset = _WAL_HEADER
    while offset < len(data):
        salts = data[offset + 8 : offset + 16]
        if len(salts) == 8 and struct.unpack(">2I", salts) != (salt1, salt2):
            break  # a frame of an older generation: stale, not this log's
        if offset + _FRAME_HEADER + page_size > len(data):
            # The file ends inside this frame: only a write cut short leaves that.
            return _WalFile(path, len(data), True, frames, partial=len(data) - offset)
        frames += 1
        offset += _FRAME_HEADER + page_size
    return _WalFile(path, len(data), header_ok=True, frames=frames)


def _checksum(data: bytes, *, big_endian: bool) -> tuple[int, int]:
    """SQLite's WAL checksum of ``data`` (a multiple of 8 bytes), from zero."""
    words = struct.unpack(f"{'>' if big_endian else '<'}{len(data) // 4}I", data)
    first = second = 0
    for index in range(0, len(words), 2):
        first = (first + words[index] + second) & 0xFFFFFFFF
        second = (second + words[index + 1] + first) & 0xFFFFFFFF
    return first, second


def _report_wal(
    db: sqlite3.Connection, path: str | os.PathLike[str], what: str, wal: _WalFile
) -> None:
    """Say what SQLite replayed from ``wal`` and what it dropped as torn or damaged."""
    # The checkpoint also moves the replayed pages into the database file; the second
    # column is how many frames SQLite found valid and committed.
    replayed = int(db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1])
    if not wal.header_ok:
        log.warning(
            "%s: %s had a write-ahead log %s (%d bytes) whose header is torn or damaged; "
            "SQLite ignored all of it: the transactions committed in it since the last "
            "checkpoint are lost",
            path, what, wal.path, wal.size,
        )  # fmt: skip
    elif wal.frames > replayed or wal.partial:
        dropped = [f"{wal.frames - replayed} whole frame(s)"] if wal.frames > replayed else []
        dropped += [f"a frame cut short after {wal.partial} bytes"] if wal.partial else []
        log.warning(
            "%s: %s had a write-ahead log %s whose end was torn or damaged (as after a power "
            "loss mid-write): SQLite dropped %s, with the transactions they held, and "
            "replayed the %d committed frame(s) before",
            path, what, wal.path, " and ".join(dropped), replayed,
        )  # fmt: skip
    else:
        log.info(
            "%s: %s had a write-ahead log %s; SQLite replayed its %d committed frame(s)",
            path, what, wal.path, replayed,
        )  # fmt: skip
