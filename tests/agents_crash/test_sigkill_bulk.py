"""SIGKILL any agent in the middle of a 50-user bulk onboarding: every user exactly once.

A real site runs as seven ``broadgauge <role> run`` processes (see :mod:`.site`), configured
with the CLI.  The test's bridge submits ``add_user u00.bulk.portal`` … ``u49.bulk.portal``
through the portal, ten at a time.  Once at least ten users have completed, one agent's
process is SIGKILLed (no clean shutdown, no flush) - at once, or after being frozen with
SIGSTOP so that work piles up at it - restarted a moment later with the same config and
data directory, and the onboarding is left to finish.

What must hold afterwards, read from the backends' own files:

* the account directory has one row per user (fifty rows, fifty distinct uids) and its uid
  counter advanced by exactly fifty, its gid counter by exactly the project group and the
  ``openportal`` marker group: no allocation was made twice, whatever ran twice;
* each user's home directory exists in the sandbox, owned (when the test runs as root, so
  the sandbox sets owners) by the user's uid and the project's gid, resolved from that
  directory;
* the scheduler ledger has exactly one association per user, with the project's account;
* every one of the fifty jobs completed with the user's mapping;
* no agent's audit log records a creation twice, and every log's hash chain is intact.

Jobs that failed because of the crash are resubmitted, as portal software does (see
:class:`.site.Bulk`); the number of resubmissions is printed, not asserted.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections import Counter
from contextlib import closing
from pathlib import Path

import pytest

from broadgauge.runtime.audit import verify

from .site import AGENTS, Bulk, Site

pytestmark = pytest.mark.slow

USERS = [f"u{i:02d}.bulk.portal" for i in range(50)]
PROJECT_GROUP = "portal.bulk"
MANAGED_GROUP = "openportal"
#: The local directory's default uid and gid ranges start here.
FIRST_ID = 20000
CONCURRENCY = 10
KILL_AFTER = 10
#: How long the victim stays dead before it is started again.
DOWNTIME = 0.5
#: How long a frozen victim (SIGSTOP) lets work pile up before it is killed.
FROZEN = 0.3
#: One attempt's wait for its answer; a job cut off by the crash is resubmitted after it.
ATTEMPT_TIMEOUT = 15.0
#: How long the rest of the onboarding may take once the victim is back and linked.
AFTER_RESTART = 20.0
#: The whole case, from the first process started to the last check.
CASE_BUDGET = 40.0


def local_name(user: str) -> str:
    """``u07.bulk.portal`` → ``u07.bulk`` (username.project)."""
    return user.rsplit(".", 1)[0]


@pytest.mark.parametrize("how", ["kill", "freeze-then-kill"])
@pytest.mark.parametrize(
    "victim", ["instance", "account", "filesystem", "scheduler", "portal", "provider", "platform"]
)
async def test_sigkill_any_agent_midway_through_bulk_add_user(
    victim: str, how: str, tmp_path: Path
) -> None:
    """``kill``: SIGKILL at once; its neighbours see the link drop and queue for it.

    ``freeze-then-kill``: SIGSTOP first and SIGKILL after :data:`FROZEN`, so the victim
    surely dies holding work: jobs its neighbours sent it meanwhile sit unread in its socket
    (the links stay up, so nothing is queued for it), and whatever it was running stays cut
    off.  Recovery must then come from the boards and the Sync on reconnection.
    """
    assert victim in AGENTS
    site = Site(tmp_path)
    site.configure()
    bulk = Bulk(site, USERS, concurrency=CONCURRENCY, attempt_timeout=ATTEMPT_TIMEOUT)
    timeline: list[str] = []
    began = time.monotonic()

    def note(what: str) -> None:
        timeline.append(f"{time.monotonic() - began:6.2f} s  {what}")

    try:
        async with asyncio.timeout(CASE_BUDGET):
            await site.start_all()
            note("all agents linked")
            onboarding = asyncio.create_task(bulk.run())
            try:
                try:
                    await asyncio.wait_for(asyncio.shield(bulk.completed(KILL_AFTER)), 20)
                except TimeoutError:
                    raise AssertionError(
                        f"only {len(bulk.finished)} users completed in 20 s, before any kill\n"
                        f"{site.unfinished()}"
                    ) from None
                if how == "freeze-then-kill":
                    note(f"{len(bulk.finished)} users completed; SIGSTOP {victim}")
                    site.freeze(victim)
                    await asyncio.sleep(FROZEN)
                note(f"{len(bulk.finished)} users completed; SIGKILL {victim}")
                site.kill(victim)
                await asyncio.sleep(DOWNTIME)
                await site.start(victim)
                note(f"{victim} restarted ({len(bulk.finished)} users completed)")
                await site.wait_linked([victim])
                note(f"{victim} relinked with {len(bulk.finished)} users completed")
                try:
                    await asyncio.wait_for(asyncio.shield(onboarding), AFTER_RESTART)
                except TimeoutError:
                    left = sorted(set(USERS) - set(bulk.finished))
                    raise AssertionError(
                        f"{len(left)} user(s) not onboarded {AFTER_RESTART:g} s after {victim} "
                        f"was back: {left}\n{site.unfinished()}"
                    ) from None
                note("all users completed")
            finally:
                onboarding.cancel()
            statuses = await site.stop()
        note("agents stopped")
        assert all(status == 0 for status in statuses.values()), f"exit statuses: {statuses}"
        check_exactly_once(site, bulk)
    except BaseException:
        site.kill_leftovers()
        print("\n".join(timeline))
        print(bulk.summary())
        print(site.logs())
        raise
    finally:
        site.kill_leftovers()
    resumed = site.resumed(victim)
    print(f"[{victim}, {how}] " + "; ".join(timeline) + f"\n{victim} resumed {resumed} job(s)")
    print(bulk.summary())


def check_exactly_once(site: Site, bulk: Bulk) -> None:
    """Every user once in each backend; no id allocated twice; every job complete."""
    names = sorted(local_name(user) for user in USERS)

    # Every job completed, with the user's mapping.
    for user in USERS:
        job = bulk.finished.get(user)
        assert job is not None and job.is_finished and not job.is_error, (
            f"add_user {user} did not complete: {job}"
        )
        assert job.result == f'"{user}:{local_name(user)}:{PROJECT_GROUP}"', job.result

    # The account directory: one row per user, distinct uids, counters advanced exactly.
    with closing(sqlite3.connect(site.directory)) as db:
        rows = db.execute(
            "SELECT name, uid, gid, identity, home, enabled, locked FROM users ORDER BY name"
        ).fetchall()
        counters = dict(db.execute("SELECT name, next FROM counters").fetchall())
        groups = dict(db.execute("SELECT name, gid FROM groups").fetchall())
        members = Counter(
            group for (group,) in db.execute("SELECT group_name FROM members").fetchall()
        )
    assert [row[0] for row in rows] == names, f"directory users: {[row[0] for row in rows]}"
    uids = [row[1] for row in rows]
    assert sorted(uids) == list(range(FIRST_ID, FIRST_ID + len(USERS))), f"uids: {sorted(uids)}"
    assert counters == {"uid": FIRST_ID + len(USERS), "gid": FIRST_ID + 2}, (
        f"id counters {counters}: expected uid +{len(USERS)} and gid +2 "
        f"({PROJECT_GROUP} and {MANAGED_GROUP})"
    )
    assert set(groups) == {PROJECT_GROUP, MANAGED_GROUP}, f"groups: {groups}"
    assert members == {PROJECT_GROUP: len(USERS), MANAGED_GROUP: len(USERS)}, members
    project_gid = groups[PROJECT_GROUP]
    for name, uid, gid, identity, home, enabled, locked in rows:
        assert (gid, enabled, locked) == (project_gid, 1, 0), (name, gid, enabled, locked)
        assert identity == f"{name}.portal", (name, identity)
        # The home directory the filesystem made, recorded through update_homedir.
        path = Path(home)
        assert path.is_relative_to(site.sandbox / "home"), f"{name}: home {home}"
        assert path.is_dir(), f"{name}: no home directory at {home}"
        if os.geteuid() == 0:  # only root can give it away (the sandbox's chown=auto)
            info = path.stat()
            assert (info.st_uid, info.st_gid) == (uid, project_gid), f"{name}: {home} owner"

    # The scheduler ledger: exactly one association per user, all with the project account.
    with closing(sqlite3.connect(site.ledger)) as db:
        associations = db.execute("SELECT user, account FROM associations").fetchall()
        defaults = dict(db.execute("SELECT name, default_account FROM users").fetchall())
        accounts = [row[0] for row in db.execute("SELECT name FROM accounts").fetchall()]
    assert sorted(associations) == [(name, PROJECT_GROUP) for name in names], associations
    assert defaults == dict.fromkeys(names, PROJECT_GROUP), defaults
    assert accounts == [PROJECT_GROUP], accounts

    # Whatever ran twice after the crash, nothing was *created* twice.  (A creation may be
    # missing from a log if the agent died between doing it and recording it.)
    # Keyed by what was created: "created user u07.bulk (uid 20007) for …" → u07.bulk.
    created = {
        "account": [
            op.split()[2] for op in site.operations("account") if op.startswith("created user ")
        ],
        "filesystem": [
            op for op in site.operations("filesystem") if op.startswith(f"created {site.sandbox}")
        ],
        "scheduler": [op for op in site.operations("scheduler") if "added user" in op],
    }
    for agent, operations in created.items():
        twice = [op for op, n in Counter(operations).items() if n > 1]
        assert not twice, f"{agent} recorded these creations more than once: {twice}"
    for agent in [*AGENTS, "bridge"]:
        result = verify(site.data_dir(agent) / "audit.jsonl")
        assert result.ok, f"{agent} audit log: line {result.first_bad_line}: {result.reason}"
