"""Adding many users to one Slurm account in one change.

Changes to slurmdbd run one at a time, through either engine (see :mod:`.commands` and
:mod:`.rest`), and each takes a few tenths of a second, so a term's intake of users queues
up behind the change lock.  :class:`UserAdds` lets the adds of users to the same account
that wait meanwhile go as one change: ``sacctmgr add user name=a,b,c account=X
defaultaccount=X cluster=C`` (:class:`SacctmgrAdder`), or one ``POST .../users`` and one
``POST .../associations`` naming them all (the slurmrestd engine's adder).  A lone add waits
for nothing more than before: a batch closes the moment its change's turn comes.

Nothing is batched away: if the change for several users fails, each user is added again on
its own, so each gets its own outcome (and its own error).  The caller still checks its own
association afterwards and records its own change, in its own job's context.

A user asked for again while an earlier add of it is still waiting or running shares that
add's outcome but is told "already so" (False), as a second ``sacctmgr`` call after the
first would have said: only one job records the change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Final, Protocol

from broadgauge.agents._settling import SETTLE_WAIT, settle

from .backend import SchedulerError

__all__ = ["MOST_USERS_PER_CALL", "SacctmgrAdder", "UserAdder", "UserAdds"]

#: The most users one change names (a ``sacctmgr`` command line stays short).
MOST_USERS_PER_CALL: Final = 50

log = logging.getLogger(__name__)


class _Changes(Protocol):
    async def change(self, *args: str) -> bool: ...

    async def change_when_due(self, arguments: Callable[[], Sequence[str]]) -> bool: ...


class UserAdder(Protocol):
    """How an engine associates users with one account, as their default, in one change."""

    async def add_when_due(
        self, names: Callable[[], Sequence[str]], account: str, cluster: str
    ) -> bool:
        """Add the users ``names()`` gives, asked only once this change's turn comes (who
        asks meanwhile joins); True if anything changed.  :class:`SchedulerError` if not."""
        ...

    async def add_one(self, name: str, account: str, cluster: str) -> bool:
        """Add one user, as :meth:`add_when_due` does (after a change for several failed)."""
        ...


class SacctmgrAdder:
    """:class:`UserAdder` with ``sacctmgr add user name=a,b,c``."""

    def __init__(self, changes: _Changes) -> None:
        self._changes = changes

    async def add_when_due(
        self, names: Callable[[], Sequence[str]], account: str, cluster: str
    ) -> bool:
        """See :meth:`UserAdder.add_when_due`."""
        return await self._changes.change_when_due(lambda: _add_users(names(), account, cluster))

    async def add_one(self, name: str, account: str, cluster: str) -> bool:
        """See :meth:`UserAdder.add_one`."""
        return await self._changes.change(*_add_users([name], account, cluster))


class UserAdds:
    """Associations of users with accounts, made in as few changes as possible."""

    def __init__(self, adder: UserAdder, most: int = MOST_USERS_PER_CALL) -> None:
        self._adder = adder
        self._most = most
        #: The batch still open for each (account, cluster): user name -> its outcome.
        self._open: dict[tuple[str, str], dict[str, asyncio.Future[bool]]] = {}
        #: Every add not yet settled, by (account, cluster, user), in open or running batches.
        self._unsettled: dict[tuple[str, str, str], asyncio.Future[bool]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def add(
        self, name: str, account: str, cluster: str, on_added: Callable[[], None] | None = None
    ) -> bool:
        """Associate ``name`` with ``account`` (its default) on ``cluster``.

        True if the change changed something, False if it was already so;
        :class:`SchedulerError` if this user could not be added.  ``on_added`` is called,
        in the caller's context, once the change is made, even if the caller was
        cancelled meanwhile: the call runs on for the others in its batch, so its change
        happens and must be recorded.
        """
        earlier = self._unsettled.get((account, cluster, name))
        if earlier is not None:
            await asyncio.shield(earlier)  # its error, if it failed, is this caller's too
            return False
        key = (account, cluster)
        batch = self._open.get(key)
        if batch is None or len(batch) >= self._most:
            batch = self._open[key] = {}
            task = asyncio.get_running_loop().create_task(self._run(key, batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        outcome = batch[name] = asyncio.get_running_loop().create_future()
        self._unsettled[(account, cluster, name)] = outcome
        outcome.add_done_callback(lambda _: self._unsettled.pop((account, cluster, name), None))
        if on_added is not None:
            # A done callback runs in the context it was added in: the caller's job.
            outcome.add_done_callback(lambda done: on_added() if _changed(done) else None)
        # A caller that gives up does not cancel the others' call.
        return await asyncio.shield(outcome)

    async def settle(self, timeout: float = SETTLE_WAIT) -> None:
        """Wait for the calls already running (an agent stopping awaits this before it
        closes its audit log); give up, logging it, after ``timeout`` seconds."""
        running = await settle(self._tasks, timeout)
        if running:
            log.error(
                "slurm: %d change(s) adding users still running after %.0f s; "
                "stopping without their audit lines",
                running,
                timeout,
            )

    async def _run(self, key: tuple[str, str], batch: dict[str, asyncio.Future[bool]]) -> None:
        account, cluster = key
        names: list[str] = []

        def close() -> Sequence[str]:
            # Our turn: whoever comes now starts the next batch.
            if self._open.get(key) is batch:
                del self._open[key]
            names.extend(batch)
            return names

        try:
            changed = await self._adder.add_when_due(close, account, cluster)
            _settle(batch, changed)
        except SchedulerError as exc:
            if len(names) <= 1:
                _settle(batch, exc)
            else:
                # One user's trouble must not become everyone's error: one call each.
                await self._one_by_one(names, batch, account, cluster)
        except Exception as exc:
            _settle(batch, exc)
        except BaseException:
            for outcome in batch.values():
                outcome.cancel()
            raise
        finally:
            if self._open.get(key) is batch:
                del self._open[key]

    async def _one_by_one(
        self,
        names: Sequence[str],
        batch: dict[str, asyncio.Future[bool]],
        account: str,
        cluster: str,
    ) -> None:
        for name in names:
            try:
                changed = await self._adder.add_one(name, account, cluster)
            except Exception as exc:
                _settle({name: batch[name]}, exc)
            else:
                _settle({name: batch[name]}, changed)


def _add_users(names: Sequence[str], account: str, cluster: str) -> list[str]:
    return [
        "add", "user", f"name={','.join(names)}", f"cluster={cluster}",
        f"account={account}", f"defaultaccount={account}",
    ]  # fmt: skip


def _changed(outcome: asyncio.Future[bool]) -> bool:
    return not outcome.cancelled() and outcome.exception() is None and outcome.result()


def _settle(batch: dict[str, asyncio.Future[bool]], outcome: bool | BaseException) -> None:
    for future in batch.values():
        if future.done():
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
    # Nobody may be left to read an error (every caller gave up): do not log it as lost.
    for future in batch.values():
        with contextlib.suppress(BaseException):
            future.exception()
