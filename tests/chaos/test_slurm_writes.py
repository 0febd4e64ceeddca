"""Many Slurm changes at once through the sacctmgr engine: none may be lost.

The soak found that slurmdbd (22.05) mishandles several ``sacctmgr`` changes sent at the
same moment: its MariaDB transactions deadlock, some changes are lost although every
``sacctmgr add`` exits 0 and prints what it added, and once a deadlock outlasts its ten
retries slurmdbd exits ("unable to resolve deadlock", fatal).  With changes side by side,
ten projects added at once left five accounts missing here.  The engine now sends its
changes one at a time (queries still run side by side) and checks each account it adds.
This asks the engine for ten projects and twenty users at once, as a busy instance does,
and reads them all back with ``sacctmgr`` itself.
"""

from __future__ import annotations

import asyncio
import uuid

from broadgauge.agents.scheduler.slurm import NodeFactors, SlurmScheduler
from broadgauge.grammar import ProjectIdentifier, ProjectMapping, UserIdentifier, UserMapping
from tests.backends.slurm import SlurmStack

PROJECTS = 10
USERS_EACH = 2


async def test_concurrent_projects_and_users_all_reach_slurmdbd(slurm_stack: SlurmStack) -> None:
    tag = uuid.uuid4().hex[:6]
    scheduler = SlurmScheduler(
        cluster=slurm_stack.cluster,
        default_node=NodeFactors.from_json(f'{{"cpus": {slurm_stack.cpus}}}'),
        command_prefix=slurm_stack.command_prefix,
        env={"SLURM_CONF": str(slurm_stack.conf)},
    )
    projects = [
        ProjectMapping(ProjectIdentifier(f"w{tag}{n:02d}", "portal"), f"portal.w{tag}{n:02d}")
        for n in range(PROJECTS)
    ]
    users = [
        UserMapping(
            UserIdentifier(f"u{m}", p.project.project, "portal"),
            f"u{m}.{p.project.project}",
            p.local_group,
        )
        for p in projects
        for m in range(USERS_EACH)
    ]
    await asyncio.gather(*(scheduler.add_project(p) for p in projects))
    await asyncio.gather(*(scheduler.add_user(u) for u in users))

    shown = slurm_stack.run(
        "sacctmgr", "-nP", "show", "assoc", f"cluster={slurm_stack.cluster}",
        "format=Account,User",
    ).stdout  # fmt: skip
    rows = {tuple(line.split("|")[:2]) for line in shown.splitlines()}
    accounts = {account for account, user in rows if account.startswith(f"portal.w{tag}")}
    assert accounts == {p.local_group for p in projects}
    assert {(a, u) for a, u in rows if a in accounts and u} == {
        (u.local_group, u.local_user) for u in users
    }
