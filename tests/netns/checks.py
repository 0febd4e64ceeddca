"""What must hold after a fault: every user exactly once in every backend, every audit intact.

Read from the backends' own files (the embedded ones of :mod:`tests.agents_crash.site`) and
the agents' audit logs, never from what the jobs said.
"""

from __future__ import annotations

import os
import sqlite3
from collections import Counter
from collections.abc import Iterable
from contextlib import closing
from pathlib import Path

from broadgauge.jobs.job import Job
from broadgauge.runtime.audit import verify
from tests.agents_crash.site import AGENTS, Site


def local_name(user: str) -> str:
    """``alice.physics.portal`` → ``alice.physics`` (username.project)."""
    return user.rsplit(".", 1)[0]


def project_group(user: str) -> str:
    """``alice.physics.portal`` → ``portal.physics`` (the project's group and account)."""
    _, project, portal = user.split(".")
    return f"{portal}.{project}"


def check_completed(jobs: dict[str, Job], users: Iterable[str]) -> None:
    """Every user's ``add_user`` completed with that user's mapping."""
    for user in users:
        job = jobs.get(user)
        assert job is not None and job.is_finished and not job.is_error, (
            f"add_user {user} did not complete: {job}"
        )
        expected = f'"{user}:{local_name(user)}:{project_group(user)}"'
        assert job.result == expected, f"add_user {user}: {job.result} != {expected}"


def check_users_once(site: Site, users: Iterable[str]) -> None:
    """Each of ``users`` (and nobody else) once in the directory, the sandbox and the
    ledger; no backend creation recorded twice; every agent's audit chain intact."""
    users = list(users)
    names = sorted(local_name(user) for user in users)
    with closing(sqlite3.connect(site.directory)) as db:
        rows = db.execute("SELECT name, uid, gid, home FROM users ORDER BY name").fetchall()
        groups = dict(db.execute("SELECT name, gid FROM groups").fetchall())
        members = Counter(
            (group, user) for group, user in db.execute("SELECT group_name, user_name FROM members")
        )
    assert [row[0] for row in rows] == names, f"directory users: {[row[0] for row in rows]}"
    assert len({row[1] for row in rows}) == len(rows), f"a uid given twice: {rows}"
    for name, uid, gid, home in rows:
        user = next(u for u in users if local_name(u) == name)
        assert gid == groups[project_group(user)], f"{name}: gid {gid}, groups {groups}"
        assert members[project_group(user), name] == 1, f"{name} not in its project group"
        path = Path(home)
        assert path.is_relative_to(site.sandbox / "home") and path.is_dir(), f"{name}: {home}"
        if os.geteuid() == 0:  # only root can give it away (the sandbox's chown=auto)
            assert path.stat().st_uid == uid, f"{name}: {home} not owned by {uid}"
    with closing(sqlite3.connect(site.ledger)) as db:
        associations = sorted(db.execute("SELECT user, account FROM associations").fetchall())
    expected = sorted((local_name(user), project_group(user)) for user in users)
    assert associations == expected, f"ledger associations: {associations}"
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
    check_audit_chains(site)


def check_audit_chains(site: Site) -> None:
    """Every agent's (and the bridge's) audit log verifies."""
    for agent in ("bridge", *AGENTS):
        result = verify(site.data_dir(agent) / "audit.jsonl")
        assert result.ok, f"{agent} audit log: line {result.first_bad_line}: {result.reason}"
