"""The booking store, on both engines: SQLite on a temporary file, and a real PostgreSQL.

Every test runs against both (a fresh database per PostgreSQL test).  The double-booking
tests run two separate OS processes, each with its own store instance and many
concurrent calls, against one store, and count what they got.  Time is injected: ``now``
is whatever the test says.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from broadgauge.planner.offers._booking import peak_usage
from broadgauge.planner.offers.booking import BookingConflict, BookingStore, open_store
from broadgauge.planner.offers.records import HOLDING, OfferSetRecord, Phase, SessionRecord
from tests.backends.postgres import Postgres

SITE = "portal.provider.site.hpc"
ROOT = Path(__file__).resolve().parents[3]


def session(uuid: str, **changes: Any) -> SessionRecord:
    """An offer of 1 core, 1 GiB on SITE over [10, 20), expiring at 100."""
    executable = {"kind": "docker-container", "image": {"locations": ["x/y:1"]}}
    fields: dict[str, Any] = dict(
        uuid=uuid, offerset="set-1", owner="alice", resource=SITE, cores=1, memory_mib=1024,
        storage_gib=5, start=10.0, end=20.0, expires=100.0, phase=Phase.OFFERED,
        executable=executable, created=1.0, modified=1.0,
    )  # fmt: skip
    return SessionRecord(**(fields | changes))


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty store on each engine."""
    if request.param == "sqlite":
        return f"sqlite://{tmp_path / 'booking.db'}"
    # Asked for here, not as an argument, so that SQLite runs never start PostgreSQL.
    server: Postgres = request.getfixturevalue("postgres")
    return server.create_database()


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[BookingStore]:
    """An empty store on each engine, closed afterwards."""
    opened = open_store(store_url)
    try:
        yield opened
    finally:
        await opened.close()


# ---- capacity, offer sets, offers ------------------------------------------------------


async def test_capacity_is_upserted(store: BookingStore) -> None:
    assert await store.capacity(SITE) is None
    await store.set_capacity(SITE, 4, 4096)
    assert await store.capacity(SITE) == (4, 4096)
    await store.set_capacity(SITE, 8, 1024)
    assert await store.capacity(SITE) == (8, 1024)
    assert await store.capacity("portal.provider.other.hpc") is None


async def test_offersets_round_trip(store: BookingStore) -> None:
    record = OfferSetRecord(
        uuid="set-1",
        owner=None,
        name="my run",
        result="NO",
        created=3.5,
        messages=({"time": 3.5, "level": "INFO", "message": "no site can"},),
        request={"name": "my run", "compute": {"cores": {"min": 2}}},
    )
    await store.create_offerset(record)
    assert await store.get_offerset("set-1") == record
    assert await store.get_offerset("set-2") is None
    with pytest.raises(ValueError, match="exists"):
        await store.create_offerset(record)


async def test_offer_fits_or_writes_nothing(store: BookingStore) -> None:
    await store.set_capacity(SITE, 4, 2048)
    first = session("a", cores=3, connectors=({"kind": "k", "status": "PREPARING"},))
    assert await store.offer(first, now=1.0)
    assert await store.get_session("a", now=1.0) == first
    assert not await store.offer(session("b", cores=2), now=1.0)
    assert await store.get_session("b", now=1.0) is None
    assert await store.offer(session("c", cores=1), now=1.0)  # exactly full
    assert not await store.offer(session("d", cores=0, memory_mib=1), now=1.0)  # memory full
    assert not await store.offer(session("e", resource="portal.provider.none.hpc"), now=1.0)
    with pytest.raises(ValueError, match="exists"):
        await store.offer(session("a", cores=0, memory_mib=0), now=1.0)
    with pytest.raises(ValueError):
        await store.offer(session("f", start=20.0, end=20.0), now=1.0)
    with pytest.raises(ValueError):
        await store.offer(session("g", expires=1.0), now=1.0)
    assert [s.uuid for s in await store.sessions_of("set-1", now=1.0)] == ["a", "c"]


async def test_intervals_overlap_only_where_they_do(store: BookingStore) -> None:
    await store.set_capacity(SITE, 1, 4096)
    # Half-open: [10, 20) and [20, 30) never hold at the same instant.
    assert await store.offer(session("a", start=10.0, end=20.0), now=1.0)
    assert await store.offer(session("b", start=20.0, end=30.0), now=1.0)
    assert await store.offer(session("c", start=0.0, end=10.0), now=1.0)
    assert not await store.offer(session("d", start=15.0, end=25.0), now=1.0)
    assert not await store.offer(session("e", start=19.5, end=20.5), now=1.0)
    assert not await store.offer(session("f", start=0.0, end=100.0), now=1.0)


async def test_concurrent_usage_is_a_peak_not_a_sum(store: BookingStore) -> None:
    await store.set_capacity(SITE, 2, 4096)
    assert await store.offer(session("a", start=0.0, end=10.0), now=1.0)
    assert await store.offer(session("b", start=20.0, end=30.0), now=1.0)
    # a and b never overlap, so at most one core is held anywhere in [0, 30): this fits,
    # where summing every overlapping hold (a + b + c = 3) would refuse it.
    assert await store.offer(session("c", start=0.0, end=30.0), now=1.0)
    assert not await store.offer(session("d", start=5.0, end=6.0), now=1.0)
    assert await store.offer(session("e", start=12.0, end=18.0), now=1.0)
    assert not await store.offer(session("f", start=9.0, end=13.0), now=1.0)


def test_peak_usage_sweeps() -> None:
    holds = [(0.0, 10.0, 1, 100), (5.0, 15.0, 2, 10), (10.0, 20.0, 4, 1), (30.0, 40.0, 8, 8)]
    assert peak_usage(holds, 0.0, 30.0) == (6, 110)  # cores at [10, 15), memory at [5, 10)
    assert peak_usage(holds, 0.0, 5.0) == (1, 100)
    assert peak_usage(holds, 15.0, 30.0) == (4, 1)
    assert peak_usage(holds, 20.0, 30.0) == (0, 0)
    assert peak_usage([], 0.0, 1.0) == (0, 0)


async def test_lapsed_offers_stop_counting(store: BookingStore) -> None:
    await store.set_capacity(SITE, 1, 4096)
    assert await store.offer(session("a", expires=50.0), now=1.0)
    assert not await store.offer(session("b", offerset="set-2", expires=150.0), now=49.9)
    assert await store.offer(session("b", offerset="set-2", expires=150.0), now=50.0)
    # The offer that took a's capacity stored a as EXPIRED, so a late accept cannot revive it.
    lapsed = await store.get_session("a", now=10.0)
    assert lapsed is not None
    assert (lapsed.phase, lapsed.modified) == (Phase.EXPIRED, 50.0)
    with pytest.raises(BookingConflict, match="EXPIRED"):
        await store.accept("a", now=10.0)


# ---- accept, transitions, expiry -------------------------------------------------------


async def test_accept_rejects_siblings_and_frees_them(store: BookingStore) -> None:
    await store.set_capacity(SITE, 2, 4096)
    assert await store.offer(session("a"), now=1.0)
    assert await store.offer(session("b"), now=1.0)
    assert not await store.offer(session("c", offerset="set-2"), now=1.0)
    accepted = await store.accept("a", now=5.0)
    assert (accepted.phase, accepted.modified) == (Phase.ACCEPTED, 5.0)
    sibling = await store.get_session("b", now=5.0)
    assert sibling is not None
    assert (sibling.phase, sibling.modified) == (Phase.REJECTED, 5.0)
    assert await store.offer(session("c", offerset="set-2", expires=1000.0), now=5.0)
    # An accepted session holds past its offer's expiry (c is still a live offer).
    assert not await store.offer(session("d", offerset="set-3", expires=300.0), now=200.0)
    with pytest.raises(BookingConflict, match="REJECTED") as raised:
        await store.accept("b", now=6.0)
    assert raised.value.phase is Phase.REJECTED
    with pytest.raises(BookingConflict, match="ACCEPTED"):
        await store.accept("a", now=6.0)
    with pytest.raises(KeyError):
        await store.accept("nobody", now=6.0)


async def test_accept_after_expiry_conflicts_and_expires(store: BookingStore) -> None:
    await store.set_capacity(SITE, 2, 4096)
    assert await store.offer(session("a"), now=1.0)
    assert await store.offer(session("b", expires=200.0), now=1.0)
    with pytest.raises(BookingConflict, match="EXPIRED") as raised:
        await store.accept("a", now=100.0)
    assert raised.value.phase is Phase.EXPIRED
    stored = await store.get_session("a", now=100.0)
    assert stored is not None
    assert (stored.phase, stored.modified) == (Phase.EXPIRED, 100.0)
    assert (await store.accept("b", now=100.0)).phase is Phase.ACCEPTED


async def test_transition_is_compare_and_set(store: BookingStore) -> None:
    await store.set_capacity(SITE, 2, 4096)
    assert await store.offer(session("a"), now=1.0)
    assert await store.offer(session("b"), now=1.0)
    await store.accept("a", now=2.0)
    connector = {"kind": "k", "status": "AVAILABLE", "protocol": "https", "location": "u"}
    note = {"time": 3.0, "level": "INFO", "message": "waiting for the start"}
    waiting = await store.transition(
        "a", frozenset({Phase.ACCEPTED}), Phase.WAITING, 3.0, connectors=(connector,), message=note
    )
    assert (waiting.phase, waiting.modified) == (Phase.WAITING, 3.0)
    assert (waiting.connectors, waiting.messages) == ((connector,), (note,))
    with pytest.raises(BookingConflict, match="WAITING") as raised:
        await store.transition("a", frozenset({Phase.ACCEPTED}), Phase.PREPARING, 4.0)
    assert raised.value.phase is Phase.WAITING
    unchanged = await store.get_session("a", now=4.0)
    assert unchanged == waiting
    later = {"time": 5.0, "level": "WARN", "message": "slow"}
    added = await store.add_message("a", later, now=5.0)
    assert (added.phase, added.messages, added.modified) == (Phase.WAITING, (note, later), 5.0)
    done = await store.transition("a", frozenset(HOLDING - {Phase.OFFERED}), Phase.COMPLETED, 6.0)
    assert (done.phase, done.connectors) == (Phase.COMPLETED, (connector,))
    # Rules that keep capacity honest (caller errors, raised before touching the store).
    with pytest.raises(ValueError, match="final"):
        await store.transition("a", frozenset({Phase.COMPLETED}), Phase.FAILED, 7.0)
    with pytest.raises(ValueError, match="accept"):
        await store.transition("b", frozenset({Phase.OFFERED}), Phase.ACCEPTED, 7.0)
    with pytest.raises(KeyError):
        await store.transition("nobody", frozenset({Phase.RUNNING}), Phase.FAILED, 7.0)
    with pytest.raises(KeyError):
        await store.add_message("nobody", later, now=7.0)


async def test_offers_can_be_rejected_until_they_lapse(store: BookingStore) -> None:
    await store.set_capacity(SITE, 1, 4096)
    assert await store.offer(session("a"), now=1.0)
    assert await store.offer(session("b", offerset="set-2", start=30.0, end=40.0), now=1.0)
    rejected = await store.transition("a", frozenset({Phase.OFFERED}), Phase.REJECTED, 2.0)
    assert rejected.phase is Phase.REJECTED
    assert await store.offer(session("c", offerset="set-3"), now=2.0)  # a's core is free
    with pytest.raises(BookingConflict, match="EXPIRED"):
        await store.transition("b", frozenset({Phase.OFFERED}), Phase.REJECTED, 100.0)


async def test_expiry_is_lazy(store: BookingStore) -> None:
    await store.set_capacity(SITE, 10, 40960)
    await store.offer(session("z", start=10.0, end=20.0, expires=50.0), now=1.0)
    await store.offer(session("y", start=5.0, end=20.0, expires=80.0), now=1.0)
    await store.offer(session("x", start=10.0, end=20.0, expires=80.0), now=1.0)
    await store.offer(session("w", offerset="set-2", expires=60.0), now=1.0)
    live = await store.get_session("z", now=49.0)
    assert live is not None
    assert live.phase is Phase.OFFERED
    lapsed = await store.get_session("z", now=50.0)
    assert lapsed is not None
    assert (lapsed.phase, lapsed.modified) == (Phase.EXPIRED, 50.0)
    listed = await store.sessions_of("set-1", now=80.0)
    assert [(s.uuid, s.phase) for s in listed] == [
        ("y", Phase.EXPIRED),  # start 5, then start 10 ordered by uuid
        ("x", Phase.EXPIRED),
        ("z", Phase.EXPIRED),
    ]
    assert [s.modified for s in listed] == [80.0, 80.0, 50.0]
    assert await store.sessions_of("set-none", now=80.0) == []
    assert await store.expire(now=59.0) == 0
    assert await store.expire(now=60.0) == 1  # w
    assert await store.expire(now=1000.0) == 0
    assert (await store.get_session("w", now=1000.0)).modified == 60.0  # type: ignore[union-attr]


async def test_accepted_and_rejected_never_expire(store: BookingStore) -> None:
    await store.set_capacity(SITE, 2, 4096)
    await store.offer(session("a"), now=1.0)
    await store.offer(session("b"), now=1.0)
    await store.accept("a", now=2.0)
    assert await store.expire(now=10_000.0) == 0
    phases = [(s.uuid, s.phase, s.modified) for s in await store.sessions_of("set-1", 10_000.0)]
    assert phases == [("a", Phase.ACCEPTED, 2.0), ("b", Phase.REJECTED, 2.0)]


# ---- no double booking, across processes -----------------------------------------------

# Run by each worker process: open its own store, say "ready", wait for "go" on stdin (so
# that both start together), then run every call at once and print the outcomes as JSON.
WORKER = """
import asyncio, json, sys
from broadgauge.planner.offers.booking import BookingConflict, open_store
from broadgauge.planner.offers.records import Phase, SessionRecord

async def main(job):
    store = open_store(job["url"])
    # Connect (and make the tables) before the start, with as many concurrent calls as the
    # race will have: otherwise the first calls would run alone while connections open.
    await asyncio.gather(*(store.capacity("warm-up") for _ in range(8)))
    print("ready", flush=True)
    sys.stdin.readline()
    if job["mode"] == "offer":
        records = [SessionRecord(**dict(s, phase=Phase.OFFERED)) for s in job["sessions"]]
        out = await asyncio.gather(*(store.offer(r, job["now"]) for r in records))
    else:
        async def accept(uuid):
            try:
                return (await store.accept(uuid, job["now"])).phase.value
            except BookingConflict as conflict:
                return "conflict " + conflict.phase.value
        out = await asyncio.gather(*(accept(uuid) for uuid in job["uuids"]))
    await store.close()
    print(json.dumps(list(out)), flush=True)

asyncio.run(main(json.loads(sys.argv[1])))
"""


def run_workers(jobs: list[dict[str, Any]]) -> list[list[Any]]:
    """Run one worker process per job, all released at once; each one's outcomes."""
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, json.dumps(job)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for job in jobs
    ]
    try:
        for worker in workers:
            assert worker.stdout is not None
            if (line := worker.stdout.readline()) != "ready\n":
                worker.kill()
                pytest.fail(f"worker did not start: {line!r} {worker.communicate()[1]}")
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write("go\n")
            worker.stdin.flush()
        results = []
        for worker in workers:
            # A guard against a hang only: the outcome does not depend on timing.
            out, err = worker.communicate(timeout=300)
            assert worker.returncode == 0, err
            results.append(json.loads(out.strip().splitlines()[-1]))
        return results
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()


async def test_no_double_booking_across_processes(store: BookingStore, store_url: str) -> None:
    # Three sites of 10 cores, each offered 50 one-core sessions at once, 25 by each of two
    # processes: three races at the boundary, not one, to catch a lost update more surely.
    sites = [f"portal.provider.site{n}.hpc" for n in range(3)]
    for site in sites:
        await store.set_capacity(site, 10, 1 << 20)
    names = [[f"p{w}-{site}-{i}" for site in sites for i in range(25)] for w in range(2)]
    jobs = [
        {
            "url": store_url,
            "mode": "offer",
            "now": 1.0,
            "sessions": [
                dataclasses.asdict(session(name, offerset=name, resource=name.split("-")[1]))
                for name in names[w]
            ],
        }
        for w in range(2)
    ]
    outcomes = run_workers(jobs)
    assert [len(out) for out in outcomes] == [75, 75]
    won = [name for w in range(2) for name, ok in zip(names[w], outcomes[w], strict=True) if ok]
    assert Counter(name.split("-")[1] for name in won) == dict.fromkeys(sites, 10)
    # What the store holds agrees with what the workers were told.
    for w in range(2):
        for name, ok in zip(names[w], outcomes[w], strict=True):
            record = await store.get_session(name, now=1.0)
            assert (record is not None) == ok
            assert record is None or record.phase is Phase.OFFERED
    for site in sites:
        assert not await store.offer(session(f"late-{site}", resource=site), now=1.0)


async def test_one_accept_wins_across_processes(store: BookingStore, store_url: str) -> None:
    await store.set_capacity(SITE, 20, 1 << 20)
    for i in range(20):
        assert await store.offer(session(f"s{i:02}"), now=1.0)
    jobs = [
        {"url": store_url, "mode": "accept", "now": 2.0, "uuids": [f"s{i:02}" for i in half]}
        for half in (range(0, 20, 2), range(1, 20, 2))
    ]
    outcomes = [outcome for out in run_workers(jobs) for outcome in out]
    assert outcomes.count("ACCEPTED") == 1
    assert set(outcomes) <= {"ACCEPTED", "conflict REJECTED"}
    phases = [s.phase for s in await store.sessions_of("set-1", now=2.0)]
    assert (phases.count(Phase.ACCEPTED), phases.count(Phase.REJECTED)) == (1, 19)


async def test_one_accept_wins_within_a_process(store_url: str) -> None:
    # Two store instances in one process: SQLite connections contend for the file's lock,
    # PostgreSQL pools for the rows, as well as the calls within each instance.
    stores = [open_store(store_url), open_store(store_url)]
    try:
        await stores[0].set_capacity(SITE, 30, 1 << 20)
        # Open every connection first, so that the accepts below really run at once.
        await asyncio.gather(*(s.capacity(SITE) for s in stores for _ in range(8)))
        for i in range(30):
            assert await stores[0].offer(session(f"s{i:02}"), now=1.0)
        accepts = (stores[i % 2].accept(f"s{i:02}", now=2.0) for i in range(30))
        outcomes = await asyncio.gather(*accepts, return_exceptions=True)
        assert sum(isinstance(o, SessionRecord) for o in outcomes) == 1
        assert all(isinstance(o, SessionRecord | BookingConflict) for o in outcomes)
        phases = [s.phase for s in await stores[1].sessions_of("set-1", now=2.0)]
        assert (phases.count(Phase.ACCEPTED), phases.count(Phase.REJECTED)) == (1, 29)
    finally:
        for opened in stores:
            await opened.close()
