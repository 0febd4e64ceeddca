"""What the network refuses or leaves alone: protected users, other portals' identities, work
from below, and callers whose keys nobody holds."""

from __future__ import annotations

import sqlite3
from contextlib import closing

import pytest

from broadgauge.grammar import ProjectIdentifier
from broadgauge.jobs.agent_type import AgentType
from broadgauge.runtime.agent import JobFailed
from broadgauge.wire import Invite, Key

from .helpers import Site, eventually, identity, local_name, mapping, project_mapping

PROJECT = "physics.portal"
ALICE = "alice.physics.portal"
CAROL = "carol.physics.portal"  # made by hand in the directory: not managed, so protected
GROUP = "portal.physics"


def add_unmanaged_user(site: Site, user: str, uid: int) -> None:
    """Put ``user`` in the directory as a site admin would: in its project group, not in
    ``openportal``, so Broadgauge must treat it as protected."""
    name = local_name(user)
    gid = site.gid(GROUP)
    path = site.root / "account" / "directory.sqlite3"
    with closing(sqlite3.connect(path, timeout=10)) as db, db:
        db.execute(
            "INSERT INTO users (name, uid, gid, identity, home, shell) VALUES (?, ?, ?, ?, ?, ?)",
            (name, uid, gid, user, f"/home/{name}", "/bin/sh"),
        )
        db.execute("INSERT INTO members (group_name, user_name) VALUES (?, ?)", (GROUP, name))


def carol_state(site: Site) -> tuple[object, ...]:
    """Everything anyone could change about carol."""
    return (
        site.user_row("carol.physics"),
        site.groups_of("carol.physics"),
        site.ledger_rows("SELECT * FROM associations WHERE user = 'carol.physics'"),
        site.ledger_rows("SELECT * FROM users WHERE name = 'carol.physics'"),
        site.home(CAROL).exists(),
        site.recycled_home(CAROL).exists(),
    )


# --- protected users -------------------------------------------------------------------------


async def test_add_remove_and_block_leave_a_protected_user_untouched(site: Site) -> None:
    await site.run(f"add_project {PROJECT}")
    add_unmanaged_user(site, CAROL, uid=5000)
    before = carol_state(site)
    assert before[0] == {
        "name": "carol.physics",
        "uid": 5000,
        "gid": site.gid(GROUP),
        "identity": CAROL,
        "home": "/home/carol.physics",
        "shell": "/bin/sh",
        "enabled": 1,
        "locked": 0,
    }
    operations = {name: site.operations(name) for name in ("account", "filesystem", "scheduler")}

    protected = await site.run(f"is_protected_user {CAROL}")
    assert (protected.result_type, protected.result_value()) == ("bool", True)
    assert await site.accounts.is_protected_user(identity(CAROL))

    # Each instruction answers with carol's mapping and changes nothing anywhere.
    for verb in ("add_user", "block_user", "unblock_user", "remove_user", "add_user"):
        job = await site.run(f"{verb} {CAROL}")
        assert (job.result_type, job.result_value()) == ("UserMapping", mapping(CAROL)), verb
        assert carol_state(site) == before, verb
    assert (await site.value(f"is_blocked_user {CAROL}")) is False
    assert {name: site.operations(name) for name in operations} == operations
    # No home was made for her and the scheduler never heard of her.
    assert not site.home(CAROL).exists()
    assert await site.ledger.associations(GROUP) == {}


async def test_remove_project_removes_managed_members_but_keeps_a_project_with_protected_ones(
    site: Site,
) -> None:
    await site.run(f"add_user {ALICE}")
    add_unmanaged_user(site, CAROL, uid=5000)
    before = carol_state(site)

    job = await site.run(f"remove_project {PROJECT}")

    assert (job.result_type, job.result_value()) == ("ProjectMapping", project_mapping(PROJECT))
    # Alice (managed) was removed first ...
    alice = site.account("alice.physics")
    assert (alice["uid"], alice["enabled"]) == (20000, 0)
    assert site.groups_of("alice.physics") == {"openportal"}
    assert not site.home(ALICE).exists() and site.recycled_home(ALICE).is_dir()
    assert await site.ledger.associations(GROUP) == {}
    # ... carol (protected) keeps her account, and with her the project keeps its group,
    # directories and scheduler account.
    assert carol_state(site) == before
    assert await site.accounts.get_users(ProjectIdentifier.parse(PROJECT)) == [mapping(CAROL)]
    assert site.project_dir(PROJECT).is_dir()
    assert site.user_volume_project_dir(PROJECT).is_dir()
    assert await site.accounts.is_existing_project(ProjectIdentifier.parse(PROJECT))
    assert await site.ledger.accounts() == {GROUP: "openportal"}
    assert f"project_removed {PROJECT}" not in site.notifications()


# --- the portal check ------------------------------------------------------------------------


async def test_a_portal_refuses_identities_of_another_portal(site: Site) -> None:
    message = await site.refused("add_user alice.physics.other")

    assert message == (
        "Invalid command 'portal.provider.platform.instance add_user alice.physics.other'. "
        "Commands involving user 'alice.physics.other' can only be issued via the portal "
        "'other', not 'portal'."
    )
    # Refused at the portal: nothing reached the instance or any backend.
    assert site.audit("instance") == []
    assert site.directory_rows("SELECT name FROM users") == []
    refused = [e for e in site.audit("portal") if e["action"] == "finished"]
    assert [e["outcome"] for e in refused] == [message]


# --- direction and identity of callers -------------------------------------------------------


async def test_an_account_agent_refuses_a_job_from_below_and_audits_it(site: Site) -> None:
    account = await site.make_listen("account")
    intruder = site.extra_agent("intruder", AgentType.INSTANCE)
    intruder.service.add_server(account.service.add_client("intruder", "127.0.0.1"))
    await intruder.start(listen=False)
    await intruder.peer_of_type(AgentType.ACCOUNT)

    with pytest.raises(JobFailed) as refusal:
        await intruder.run("intruder.account", "add_user mallory.physics.portal", timeout=10)

    reason = "account agents do not accept add_user from below (from an instance agent)"
    assert str(refusal.value) == reason
    assert site.user_row("mallory.physics") is None
    [refused] = [e for e in site.audit("account") if e["action"] == "refused"]
    assert refused["job"] == str(refusal.value.job.id)
    assert refused["peer"] == "intruder@default"
    assert refused["path"] == ["intruder", "account"]
    assert refused["instruction"] == "add_user mallory.physics.portal"
    assert refused["outcome"] == reason
    assert not [
        e for e in site.audit("account") if e["job"] == refused["job"] and e["action"] == "started"
    ]

    # The account still takes the same work from its own instance, above it.
    assert (await site.value(f"add_user {ALICE}")) == mapping(ALICE)
    assert site.user_row("alice.physics") is not None


async def test_a_caller_without_known_keys_is_refused_at_the_wire_and_audited(
    site: Site,
) -> None:
    account = await site.make_listen("account")
    # A legitimate client from the same address, so the caller passes the address filter and
    # is refused for its keys alone.
    account.service.add_client("friend", "127.0.0.1")
    stranger = site.extra_agent("stranger", AgentType.INSTANCE)
    stranger.service.add_server(
        Invite("account", account.service.url, "default", Key.generate(), Key.generate())
    )
    await stranger.start(listen=False)

    def refusals() -> list[dict[str, object]]:
        return [e for e in site.audit("account") if e["action"] == "connection-refused"]

    await eventually(lambda: bool(refusals()))
    await stranger.stop()

    entry = refusals()[0]
    assert str(entry["outcome"]).startswith("no-matching-key: ")
    assert str(entry["peer"]).startswith("127.0.0.1:")
    assert (entry["job"], entry["instruction"], entry["path"]) == (None, None, [])
    assert "stranger" not in {p.name for p in account.service.connected_peers()}
    assert stranger.service.connected_peers() == []


async def test_a_submit_naming_an_unknown_first_hop_is_refused_at_once_as_the_reference_words_it(
    site: Site,
) -> None:
    bridge = site.network.agents["bridge"]
    submit = f"submit portal.nowhere.instance add_user {ALICE}"

    with pytest.raises(JobFailed) as failed:
        await bridge.run("bridge.portal", submit, timeout=5)

    # The reference's portal words it so (portal/src/main.rs); nothing went further down.
    assert str(failed.value) == (
        f"Invalid instruction: {submit}. "
        "Cannot find next agent in destination portal.nowhere.instance"
    )
    assert not await site.accounts.is_existing_user(identity(ALICE))


async def test_a_submit_that_does_not_start_at_the_portal_is_refused_as_the_reference_words_it(
    site: Site,
) -> None:
    submit = f"submit provider.platform.instance add_user {ALICE}"
    with pytest.raises(JobFailed) as failed:
        await site.network.agents["bridge"].run("bridge.portal", submit, timeout=5)
    assert str(failed.value) == (
        f"Invalid instruction: {submit}. First agent in destination should be this portal (portal)"
    )
