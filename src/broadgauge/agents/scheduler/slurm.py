"""Slurm accounting through ``sacctmgr``, ``sacct`` and ``scancel`` (notes §5.6).

Rules (the reference's, with the deliberate differences marked):

* The account of a project is ``slurm_name(local_group)``, in organisation ``openportal``, with
  description ``Account for OpenPortal project <project>``, under ``parent_account``.  An
  existing account in any other organisation belongs to someone else: every call that would
  read or change it is refused with :class:`SchedulerError`.
* A user is ``slurm_name(local_user)``, associated with its project's account, which becomes
  its ``DefaultAccount``.
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

Every command is an argument list run with :func:`asyncio.create_subprocess_exec` (never a
shell) behind an optional prefix (``nsenter --net=...``, ``ssh host``), bounded by ``timeout``;
on timeout its whole process group is killed.  ``sacctmgr`` outcomes that mean "already so"
(rc 1 with ``already exists``, ``Nothing new added``, ``Nothing modified``, ``Nothing
deleted``) count as success, so every call is idempotent.
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import datetime as _dt
import json
import logging
import math
import os
import signal
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from broadgauge.agents.naming import check_project_mapping, check_user_mapping, slurm_name
from broadgauge.grammar import (
    DailyProjectUsageReport,
    Date,
    DateRange,
    ProjectMapping,
    ProjectUsageReport,
    Usage,
    UserMapping,
)

from .backend import SchedulerError

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

MANAGED_ORGANISATION = "openportal"
_DAY = 86400
# sacctmgr says these (with rc=1) when the change is already in place.
_ALREADY = ("already exists", "nothing new added", "nothing modified", "nothing deleted")
_MEM_UNITS = {"K": Fraction(1, 1024), "M": Fraction(1), "G": Fraction(1024), "T": Fraction(1024**2)}
_SACCT_FORMAT = "JobID,User,Account,Start,End,ElapsedRaw,AllocTRES,State,Submit,Eligible"


@dataclass(frozen=True)
class NodeFactors:
    """The default node (the reference's ``slurm-default-node``): what one node holds.

    ``mem`` is in MB.  A component left at 0 is not part of the node: it is neither written
    to ``GrpTRESMins`` nor used for the node fraction.
    """

    cpus: int = 0
    mem: int = 0
    gpus: int = 0
    billing: int = 0

    def __post_init__(self) -> None:
        values = (self.cpus, self.mem, self.gpus, self.billing)
        if any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in values):
            raise ValueError(f"node factors must be whole numbers >= 0: {self}")
        if not any(values):
            raise ValueError("the default node must define cpus, mem, gpus or billing")

    @classmethod
    def from_json(cls, value: str | Mapping[str, Any]) -> NodeFactors:
        """Read ``{"cpus": 128, "mem": 256000, "gpus": 4, "billing": 128}`` (keys optional)."""
        data = json.loads(value) if isinstance(value, str) else value
        if not isinstance(data, Mapping):
            raise ValueError("slurm-default-node must be a JSON object")
        return cls(**{key: data.get(key, 0) for key in ("cpus", "mem", "gpus", "billing")})

    def factors(self) -> dict[str, int]:
        """TRES name -> amount per node, for the defined components, in GrpTRESMins order."""
        pairs = (("cpu", self.cpus), ("gres/gpu", self.gpus), ("mem", self.mem))
        return {name: amount for name, amount in (*pairs, ("billing", self.billing)) if amount}

    def grp_tres_mins(self, limit: Usage) -> str:
        """The ``GrpTRESMins`` value for a limit in node-seconds (zero clears: ``-1``)."""
        if limit.seconds == 0:
            return ",".join(f"{name}=-1" for name in self.factors())
        return ",".join(
            f"{name}={amount * limit.seconds // 60}" for name, amount in self.factors().items()
        )

    def limit_from_tres(self, tres: Mapping[str, int]) -> Usage:
        """Node-seconds from stored TRES-minutes: the first defined component present wins."""
        for name, amount in self.factors().items():
            if name in tres:
                return Usage(max(0, tres[name]) * 60 // amount)
        return Usage(0)

    def node_fraction(self, alloc: Mapping[str, int]) -> Fraction:
        """How much of one node an allocation holds (the largest per-component share)."""
        shares = (Fraction(alloc.get(name, 0), amount) for name, amount in self.factors().items())
        return max(shares, default=Fraction(0))


def parse_tres(text: str) -> dict[str, int]:
    """``billing=2,cpu=2,mem=1000M,gres/gpu=1`` -> amounts (mem in MB); junk is skipped."""
    result: dict[str, int] = {}
    for item in text.split(","):
        name, sep, raw = item.strip().partition("=")
        if not sep:
            continue
        unit = Fraction(1)
        if name == "mem" and raw[-1:].upper() in _MEM_UNITS:
            unit, raw = _MEM_UNITS[raw[-1].upper()], raw[:-1]
        try:
            result[name] = math.floor(Fraction(raw) * unit)
        except (ValueError, ZeroDivisionError):
            continue
    return result


@dataclass(frozen=True)
class SlurmJob:
    """One allocation as sacct reports it (times in UTC epoch seconds)."""

    job_id: str
    user: str
    start: int
    end: int | None  # None while running
    elapsed: int
    alloc: Mapping[str, int]
    queued_since: int | None  # Eligible, else Submit


def _epoch(text: str) -> int | None:
    """sacct's ``2026-11-23T11:00:30`` (UTC, because we run sacct with ``TZ=UTC``)."""
    try:
        moment = _dt.datetime.fromisoformat(text)
    except ValueError:
        return None  # "Unknown", "None"
    return calendar.timegm(moment.timetuple())


def parse_sacct_line(line: str) -> SlurmJob | None:
    """Parse one line of ``sacct -P -n --format=`` :data:`_SACCT_FORMAT`; None if unusable."""
    fields = line.split("|")
    if len(fields) < 10:
        return None
    job_id, user, _account, start, end, elapsed, alloc, _state, submit, eligible = fields[:10]
    started = _epoch(start)
    if started is None:
        return None  # never ran (pending, or cancelled while pending)
    try:
        seconds = int(elapsed)
    except ValueError:
        seconds = 0
    queued = _epoch(eligible)
    return SlurmJob(
        job_id=job_id,
        user=user,
        start=started,
        end=_epoch(end),
        elapsed=seconds,
        alloc=parse_tres(alloc),
        queued_since=queued if queued is not None else _epoch(submit),
    )


def daily_reports(
    jobs: Iterable[SlurmJob], days: Iterable[Date], node: NodeFactors, now: int
) -> dict[Date, DailyProjectUsageReport]:
    """Per-day, per-user usage in node-seconds; days that have not begun are left out.

    A job counts on every day it ran, clipped to that day; it adds to the job count and the
    wait time only on the day it started (wait = start - eligible, as OpenPortal).
    """
    job_list = list(jobs)
    result: dict[Date, DailyProjectUsageReport] = {}
    for day in days:
        day_start = day.days * _DAY
        if day_start > now:
            continue
        window_end = min(day_start + _DAY, now)
        usage: dict[str, int] = {}
        components: dict[str, dict[str, Usage]] = {}
        counts: dict[str, int] = {}
        waits: dict[str, int] = {}
        for job in job_list:
            if job.elapsed <= 0:
                continue  # as OpenPortal: a job that consumed nothing is not a consumer
            end = min(job.end if job.end is not None else now, window_end)
            seconds = end - max(job.start, day_start)
            if seconds <= 0:
                continue
            billed = math.ceil(seconds * node.node_fraction(job.alloc))
            usage[job.user] = usage.get(job.user, 0) + max(billed, 1)
            for name, tres in (("cpu", "cpu"), ("memory", "mem"), ("gpu", "gres/gpu")):
                _add_component(components, name, job.user, job.alloc.get(tres, 0) * seconds)
            _add_component(components, "billing", job.user, job.alloc.get("billing", 0) * seconds)
            if job.start >= day_start:
                counts[job.user] = counts.get(job.user, 0) + 1
                queued = job.queued_since if job.queued_since is not None else job.start
                waits[job.user] = waits.get(job.user, 0) + max(0, job.start - queued)
        result[day] = DailyProjectUsageReport(
            reports={user: Usage(seconds) for user, seconds in usage.items()},
            components=components,
            user_job_counts=counts,
            user_wait_seconds=waits,
            num_jobs=sum(counts.values()),
            total_wait_seconds=sum(waits.values()),
            is_complete=day_start + _DAY <= now,
        )
    return result


def _add_component(
    components: dict[str, dict[str, Usage]], name: str, user: str, seconds: int
) -> None:
    # As OpenPortal: zero contributions leave no entry.
    if seconds > 0:
        per_user = components.setdefault(name, {})
        per_user[user] = Usage(per_user.get(user, Usage(0)).seconds + seconds)


def _kill_group(process: asyncio.subprocess.Process) -> None:
    # The process leads its own session, so this also reaches anything it started
    # (a prefix such as `sh -c` or `ssh`), whose open pipes would otherwise hang wait().
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


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
        self._prefix = list(command_prefix)
        self._env = dict(env or {})
        self._timeout = timeout
        self._audit = audit
        self._commands = {name: [name] for name in ("sacctmgr", "sacct", "scancel")}
        self._commands.update({name: list(argv) for name, argv in (commands or {}).items()})
        self._runners = asyncio.Semaphore(max_runners)

    # ---- names -------------------------------------------------------------------------

    # Every call starts here, so a name sacctmgr would read as syntax (``name=x,root`` is a
    # list of two users) is refused before any command runs.

    @staticmethod
    def account_name(project: ProjectMapping) -> str:
        """The Slurm account of a project (:class:`SchedulerError` unless portable)."""
        check_project_mapping(project, SchedulerError)
        return slurm_name(project.local_group, "Slurm account", SchedulerError)

    @staticmethod
    def user_name(user: UserMapping) -> str:
        """The Slurm user of a mapping (:class:`SchedulerError` unless portable)."""
        check_user_mapping(user, SchedulerError)
        return slurm_name(user.local_user, "Slurm user", SchedulerError)

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
            await self._change(
                f"added user {name} to account {account}",
                "add", "user", f"name={name}", f"cluster={cluster}",
                f"account={account}", f"defaultaccount={account}",
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
        days = [day for day in dates.days() if day.days * _DAY <= now]
        if not days or not await self._managed(account):
            return ProjectUsageReport(project.project)
        # Query from the first day to the end of the last (or now): sacct then returns
        # every allocation that overlapped the window, which we clip day by day.
        start = _iso(max(0, days[0].days * _DAY))
        end = _iso(min((days[-1].days + 1) * _DAY, now + 1))
        output = await self._run(
            "sacct",
            ["-P", "-n", "-X", "-a", "-M", await self.cluster(), "-A", account,
             "-S", start, "-E", end, f"--format={_SACCT_FORMAT}", "--noconvert"],
        )  # fmt: skip
        jobs = [job for job in map(parse_sacct_line, output.splitlines()) if job is not None]
        return ProjectUsageReport(project.project, daily_reports(jobs, days, self._node, now))

    async def close(self) -> None:
        """Nothing to release: every command is a short-lived process."""

    # ---- helpers -----------------------------------------------------------------------

    async def cluster(self) -> str:
        """The configured cluster, else the first one slurmdbd knows (looked up once)."""
        if self._cluster is None:
            names = (await self._sacctmgr("list", "cluster", "format=Cluster")).split()
            if not names:
                raise SchedulerError("slurmdbd knows no cluster; configure slurm-cluster")
            self._cluster = names[0]
            log.info("using Slurm cluster %s", self._cluster)
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
        found = await self._account(account)
        if found is not None and found[0].lower() != self._organisation:
            raise SchedulerError(
                f"Slurm account {account} belongs to organisation {found[0]!r}, "
                f"not {self._organisation!r}: refusing to manage it"
            )
        return found

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
                f"description=Account for OpenPortal project {project.project}",
            )  # fmt: skip
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
            await self._run("scancel", [*selection, "--state=PENDING"])
        except SchedulerError as exc:
            log.warning("could not cancel pending jobs of %s (skipped): %s", what, exc)
        else:
            self._record(f"cancelled any pending jobs of {what}")

    async def _sacctmgr(self, *args: str) -> str:
        return await self._run("sacctmgr", ["-i", "-P", "-n", *args])

    async def _change(self, description: str, *args: str) -> bool:
        """Run a sacctmgr change; True if it changed something, False if it was already so."""
        command = ["-i", "-P", "-n", *args]
        code, _, text = await self._exec("sacctmgr", command)
        if code == 0:
            self._record(description)
            return True
        if code == 1 and any(phrase in text.lower() for phrase in _ALREADY):
            return False
        raise SchedulerError(f"`{self._shown('sacctmgr', command)}` failed (exit {code}): {text}")

    def _record(self, description: str) -> None:
        log.info("slurm: %s", description)
        if self._audit is not None:
            self._audit(f"slurm {self._cluster or ''}: {description}")

    def _shown(self, tool: str, args: Sequence[str]) -> str:
        return " ".join([*self._commands[tool], *args])

    async def _run(self, tool: str, args: Sequence[str]) -> str:
        """Run one command and return its stdout; any non-zero exit is an error."""
        code, stdout, text = await self._exec(tool, args)
        if code != 0:
            raise SchedulerError(f"`{self._shown(tool, args)}` failed (exit {code}): {text}")
        return stdout

    async def _exec(self, tool: str, args: Sequence[str]) -> tuple[int, str, str]:
        """Run one command: (exit code, stdout, stdout + stderr on one line, shortened)."""
        command = [*self._commands[tool], *args]
        shown = self._shown(tool, args)
        env = {**os.environ, **self._env, "TZ": "UTC"}
        async with self._runners:
            try:
                process = await asyncio.create_subprocess_exec(
                    *self._prefix,
                    *command,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                    env=env,
                    start_new_session=True,
                )
            except OSError as exc:
                raise SchedulerError(f"cannot run `{shown}`: {exc}") from exc
            try:
                out, err = await asyncio.wait_for(process.communicate(), self._timeout)
            except BaseException as exc:  # timeout or cancellation: leave nothing running
                _kill_group(process)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(process.wait(), 2.0)
                if isinstance(exc, TimeoutError):
                    raise SchedulerError(
                        f"`{shown}` timed out after {self._timeout:g} s (killed)"
                    ) from None
                raise
        stdout = out.decode(errors="replace")
        text = " ".join(f"{stdout} {err.decode(errors='replace')}".split())
        code = process.returncode if process.returncode is not None else -1
        return (code, stdout, text[:500])


def _iso(epoch: int) -> str:
    return _dt.datetime.fromtimestamp(epoch, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
