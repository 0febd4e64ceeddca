"""The CI soak of issue 14: 1,000 jobs through a real site while agents are killed.

Seven ``broadgauge <role> run`` processes on loopback, the account agent on the session's
slapd, the scheduler on the session's Slurm accounting stack, the filesystem agent making
real directories (see :mod:`.loopback`).  A seeded mix of add_user, remove_user,
block/unblock (users and projects), set_limit, set_project_quota, set_user_quota and usage
reports for 200 users in 20 projects goes in through the bridge, 24 jobs at a time, while
a seeded schedule SIGKILLs agents (at a random moment, right after a restart while the first
link Syncs, and while the scheduler runs ``sacctmgr``), freezes slapd or slurmdbd for
15-30 s (SIGSTOP, then SIGCONT), and restarts one agent with its clock five minutes ahead,
then on the right clock.  Every fault kind this site offers runs at least once; the network
faults (partition, isolation, loss, latency) need the namespace harness and are reported as
unavailable here.

Then every invariant of :mod:`.invariants` must hold: no job lost, every instruction
complete, slapd, ``sacctmgr`` and the sandbox exactly as the final job states say, no change
applied twice, every audit chain intact and every job's trail matching its final state,
RSS within 20 % of the warm-up reading, every board empty.

The seed is printed; set ``BG_CHAOS_SEED`` to replay one.  The figures are printed, not
asserted (``bench/chaos.py`` reports them at full size).
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from tests.backends.slapd import Slapd
from tests.backends.slurm import SlurmStack

from .loopback import LOOPBACK_KINDS, ldap_target
from .schedule import FaultKind
from .soak import SoakSettings, figures, real_site, run_soak, violations

pytestmark = pytest.mark.slow

JOBS = 1000
USERS = 200
PROJECTS = 20
#: Kills of random kinds after one of each kind (run if the mix is still going).
EXTRA_FAULTS = 1


async def test_soak_1000_jobs_with_kills_stalls_and_clock_steps_loses_nothing(
    tmp_path: Path, slapd: Slapd, slurm_stack: SlurmStack
) -> None:
    seed = int(os.environ.get("BG_CHAOS_SEED") or random.SystemRandom().randrange(1, 2**31))
    print(f"\nBG_CHAOS_SEED={seed}")
    settings = SoakSettings(
        seed=seed,
        jobs=JOBS,
        users=USERS,
        projects=PROJECTS,
        faults=True,
        extra_faults=EXTRA_FAULTS,
    )
    factory = real_site(ldap_target(slapd), slurm_stack, slapd.pid)
    report = await run_soak(tmp_path, settings, factory)
    print(figures(report))
    ran = {record.fault.kind for record in report.faults if record.ran}
    unavailable = {r.fault.kind for r in report.faults if r.note == "unavailable on this site"}
    assert ran == LOOPBACK_KINDS, f"seed {seed}: fault kinds run {ran}"
    assert unavailable == set(FaultKind) - LOOPBACK_KINDS, f"seed {seed}: {unavailable}"
    broken = violations(report)
    assert not broken, f"seed {seed}:\n" + "\n".join(broken)
