"""Group commit: a running agent's board changes are committed in batches.

Each change of a board is written to the store at once, but committed with the others made
in the same turn of the event loop: one ``COMMIT`` (and, with ``fsync_each_commit``, one
fsync) for a batch instead of one for each change.  What depends on those changes waits for
the batch's commit: a frame that carries a job, a handler about to run, a local waiter about
to learn a result.  So nothing leaves the agent that a crash could take back, as before.

If the batch cannot be committed (a full disk, say), none of its changes is stored.  The
boards are then reloaded from the store, as they were before the batch, and everything that
waited for it fails with :class:`~broadgauge.jobs.errors.StoreError`, as its own change
would have without group commit.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from broadgauge.jobs.errors import StoreError
from broadgauge.runtime.store import BoardStore

__all__ = ["GroupCommit", "reading_a_link", "sends_after_commit"]

log = logging.getLogger("broadgauge.runtime.commits")

#: How many failed batches are remembered for the work that started before they were flushed
#: (a handler task not yet run): far more than can be flushed while such a task waits.
FAILED_KEPT = 64


#: The task reading a link while it handles a job command (see :func:`reading_a_link`).
_READER: contextvars.ContextVar[asyncio.Task[Any] | None] = contextvars.ContextVar(
    "broadgauge_link_reader", default=None
)


@contextmanager
def reading_a_link() -> Iterator[None]:
    """Mark the running task as a link's reader, handling a job command, for the block.

    Its sends then wait for the commit of its changes off the reader
    (:func:`sends_after_commit`): the reader goes on to the next frame at once, so the
    changes of the frames that arrive together are committed together, instead of one
    commit for each frame.
    """
    token = _READER.set(asyncio.current_task())
    try:
        yield
    finally:
        _READER.reset(token)


def sends_after_commit() -> bool:
    """Whether the running task is a link's reader (:func:`reading_a_link`): a send must not
    hold it up until the commit; the tasks it starts are not readers."""
    reader = _READER.get()
    return reader is not None and reader is asyncio.current_task()


class GroupCommit:
    """Commits ``store``'s batches on the running loop, and holds back what waits on them.

    ``restore`` puts the boards back as the store holds them, after a batch was lost.
    """

    def __init__(self, name: str, store: BoardStore, restore: Callable[[], None]) -> None:
        self.name = name
        self.store = store
        self._restore = restore
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scheduled = False
        self._waiting: list[asyncio.Future[None]] = []
        self._then: list[Callable[[], None]] = []
        #: The number of the batch that changes join now (the next flush commits it).
        self._number = 0
        #: Why each of the last few batches that could not be committed failed, by number.
        self._failed: dict[int, StoreError] = {}

    def start(self) -> None:
        """Turn group commit on (from the agent's running loop)."""
        self._loop = asyncio.get_running_loop()
        self.store.group_commits(self._batch_opened)

    def stop(self) -> None:
        """Commit what is open and turn group commit off: each change commits on its own."""
        if self._loop is None:
            return
        self.flush()
        self.store.group_commits(None)
        self._loop = None

    def ticket(self) -> int:
        """The number of the batch that the changes made now join (for :meth:`durable`)."""
        return self._number

    async def durable(self, ticket: int | None = None) -> None:
        """Return once every change made so far (or, given a :meth:`ticket`, the changes of
        that batch) is committed.

        :class:`StoreError` if the batch holding them could not be; the boards are then as
        the store holds them.  Returns at once if nothing waits to be committed.
        """
        if ticket is not None and ticket < self._number:
            failed = self._failed.get(ticket)
            if failed is not None:
                raise failed
            return
        if self._loop is None or not self.store.in_batch:
            return
        future = self._loop.create_future()
        self._waiting.append(future)
        await future

    def then(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the changes made so far are committed (now, if they are);
        never, if their batch is lost."""
        if self._loop is None or not self.store.in_batch:
            callback()
        else:
            self._then.append(callback)

    def _batch_opened(self) -> None:
        # Commit at the end of this turn of the loop: every change made meanwhile joins.
        if not self._scheduled and self._loop is not None:
            self._scheduled = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        """Commit the open batch now; then release (or fail) what waited on it."""
        self._scheduled = False
        number, self._number = self._number, self._number + 1
        waiting, self._waiting = self._waiting, []
        then, self._then = self._then, []
        try:
            self.store.commit()
        except Exception as exc:
            error = StoreError(
                f"{self.name} could not commit its changes: {type(exc).__name__}: {exc}"
            )
            error.__cause__ = exc
            self._failed[number] = error
            if len(self._failed) > FAILED_KEPT:
                del self._failed[min(self._failed)]
            log.error("%s; its boards are reloaded as the store holds them", error)
            try:
                self._restore()
            except Exception:
                log.exception("%s: could not reload its boards from the store", self.name)
            for future in waiting:
                if not future.done():
                    future.set_exception(error)
            return
        for future in waiting:
            if not future.done():
                future.set_result(None)
        for callback in then:
            try:
                callback()
            except Exception:
                log.exception("%s: a step after a commit failed", self.name)
