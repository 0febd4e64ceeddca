"""Example 2 (job), run the way docs/examples/job.md tells a newcomer to."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from broadgauge.examples.job import ClusterAgent, user_mapping
from broadgauge.grammar import UserIdentifier, UserMapping
from broadgauge.jobs import AgentType, Job
from broadgauge.jobs.directions import Link
from broadgauge.runtime.agent import Envelope, JobRefused, PeerInfo
from broadgauge.wire import Invite, Key, PeerId

from .processes import Broadgauge, run_broadgauge

COMPLETED_ADD_USER = [
    "[portal] job portal.cluster add_user fred.proj.org finished",
    "[portal]   state:       Complete",
    '[portal]   result:      "fred.proj.org:fred:org.proj"',
    "[portal]   result_type: UserMapping",
]
PROTECTED_ERROR = "[portal] remove_user jane.admin.org failed: admin users are protected"


def test_portal_and_cluster_in_two_processes(tmp_path: Path) -> None:
    invitation = tmp_path / "invite.toml"
    portal = Broadgauge("example", "job", "portal", "--invitation", str(invitation))
    cluster: Broadgauge | None = None
    try:
        deadline = time.monotonic() + 20
        while not invitation.exists():
            assert portal.process.poll() is None, portal.output
            assert time.monotonic() < deadline, "the portal never wrote its invite"
            time.sleep(0.05)
        assert invitation.stat().st_mode & 0o777 == 0o600
        assert Invite.load(invitation).name == "portal"
        cluster = Broadgauge("example", "job", "cluster", "--invitation", str(invitation))
        assert portal.finish(30) == 1, portal.output
        assert cluster.finish(30) == 0, cluster.output
    finally:
        portal.kill()
        if cluster is not None:
            cluster.kill()
    portal_lines = portal.output.splitlines()
    start = portal_lines.index(COMPLETED_ADD_USER[0])
    assert portal_lines[start : start + 4] == COMPLETED_ADD_USER
    assert PROTECTED_ERROR in portal_lines
    assert portal_lines[-1] == "[portal] done (exit status 1)"
    # The cluster ran both handlers: it mapped fred and refused jane.
    assert (
        "[cluster] add_user fred.proj.org from portal@default: local user fred, group org.proj"
        in cluster.output
    )
    assert "[cluster] remove_user jane.admin.org: refused, admin is protected" in cluster.output
    assert cluster.output.splitlines()[-1] == "[cluster] portal has gone; done"


def test_both_in_one_process_has_the_same_outcome() -> None:
    result = run_broadgauge("example", "job", timeout=60)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    start = lines.index(COMPLETED_ADD_USER[0])
    assert lines[start : start + 4] == COMPLETED_ADD_USER
    assert PROTECTED_ERROR in lines
    assert "[cluster] portal has gone; done" in lines
    assert result.stderr == ""


def test_cluster_with_a_missing_invite_fails_clearly(tmp_path: Path) -> None:
    result = run_broadgauge(
        "example", "job", "cluster", "--invitation", str(tmp_path / "nope.toml")
    )
    assert result.returncode == 1
    assert result.stderr.startswith("broadgauge: cannot read invite")


# --- the cluster's handlers, called directly ---------------------------------------------


def _envelope(instruction: str) -> Envelope:
    job = Job.parse(f"portal.cluster {instruction}", now=1_717_400_000)
    sender = PeerInfo(PeerId("portal", "default"), Link.UP, AgentType.PORTAL)
    return Envelope("cluster", sender, job)


@pytest.fixture
def cluster() -> ClusterAgent:
    invite = Invite("portal", "ws://127.0.0.1:9/", "default", Key.generate(), Key.generate())
    return ClusterAgent(invite, say=lambda _: None)


def test_mapping_uses_the_username_and_a_portal_dot_project_group() -> None:
    mapping = user_mapping(UserIdentifier.parse("fred.proj.org"))
    assert mapping == UserMapping.parse("fred.proj.org:fred:org.proj")


async def test_add_user_returns_the_mapping(cluster: ClusterAgent) -> None:
    mapping = await cluster.add_user(_envelope("add_user fred.proj.org"))
    assert str(mapping) == "fred.proj.org:fred:org.proj"
    assert cluster.served == 1


async def test_remove_user_refuses_admin_users_only(cluster: ClusterAgent) -> None:
    with pytest.raises(JobRefused, match="admin users are protected"):
        await cluster.remove_user(_envelope("remove_user jane.admin.org"))
    mapping = await cluster.remove_user(_envelope("remove_user jane.proj.org"))
    assert str(mapping) == "jane.proj.org:jane:org.proj"
