"""User and project lifecycles, end to end, checked in the directory, sandbox and ledger."""

from __future__ import annotations

import asyncio
from typing import Any

from broadgauge.grammar import ProjectIdentifier
from broadgauge.runtime.envelope import JobRefused

from .helpers import (
    HOME_MODE,
    PROJECT_MODE,
    Site,
    assert_dir,
    identity,
    local_name,
    mapping,
    project_mapping,
)

PROJECT = "physics.portal"
ALICE = "alice.physics.portal"
BOB = "bob.physics.portal"
GROUP = "portal.physics"
MANAGED = "openportal"
BLOCKED = "openportal.blocked"


def snapshot(site: Site) -> dict[str, Any]:
    """Everything the backends hold, for before/after comparisons."""
    return {
        "users": site.directory_rows("SELECT * FROM users ORDER BY name"),
        "groups": site.directory_rows("SELECT * FROM groups ORDER BY name"),
        "members": site.directory_rows("SELECT * FROM members ORDER BY group_name, user_name"),
        "counters": site.directory_rows("SELECT * FROM counters ORDER BY name"),
        "accounts": site.ledger_rows("SELECT name, organisation, limit_seconds FROM accounts"),
        "ledger_users": site.ledger_rows("SELECT * FROM users ORDER BY name"),
        "associations": site.ledger_rows("SELECT user, account FROM associations"),
        "quotas": site.quota_rows(),
        "dirs": site.sandbox_dirs(),
    }


# --- projects ------------------------------------------------------------------------------


async def test_add_project_makes_the_group_the_directories_and_the_scheduler_account(
    site: Site,
) -> None:
    job = await site.run(f"add_project {PROJECT}")

    assert (job.result_type, job.result_value()) == ("ProjectMapping", project_mapping(PROJECT))
    rows = site.directory_rows("SELECT name, identifier FROM groups WHERE name = ?", GROUP)
    assert rows == [(GROUP, PROJECT)]
    assert await site.accounts.is_existing_project(ProjectIdentifier.parse(PROJECT))
    gid = site.gid(GROUP)
    assert_dir(site.project_dir(PROJECT), 0, gid, PROJECT_MODE)
    assert_dir(site.user_volume_project_dir(PROJECT), 0, gid, HOME_MODE)
    assert await site.ledger.accounts() == {GROUP: "openportal"}
    assert await site.ledger.associations(GROUP) == {}
    # No user was made for a project.
    assert site.directory_rows("SELECT name FROM users") == []

    # Again: same answer, nothing changes.
    before = snapshot(site)
    assert (await site.run(f"add_project {PROJECT}")).result_value() == project_mapping(PROJECT)
    assert snapshot(site) == before


# --- adding users --------------------------------------------------------------------------


async def test_add_user_creates_account_home_and_association(site: Site) -> None:
    job = await site.run(f"add_user {ALICE}")

    assert (job.result_type, job.result_value()) == ("UserMapping", mapping(ALICE))
    # The directory: a managed member of its project group, home recorded by update_homedir.
    row = site.account("alice.physics")
    gid = site.gid(GROUP)
    home = site.home(ALICE)
    assert row == {
        "name": "alice.physics",
        "uid": 20000,
        "gid": gid,
        "identity": ALICE,
        "home": str(home),
        "shell": "/bin/bash",
        "enabled": 1,
        "locked": 0,
    }
    assert site.groups_of("alice.physics") == {MANAGED, GROUP}
    assert await site.accounts.is_existing_user(identity(ALICE))
    assert await site.accounts.get_users(ProjectIdentifier.parse(PROJECT)) == [mapping(ALICE)]
    # The sandbox: the project came first, then the home owned by the user.
    assert_dir(home, row["uid"], gid, HOME_MODE)
    assert_dir(site.user_volume_project_dir(PROJECT), 0, gid, HOME_MODE)
    assert_dir(site.project_dir(PROJECT), 0, gid, PROJECT_MODE)
    # The scheduler: an account for the project, the user associated with it by default.
    assert await site.ledger.accounts() == {GROUP: "openportal"}
    assert await site.ledger.associations(GROUP) == {"alice.physics": True}
    assert site.ledger_rows("SELECT name, default_account FROM users") == [("alice.physics", GROUP)]
    # The home directory reached the directory through the account agent's update_homedir.
    [homedir] = [
        e
        for e in site.audit("account")
        if e["action"] == "operation" and e["instruction"].startswith("update_homedir")
    ]
    assert homedir["operation"] == f"set the home directory of alice.physics to {home}"


async def test_add_user_twice_leaves_identical_state(site: Site) -> None:
    first = await site.run(f"add_user {ALICE}")
    before = snapshot(site)
    operations = {name: len(site.operations(name)) for name in ("account", "filesystem")}
    ledger_ops = len(site.operations("scheduler"))

    second = await site.run(f"add_user {ALICE}")

    assert second.result == first.result
    assert second.result_type == first.result_type == "UserMapping"
    assert snapshot(site) == before
    # Same uid, one association, and no backend changed anything the second time.
    assert site.account("alice.physics")["uid"] == 20000
    assert site.ledger_rows("SELECT user, account FROM associations") == [("alice.physics", GROUP)]
    assert {name: len(site.operations(name)) for name in operations} == operations
    assert len(site.operations("scheduler")) == ledger_ops


async def test_a_failed_add_user_is_undone_and_a_retry_succeeds(site: Site) -> None:
    await site.run(f"add_project {PROJECT}")
    obstacle = site.home(ALICE)
    obstacle.write_text("a file where the home directory should go")

    message = await site.refused(f"add_user {ALICE}")

    assert message.startswith(f"RuntimeError{{add_user {ALICE} failed: ")
    assert "is a symlink or not a directory" in message
    # The account made before the filesystem failed was removed again (uid kept).
    row = site.account("alice.physics")
    assert (row["uid"], row["enabled"]) == (20000, 0)
    assert site.groups_of("alice.physics") == {MANAGED}
    assert not await site.accounts.is_existing_user(identity(ALICE))
    assert await site.ledger.associations(GROUP) == {}
    assert obstacle.is_file()

    obstacle.unlink()
    assert (await site.run(f"add_user {ALICE}")).result_value() == mapping(ALICE)
    row = site.account("alice.physics")
    assert (row["uid"], row["enabled"]) == (20000, 1)
    assert_dir(site.home(ALICE), 20000, site.gid(GROUP), HOME_MODE)
    assert await site.ledger.associations(GROUP) == {"alice.physics": True}


async def test_home_dir_asked_beside_making_the_directories_failing_undoes_them(
    site: Site,
) -> None:
    await site.run(f"add_project {PROJECT}")
    filesystem = site.agent("filesystem")
    real = filesystem.handlers["get_local_home_dir"]
    calls = 0

    async def failing_once(envelope: Any) -> object:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise JobRefused("no home volume answer")  # at once, while directories are made
        return await real(envelope)

    filesystem.handlers["get_local_home_dir"] = failing_once
    message = await site.refused(f"add_user {ALICE}")

    assert "no home volume answer" in message
    # The directories made meanwhile were taken away again, and the account disabled.
    assert not site.home(ALICE).exists()
    assert site.account("alice.physics")["enabled"] == 0
    assert await site.ledger.associations(GROUP) == {}
    assert (await site.run(f"add_user {ALICE}")).result_value() == mapping(ALICE)
    assert site.home(ALICE).is_dir()


# --- removing users ------------------------------------------------------------------------


async def test_remove_user_recycles_the_home_and_keeps_the_uid_then_re_add_restores(
    site: Site,
) -> None:
    await site.run(f"add_user {ALICE}")
    await site.run(f"add_user {BOB}")
    home = site.home(ALICE)
    (home / "notes.txt").write_text("results of the first run\n")
    gid = site.gid(GROUP)
    next_uid = site.next_uid()

    job = await site.run(f"remove_user {ALICE}")

    assert (job.result_type, job.result_value()) == ("UserMapping", mapping(ALICE))
    # Scheduler: association and ledger user gone; bob untouched.
    assert await site.ledger.associations(GROUP) == {"bob.physics": True}
    assert site.ledger_rows("SELECT name FROM users") == [("bob.physics",)]
    # Sandbox: home moved to the recycle bin, still owned by alice's uid.
    assert not home.exists()
    recycled = site.recycled_home(ALICE)
    assert_dir(recycled, 20000, gid, HOME_MODE)
    assert (recycled / "notes.txt").read_text() == "results of the first run\n"
    assert_dir(site.home(BOB), 20001, gid, HOME_MODE)
    # Directory: disabled, out of the project group, uid kept.
    row = site.account("alice.physics")
    assert (row["uid"], row["enabled"], row["locked"]) == (20000, 0, 0)
    assert site.groups_of("alice.physics") == {MANAGED}
    assert not await site.accounts.is_existing_user(identity(ALICE))
    assert (await site.value(f"get_users {PROJECT}")) == [mapping(BOB)]

    # Re-adding gives the same uid (no new number) and the same home, with its files.
    assert (await site.run(f"add_user {ALICE}")).result_value() == mapping(ALICE)
    row = site.account("alice.physics")
    assert (row["uid"], row["enabled"], row["home"]) == (20000, 1, str(home))
    assert site.next_uid() == next_uid
    assert site.groups_of("alice.physics") == {MANAGED, GROUP}
    assert_dir(home, 20000, gid, HOME_MODE)
    assert (home / "notes.txt").read_text() == "results of the first run\n"
    assert not recycled.exists()
    assert await site.ledger.associations(GROUP) == {"alice.physics": True, "bob.physics": True}


async def test_remove_user_twice_and_of_an_unknown_user_change_nothing(site: Site) -> None:
    await site.run(f"add_user {ALICE}")
    await site.run(f"remove_user {ALICE}")
    before = snapshot(site)

    assert (await site.value(f"remove_user {ALICE}")) == mapping(ALICE)
    assert (await site.value("remove_user nobody.physics.portal")) == mapping(
        "nobody.physics.portal"
    )

    assert snapshot(site) == before
    assert site.user_row("nobody.physics") is None


# --- removing projects ---------------------------------------------------------------------


async def test_remove_project_removes_every_member_then_the_project(site: Site) -> None:
    await site.run(f"add_user {ALICE}")
    await site.run(f"add_user {BOB}")
    gid = site.gid(GROUP)

    job = await site.run(f"remove_project {PROJECT}")

    assert (job.result_type, job.result_value()) == ("ProjectMapping", project_mapping(PROJECT))
    for user, uid in ((ALICE, 20000), (BOB, 20001)):
        row = site.account(local_name(user))
        assert (row["uid"], row["enabled"]) == (uid, 0)
        assert site.groups_of(local_name(user)) == {MANAGED}
    # The group and its gid stay; the scheduler account stays (with its usage), empty.
    assert site.gid(GROUP) == gid
    assert await site.ledger.accounts() == {GROUP: "openportal"}
    assert await site.ledger.associations(GROUP) == {}
    # Every directory of the project went to a recycle bin.
    assert not site.project_dir(PROJECT).exists()
    assert (site.sandbox / "projects" / ".recycle" / "physics").is_dir()
    assert not site.user_volume_project_dir(PROJECT).exists()
    assert (site.sandbox / "home" / ".recycle" / "physics" / ".recycle" / "alice.physics").is_dir()
    assert (await site.value(f"get_users {PROJECT}")) == []
    # The members were removed as part of the project: one notification, for the project.
    assert await site.notified(3) == [
        f"user_added {ALICE}",
        f"user_added {BOB}",
        f"project_removed {PROJECT}",
    ]


async def test_an_empty_project_answers_with_empty_results(site: Site) -> None:
    await site.run(f"add_project {PROJECT}")

    users = await site.run(f"get_users {PROJECT}")
    assert (users.result_type, users.result_value()) == ("Vec<UserMapping>", [])
    assert (await site.value(f"is_blocked_project {PROJECT}")) is False
    blocked = await site.run(f"block_project {PROJECT}")
    assert (blocked.result_type, blocked.result_value()) == ("Vec<UserMapping>", [])


# --- blocking --------------------------------------------------------------------------------


async def test_block_and_unblock_user(site: Site) -> None:
    await site.run(f"add_user {ALICE}")

    blocked = await site.run(f"block_user {ALICE}")

    assert (blocked.result_type, blocked.result_value()) == ("UserMapping", mapping(ALICE))
    row = site.account("alice.physics")
    assert (row["locked"], row["enabled"]) == (1, 1)
    assert site.groups_of("alice.physics") == {MANAGED, GROUP, BLOCKED}
    assert await site.accounts.is_blocked_user(identity(ALICE))
    answer = await site.run(f"is_blocked_user {ALICE}")
    assert (answer.result_type, answer.result_value()) == ("bool", True)
    # The home and the association are not touched by a block.
    assert site.home(ALICE).is_dir()
    assert await site.ledger.associations(GROUP) == {"alice.physics": True}

    unblocked = await site.run(f"unblock_user {ALICE}")

    assert unblocked.result_value() == mapping(ALICE)
    row = site.account("alice.physics")
    assert row["locked"] == 0
    assert site.groups_of("alice.physics") == {MANAGED, GROUP}
    assert not await site.accounts.is_blocked_user(identity(ALICE))
    assert (await site.value(f"is_blocked_user {ALICE}")) is False


async def test_a_blocked_user_stays_blocked_and_removed_through_add_user(site: Site) -> None:
    await site.run(f"add_user {ALICE}")
    await site.run(f"block_user {ALICE}")
    await site.run(f"remove_user {ALICE}")
    before = snapshot(site)

    # add_user returns the mapping but never re-enables a blocked account.
    assert (await site.value(f"add_user {ALICE}")) == mapping(ALICE)

    assert snapshot(site) == before
    row = site.account("alice.physics")
    assert (row["enabled"], row["locked"]) == (0, 1)
    assert site.groups_of("alice.physics") == {MANAGED, BLOCKED}
    assert not site.home(ALICE).exists()

    # Unblocked, the next add_user restores it with the same uid.
    await site.run(f"unblock_user {ALICE}")
    await site.run(f"add_user {ALICE}")
    row = site.account("alice.physics")
    assert (row["uid"], row["enabled"], row["locked"]) == (20000, 1, 0)
    assert site.home(ALICE).is_dir()


async def test_block_and_unblock_project_act_on_every_member(site: Site) -> None:
    await site.run(f"add_user {ALICE}")
    await site.run(f"add_user {BOB}")
    assert (await site.value(f"is_blocked_project {PROJECT}")) is False

    job = await site.run(f"block_project {PROJECT}")

    assert job.result_type == "Vec<UserMapping>"
    assert job.result_value() == [mapping(ALICE), mapping(BOB)]
    for name in ("alice.physics", "bob.physics"):
        assert site.account(name)["locked"] == 1
        assert BLOCKED in site.groups_of(name)
    answer = await site.run(f"is_blocked_project {PROJECT}")
    assert (answer.result_type, answer.result_value()) == ("bool", True)

    # One member unblocked: the project no longer counts as blocked.
    await site.run(f"unblock_user {BOB}")
    assert (await site.value(f"is_blocked_project {PROJECT}")) is False

    await site.run(f"unblock_project {PROJECT}")
    for name in ("alice.physics", "bob.physics"):
        assert site.account(name)["locked"] == 0
        assert BLOCKED not in site.groups_of(name)
    assert (await site.value(f"is_blocked_project {PROJECT}")) is False


# --- concurrency -----------------------------------------------------------------------------


async def test_ten_concurrent_add_users_each_happen_exactly_once(site: Site) -> None:
    users = [f"u{i}.chem.portal" for i in range(10)]

    jobs = await asyncio.gather(*(site.run(f"add_user {user}") for user in users))

    assert [job.result_value() for job in jobs] == [mapping(user) for user in users]
    rows = site.directory_rows("SELECT name, uid, enabled FROM users ORDER BY uid")
    assert sorted(name for name, _, _ in rows) == sorted(local_name(u) for u in users)
    uids = [uid for _, uid, _ in rows]
    assert uids == list(range(20000, 20010)), "no uid handed out twice or wasted"
    assert site.next_uid() == 20010
    assert all(enabled == 1 for _, _, enabled in rows)
    # One group for the project (plus the managed marker), made once.
    assert [name for (name,) in site.directory_rows("SELECT name FROM groups ORDER BY name")] == [
        MANAGED,
        "portal.chem",
    ]
    gid = site.gid("portal.chem")
    for user in users:
        assert site.groups_of(local_name(user)) == {MANAGED, "portal.chem"}
        uid = site.account(local_name(user))["uid"]
        assert_dir(site.home(user), uid, gid, HOME_MODE)
    assert await site.ledger.associations("portal.chem") == {local_name(u): True for u in users}
    # Each backend did each user's work exactly once.
    created = [op for op in site.operations("account") if op.startswith("created user")]
    assert sorted(created) == sorted(
        f"created user {local_name(u)} (uid {site.account(local_name(u))['uid']}) for {u}"
        for u in users
    )
    # add_project runs before any add_user, so the project group is made first.
    assert [op for op in site.operations("account") if op.startswith("created group")] == [
        f"created group portal.chem (gid {gid})",
        f"created group {MANAGED} (gid {site.gid(MANAGED)})",
    ]
    associated = [op for op in site.operations("scheduler") if "added user" in op]
    assert sorted(associated) == sorted(
        f"ledger: added user {local_name(u)} to account portal.chem" for u in users
    )
    homes = [op for op in site.operations("filesystem") if op.startswith("created")]
    assert sorted(homes) == sorted(
        [f"created {site.project_dir('chem.portal')}", f"created {site.sandbox / 'home' / 'chem'}"]
        + [f"created {site.home(u)}" for u in users]
    )
    assert not list(site.sandbox.rglob(".recycle"))
    notes = await site.notified(10)
    assert sorted(notes) == sorted(f"user_added {u}" for u in users)


async def test_three_concurrent_add_users_of_one_user_make_it_once(site: Site) -> None:
    user = "same.chem.portal"

    jobs = await asyncio.gather(*(site.run(f"add_user {user}") for _ in range(3)))

    assert [job.result_value() for job in jobs] == [mapping(user)] * 3
    assert site.directory_rows("SELECT name, uid, enabled FROM users") == [("same.chem", 20000, 1)]
    assert site.next_uid() == 20001
    assert site.groups_of("same.chem") == {MANAGED, "portal.chem"}
    assert site.ledger_rows("SELECT user, account FROM associations") == [
        ("same.chem", "portal.chem")
    ]
    account_ops = site.operations("account")
    assert [op for op in account_ops if op.startswith("created user")] == [
        f"created user same.chem (uid 20000) for {user}"
    ]
    assert [op for op in site.operations("scheduler") if "added user" in op] == [
        "ledger: added user same.chem to account portal.chem"
    ]
    assert [op for op in site.operations("filesystem") if op == f"created {site.home(user)}"] == [
        f"created {site.home(user)}"
    ]
    assert_dir(site.home(user), 20000, site.gid("portal.chem"), HOME_MODE)
