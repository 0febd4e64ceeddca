"""The account backend interface: what every directory (local, LDAP, FreeIPA) must do.

The account agent (:mod:`broadgauge.agents.accounts.agent`) turns instructions into these
calls.  Rules every backend follows (they are the reference's, notes §5.4):

* Names come from :mod:`broadgauge.agents.naming`: user ``<username>.<project>``, primary
  group ``<portal>.<project>``.  A name that breaks its rule (not a portable POSIX name, or
  longer than 32 characters) raises :class:`~broadgauge.agents.naming.UnportableName`, a
  refusal, before the directory is read or changed.
* **Managed** users are those in the ``openportal`` group.  A user that exists but is not
  managed, or whose name is in the configured protected list, is **protected**: every call
  that would change it returns its mapping and changes nothing.
* Every call is **idempotent**: adding what exists, or removing what is gone, succeeds and
  returns the same mapping.
* ``remove_user`` never deletes: it disables the account and removes it from the project's
  group, keeping the UID so a later ``add_user`` restores the same identity.
  ``remove_project`` keeps the group (and its GID) and removes every managed member.
* uid/gid numbers are allocated from a configured range without scanning the directory on
  each allocation.
* Each backend records what it did through ``audit`` (the backend operation, in words).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from broadgauge.grammar import (
    PortalIdentifier,
    ProjectIdentifier,
    ProjectMapping,
    UserIdentifier,
    UserMapping,
)
from broadgauge.runtime.envelope import JobRefused

#: Called with a short description of each change a backend makes (for the audit log).
AuditHook = Callable[[str], None]


class AccountError(JobRefused):
    """A backend operation failed; the message says what and why (no secrets).

    It is a refusal: the runtime sends the message back as the job's error, with no
    traceback, as it does for any job an agent declines.
    """


class AccountBackend(Protocol):
    """A directory of users and groups."""

    async def add_project(self, project: ProjectIdentifier) -> ProjectMapping:
        """Create the project's group (idempotent)."""
        ...

    async def remove_project(self, project: ProjectIdentifier) -> ProjectMapping:
        """Disable every managed member; keep the group."""
        ...

    async def get_projects(self, portal: PortalIdentifier) -> list[ProjectMapping]:
        """Every project group of ``portal``."""
        ...

    async def get_project_mapping(self, project: ProjectIdentifier) -> ProjectMapping:
        """The project's mapping (computed by the naming rules if it does not exist yet)."""
        ...

    async def is_existing_project(self, project: ProjectIdentifier) -> bool:
        """Whether the project's group exists."""
        ...

    async def add_user(self, user: UserIdentifier) -> UserMapping:
        """Create (or re-enable) the user in its project group; idempotent."""
        ...

    async def remove_user(self, user: UserIdentifier) -> UserMapping:
        """Disable the user and remove it from its project group; keep its UID."""
        ...

    async def get_users(self, project: ProjectIdentifier) -> list[UserMapping]:
        """The active (not removed) users of a project."""
        ...

    async def get_user_mapping(self, user: UserIdentifier) -> UserMapping:
        """The user's mapping (computed by the naming rules if it does not exist yet)."""
        ...

    async def is_existing_user(self, user: UserIdentifier) -> bool:
        """Whether the user exists and is active."""
        ...

    async def is_protected_user(self, user: UserIdentifier) -> bool:
        """Whether the user must never be changed by Broadgauge."""
        ...

    async def block_user(self, user: UserIdentifier) -> UserMapping:
        """Lock the account (it keeps its memberships)."""
        ...

    async def unblock_user(self, user: UserIdentifier) -> UserMapping:
        """Unlock the account."""
        ...

    async def is_blocked_user(self, user: UserIdentifier) -> bool:
        """Whether the account is locked."""
        ...

    async def update_homedir(self, user: UserIdentifier, homedir: str) -> str:
        """Set the user's home directory; return it."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...
