"""Slurm accounting through ``sacctmgr``, ``sacct`` and ``scancel`` (notes §5.6).

Rules (the reference's, with the deliberate differences marked):

* The account of a project is ``slurm_name(local_group)``, in organisation ``openportal``, with
  description ``Account for OpenPortal project <project>``, under ``parent_account``.  An
  existing account in any other organisation belongs to someone else: every call that would
  read or change it is refused with :class:`SchedulerError`.
* A user is ``slurm_name(local_user)``, associated with its project's account, which becomes
  its ``DefaultAccount``.  Users added to the same account while another ``sacctmgr`` change
  runs go in one ``sacctmgr add user name=a,b,...`` call (:mod:`.batches`); if that call
  fails, each is added on its own, so each job still gets its own result.
* Removing never deletes history.  ``remove_project`` cancels the account's pending jobs and
  keeps the account.  ``remove_user`` cancels the user's pending jobs in the account and
  removes that association (OpenPortal 0.32.2 only cancels jobs; we also remove the
  association so the user can no longer submit there).  Slurm drops the user itself once its
  last association is gone, and keeps the job records either way.  Slurm refuses to remove an
  association with running jobs; that is reported as an error, and a retry after the jobs end
  succeeds.  Cancelling is best effort (logged and skipped when ``scancel`` fails).
* ``set_limit`` writes ``GrpTRESMins`` from the default node's factors (see
  :class:`NodeFactors`); ``get_limit`` converts the stored value back, so ``set_limit`` returns
  what Slurm really holds (whole TRES-minutes: a limit that is not a whole number of minutes per
  unit comes back truncated).  A limit of zero clears the components (``-1``).
* Usage is **node-seconds of the default node**, as OpenPortal bills it: per job and day,
  ``ceil(seconds in that day x node fraction)`` (at least 1 for a job that ran), where the node
  fraction is the largest of allocated/node over cpu, gpu, mem and billing.  Days are UTC days
  (every Slurm client runs with ``TZ=UTC``, so sacct's input and output are UTC too).

Names are checked against :data:`broadgauge.agents.naming.RULE` before any command runs and
refused with :class:`SchedulerError`: ``sacctmgr`` reads ``,`` as a list and ``=`` as a key,
so ``name=x,root`` would act on ``root``, and a leading ``-`` would be an option.

Every command is an argument list, never a shell, bounded by ``timeout`` (they are run by
:mod:`.commands`); ``sacctmgr`` outcomes that mean "already so" count as success, so every
call is idempotent.  Reading TRES strings and sacct lines, and billing node-seconds, is
:mod:`.accounting`.
"""

from __future__ import annotations

import datetime as _dt
import logging
import time
from collections.abc import Callable, Mapping, Sequence

from broadgauge.grammar import DateRange, ProjectMapping, ProjectUsageReport, Usage, UserMapping

from .accounting import (
    DAY,
    SACCT_FORMAT,
    NodeFactors,
    SlurmJob,
    daily_reports,
    parse_sacct_line,
    parse_tres,
)
from .backend import (
    MANAGED_ORGANISATION,
    SchedulerError,
    account_description,
    account_name,
    first_cluster,
    owned,
    user_name,
)
from .batches import SacctmgrAdder, UserAdds
from .commands import SlurmCommands

__all__ = [
    "MANAGED_ORGANISATION",
    "NodeFactors",
    "SlurmJob",
    "SlurmScheduler",
    "daily_reports",
    "parse_sacct_line",
    "parse_tres",
]

log = logging.getLogger(__name__)


class SlurmScheduler:
    """:class:`~broadgauge.agents.scheduler.backend.SchedulerBackend` on Slurm accounting."""

    def __init__(
        self,
        *,
        cluster: str | None,
        default_node: NodeFactors,
        parent_account: str = "root",
        organisation: str = MANAGED_ORGANISATION,
        command_prefix: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        timeout: float = 30.0,
        audit: Callable[[str], None] | None = None,
        commands: Mapping[str, Sequence[str]] | None = None,
        max_runners: int = 5,
    ) -> None:
        """``commands`` overrides the ``sacctmgr``, ``sacct`` or ``scancel`` command lines;
        ``max_runners`` bounds concurrent commands (the reference's ``max-slurm-runners``)."""
        self._cluster = cluster
        self._node = default_node
        self._parent = parent_account
        # sacctmgr stores organisations lowercased, so compare that way.
        self._organisation = organisation.lower()
        self._audit = audit
        self._tools = SlurmCommands(
            command_prefix=command_prefix,
            env=env,
            timeout=timeout,
            commands=commands,
            max_runners=max_runners,
        )
        self._adds = UserAdds(SacctmgrAdder(self._tools))

    # ---- names -------------------------------------------------------------------------

    # Every call starts here, so a name sacctmgr would read as syntax (``name=x,root`` is a
    # list of two users) is refused before any command runs.  The rules are the ledger's
    # too, so they live in .backend.

    account_name = staticmethod(account_name)
    user_name = staticmethod(user_name)

    # ---- SchedulerBackend --------------------------------------------------------------

    async def add_project(self, project: ProjectMapping) -> None:
        """Create the project's account (idempotent; refused if someone else owns it)."""
        await self._ensure_account(project)

    async def remove_project(self, project: ProjectMapping) -> None:
        """Cancel the account's pending jobs; keep the account and its history."""
        account = self.account_name(project)
        if await self._managed(account):
            await self._cancel_pending(["-A", account], f"account {account}")

    async def add_user(self, user: UserMapping) -> None:
        """Associate the user with its project's account and make that its default."""
        name = self.user_name(user)  # before the account is made: a bad name changes nothing
        account = await self._ensure_account(user.project_mapping)
        cluster = await self.cluster()
        default, accounts = await self._user_associations(name, cluster)
        if account not in accounts:
            # Batched with other users' adds to this account that wait meanwhile; recorded
            # in this job's context, also if this job is cancelled while the call runs.
            await self._adds.add(
                name, account, cluster,
                on_added=lambda: self._record(f"added user {name} to account {account}"),
            )  # fmt: skip
            default, accounts = await self._user_associations(name, cluster)
            if account not in accounts:
                raise SchedulerError(f"sacctmgr did not associate {name} with {account}")
        if default != account:
            await self._set_default(name, cluster, account)

    async def remove_user(self, user: UserMapping) -> None:
        """Cancel the user's pending jobs in the account and remove the association."""
        account = self.account_name(user.project_mapping)
        name = self.user_name(user)
        if not await self._managed(account):
            return  # no account, so no association either
        await self._cancel_pending(["-u", name, "-A", account], f"user {name} in {account}")
        cluster = await self.cluster()
        try:
            removed = await self._change(
                f"removed user {name} from account {account}",
                "remove", "user", "where", f"name={name}", f"account={account}",
                f"cluster={cluster}",
            )  # fmt: skip
        except SchedulerError as exc:
            if "job(s) active" not in str(exc).lower():
                raise
            raise SchedulerError(
                f"{name} still has running jobs in {account}; Slurm removes the association "
                f"only once they finish (retry later): {exc}"
            ) from exc
        if removed:
            # Slurm leaves a user with remaining associations without a default; give it one.
            default, accounts = await self._user_associations(name, cluster)
            if accounts and default not in accounts:
                await self._set_default(name, cluster, sorted(accounts)[0])

    async def get_limit(self, project: ProjectMapping) -> Usage:
        """The account's GrpTRESMins as node-seconds (zero when none is set)."""
        account = await self._existing(project)
        return await self._read_limit(account, await self.cluster())

    async def set_limit(self, project: ProjectMapping, limit: Usage) -> Usage:
        """Write GrpTRESMins for ``limit`` node-seconds; return the limit read back."""
        account = await self._existing(project)
        cluster = await self.cluster()
        tres = self._node.grp_tres_mins(limit)
        await self._change(
            f"set GrpTRESMins={tres} on account {account}",
            "modify", "account", "where", f"name={account}", f"cluster={cluster}",
            "set", f"GrpTRESMins={tres}",
        )  # fmt: skip
        return await self._read_limit(account, cluster)

    async def get_usage_report(
        self, project: ProjectMapping, dates: DateRange
    ) -> ProjectUsageReport:
        """Per-day, per-user node-seconds from sacct (empty when the account does not exist)."""
        account = self.account_name(project)
        now = int(time.time())
        days = [day for day in dates.days() if day.days * DAY <= now]
        if not days or not await self._managed(account):
            return ProjectUsageReport(project.project)
        # Query from the first day to the end of the last (or now): sacct then returns
        # every allocation that overlapped the window, which we clip day by day.
        start = _iso(max(0, days[0].days * DAY))
        end = _iso(min((days[-1].days + 1) * DAY, now + 1))
        output = await self._tools.run(
            "sacct",
            ["-P", "-n", "-X", "-a", "-M", await self.cluster(), "-A", account,
             "-S", start, "-E", end, f"--format={SACCT_FORMAT}", "--noconvert"],
        )  # fmt: skip
        jobs = [job for job in map(parse_sacct_line, output.splitlines()) if job is not None]
        return ProjectUsageReport(project.project, daily_reports(jobs, days, self._node, now))

    async def settle(self) -> None:
        """Wait for batched ``sacctmgr`` calls already running, so their changes are
        recorded before the agent closes its audit log (see :class:`.batches.UserAdds`)."""
        await self._adds.settle()

    async def close(self) -> None:
        """Nothing to release: every command is a short-lived process."""

    # ---- helpers -----------------------------------------------------------------------

    async def cluster(self) -> str:
        """The configured cluster, else the first one slurmdbd knows (looked up once)."""
        if self._cluster is None:
            names = (await self._sacctmgr("list", "cluster", "format=Cluster")).split()
            self._cluster = first_cluster(names)
        return self._cluster

    async def _account(self, account: str) -> tuple[str, bool] | None:
        """(organisation, has an association on our cluster), or None when it does not exist."""
        cluster = await self.cluster()
        output = await self._sacctmgr(
            "list", "account", "withassoc", "where", f"name={account}", f"cluster={cluster}",
            "format=Account,Organization,Cluster,User",
        )  # fmt: skip
        found: tuple[str, bool] | None = None
        for line in output.splitlines():
            fields = line.split("|")
            if len(fields) >= 4 and fields[0] == account:
                # The account's own association is the row on our cluster without a user.
                on_cluster = fields[2] == cluster and not fields[3]
                found = (fields[1], on_cluster or (found is not None and found[1]))
        return found

    async def _managed(self, account: str) -> bool:
        """Whether ``account`` exists; refuses (raises) when another organisation owns it."""
        return await self._checked(account) is not None

    async def _checked(self, account: str) -> tuple[str, bool] | None:
        return owned(account, await self._account(account), self._organisation)

    async def _existing(self, project: ProjectMapping) -> str:
        account = self.account_name(project)
        if not await self._managed(account):
            raise SchedulerError(f"Slurm account {account} does not exist")
        return account

    async def _ensure_account(self, project: ProjectMapping) -> str:
        account = self.account_name(project)
        found = await self._checked(account)
        if found is None or not found[1]:
            # Also when the account exists for another cluster only: this adds ours.
            await self._change(
                f"added account {account} (parent {self._parent})",
                "add", "account", f"name={account}", f"cluster={await self.cluster()}",
                f"parent={self._parent}", f"organization={self._organisation}",
                f"description={account_description(project)}",
            )  # fmt: skip
            # sacctmgr may report success for an account slurmdbd then lost (a change racing
            # another writer): check, as add_user checks its association.
            found = await self._checked(account)
            if found is None or not found[1]:
                raise SchedulerError(f"sacctmgr did not create account {account}")
        return account

    async def _user_associations(self, name: str, cluster: str) -> tuple[str | None, set[str]]:
        """The user's default account and associated accounts on ``cluster``."""
        output = await self._sacctmgr(
            "list", "user", "withassoc", "where", f"name={name}", f"cluster={cluster}",
            "format=User,DefaultAccount,Account",
        )  # fmt: skip
        default: str | None = None
        accounts: set[str] = set()
        for line in output.splitlines():
            fields = line.split("|")
            if len(fields) >= 3 and fields[0] == name:
                default = fields[1] or None
                if fields[2]:
                    accounts.add(fields[2])
        return default, accounts

    async def _set_default(self, name: str, cluster: str, account: str) -> None:
        await self._change(
            f"set default account of {name} to {account}",
            "modify", "user", "where", f"name={name}", f"cluster={cluster}",
            "set", f"defaultaccount={account}",
        )  # fmt: skip

    async def _read_limit(self, account: str, cluster: str) -> Usage:
        output = await self._sacctmgr(
            "list", "assoc", "where", f"account={account}", f"cluster={cluster}",
            "format=Account,User,Partition,GrpTRESMins",
        )  # fmt: skip
        for line in output.splitlines():
            fields = line.split("|")
            # The account's own association is the row without a user or partition.
            if len(fields) >= 4 and fields[0] == account and not fields[1] and not fields[2]:
                return self._node.limit_from_tres(parse_tres(fields[3]))
        raise SchedulerError(f"Slurm account {account} has no association on {cluster}")

    async def _cancel_pending(self, selection: list[str], what: str) -> None:
        # Best effort, as in OpenPortal: a failure (no scancel here, a user unknown to the
        # system, a controller that is down) must not stop the removal.
        try:
            await self._tools.run("scancel", [*selection, "--state=PENDING"])
        except SchedulerError as exc:
            log.warning("could not cancel pending jobs of %s (skipped): %s", what, exc)
        else:
            self._record(f"cancelled any pending jobs of {what}")

    async def _sacctmgr(self, *args: str) -> str:
        return await self._tools.sacctmgr(*args)

    async def _change(self, description: str, *args: str) -> bool:
        """Run a sacctmgr change; True (and recorded) if it changed something, False if it
        was already so."""
        changed = await self._tools.change(*args)
        if changed:
            self._record(description)
        return changed

    def _record(self, description: str) -> None:
        log.info("slurm: %s", description)
        if self._audit is not None:
            self._audit(f"slurm {self._cluster or ''}: {description}")


def _iso(epoch: int) -> str:
    return _dt.datetime.fromtimestamp(epoch, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
