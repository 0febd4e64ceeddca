"""The embedded default quota engine: limits in SQLite, usage measured by walking the tree.

:class:`LedgerQuotaEngine` needs no quota-enabled filesystem, so it serves the embedded
sandbox and tests.  It **records** limits and **reports** usage against them; it enforces
nothing (the kernel does that for the Linux engine).

* A record is keyed by ``(path, owner, kind)``: one engine can serve several volumes, and a
  limit set on one volume's directory does not leak into another's.
* Usage is the **allocated** size: the sum of ``st_blocks * 512`` over every file,
  directory and symlink under the path (what ``du`` and the kernel's block quotas count,
  so sparse files count for what they occupy, not their apparent size).  Hard-linked
  files count once.  Symlinks are never followed and the walk stays on the path's
  filesystem.
* The walk is capped (``max_entries``, default 200 000): a larger tree reports no usage
  (unknown) rather than a number that is silently too small.
* A path that does not exist has no usage (``None``); the limit is still reported.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import stat
import time
from pathlib import Path

from broadgauge.agents._sqlite import RECOVERY
from broadgauge.agents.filesystem.quota import QuotaError, check_owner
from broadgauge.grammar import Quota, QuotaLimit, StorageSize
from broadgauge.runtime.durable import open_sqlite

log = logging.getLogger("broadgauge.agents.filesystem")

DEFAULT_MAX_ENTRIES = 200_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS quotas (
    path TEXT NOT NULL,
    owner TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('user', 'group')),
    limit_bytes INTEGER,            -- NULL: set to unlimited explicitly
    changed REAL NOT NULL,
    PRIMARY KEY (path, owner, kind)
)
"""


class UsageCapReached(Exception):
    """The walk met more entries than allowed."""


def measure_usage(path: str | os.PathLike[str], max_entries: int = DEFAULT_MAX_ENTRIES) -> int:
    """Allocated bytes under ``path`` (see module doc); raises :class:`UsageCapReached`.

    Raises :class:`FileNotFoundError` if ``path`` does not exist.
    """
    top = os.lstat(path)
    device = top.st_dev
    seen: set[tuple[int, int]] = set()
    total = top.st_blocks * 512
    entries = 1
    if not stat.S_ISDIR(top.st_mode):
        return total
    pending = [os.fspath(path)]
    while pending:
        directory = pending.pop()
        try:
            with os.scandir(directory) as listing:
                for entry in listing:
                    entries += 1
                    if entries > max_entries:
                        raise UsageCapReached(f"more than {max_entries} entries under {path}")
                    try:
                        info = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue  # removed while we walked
                    if info.st_nlink > 1 and not stat.S_ISDIR(info.st_mode):
                        key = (info.st_dev, info.st_ino)
                        if key in seen:
                            continue
                        seen.add(key)
                    total += info.st_blocks * 512
                    if stat.S_ISDIR(info.st_mode) and info.st_dev == device:
                        pending.append(entry.path)
        except (FileNotFoundError, NotADirectoryError):
            continue  # removed or replaced while we walked
        except PermissionError:
            log.warning("cannot read %s while measuring usage of %s", directory, path)
    return total


class LedgerQuotaEngine:
    """Quota limits recorded in SQLite; usage measured by walking the directory."""

    def __init__(
        self, db_path: str | os.PathLike[str], *, max_entries: int = DEFAULT_MAX_ENTRIES
    ) -> None:
        self.db_path = Path(db_path)
        self.max_entries = max_entries
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        # A damaged file stops the agent here (DamagedFileError), naming it.
        self._db = open_sqlite(self.db_path, what="the quota ledger", recovery=RECOVERY)
        self._db.execute(_SCHEMA)

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    # --- the QuotaEngine protocol ------------------------------------------------------

    async def set_quota(self, path: str, owner: str, is_group: bool, limit: QuotaLimit) -> Quota:
        """Record ``limit`` and return it with the usage measured now."""
        check_owner(owner, is_group)
        size = None if limit.size is None else limit.size.bytes
        try:
            self._db.execute(
                "INSERT INTO quotas (path, owner, kind, limit_bytes, changed) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (path, owner, kind) DO UPDATE SET "
                "limit_bytes = excluded.limit_bytes, changed = excluded.changed",
                (path, owner, _kind(is_group), size, time.time()),
            )
        except sqlite3.Error as exc:
            raise QuotaError(f"cannot record the quota of {owner} on {path}: {exc}") from exc
        return Quota(limit, await self._usage(path))

    async def get_quota(self, path: str, owner: str, is_group: bool) -> Quota:
        """The recorded limit (``unlimited`` if none) and the usage measured now."""
        check_owner(owner, is_group)
        return Quota(self.limit(path, owner, is_group), await self._usage(path))

    async def clear_quota(self, path: str, owner: str, is_group: bool) -> None:
        """Forget the limit (the quota becomes ``unlimited``)."""
        check_owner(owner, is_group)
        try:
            self._db.execute(
                "DELETE FROM quotas WHERE path = ? AND owner = ? AND kind = ?",
                (path, owner, _kind(is_group)),
            )
        except sqlite3.Error as exc:
            raise QuotaError(f"cannot clear the quota of {owner} on {path}: {exc}") from exc

    # --- helpers -------------------------------------------------------------------------

    def limit(self, path: str, owner: str, is_group: bool) -> QuotaLimit:
        """The recorded limit, without measuring usage."""
        try:
            row = self._db.execute(
                "SELECT limit_bytes FROM quotas WHERE path = ? AND owner = ? AND kind = ?",
                (path, owner, _kind(is_group)),
            ).fetchone()
        except sqlite3.Error as exc:
            raise QuotaError(f"cannot read the quota of {owner} on {path}: {exc}") from exc
        if row is None or row[0] is None:
            return QuotaLimit.UNLIMITED
        return QuotaLimit(StorageSize(int(row[0])))

    async def _usage(self, path: str) -> StorageSize | None:
        # The walk can take a while on a big tree: keep it off the event loop.
        try:
            used = await asyncio.to_thread(measure_usage, path, self.max_entries)
        except FileNotFoundError:
            return None
        except UsageCapReached as exc:
            log.warning("usage not reported: %s", exc)
            return None
        except OSError as exc:
            log.warning("cannot measure usage of %s: %s", path, exc)
            return None
        return StorageSize(used)


def _kind(is_group: bool) -> str:
    return "group" if is_group else "user"
