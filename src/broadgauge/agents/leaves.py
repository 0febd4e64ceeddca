"""Which leaf agents an instance needs for each instruction, and finding them.

An instance turns instructions into jobs for the account, filesystem and scheduler agents
that dial it (:mod:`broadgauge.agents.instance`).  Before it asks any of them anything, it
checks that every one the instruction needs (:data:`REQUIRED_AGENTS`) is connected, so that
no back end acts on work that a missing agent would leave half done.  An agent that is not
connected is one of two things:

* **not linked**: no client entry of the instance can be that agent (every configured client
  has registered as another role).  Nothing will ever come, so the job fails at once with an
  error naming the role and the commands that link one;
* **linked but away**: a client entry that is (or may be: it has not registered since the
  instance started) that agent is not connected now, e.g. while it restarts.  The instance
  waits for it, up to :data:`PEER_WAIT` seconds and saying so in its log, then fails naming
  the client entries and telling the operator to start them.

OpenPortal waits up to 10 s in both cases, silently, and only when it first needs the agent:
an ``add_user`` without a filesystem agent thus made the account first, waited, failed, and
undid it.
"""

from __future__ import annotations

import asyncio
import logging

from broadgauge.jobs.agent_type import AgentType
from broadgauge.runtime.agent import Agent, JobRefused
from broadgauge.wire import PeerId

log = logging.getLogger("broadgauge.agents.instance")

_QUOTAS = ("project", "user")
#: How long to wait for a linked leaf agent that is away (as OpenPortal's 10 s look-up).
PEER_WAIT = 10.0

_ACCOUNT = (AgentType.ACCOUNT,)
_FILES = (AgentType.ACCOUNT, AgentType.FILESYSTEM)
_SCHEDULER = (AgentType.ACCOUNT, AgentType.SCHEDULER)
_ALL = (AgentType.ACCOUNT, AgentType.FILESYSTEM, AgentType.SCHEDULER)

#: Questions an instance passes to its account agent as they are.
ACCOUNT_QUESTIONS = (
    "get_users",
    "get_projects",
    "get_project_mapping",
    "get_user_mapping",
    "is_protected_user",
    "is_blocked_user",
    "is_existing_user",
    "is_existing_project",
)
#: Questions an instance passes to its filesystem agent as they are.
FILESYSTEM_QUESTIONS = ("get_local_home_dir", "get_local_user_dirs", "get_local_project_dirs")

#: The leaf agents each instruction needs connected before anything is asked of any of them.
REQUIRED_AGENTS: dict[str, tuple[AgentType, ...]] = {
    **dict.fromkeys(("add_user", "remove_user", "add_project", "remove_project"), _ALL),
    **dict.fromkeys(
        (
            "block_user",
            "unblock_user",
            "block_project",
            "unblock_project",
            "is_blocked_project",
            *ACCOUNT_QUESTIONS,
        ),
        _ACCOUNT,
    ),
    **dict.fromkeys(
        ("set_limit", "get_limit", "get_usage_report", "get_usage_reports"), _SCHEDULER
    ),
    **dict.fromkeys(
        (
            "get_storage_report",
            "get_storage_reports",
            "get_home_dir",
            "get_user_dirs",
            "get_project_dirs",
            *(f"{verb}_{kind}_quota" for verb in ("set", "get", "clear") for kind in _QUOTAS),
            *(f"get_{kind}_quotas" for kind in _QUOTAS),
        ),
        _FILES,
    ),
    **dict.fromkeys(FILESYSTEM_QUESTIONS, (AgentType.FILESYSTEM,)),
}


def missing_agents_message(instance: str, missing: list[AgentType]) -> str:
    """The error for an instruction needing the leaf agents in ``missing``, none linked."""
    roles = " or ".join(role.display for role in missing)
    first = missing[0].display
    return (
        f"{instance} has no connected {roles} agent: link one with "
        f"`broadgauge instance client --add NAME --ip ADDRESS` on this instance and "
        f"`broadgauge {first} server --add invite_NAME_ZONE.toml` on the agent's host "
        f"(or add it to the site topology), then start it; "
        f"see docs/operators/roles.md"
    )


def away_agents_message(instance: str, away: dict[AgentType, list[PeerId]], waited: float) -> str:
    """The error for leaf agents that are linked (``away``: role → its client entries) but
    did not connect within ``waited`` seconds."""
    roles = " or ".join(role.display for role in away)
    peers = sorted({str(peer) for entries in away.values() for peer in entries})
    return (
        f"{instance} has no connected {roles} agent: its client(s) {', '.join(peers)} did not "
        f"connect within {waited:g} s; start the agent (`broadgauge {next(iter(away)).display} "
        f"run`) and check its log for why it cannot connect; see docs/operators/roles.md"
    )


class LeafAgents:
    """The leaf agents connected to one instance agent.

    ``wait`` is how long :meth:`require` waits for a linked agent that is away.
    """

    def __init__(self, agent: Agent, wait: float = PEER_WAIT) -> None:
        self.agent = agent
        self.wait = wait

    def _connected(self, role: AgentType) -> PeerId | None:
        """The first connected neighbour registered as ``role``, if any."""
        connected = set(self.agent.service.connected_peers())
        for peer, kind in self.agent.peer_types.items():
            if kind is role and peer in connected:
                return peer
        return None

    def linked(self, role: AgentType) -> list[PeerId]:
        """The client entries that are, or may yet be, our ``role`` agent.

        A client that registered as ``role``, or one that has not registered since this agent
        started (an agent says what it is only once connected).
        """
        types = self.agent.peer_types
        entries = (PeerId(e.name, e.zone) for e in self.agent.service.config.clients)
        return [peer for peer in entries if types.get(peer, role) is role]

    async def require(self, roles: tuple[AgentType, ...]) -> None:
        """Return once an agent of each of ``roles`` is connected.

        Raises :class:`JobRefused` at once if one of them is not linked at all, and after
        :attr:`wait` seconds if one that is linked has not connected (see the module).
        """

        def missing() -> list[AgentType]:
            return [role for role in roles if self._connected(role) is None]

        def unlinked() -> list[AgentType]:
            return [role for role in missing() if not self.linked(role)]

        if not missing():
            return
        if unlinked():
            raise JobRefused(missing_agents_message(self.agent.name, unlinked()))
        away = {role: self.linked(role) for role in missing()}
        log.info(
            "%s: waiting up to %g s for its %s agent to connect (%s)",
            self.agent.name,
            self.wait,
            " and ".join(role.display for role in away),
            ", ".join(sorted({str(p) for entries in away.values() for p in entries})),
        )
        registrations = self.agent.registrations
        try:
            # Woken by each Register: the agent came, or a client turned out to be another.
            async with asyncio.timeout(self.wait), registrations:
                await registrations.wait_for(lambda: not missing() or bool(unlinked()))
        except TimeoutError:
            pass
        if unlinked():
            raise JobRefused(missing_agents_message(self.agent.name, unlinked()))
        if missing():
            away = {role: self.linked(role) for role in missing()}
            raise JobRefused(away_agents_message(self.agent.name, away, self.wait))

    async def leaf(self, role: AgentType) -> PeerId:
        """Our connected ``role`` agent (waiting as :meth:`require` does)."""
        await self.require((role,))
        peer = self._connected(role)
        assert peer is not None
        return peer
