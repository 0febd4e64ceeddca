"""The quota engine interface, behind which the filesystem agent sets and reads quotas.

Two engines: the Linux ``setquota``/``repquota`` engine for real filesystems with quotas
enabled, and a SQLite ledger (the embedded default) that records limits and measures usage
by walking the directory.
"""

from __future__ import annotations

from typing import Protocol

from broadgauge.agents.naming import check_name
from broadgauge.grammar import Quota, QuotaLimit


class QuotaError(Exception):
    """A quota operation failed."""


def check_owner(owner: str, is_group: bool) -> str:
    """``owner`` if it is a portable name; :class:`QuotaError` naming the rule otherwise.

    Every engine calls this first: ``setquota -u -rf`` would read an option, and an
    all-digit name a uid or gid.
    """
    return check_name(owner, "quota group" if is_group else "quota user", error=QuotaError)


class QuotaEngine(Protocol):
    """Sets and reads limits for one volume.  ``owner`` is a Unix user or group name."""

    async def set_quota(self, path: str, owner: str, is_group: bool, limit: QuotaLimit) -> Quota:
        """Apply ``limit`` and return the resulting quota (with usage when known)."""
        ...

    async def get_quota(self, path: str, owner: str, is_group: bool) -> Quota:
        """The current quota (``unlimited`` if none is set)."""
        ...

    async def clear_quota(self, path: str, owner: str, is_group: bool) -> None:
        """Remove the limit."""
        ...
