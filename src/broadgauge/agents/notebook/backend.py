"""The notebook backend interface: a JupyterHub through its REST API, or the embedded stand-in.

Names here are the hub's: a hub user is the Unix name of an identity
(:func:`broadgauge.agents.naming.user_name`, or the account agent's local user where the hub
authenticates against the site's accounts), and a project is a hub group named after the
project's Unix group.  Every call is idempotent: adding what exists, or removing what is
gone, succeeds.  A failure raises :class:`NotebookError` with the cause; no error message
and no log line ever holds the hub's API token.

A blocked user is a member of :data:`BLOCKED_GROUP`: blocking stops the user's servers, and
both the agent and the hub (through the ``pre_spawn_hook`` in ``docs/operators/notebooks.md``)
refuse to start new ones.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from typing import Protocol

from broadgauge.runtime.envelope import JobRefused

#: The hub group whose members may not start a server.
BLOCKED_GROUP = "broadgauge-blocked"


class NotebookError(JobRefused):
    """A notebook operation failed; the message says which and why (never the token).

    It is a refusal: the runtime sends the message back as the job's error.
    """


@dataclass(frozen=True)
class Server:
    """A user's running (or starting) default notebook server, as the hub reports it."""

    user: str
    #: when the hub started it (timezone-aware, UTC)
    started: _dt.datetime
    #: the hub's last record of activity on it (timezone-aware, UTC), if any
    last_activity: _dt.datetime | None
    #: the server's absolute URL (``<hub public URL>user/<name>/``)
    url: str
    #: whether the server answers (False while it is still spawning)
    ready: bool
    #: the hub groups of its user (which project the server time counts against)
    groups: tuple[str, ...] = ()


class NotebookBackend(Protocol):
    """Hub users, groups and servers of one notebook service."""

    #: the hub's public URL, ending in ``/`` (what a planner answers as the endpoint)
    url: str

    async def add_group(self, group: str) -> None:
        """Create the group (idempotent)."""
        ...

    async def remove_group(self, group: str) -> None:
        """Delete the group (idempotent; its users are kept)."""
        ...

    async def groups(self) -> list[str]:
        """Every group on the hub, sorted."""
        ...

    async def group_members(self, group: str) -> list[str] | None:
        """The hub users in ``group``, sorted; None when there is no such group."""
        ...

    async def add_user(self, user: str, group: str) -> None:
        """Create the hub user if missing and make it a member of ``group`` (idempotent).

        The group must exist (:class:`NotebookError` otherwise).
        """
        ...

    async def remove_user(self, user: str) -> None:
        """Stop the user's servers and delete the hub user (idempotent)."""
        ...

    async def user_exists(self, user: str) -> bool:
        """Whether the hub has ``user``."""
        ...

    async def set_blocked(self, user: str, blocked: bool) -> None:
        """Block (stop every server, join :data:`BLOCKED_GROUP`) or unblock (leave it)."""
        ...

    async def is_blocked(self, user: str) -> bool:
        """Whether ``user`` is in :data:`BLOCKED_GROUP`."""
        ...

    async def start_server(self, user: str) -> Server:
        """Start the user's default server and wait until it is ready; return it.

        Already running: returned as it is.  Blocked or unknown user: :class:`NotebookError`.
        """
        ...

    async def stop_server(self, user: str) -> None:
        """Stop the user's default server (idempotent)."""
        ...

    async def servers(self) -> list[Server]:
        """Every running or starting server on the hub."""
        ...

    async def close(self) -> None:
        """Release resources."""
        ...
