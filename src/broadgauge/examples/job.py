"""Example 2 (job): a portal agent sends jobs to a cluster agent and reads their results.

Where example 1 passed raw strings between two wire services, this one uses the agent runtime
(:mod:`broadgauge.runtime.agent`): each side is an :class:`~broadgauge.runtime.agent.Agent` with a
type, a board per neighbour and handlers for instruction keywords.

* The **portal** (type ``Portal``) listens, writes an invite for a client called ``cluster``
  and waits for it.  It then runs ``add_user fred.proj.org`` on ``portal.cluster`` and prints
  the finished job, then ``remove_user jane.admin.org``, which the cluster refuses: the portal
  prints the error and ends with exit status 1.
* The **cluster** (type ``Instance``) imports the invite, dials the portal and answers
  ``add_user`` and ``remove_user`` with a :class:`~broadgauge.grammar.UserMapping`
  (``fred.proj.org:fred:org.proj``), refusing to remove users of the ``admin`` project.
  It ends with exit status 0 once the portal has gone away after sending it work.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from broadgauge.grammar import UserIdentifier, UserMapping
from broadgauge.grammar.instructions import AddUser, RemoveUser
from broadgauge.jobs import AgentType, Job
from broadgauge.runtime.agent import Agent, Envelope, JobFailed, JobRefused
from broadgauge.runtime.config import AgentConfig
from broadgauge.wire import Invite, ServerEntry, ServiceConfig

PORTAL = "portal"
CLUSTER = "cluster"
#: The project whose users the cluster refuses to remove.
PROTECTED_PROJECT = "admin"
#: The two instructions the portal sends, in order.
ADD = "add_user fred.proj.org"
REMOVE = "remove_user jane.admin.org"

CONNECT_TIMEOUT = 60.0
JOB_TIMEOUT = 30.0
#: How long the cluster waits for its portal to come back before it ends.
LINGER = 2.0
_POLL = 0.1

Say = Callable[[str], None]


def say_now(text: str) -> None:
    """Print a line at once, even into a pipe (so two processes interleave readably)."""
    print(text, flush=True)


def user_mapping(user: UserIdentifier) -> UserMapping:
    """How this toy cluster maps a user: local user = username, group = ``<portal>.<project>``."""
    return UserMapping(user, user.username, f"{user.portal}.{user.project}")


def describe(job: Job) -> list[str]:
    """The lines the portal prints for a finished job."""
    return [
        f"[{PORTAL}] job {job.destination} {job.instruction} finished",
        f"[{PORTAL}]   state:       {job.state.value}",
        f"[{PORTAL}]   result:      {job.result}",
        f"[{PORTAL}]   result_type: {job.result_type}",
    ]


# --- the cluster -------------------------------------------------------------------------


class ClusterAgent:
    """An ``Instance`` agent that dials its portal and answers user jobs."""

    def __init__(self, invite: Invite, say: Say = say_now) -> None:
        service = ServiceConfig.create(CLUSTER, port=0).with_server(ServerEntry.from_invite(invite))
        self.agent = Agent(AgentConfig(AgentType.INSTANCE, service))
        self.portal = invite.name
        self.zone = invite.zone
        self.say = say
        self.served = 0
        self.agent.add_handler("add_user", self.add_user)
        self.agent.add_handler("remove_user", self.remove_user)

    async def add_user(self, envelope: Envelope) -> UserMapping:
        """Handler for ``add_user``: "create" the account and return its mapping."""
        self.served += 1
        instruction = envelope.job.instruction
        assert isinstance(instruction, AddUser)  # the runtime dispatches on the keyword
        mapping = user_mapping(instruction.user)
        self.say(
            f"[{CLUSTER}] add_user {instruction.user} from {envelope.sender.peer}: "
            f"local user {mapping.local_user}, group {mapping.local_group}"
        )
        return mapping

    async def remove_user(self, envelope: Envelope) -> UserMapping:
        """Handler for ``remove_user``: refuse protected users, else return the mapping."""
        self.served += 1
        instruction = envelope.job.instruction
        assert isinstance(instruction, RemoveUser)
        user = instruction.user
        if user.project == PROTECTED_PROJECT:
            self.say(f"[{CLUSTER}] remove_user {user}: refused, {PROTECTED_PROJECT} is protected")
            raise JobRefused(f"{PROTECTED_PROJECT} users are protected")
        self.say(f"[{CLUSTER}] remove_user {user}: removed")
        return user_mapping(user)

    def portal_connected(self) -> bool:
        """Whether the link to the portal is up."""
        return any(
            peer.name == self.portal and peer.zone == self.zone
            for peer in self.agent.service.connected_peers()
        )

    async def serve(self, linger: float = LINGER) -> int:
        """Dial the portal, answer its jobs, and return 0 once it has gone for ``linger`` s."""
        await self.agent.start(listen=False)
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                await self.agent.service.wait_for_peer(self.portal, self.zone)
            self.say(f"[{CLUSTER}] connected to {self.portal}")
            return await self._until_portal_gone(linger)
        finally:
            await self.agent.stop()

    async def _until_portal_gone(self, linger: float) -> int:
        # The link may drop and come back (the runtime redials); only a portal that stays
        # away - for ``linger`` seconds after sending work, or CONNECT_TIMEOUT before - ends us.
        loop = asyncio.get_running_loop()
        lost_at: float | None = None
        while True:
            await asyncio.sleep(_POLL)
            if self.portal_connected():
                lost_at = None
                continue
            now = loop.time()
            lost_at = now if lost_at is None else lost_at
            if self.served and now - lost_at >= linger:
                self.say(f"[{CLUSTER}] {self.portal} has gone; done")
                return 0
            if now - lost_at >= CONNECT_TIMEOUT:
                self.say(f"[{CLUSTER}] {self.portal} went away without sending a job")
                return 1


async def run_cluster(invitation: Path, *, say: Say = say_now, linger: float = LINGER) -> int:
    """Import the invite at ``invitation``, serve the portal's jobs; the exit status."""
    return await ClusterAgent(Invite.load(invitation), say).serve(linger)


# --- the portal --------------------------------------------------------------------------


async def _send(agent: Agent, instruction: str, say: Say) -> Job | None:
    """Run ``instruction`` on the cluster; print the finished job, or the error (→ None)."""
    say(f"[{PORTAL}] sending {PORTAL}.{CLUSTER} {instruction}")
    try:
        job = await agent.run(f"{PORTAL}.{CLUSTER}", instruction, timeout=JOB_TIMEOUT)
    except JobFailed as exc:
        say(f"[{PORTAL}] {instruction} failed: {exc.job.error_message or exc}")
        return None
    for line in describe(job):
        say(line)
    return job


async def run_portal(
    invitation: Path,
    url: str = "ws://127.0.0.1:0",
    *,
    client_ip: str = "127.0.0.1",
    say: Say = say_now,
) -> int:
    """Listen on ``url``, invite ``cluster``, run the two jobs; 1 if a job failed, else 0."""
    parts = urlsplit(url)
    config = ServiceConfig.create(PORTAL, ip=parts.hostname or "127.0.0.1", port=parts.port or 0)
    agent = Agent(AgentConfig(AgentType.PORTAL, config))
    status = 0
    await agent.start()
    try:
        invite = agent.service.add_client(CLUSTER, client_ip)
        invite.save(invitation)
        say(f"[{PORTAL}] listening on {agent.service.url}; invite for {CLUSTER!r} in {invitation}")
        async with asyncio.timeout(CONNECT_TIMEOUT):
            await agent.service.wait_for_peer(CLUSTER)
        say(f"[{PORTAL}] {CLUSTER} connected")
        for instruction in (ADD, REMOVE):
            if await _send(agent, instruction, say) is None:
                status = 1
                break
    finally:
        await agent.stop()
    say(f"[{PORTAL}] done (exit status {status})")
    return status


async def run_both(*, say: Say = say_now, linger: float = LINGER) -> int:
    """Run portal and cluster in one process (invite in a temporary directory).

    Returns the portal's exit status, which is what the two-process version reports too.
    """
    with tempfile.TemporaryDirectory(prefix="broadgauge-job-") as tmp:
        invitation = Path(tmp) / f"invite_{CLUSTER}_default.toml"
        portal = asyncio.create_task(run_portal(invitation, say=say))
        async with asyncio.timeout(CONNECT_TIMEOUT):
            while not invitation.exists():
                if portal.done():
                    await portal  # surface its error
                await asyncio.sleep(0.01)
        status, _ = await asyncio.gather(portal, run_cluster(invitation, say=say, linger=linger))
    return status
