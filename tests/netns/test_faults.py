"""Network faults between agents on separate hosts: partition, isolation, loss, latency, kill -9.

Each network test starts a whole site (the bridge and seven agents, one process each, on
hosts of their own; see :mod:`tests.netns.harness`), breaks it on purpose while jobs cross
it, heals it, and checks that every job reached its final state and that the backends hold
each user exactly once.  The links run with short timers (a keepalive every second, the
watchdog closing a link silent for 5 s, redials backing off to at most 2 s), so a partition
"longer than the watchdog" lasts seconds.

The heal-to-first-completed-job times are printed (``-s``), not asserted: CI machines vary.
The latency proxy itself is also tested alone on loopback.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from broadgauge.jobs.job import Job
from tests.agents_crash.site import Bulk
from tests.cli.processes import free_port
from tests.netns.checks import check_completed, check_users_once
from tests.netns.harness import Network, link_neighbours, watchdog_time
from tests.netns.latency_proxy import LatencyProxy, LatencySettings

netns = pytest.mark.usefixtures("netns")
slow = pytest.mark.slow

#: One network test, from the first namespace made to the last one deleted.
CASE_BUDGET = 120.0
JOB_TIMEOUT = 30.0
#: Comfortably longer than the watchdog needs to notice a dead link (inactivity + a tick).
PARTITION = watchdog_time() + 3.0
#: A job sent while its path is cut waits out the partition, the redial and the Sync.
STRANDED_TIMEOUT = PARTITION + 40.0


async def add_users(
    network: Network, users: Sequence[str], *, concurrency: int = 8, timeout: float = JOB_TIMEOUT
) -> dict[str, Job]:
    """``add_user`` for each user, ``concurrency`` at a time; each must complete at once
    (no resubmission): :class:`JobFailed` or :class:`JobExpired` otherwise (in an
    ``ExceptionGroup``, the other jobs cancelled)."""
    slots = asyncio.Semaphore(concurrency)
    jobs: dict[str, Job] = {}

    async def one(user: str) -> None:
        async with slots:
            jobs[user] = await network.submit(f"add_user {user}", timeout)

    async with asyncio.TaskGroup() as group:
        for user in users:
            group.create_task(one(user))
    return jobs


async def wait_watchdog(network: Network, name: str, peer: str) -> str:
    """Wait until ``name``'s watchdog closes its link with ``peer``; the line it logged."""
    return await network.wait_logged(
        name, f"{peer}@default (", "silent for", timeout=watchdog_time() + 5
    )


# --- partitions and isolation --------------------------------------------------------------


@slow
@netns
async def test_partition_of_one_link_longer_than_the_watchdog_then_heal(tmp_path: Path) -> None:
    """Cut provider-platform, both ways, until both watchdogs have closed the link, with a
    job on its way across.  After the heal the link comes back by itself, a new job crosses
    it, and the stranded one completes too: nothing lost, nothing done twice."""
    lower, upper = "platform", "provider"  # the platform dials the provider
    users = ["before.net.portal", "stranded.net.portal", "after.net.portal"]
    async with asyncio.timeout(CASE_BUDGET), Network.up(tmp_path) as network:
        jobs = await add_users(network, users[:1])
        before = (network.registrations(lower, upper), network.registrations(upper, lower))
        network.partition(lower, upper)
        cut_at = time.monotonic()
        stranded = asyncio.create_task(network.submit(f"add_user {users[1]}", STRANDED_TIMEOUT))
        try:
            for me, peer in ((lower, upper), (upper, lower)):
                print(await wait_watchdog(network, me, peer))
            await asyncio.sleep(PARTITION - (time.monotonic() - cut_at))
            assert not stranded.done(), f"a job crossed a cut link: {stranded}"
            dropped = network.faults.total("cut_dropped")
            assert dropped > 0, "the partition dropped nothing"

            network.heal(lower, upper)
            healed = time.monotonic()
            relinked = asyncio.create_task(network.wait_relinked(lower, upper, before))
            jobs.update(await add_users(network, users[2:]))
            heal_to_job = time.monotonic() - healed
            relink = await relinked
            jobs[users[1]] = await stranded
        finally:
            stranded.cancel()
        print(
            f"partition {lower}-{upper} for {PARTITION:g} s ({dropped} packets dropped): "
            f"heal -> link up {relink:.2f} s, heal -> first job complete {heal_to_job:.2f} s"
        )
        check_completed(jobs, users)
        statuses = await network.stop()
    assert all(status == 0 for status in statuses.values()), f"exit statuses: {statuses}"
    check_users_once(network, users)


@slow
@netns
async def test_isolate_an_agent_longer_than_the_watchdog_then_heal(tmp_path: Path) -> None:
    """Cut the instance off from everyone (its platform and its three leaf agents) with a
    job on its way to it; after the heal every one of its links comes back by itself and
    both that job and a new one complete."""
    victim = "instance"
    users = ["before.iso.portal", "stranded.iso.portal", "after.iso.portal"]
    async with asyncio.timeout(CASE_BUDGET), Network.up(tmp_path) as network:
        jobs = await add_users(network, users[:1])
        peers = link_neighbours(victim)
        before = {
            peer: (network.registrations(victim, peer), network.registrations(peer, victim))
            for peer in peers
        }
        network.isolate(victim)
        cut_at = time.monotonic()
        stranded = asyncio.create_task(network.submit(f"add_user {users[1]}", STRANDED_TIMEOUT))
        try:
            for peer in peers:
                print(await wait_watchdog(network, peer, victim))
            await asyncio.sleep(PARTITION - (time.monotonic() - cut_at))
            assert not stranded.done(), f"a job reached an isolated agent: {stranded}"
            assert sorted(network.faults.cut_off(victim)) == sorted(
                host for host in network.hosts.names if host != victim
            )

            network.heal_all()
            healed = time.monotonic()
            relinked = asyncio.gather(
                *(network.wait_relinked(victim, peer, before[peer]) for peer in peers)
            )
            jobs.update(await add_users(network, users[2:]))
            heal_to_job = time.monotonic() - healed
            relink = max(await relinked)
            jobs[users[1]] = await stranded
        finally:
            stranded.cancel()
        print(
            f"{victim} isolated for {PARTITION:g} s: heal -> all {len(peers)} links up "
            f"{relink:.2f} s, heal -> first job complete {heal_to_job:.2f} s"
        )
        check_completed(jobs, users)
        statuses = await network.stop()
    assert all(status == 0 for status in statuses.values()), f"exit statuses: {statuses}"
    check_users_once(network, users)


# --- loss and latency ----------------------------------------------------------------------


@slow
@netns
@pytest.mark.parametrize("percent", [1, 10])
async def test_packet_loss_on_every_link(percent: int, tmp_path: Path) -> None:
    """With ``percent`` % of the packets on every link dropped at random, every job of a
    bulk onboarding still completes, the first time it is sent."""
    users = [f"u{i:02d}.loss.portal" for i in range(24)]
    async with asyncio.timeout(CASE_BUDGET), Network.up(tmp_path) as network:
        arrived_before = network.faults.total("arrived")
        network.set_loss(percent)
        began = time.monotonic()
        jobs = await add_users(network, users)
        took = time.monotonic() - began
        network.clear_loss()
        dropped = network.faults.total("loss_dropped")
        arrived = network.faults.total("arrived") - arrived_before
        print(
            f"{percent} % loss: {len(users)} add_user in {took:.2f} s; {dropped} of "
            f"{arrived} packets dropped ({100 * dropped / max(arrived, 1):.1f} %)"
        )
        assert dropped > 0, f"no packet was dropped of {arrived}"
        check_completed(jobs, users)
        statuses = await network.stop()
    assert all(status == 0 for status in statuses.values()), f"exit statuses: {statuses}"
    check_users_once(network, users)


def link_order(network: Network, sender: str, receiver: str) -> tuple[list[str], list[str]]:
    """The ``add_user`` jobs ``sender`` put on its link to ``receiver``, in the order it
    sent them, and in the order ``receiver`` received them (from their audit logs)."""

    def jobs(agent: str, action: str, peer: str) -> list[str]:
        return [
            str(entry["job"])
            for entry in network.audit(agent)
            if entry.get("action") == action
            and entry.get("peer") == f"{peer}@default"
            and str(entry.get("instruction")).startswith("add_user ")
        ]

    return jobs(sender, "forwarded", receiver), jobs(receiver, "received", sender)


@slow
@netns
async def test_latency_jitter_and_stalls_on_a_link(tmp_path: Path) -> None:
    """The instance's link to its platform goes through the latency proxy: 50 ms plus up to
    100 ms of jitter per chunk, and a 0.3 s stall every second.  Every job completes, and
    the instance receives the jobs in exactly the order the platform sent them."""
    link = ("instance", "platform")
    users = [f"u{i:02d}.slow.portal" for i in range(24)]
    async with asyncio.timeout(CASE_BUDGET), Network.up(tmp_path, latency_links=[link]) as network:
        await network.set_latency(*link, delay=0.05, jitter=0.1, stall=(1.0, 0.3))
        began = time.monotonic()
        jobs = await add_users(network, users, concurrency=12)
        took = time.monotonic() - began
        stats = await network.latency_stats(*link)
        await network.clear_latency(*link)
        print(f"latency on {'->'.join(link)}: {len(users)} add_user in {took:.2f} s; {stats}")
        check_completed(jobs, users)
        sent, received = link_order(network, "platform", "instance")
        assert len(sent) == len(users), f"the platform sent {len(sent)} add_user jobs"
        assert received == sent, "the instance received the jobs in another order"
        # The proxy really held traffic, several chunks at once (so jitter could reorder).
        assert stats["connections"] >= 1 and stats["max_held"] > 1, stats
        assert stats["max_hold"] >= 0.05, stats
        statuses = await network.stop()
    assert all(status == 0 for status in statuses.values()), f"exit statuses: {statuses}"
    check_users_once(network, users)


# --- kill -9 -------------------------------------------------------------------------------


@slow
@netns
async def test_kill_9_mid_traffic_then_restart(tmp_path: Path) -> None:
    """SIGKILL the instance (the agent that runs ``add_user``, so in the middle of its
    backend calls) during a bulk onboarding and start it again from its config and data
    directory: every user ends up onboarded exactly once.  Jobs the crash cut off are
    resubmitted as portal software does (see ``Bulk``); how many, and how many jobs the
    instance resumed, is printed."""
    victim = "instance"
    users = [f"u{i:02d}.crash.portal" for i in range(30)]
    began = time.monotonic()
    timeline: list[str] = []

    def note(what: str) -> None:
        timeline.append(f"{time.monotonic() - began:6.2f} s  {what}")

    async with asyncio.timeout(CASE_BUDGET), Network.up(tmp_path) as network:
        note("network up")
        bulk = Bulk(network, users, concurrency=10, attempt_timeout=20.0)
        onboarding = asyncio.create_task(bulk.run())
        try:
            await asyncio.wait_for(asyncio.shield(bulk.completed(8)), JOB_TIMEOUT)
            note(f"{len(bulk.finished)} users completed; SIGKILL {victim}")
            network.kill(victim)
            await asyncio.sleep(0.5)
            await network.restart(victim)
            note(f"{victim} restarted and relinked ({len(bulk.finished)} users completed)")
            await asyncio.wait_for(asyncio.shield(onboarding), 60)
            note("all users completed")
        finally:
            onboarding.cancel()
            print("\n".join(timeline))
        print(f"{victim} resumed {network.resumed(victim)} job(s); {bulk.summary()}")
        check_completed(bulk.finished, users)
        statuses = await network.stop()
    assert all(status == 0 for status in statuses.values()), f"exit statuses: {statuses}"
    check_users_once(network, users)


@slow
@netns
async def test_kill_9_the_bridge_and_restart_it_cut_off_from_its_portal(tmp_path: Path) -> None:
    """SIGKILL the HTTP bridge in the middle of a bulk onboarding while the portal software
    polls it, and start it again while its link to the portal is still cut.  Before the
    portal is back, the bridge already answers ``/status`` for every job it had taken, from
    its durable board; after the heal the onboarding finishes, every user exactly once."""
    users = [f"u{i:02d}.bridge.portal" for i in range(30)]
    async with asyncio.timeout(CASE_BUDGET), Network.up(tmp_path) as network:
        bulk = Bulk(network, users, concurrency=10, attempt_timeout=30.0)
        onboarding = asyncio.create_task(bulk.run())
        try:
            await asyncio.wait_for(asyncio.shield(bulk.completed(8)), JOB_TIMEOUT)
            network.kill("bridge")
            taken = dict(bulk.finished)
            network.partition("bridge", "portal")
            await network.start("bridge")
            # Answered from the store: the portal has not registered with this process.
            assert network.registrations("bridge", "portal") == 0
            for user, job in taken.items():
                read = await network.status(job.id)
                assert read.is_finished and not read.is_error, f"{user}: {read}"
                assert read.result == job.result, f"{user}: {read.result} != {job.result}"
            network.heal("bridge", "portal")
            await network.wait_linked(["bridge"])
            await asyncio.wait_for(asyncio.shield(onboarding), 60)
        finally:
            onboarding.cancel()
        print(f"{len(taken)} jobs read back before the portal was; {bulk.summary()}")
        check_completed(bulk.finished, users)
        statuses = await network.stop()
    assert all(status == 0 for status in statuses.values()), f"exit statuses: {statuses}"
    check_users_once(network, users)


# --- the latency proxy alone, on loopback --------------------------------------------------


async def echo_server() -> asyncio.Server:
    """A TCP server on loopback that sends back whatever it reads."""

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(4096):
            writer.write(data)
            await writer.drain()
        writer.close()

    return await asyncio.start_server(echo, "127.0.0.1", free_port())


async def test_latency_proxy_delays_with_jitter_and_stalls_without_reordering() -> None:
    """Two hundred numbered messages, written one by one, come back through the proxy
    (delay and jitter both ways, stalls) byte for byte in order; the proxy held several
    chunks at once, so a proxy that let jitter reorder chunks would have failed this."""
    server = await echo_server()
    target = server.sockets[0].getsockname()[:2]
    settings = LatencySettings(delay=0.02, jitter=0.05, stall_every=0.2, stall_for=0.1)
    proxy = LatencyProxy(("127.0.0.1", 0), target, settings, seed=7)
    await proxy.start()
    try:
        reader, writer = await asyncio.open_connection(*proxy.address)
        messages = [f"message {i:03d};".encode() for i in range(200)]
        for message in messages:
            writer.write(message)
            await writer.drain()
            await asyncio.sleep(0.002)  # separate chunks, each with its own jitter
        expected = b"".join(messages)
        received = await asyncio.wait_for(reader.readexactly(len(expected)), 30)
        writer.close()
        await writer.wait_closed()
    finally:
        await proxy.stop()
        server.close()
        await server.wait_closed()
    assert received == expected
    stats = proxy.stats
    assert stats.connections == 1 and stats.chunks > 2 and stats.max_held > 1, stats
    # The sends alone take over 0.4 s, so the stall schedule (every 0.2 s) has fired.
    assert stats.stalls >= 1, stats
    # Every chunk was held at least the fixed delay (by the proxy's own clock).
    assert stats.max_hold >= settings.delay, stats


async def test_latency_proxy_closes_the_dialler_when_the_target_is_down() -> None:
    """With nothing listening behind it, the proxy closes each connection it accepts, as
    a dead link would, and counts it."""
    proxy = LatencyProxy(("127.0.0.1", 0), ("127.0.0.1", free_port()))
    await proxy.start()
    try:
        reader, writer = await asyncio.open_connection(*proxy.address)
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()
    finally:
        await proxy.stop()
    assert proxy.stats.refused_upstream == 1 and proxy.stats.connections == 0


def test_latency_settings_refuse_nonsense() -> None:
    """Negative times, and a stall without its length, are refused with the reason."""
    with pytest.raises(ValueError, match="delay must be a number of seconds >= 0"):
        LatencySettings(delay=-0.1)
    with pytest.raises(ValueError, match="stall_every and stall_for"):
        LatencySettings(stall_every=1.0)
