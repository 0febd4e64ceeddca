"""Which way jobs may flow: an agent refuses work that comes from the wrong direction.

Jobs travel *down* the hierarchy (bridge → portal → provider → platform → instance → account,
filesystem, scheduler) and results travel back up.  Whether a neighbour is above or below us
is decided by the link, which our own config fixes and the peer cannot forge:

* a peer we dial (a server entry) is above us;
* a peer that dials us (a client entry) is below us;
* except that a bridge dials its portal yet sits above it, so a portal also treats a peer
  registered as ``Bridge`` on one of its client links as above it.

A job arriving from below is refused, with one exception: an instance answers a short list of
read-only questions its own account, filesystem and scheduler agents ask while they work (the
account agent asks for a user's home directory while creating the user).  The reference
checks none of this; a compromised leaf agent there could order its instance to add users.
"""

from __future__ import annotations

import enum

from broadgauge.jobs.agent_type import AgentType


class Link(enum.Enum):
    """How a neighbour is connected to us."""

    UP = "up"  #: we dial it (it is one of our servers)
    DOWN = "down"  #: it dials us (it is one of our clients)


#: What an instance answers when asked from below, by its own leaf agents.
CALLBACKS_FROM_LEAVES = frozenset(
    {
        "get_local_home_dir",
        "get_local_user_dirs",
        "get_local_project_dirs",
        "get_users",
        "get_project_mapping",
        "get_user_mapping",
    }
)


def is_above(me: AgentType, link: Link, peer_type: AgentType | None) -> bool:
    """Whether a neighbour on ``link`` (registered as ``peer_type``) is above ``me``."""
    if link is Link.UP:
        return True
    return me is AgentType.PORTAL and peer_type is AgentType.BRIDGE


def refusal(me: AgentType, link: Link, peer_type: AgentType | None, keyword: str) -> str | None:
    """Why a job with instruction ``keyword`` from this neighbour is refused, or ``None``."""
    if is_above(me, link, peer_type):
        return None
    if me is AgentType.INSTANCE and peer_type is not None and peer_type.is_leaf:
        if keyword in CALLBACKS_FROM_LEAVES:
            return None
        return (
            f"{me.display} agents answer only {', '.join(sorted(CALLBACKS_FROM_LEAVES))} "
            f"from their {peer_type.display} agent, not {keyword}"
        )
    who = peer_type.display if peer_type is not None else "unregistered"
    article = "an" if who[0] in "aeiou" else "a"
    return f"{me.display} agents do not accept {keyword} from below (from {article} {who} agent)"
