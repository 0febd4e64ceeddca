"""What the portal is told, and what every agent's audit log keeps, after real flows."""

from __future__ import annotations

from broadgauge.runtime.audit import verify

from .helpers import Site

PROJECT = "physics.portal"
ALICE = "alice.physics.portal"
BOB = "bob.physics.portal"
PATH = ["portal", "provider", "platform", "instance"]


async def test_the_portal_is_notified_of_every_change(site: Site) -> None:
    for instruction in (
        f"add_project {PROJECT}",
        f"add_user {ALICE}",
        f"add_user {BOB}",
        f"block_user {BOB}",
        f"unblock_user {BOB}",
        f"block_project {PROJECT}",
        f"unblock_project {PROJECT}",
        f"remove_user {BOB}",
        f"get_users {PROJECT}",  # a question: no notification
        f"is_blocked_user {ALICE}",
    ):
        await site.run(instruction)

    assert await site.notified(12) == [
        f"project_added {PROJECT}",
        f"user_added {ALICE}",
        f"user_added {BOB}",
        f"user_blocked {BOB}",
        f"user_unblocked {BOB}",
        f"user_blocked {ALICE}",
        f"user_blocked {BOB}",
        f"project_blocked {PROJECT}",
        f"user_unblocked {ALICE}",
        f"user_unblocked {BOB}",
        f"project_unblocked {PROJECT}",
        f"user_removed {BOB}",
    ]
    # Nothing more arrives for the read-only questions.
    assert len(site.portal.notifications) == 12


async def test_audit_logs_follow_add_user_from_the_portal_to_each_backend(site: Site) -> None:
    bridge_job = await site.run(f"add_user {ALICE}")

    # The portal: the bridge's submit job, and the inner job it sent down the path.
    portal = site.audit("portal")
    assert [e["action"] for e in portal if e["job"] == str(bridge_job.id)] == [
        "received",
        "started",
        "finished",
    ]
    [forwarded] = [e for e in portal if e["action"] == "forwarded"]
    assert (forwarded["instruction"], forwarded["path"]) == (f"add_user {ALICE}", PATH)
    job_id = forwarded["job"]

    # The instance: received, started, its sub-jobs in order, finished.
    instance = site.audit("instance")
    own = [e for e in instance if e["job"] == job_id]
    assert [e["action"] for e in own] == ["received", "started", "finished"]
    assert all(e["path"] == PATH and e["peer"] == "platform@default" for e in own)
    assert own[-1]["outcome"] == "UserMapping"
    start, end = instance.index(own[1]), instance.index(own[2])
    subjobs = [e for e in instance[start + 1 : end] if e["action"] == "forwarded"]
    home = site.home(ALICE)
    mapping_text = "alice.physics.portal:alice.physics:portal.physics"
    steps = [(e["path"][1], e["instruction"]) for e in subjobs]
    # The three checks run together, then the account, then the directories and the
    # scheduler association side by side: only the order within each branch is fixed.
    assert set(steps[:3]) == {
        ("account", f"is_protected_user {ALICE}"),
        ("account", f"is_blocked_user {ALICE}"),
        ("account", f"is_existing_user {ALICE}"),
    }
    assert steps[3:5] == [("account", f"add_project {PROJECT}"), ("account", f"add_user {ALICE}")]
    rest = steps[5:]
    directories = [
        ("filesystem", f"add_local_user {mapping_text}"),
        ("filesystem", f"get_local_home_dir {mapping_text}"),
        ("account", f"update_homedir {ALICE} {home}"),
    ]
    association = [
        ("scheduler", "add_local_project physics.portal:portal.physics"),
        ("scheduler", f"add_local_user {mapping_text}"),
    ]
    assert sorted(rest) == sorted(directories + association)
    assert [step for step in rest if step in directories] == directories
    assert [step for step in rest if step in association] == association
    finished = {
        e["job"]: e["outcome"] for e in instance[start + 1 : end] if e["action"] == "finished"
    }
    assert set(finished) == {e["job"] for e in subjobs}
    assert "Error" not in finished.values()

    # The account: the backend's operations, attributed to the add_user sub-job.
    [add] = [e for e in subjobs if e["instruction"] == f"add_user {ALICE}"]
    account = site.audit("account")
    done = [e for e in account if e["job"] == add["job"]]
    assert [e["action"] for e in done] == [
        "received",
        "started",
        "operation",
        "operation",
        "operation",
        "operation",
        "finished",
    ]
    assert [e["operation"] for e in done if e["action"] == "operation"] == [
        "created group openportal (gid 20001)",
        f"created user alice.physics (uid 20000) for {ALICE}",
        "added alice.physics to group openportal",
        "added alice.physics to group portal.physics",
    ]
    for entry in done:
        assert entry["instruction"] == f"add_user {ALICE}"
        assert entry["path"] == ["instance", "account"]
        assert entry["peer"] == "instance@default"
    # Every operation anywhere below the instance belongs to one of its sub-jobs.
    for agent in ("account", "filesystem", "scheduler"):
        operations = [e for e in site.audit(agent) if e["action"] == "operation"]
        assert operations, agent
        assert {e["job"] for e in operations} <= finished.keys(), agent
    [fs_job] = [
        e["job"]
        for e in subjobs
        if e["instruction"].startswith("add_local_user") and e["path"][1] == "filesystem"
    ]
    assert f"created {home}" in [
        e["operation"] for e in site.audit("filesystem") if e["job"] == fs_job
    ]

    # Every agent's chain verifies.
    for name in site.network.agents:
        result = verify(site.root / name / "audit.jsonl")
        assert result.ok, f"{name}: line {result.first_bad_line}: {result.reason}"
        assert result.entries == len(site.audit(name))
    assert verify(site.root / "bridge" / "audit.jsonl").entries > 0
