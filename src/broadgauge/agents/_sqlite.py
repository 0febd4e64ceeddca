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

from broadgauge.runtime.durable import open_sqlite

_T = TypeVar("_T")


#: What an operator does about a damaged back-end file (see docs/operators/storage.md).
RECOVERY = (
    "stop the agent, keep a copy of the file, and restore it from a backup (removing its -wal "
    "and -shm files). Starting with an empty file forgets everything the back end recorded"
)


class SqliteFile:
    """The database at ``path`` (``":memory:"`` for a throwaway one), ``schema`` applied.

    ``what`` names it in errors: a damaged file raises
    :class:`~broadgauge.runtime.durable.DamagedFileError` and the agent does not start.
    """

    def __init__(self, path: str | Path, schema: str, *, what: str = "a back end's file") -> None:
        self._lock = threading.Lock()
        self._db = open_sqlite(path, what=what, recovery=RECOVERY)
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
