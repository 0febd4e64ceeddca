"""The scheduler backend interface: Slurm accounting, or the embedded ledger.

Rules (notes §5.6): the Slurm account of a project is :func:`naming.slurm_name` of its
group, in organisation ``openportal``, under a configured parent account; a user is
associated with its project's account and given it as default.  Removing never deletes
history: it cancels the user's or account's pending jobs and removes the association.
Every call is idempotent ("already exists" and "Nothing modified" are successes) and
bounded by a per-call timeout.
"""

from __future__ import annotations

import logging
from typing import Protocol

from broadgauge.agents.naming import check_project_mapping, check_user_mapping, slurm_name
from broadgauge.grammar import DateRange, ProjectMapping, ProjectUsageReport, Usage, UserMapping
from broadgauge.runtime.envelope import JobRefused

#: The organisation of every account Broadgauge makes; it manages no other.
MANAGED_ORGANISATION = "openportal"

log = logging.getLogger(__name__)


class SchedulerError(JobRefused):
    """A scheduler operation failed; the message says which command and why.

    It is a refusal: the runtime sends the message back as the job's error.
    """


def account_name(project: ProjectMapping) -> str:
    """The Slurm account of a project (:class:`SchedulerError` unless portable)."""
    check_project_mapping(project, SchedulerError)
    return slurm_name(project.local_group, "Slurm account", SchedulerError)


def user_name(user: UserMapping) -> str:
    """The Slurm user of a mapping (:class:`SchedulerError` unless portable)."""
    check_user_mapping(user, SchedulerError)
    return slurm_name(user.local_user, "Slurm user", SchedulerError)


def account_description(project: ProjectMapping) -> str:
    """The description of a project's account."""
    return f"Account for OpenPortal project {project.project}"


def owned(
    account: str, found: tuple[str, bool] | None, organisation: str
) -> tuple[str, bool] | None:
    """``found`` (``account``'s organisation and more), refused if another organisation owns it.

    Both Slurm engines ask this before they read or change an account.
    """
    if found is not None and found[0].lower() != organisation:
        raise SchedulerError(
            f"Slurm account {account} belongs to organisation {found[0]!r}, "
            f"not {organisation!r}: refusing to manage it"
        )
    return found


class SchedulerBackend(Protocol):
    """Accounts, associations, limits and usage of one cluster."""

    async def add_project(self, project: ProjectMapping) -> None:
        """Create the project's account (idempotent)."""
        ...

    async def remove_project(self, project: ProjectMapping) -> None:
        """Cancel the account's pending jobs; keep the account and its history."""
        ...

    async def add_user(self, user: UserMapping) -> None:
        """Associate the user with its project's account, as its default (idempotent)."""
        ...

    async def remove_user(self, user: UserMapping) -> None:
        """Cancel the user's jobs in the account and remove the association (idempotent)."""
        ...

    async def get_limit(self, project: ProjectMapping) -> Usage:
        """The account's compute limit (zero seconds when none is set)."""
        ...

    async def set_limit(self, project: ProjectMapping, limit: Usage) -> Usage:
        """Set the account's compute limit (GrpTRESMins in Slurm); return what is stored."""
        ...

    async def get_usage_report(
        self, project: ProjectMapping, dates: DateRange
    ) -> ProjectUsageReport:
        """Per-day, per-user usage of the account over ``dates``."""
        ...

    async def close(self) -> None:
        """Release resources."""
        ...


def first_cluster(names: list[str]) -> str:
    """The cluster an engine with no ``slurm-cluster`` uses: the first slurmdbd knows."""
    if not names:
        raise SchedulerError("slurmdbd knows no cluster; configure slurm-cluster")
    log.info("using Slurm cluster %s", names[0])
    return names[0]
