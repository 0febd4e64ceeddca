"""A SQLite file that the embedded back ends (ledgers, the hub stand-in) use off the event loop.

SQLite calls block, so each transaction runs on a worker thread; one connection is shared by
those threads and serialised by a lock.  Every call is one ``BEGIN IMMEDIATE`` transaction:
the write lock is taken before anything is read, so a read-then-write cannot interleave with
another writer.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

_T = TypeVar("_T")


class SqliteFile:
    """The database at ``path`` (``":memory:"`` for a throwaway one), ``schema`` applied."""

    def __init__(self, path: str | Path, schema: str) -> None:
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(schema)

    async def transaction(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``work`` in one transaction on a worker thread (rolled back if it raises)."""

        def run() -> _T:
            with self._lock:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    result = work(self._db)
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
                return result

        return await asyncio.to_thread(run)

    def close(self) -> None:
        """Close the connection (after any transaction under way)."""
        with self._lock:
            self._db.close()
