"""One agent's clock runs ahead: expiry and duplicates behave as docs/operators/agents.md says.

A real site runs as seven ``broadgauge <role> run`` processes (see :mod:`.site`).  One of
them runs with ``libfaketime`` preloaded (the environment ``faketime -f +5m`` gives a
program, set on the agent's own process so that its pid stays the agent's), so its clock,
wall and monotonic, is five minutes ahead of everyone else's.  The bridge runs in the test
and takes an injected clock.  What the "Clocks" section documents, and these tests check:

* **beyond the tolerance** (a receiver 5 minutes ahead of a job's creator; jobs live 2
  minutes, or 5 for the bridge's): every job reaching the skewed agent arrives already
  expired by its clock.  It is refused at once, and the portal hears why: an error (not an
  expiry) that names the agent, the creator and the clock difference.  Nothing runs on the
  skewed agent (its audit log has no ``started``), nothing is left unfinished on any board,
  and a frame replayed on a link to it is still refused.  Once its clock is stepped back
  (restarted without faketime) the portal's second attempts complete, and each user is in
  the back ends exactly once, with uids handed out once;
* **within the tolerance, and for the jobs a skewed agent creates**: with the bridge 5
  minutes ahead and the instance 90 s ahead, every job completes, exactly once, and two
  identical ``add_user`` sent together are one execution (the second is a duplicate of the
  first).
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import time
from collections import Counter
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

import pytest
from websockets.asyncio.client import ClientConnection

from broadgauge.jobs.agent_type import AgentType
from broadgauge.jobs.commands import Put, Register, Update, decode_command, encode_command
from broadgauge.jobs.job import Job
from broadgauge.runtime.agent import JobExpired, JobFailed
from broadgauge.runtime.audit import verify
from broadgauge.wire import Channel, Invite
from tests.backends.faketime import faketime_env
from tests.wire.conftest import open_link

from .site import AGENTS, Site, everyone

pytestmark = pytest.mark.slow

#: How far ahead the skewed agent's clock runs, as faketime spells it and in seconds.
AHEAD, AHEAD_SECONDS = "+5m", 300
#: Within the tolerance: less than a job's 2-minute lifetime.
SLIGHTLY_AHEAD, SLIGHTLY_AHEAD_SECONDS = "+90s", 90
USERS = [f"c{i}.clock.portal" for i in range(5)]
PROJECT_GROUP = "portal.clock"
#: The local directory's default uid range starts here.
FIRST_ID = 20000
ATTEMPT_TIMEOUT = 60.0
CASE_BUDGET = 120.0
#: Who creates the jobs each victim receives (the first agent of their path).
CREATOR = {"portal": "bridge", "platform": "portal", "scheduler": "instance"}


async def clock_offset(site: Site, name: str) -> float:
    """How far ``name``'s clock is ahead of ours, from its answer to a health sweep."""
    assert site.bridge is not None
    tree = await site.bridge.health()
    return (everyone(tree)[name].current_time - datetime.now(UTC)).total_seconds()


async def attempt(site: Site, user: str) -> Job | JobFailed:
    """``add_user user`` through the bridge: the finished job, or the failure."""
    try:
        return await site.submit(f"add_user {user}", ATTEMPT_TIMEOUT)
    except JobFailed as failure:
        return failure


@pytest.mark.parametrize("victim", ["portal", "platform", "scheduler"])
async def test_an_agent_five_minutes_ahead_refuses_at_once_and_says_why(
    victim: str, tmp_path: Path
) -> None:
    """The first hop, a router or a leaf runs ahead; the portal learns why, nothing runs."""
    site = Site(tmp_path)
    site.configure()
    invite = site.root / "invites" / f"prober-to-{victim}.toml"
    site.cli(
        victim, "client", "-c", str(site.config(victim)),
        "--add", "prober", "--ip", "127.0.0.1", "--invitation", str(invite),
    )  # fmt: skip
    site.agent_env[victim] = faketime_env(AHEAD)
    timeline: list[str] = []
    began = time.monotonic()

    def note(what: str) -> None:
        timeline.append(f"{time.monotonic() - began:6.2f} s  {what}")

    try:
        async with asyncio.timeout(CASE_BUDGET):
            await site.start_all()
            offset = await clock_offset(site, victim)
            note(f"all agents linked; {victim}'s clock is {offset:.1f} s ahead")
            assert abs(offset - AHEAD_SECONDS) < 10, f"faketime did not take: {offset:.1f} s"

            outcomes = await asyncio.gather(*(attempt(site, user) for user in USERS))
            note(f"{len(USERS)} add_user answered")
            for user, outcome in zip(USERS, outcomes, strict=True):
                check_refused(user, outcome, victim)
            started = [e for e in site.audit(victim) if e.get("action") == "started"]
            assert started == [], f"{victim} ran jobs while its clock was ahead: {started}"
            refused = [e for e in site.audit(victim) if e.get("action") == "refused"]
            assert refused, f"{victim}'s audit log records no refusal"
            await check_replayed_frame_refused(site, victim, invite)
            note("a replayed frame was refused")

            status = await asyncio.to_thread(site.current(victim).terminate)
            assert status == 0, f"{victim} exited with {status}"
            del site.agent_env[victim]
            await site.start(victim)
            await site.wait_linked([victim])
            offset = await clock_offset(site, victim)
            note(f"{victim} restarted with its clock {offset:.1f} s off")
            for user in USERS:  # the portal sends each again
                await site.submit(f"add_user {user}", ATTEMPT_TIMEOUT)
            note("the second attempts completed")
            statuses = await site.stop()
        assert all(status == 0 for status in statuses.values()), f"exit statuses: {statuses}"
        assert site.unfinished() == "no unfinished jobs", site.unfinished()
        check_each_user_once(site)
    except BaseException:
        site.kill_leftovers()
        print("\n".join(timeline))
        print(site.logs())
        raise
    finally:
        site.kill_leftovers()
    print(f"[{victim} {AHEAD}] " + "; ".join(timeline) + f"\n{len(refused)} refusals audited")


def check_refused(user: str, outcome: Job | JobFailed, victim: str) -> None:
    """Refused with the documented error: who refused, whose clock differs, by how much."""
    assert isinstance(outcome, JobFailed), f"add_user {user} completed: {outcome}"
    assert not isinstance(outcome, JobExpired), f"add_user {user} expired instead: {outcome}"
    message = str(outcome)
    assert f"{victim} refused the job: by {victim}'s clock it expired " in message, message
    # Job times are whole seconds, and transit adds a little.
    ahead = re.search(rf"{victim}'s clock is about (\d+) s ahead of {CREATOR[victim]}'s", message)
    assert ahead is not None, message
    assert AHEAD_SECONDS <= int(ahead.group(1)) <= AHEAD_SECONDS + 5, message


async def check_replayed_frame_refused(site: Site, victim: str, invite: Path) -> None:
    """A frame sent twice on one link to the skewed agent is taken once.

    The test dials the agent as ``prober`` and puts a job to it (refused: expired by the
    agent's clock, so an Update comes straight back), sends that frame again, then puts a
    second job.  A link's frames are handled in order, so had the replay been taken, its
    answer would come before the second job's.
    """
    ws, channel, _ = await open_link(Invite.load(invite), "prober")
    try:
        await ws.send(channel.seal(encode_command(Register(AgentType.BRIDGE))))
        now = time.time()
        first, second = (
            Job.parse(f"prober.{victim} add_user p{i}.probe.portal", now=now).pending(now=now)
            for i in (1, 2)
        )
        frame = channel.seal(encode_command(Put(first)))
        await ws.send(frame)
        assert await next_update(ws, channel) == first.id
        await ws.send(frame)
        await ws.send(channel.seal(encode_command(Put(second))))
        assert await next_update(ws, channel) == second.id
        line = "rejected a frame from prober@default"
        await asyncio.to_thread(site.current(victim).wait_for, line, 10)
        assert "replayed" in next(
            text for text in site.current(victim).output.splitlines() if line in text
        )
    finally:
        await ws.close()


async def next_update(ws: ClientConnection, channel: Channel) -> object:
    """The job id of the next Update the agent sends (Register and Sync are skipped)."""
    async with asyncio.timeout(10):
        while True:
            payload = channel.open(str(await ws.recv()))
            if payload is None:
                continue
            command = decode_command(payload)
            if isinstance(command, Update):
                return command.job.id


def check_each_user_once(site: Site) -> None:
    """Every user once in each back end; uids handed out once; audit chains intact."""
    names = sorted(user.rsplit(".", 1)[0] for user in USERS)
    with closing(sqlite3.connect(site.directory)) as db:
        rows = db.execute("SELECT name, uid, enabled FROM users ORDER BY name").fetchall()
        counters = dict(db.execute("SELECT name, next FROM counters").fetchall())
    assert [(name, enabled) for name, _, enabled in rows] == [(n, 1) for n in names], rows
    assert sorted(uid for _, uid, _ in rows) == list(range(FIRST_ID, FIRST_ID + len(names)))
    assert counters["uid"] == FIRST_ID + len(names), counters
    with closing(sqlite3.connect(site.ledger)) as db:
        associations = sorted(db.execute("SELECT user, account FROM associations").fetchall())
    assert associations == [(name, PROJECT_GROUP) for name in names], associations
    for name in names:
        assert (site.sandbox / "home" / "clock" / name).is_dir(), f"no home for {name}"
    created = [op for op in site.operations("account") if op.startswith("created ")]
    twice = [op for op, n in Counter(created).items() if n > 1]
    assert not twice, f"the account agent recorded these creations more than once: {twice}"
    for agent in [*AGENTS, "bridge"]:
        result = verify(site.data_dir(agent) / "audit.jsonl")
        assert result.ok, f"{agent} audit log: line {result.first_bad_line}: {result.reason}"


async def test_jobs_complete_within_the_tolerance_and_from_an_agent_ahead(
    tmp_path: Path,
) -> None:
    """The bridge runs 5 minutes ahead (its jobs live 5 more minutes for everyone else) and
    the instance 90 s ahead (less than the 2 minutes a job lives): every job completes."""
    site = Site(tmp_path)
    site.configure()
    site.bridge_clock = lambda: time.time() + AHEAD_SECONDS
    site.agent_env["instance"] = faketime_env(SLIGHTLY_AHEAD)
    try:
        async with asyncio.timeout(CASE_BUDGET):
            await site.start_all()
            offset = await clock_offset(site, "instance")
            assert abs(offset - SLIGHTLY_AHEAD_SECONDS) < 10, f"faketime did not take: {offset}"
            duplicated = USERS[0]
            jobs = await asyncio.gather(
                *(site.submit(f"add_user {user}", ATTEMPT_TIMEOUT) for user in USERS),
                site.submit(f"add_user {duplicated}", ATTEMPT_TIMEOUT),
            )
            statuses = await site.stop()
        assert all(status == 0 for status in statuses.values()), f"exit statuses: {statuses}"
        for user, job in zip([*USERS, duplicated], jobs, strict=True):
            local = user.rsplit(".", 1)[0]
            assert job.result == f'"{user}:{local}:{PROJECT_GROUP}"', job.result
        # The bridge's own jobs carry its clock: they expire 5 minutes later than it seems.
        assert all(job.expires - time.time() > AHEAD_SECONDS for job in jobs), jobs
        ran = Counter(
            str(entry["instruction"])
            for entry in site.audit("instance")
            if entry.get("action") == "started"
            and str(entry.get("instruction", "")).startswith("add_user ")
        )
        assert ran == {f"add_user {user}": 1 for user in USERS}, ran
        assert site.unfinished() == "no unfinished jobs", site.unfinished()
        check_each_user_once(site)
    except BaseException:
        site.kill_leftovers()
        print(site.logs())
        raise
    finally:
        site.kill_leftovers()
    print(f"bridge {AHEAD}, instance {SLIGHTLY_AHEAD}: {len(jobs)} add_user completed")
