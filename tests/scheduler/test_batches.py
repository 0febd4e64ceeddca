"""Users added to one Slurm account while a change runs go in one sacctmgr call (no Slurm)."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Sequence

import pytest

from broadgauge.agents.scheduler.backend import SchedulerError
from broadgauge.agents.scheduler.batches import SacctmgrAdder, UserAdds


class FakeChanges:
    """Changes one at a time, as SlurmCommands runs them; a call naming a refused user fails
    whole, as sacctmgr does; users already associated make "nothing new" (False)."""

    def __init__(self, refused: frozenset[str] = frozenset()) -> None:
        self.lock = asyncio.Lock()
        self.calls: list[list[str]] = []
        self.refused = refused
        self.associated: set[tuple[str, str]] = set()

    async def change(self, *args: str) -> bool:
        return await self.change_when_due(lambda: args)

    async def change_when_due(self, arguments: Callable[[], Sequence[str]]) -> bool:
        async with self.lock:
            args = list(arguments())
            self.calls.append(args)
            await asyncio.sleep(0.01)  # the time sacctmgr takes, while others queue
            fields = dict(arg.split("=", 1) for arg in args if "=" in arg)
            names = fields["name"].split(",")
            if refused := self.refused.intersection(names):
                raise SchedulerError(f"sacctmgr: refused {sorted(refused)}")
            new = {(name, fields["account"]) for name in names} - self.associated
            self.associated |= new
            return bool(new)


def named(call: list[str]) -> list[str]:
    return next(arg for arg in call if arg.startswith("name=")).removeprefix("name=").split(",")


async def test_a_lone_add_is_one_call_naming_one_user() -> None:
    changes = FakeChanges()
    assert await UserAdds(SacctmgrAdder(changes)).add("alice", "proj", "c1") is True
    assert changes.calls == [
        [
            "add", "user", "name=alice", "cluster=c1", "account=proj",
            "defaultaccount=proj",
        ]
    ]  # fmt: skip


async def test_adds_that_wait_behind_a_change_go_in_one_call_per_account() -> None:
    changes = FakeChanges()
    adds = UserAdds(SacctmgrAdder(changes))
    first = asyncio.create_task(adds.add("u0", "proj", "c1"))
    await asyncio.sleep(0.001)  # u0's call is running: the rest wait
    rest = [adds.add(f"u{i}", "proj", "c1") for i in range(1, 8)]
    other = adds.add("v1", "other", "c1")
    outcomes = await asyncio.gather(first, *rest, other)
    assert outcomes == [True] * 9
    assert [named(call) for call in changes.calls] == [
        ["u0"],
        [f"u{i}" for i in range(1, 8)],
        ["v1"],
    ]


async def test_a_batch_holds_at_most_its_limit() -> None:
    changes = FakeChanges()
    adds = UserAdds(SacctmgrAdder(changes), most=3)
    first = asyncio.create_task(adds.add("u0", "proj", "c1"))
    await asyncio.sleep(0.001)
    await asyncio.gather(first, *(adds.add(f"u{i}", "proj", "c1") for i in range(1, 8)))
    assert [len(named(call)) for call in changes.calls] == [1, 3, 3, 1]


async def test_a_failed_batch_is_retried_one_by_one_so_each_user_gets_its_own_outcome() -> None:
    changes = FakeChanges(refused=frozenset({"u3"}))
    adds = UserAdds(SacctmgrAdder(changes))
    first = asyncio.create_task(adds.add("u0", "proj", "c1"))
    await asyncio.sleep(0.001)
    outcomes = await asyncio.gather(
        first, *(adds.add(f"u{i}", "proj", "c1") for i in range(1, 6)), return_exceptions=True
    )
    assert outcomes[:3] == [True, True, True] and outcomes[4:] == [True, True]
    assert isinstance(outcomes[3], SchedulerError) and "u3" in str(outcomes[3])
    assert {(f"u{i}", "proj") for i in (0, 1, 2, 4, 5)} == changes.associated
    assert [named(call) for call in changes.calls][1:] == [
        ["u1", "u2", "u3", "u4", "u5"], ["u1"], ["u2"], ["u3"], ["u4"], ["u5"],
    ]  # fmt: skip


async def test_the_same_user_asked_twice_meanwhile_is_changed_once_and_recorded_once() -> None:
    changes = FakeChanges()
    adds = UserAdds(SacctmgrAdder(changes))
    first = asyncio.create_task(adds.add("u0", "proj", "c1"))
    await asyncio.sleep(0.001)
    outcomes = await asyncio.gather(
        first,
        adds.add("u1", "proj", "c1"),
        adds.add("u1", "proj", "c1"),
        adds.add("u0", "proj", "c1"),  # its add is running now
    )
    assert list(outcomes) == [True, True, False, False]
    assert [named(call) for call in changes.calls] == [["u0"], ["u1"]]


async def test_a_waiting_user_shares_the_error_of_the_add_it_waited_for() -> None:
    changes = FakeChanges(refused=frozenset({"u1"}))
    adds = UserAdds(SacctmgrAdder(changes))
    first = asyncio.create_task(adds.add("u1", "proj", "c1"))
    await asyncio.sleep(0.001)
    with pytest.raises(SchedulerError):
        await adds.add("u1", "proj", "c1")
    with pytest.raises(SchedulerError):
        await first


async def test_a_caller_that_gives_up_does_not_cancel_the_others() -> None:
    changes = FakeChanges()
    adds = UserAdds(SacctmgrAdder(changes))
    first = asyncio.create_task(adds.add("u0", "proj", "c1"))
    await asyncio.sleep(0.001)
    quitter = asyncio.create_task(adds.add("u1", "proj", "c1"))
    stayer = asyncio.create_task(adds.add("u2", "proj", "c1"))
    await asyncio.sleep(0)
    quitter.cancel()
    assert await stayer is True and await first is True
    assert quitter.cancelled()
    # The quitter's user was in the call that ran: the association is there all the same.
    assert ("u1", "proj") in changes.associated


JOB: contextvars.ContextVar[str] = contextvars.ContextVar("job", default="none")


async def test_a_cancelled_callers_change_is_still_recorded_in_its_own_context() -> None:
    changes = FakeChanges()
    adds = UserAdds(SacctmgrAdder(changes))
    recorded: list[tuple[str, str]] = []

    async def job(name: str) -> bool:
        JOB.set(f"job-of-{name}")
        return await adds.add(
            name, "proj", "c1", on_added=lambda: recorded.append((name, JOB.get()))
        )

    first = asyncio.create_task(job("u0"))
    await asyncio.sleep(0.001)
    second = asyncio.create_task(job("u1"))
    while len(changes.calls) < 2:  # until u1's call has begun
        await asyncio.sleep(0.001)
    second.cancel()
    await adds.settle()  # what a stopping agent awaits before closing its audit log
    assert await first is True and second.cancelled()
    assert sorted(recorded) == [("u0", "job-of-u0"), ("u1", "job-of-u1")]
    assert ("u1", "proj") in changes.associated


async def test_an_add_that_was_already_so_records_nothing() -> None:
    changes = FakeChanges()
    changes.associated.add(("u0", "proj"))
    recorded: list[str] = []
    assert (
        await UserAdds(SacctmgrAdder(changes)).add(
            "u0", "proj", "c1", on_added=lambda: recorded.append("x")
        )
        is False
    )
    assert recorded == []
