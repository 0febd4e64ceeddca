"""Slurm accounting through slurmrestd (the reference's ``slurm-server`` mode, notes §2.3, §5.6).

The rules are those of :mod:`.slurm` (the sacctmgr engine): the same account and user names,
organisation ``openportal``, description and parent account, the user's project as its
``DefaultAccount``, ``GrpTRESMins`` from the default node's factors, usage in node-seconds of
the default node billed per UTC day, and removal that cancels pending jobs and keeps history.
The same scenario leaves the same associations and limits in slurmdbd through either engine
(``tests/scheduler/test_slurmrestd.py`` checks it).  Every slurmrestd error reaches the job
(the reference logs and swallows them on add and remove, notes §7.2).

It speaks ``openapi/v0.0.38`` and ``openapi/dbv0.0.38`` (:mod:`.rest`):

* account: ``GET /slurmdb/v0.0.38/account/{name}``; made with ``POST .../accounts`` and its
  association on the cluster with ``POST .../associations`` (``user: null``, ``parent_account``);
* user: ``GET .../user/{name}``; made with ``POST .../users`` and its association (and
  default) with ``POST .../associations`` (``is_default: 1``), both naming every user added to
  the same account meanwhile (:mod:`.batches`; each user is still checked on its own after);
  removed with ``DELETE .../association``, and the user itself once its last association is
  gone (``sacctmgr`` does the same);
* limit: read from ``GET .../associations?account=&cluster=`` (``max.tres.group.minutes``) and
  written with ``POST .../associations``;
* usage: ``GET .../jobs?account=&cluster=&start_time=&end_time=``;
* pending jobs: ``GET /slurm/v0.0.38/jobs``, then ``DELETE /slurm/v0.0.38/job/{id}`` (a job
  that cannot be cancelled is logged and skipped, as the sacctmgr engine's ``scancel``).

One Slurm 22.05 defect is worked around: slurmdbd skips a ``POST .../associations`` that changes
the limits of an account association when that account is the first child of its parent (it
tries to "move" it to where it already is and gives up, answering success).  ``set_limit``
therefore reads the limit back and, when it was not stored, writes it with ``sacctmgr`` (as the
reference always does in this mode) if a ``sacctmgr`` is configured, and otherwise fails.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import quote

from broadgauge.grammar import DateRange, ProjectMapping, ProjectUsageReport, Usage, UserMapping

from . import backend
from .accounting import DAY, NodeFactors, SlurmJob, daily_reports
from .batches import UserAdds
from .commands import SlurmCommands
from .rest import API_VERSION, SlurmRestClient

__all__ = ["RestAdder", "SlurmRestScheduler", "tres_from_rest", "tres_to_rest"]

log = logging.getLogger(__name__)

DB = f"/slurmdb/{API_VERSION}"
CTL = f"/slurm/{API_VERSION}"


def tres_to_rest(text: str) -> list[dict[str, Any]]:
    """``cpu=120,gres/gpu=60`` (:meth:`NodeFactors.grp_tres_mins`) -> slurmrestd's TRES list."""
    items: list[dict[str, Any]] = []
    for part in text.split(","):
        name, _, count = part.partition("=")
        kind, _, sub = name.partition("/")
        item: dict[str, Any] = {"type": kind, "count": int(count)}
        if sub:
            item["name"] = sub
        items.append(item)
    return items


def tres_from_rest(items: object) -> dict[str, int]:
    """slurmrestd's TRES list -> ``{"cpu": 1, "gres/gpu": 2, "mem": 1000}`` (junk skipped)."""
    result: dict[str, int] = {}
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        kind, name, count = item.get("type"), item.get("name"), item.get("count")
        if not isinstance(kind, str) or not isinstance(count, int):
            continue
        result[f"{kind}/{name}" if name else kind] = count
    return result


class SlurmRestScheduler:
    """:class:`~broadgauge.agents.scheduler.backend.SchedulerBackend` on slurmrestd."""

    def __init__(
        self,
        client: SlurmRestClient,
        *,
        cluster: str | None,
        default_node: NodeFactors,
        parent_account: str = "root",
        organisation: str = backend.MANAGED_ORGANISATION,
        audit: Callable[[str], None] | None = None,
        sacctmgr: SlurmCommands | None = None,
    ) -> None:
        """``sacctmgr`` writes limits that slurmrestd 22.05 skipped (see the module doc)."""
        self._rest = client
        self._cluster = cluster
        self._node = default_node
        self._parent = parent_account
        self._organisation = organisation.lower()
        self._audit = audit
        self._sacctmgr = sacctmgr
        self._adds = UserAdds(RestAdder(client))

    # ---- SchedulerBackend --------------------------------------------------------------

    async def add_project(self, project: ProjectMapping) -> None:
        """Create the project's account (idempotent; refused if someone else owns it)."""
        await self._ensure_account(project)

    async def remove_project(self, project: ProjectMapping) -> None:
        """Cancel the account's pending jobs; keep the account and its history."""
        account = backend.account_name(project)
        if await self._checked(account) is not None:
            await self._cancel_pending(account, None)

    async def add_user(self, user: UserMapping) -> None:
        """Associate the user with its project's account and make that its default."""
        name = backend.user_name(user)  # before the account is made: a bad name changes nothing
        account = await self._ensure_account(user.project_mapping)
        cluster = await self.cluster()
        default, accounts = _associations(await self._user(name), cluster)
        if account not in accounts or default != account:
            # Batched with other users' adds to this account that wait meanwhile; recorded
            # in this job's context, also if this job is cancelled while the change runs.
            new = account not in accounts
            await self._adds.add(
                name, account, cluster,
                on_added=(lambda: self._record(f"added user {name} to account {account}"))
                if new else None,
            )  # fmt: skip
            default, accounts = _associations(await self._user(name), cluster)
            if account not in accounts or default != account:
                raise backend.SchedulerError(
                    f"slurmrestd did not associate {name} with {account} as its default"
                )

    async def remove_user(self, user: UserMapping) -> None:
        """Cancel the user's pending jobs in the account and remove the association."""
        account = backend.account_name(user.project_mapping)
        name = backend.user_name(user)
        if await self._checked(account) is None:
            return  # no account, so no association either
        await self._cancel_pending(account, name)
        cluster = await self.cluster()
        try:
            answer = await self._rest.request(
                "DELETE",
                f"{DB}/association",
                {"account": account, "user": name, "cluster": cluster},
            )
        except backend.SchedulerError as exc:
            if "running" not in str(exc).lower() and "active" not in str(exc).lower():
                raise
            raise backend.SchedulerError(
                f"{name} still has running jobs in {account}; Slurm removes the association "
                f"only once they finish (retry later): {exc}"
            ) from exc
        if not answer.get("removed_associations"):
            return  # 304: there was none
        self._record(f"removed user {name} from account {account}")
        found = await self._user(name)
        default, accounts = _associations(found, cluster)
        if found is not None and not _all_associations(found):
            # As sacctmgr does: a user without associations is removed (history is kept).
            await self._rest.request("DELETE", f"{DB}/user/{quote(name, safe='')}")
        elif accounts and default not in accounts:
            # Slurm leaves the user without a default; give it one, as the sacctmgr engine.
            await self._rest.post(
                f"{DB}/associations",
                {"associations": [
                    {"account": sorted(accounts)[0], "cluster": cluster, "user": name,
                     "is_default": 1}
                ]},
            )  # fmt: skip

    async def get_limit(self, project: ProjectMapping) -> Usage:
        """The account's GrpTRESMins as node-seconds (zero when none is set)."""
        account = await self._existing(project)
        return self._node.limit_from_tres(await self._stored_tres(account))

    async def set_limit(self, project: ProjectMapping, limit: Usage) -> Usage:
        """Write GrpTRESMins for ``limit`` node-seconds; return the limit read back."""
        account = await self._existing(project)
        cluster = await self.cluster()
        tres = self._node.grp_tres_mins(limit)
        before = await self._stored_tres(account)
        await self._rest.post(
            f"{DB}/associations",
            {"associations": [
                {"account": account, "cluster": cluster, "user": "",
                 "max": {"tres": {"group": {"minutes": tres_to_rest(tres)}}}}
            ]},
        )  # fmt: skip
        stored = await self._stored_tres(account)
        if not _holds(stored, tres):
            await self._write_with_sacctmgr(account, cluster, tres)
            stored = await self._stored_tres(account)
            if not _holds(stored, tres):
                raise backend.SchedulerError(f"Slurm did not store GrpTRESMins={tres} on {account}")
        if stored != before:
            self._record(f"set GrpTRESMins={tres} on account {account}")
        return self._node.limit_from_tres(stored)

    async def get_usage_report(
        self, project: ProjectMapping, dates: DateRange
    ) -> ProjectUsageReport:
        """Per-day, per-user node-seconds from slurmdbd's jobs (empty without the account)."""
        account = backend.account_name(project)
        now = int(time.time())
        days = [day for day in dates.days() if day.days * DAY <= now]
        if not days or await self._checked(account) is None:
            return ProjectUsageReport(project.project)
        # slurmrestd reads times in its own time zone, so ask with a day to spare either side
        # and clip by the epoch times it answers with (daily_reports bills each day exactly).
        start = max(0, days[0].days * DAY - DAY)
        end = min((days[-1].days + 2) * DAY, now + DAY)
        answer = await self._rest.request(
            "GET", f"{DB}/jobs",
            {"account": account, "cluster": await self.cluster(),
             "start_time": _local(start), "end_time": _local(end)},
            missing_ok=True,
        )  # fmt: skip
        jobs = [job for job in map(_job, _list(answer, "jobs")) if job is not None]
        return ProjectUsageReport(project.project, daily_reports(jobs, days, self._node, now))

    async def settle(self) -> None:
        """Wait for the changes adding users that are still running, so that they are
        recorded before the agent closes its audit log (see :class:`.batches.UserAdds`)."""
        await self._adds.settle()

    async def close(self) -> None:
        """Close the HTTP connections."""
        await self._rest.close()

    # ---- helpers -----------------------------------------------------------------------

    async def cluster(self) -> str:
        """The configured cluster, else the first one slurmdbd knows (looked up once)."""
        if self._cluster is None:
            clusters = _list(await self._rest.request("GET", f"{DB}/clusters"), "clusters")
            names = [c["name"] for c in clusters if isinstance(c.get("name"), str)]
            self._cluster = backend.first_cluster(names)
        return self._cluster

    async def _account(self, account: str) -> tuple[str, bool] | None:
        """(organisation, has an association on our cluster), or None when it does not exist."""
        answer = await self._rest.request(
            "GET", f"{DB}/account/{quote(account, safe='')}", missing_ok=True
        )
        found = [a for a in _list(answer, "accounts") if a.get("name") == account]
        if not found:
            return None
        organisation = found[0].get("organization")
        return (
            organisation if isinstance(organisation, str) else "",
            bool(await self._own_association(account)),
        )

    async def _own_association(self, account: str) -> dict[str, Any] | None:
        """The account's own association on our cluster (no user, no partition)."""
        answer = await self._rest.request(
            "GET", f"{DB}/associations", {"account": account, "cluster": await self.cluster()},
            missing_ok=True,
        )  # fmt: skip
        for assoc in _list(answer, "associations"):
            mine = assoc.get("account") == account
            if mine and not assoc.get("user") and not assoc.get("partition"):
                return assoc
        return None

    async def _checked(self, account: str) -> tuple[str, bool] | None:
        """:meth:`_account`, refused (raised) when another organisation owns it."""
        return backend.owned(account, await self._account(account), self._organisation)

    async def _existing(self, project: ProjectMapping) -> str:
        account = backend.account_name(project)
        if await self._checked(account) is None:
            raise backend.SchedulerError(f"Slurm account {account} does not exist")
        return account

    async def _ensure_account(self, project: ProjectMapping) -> str:
        account = backend.account_name(project)
        found = await self._checked(account)
        if found is None:
            await self._rest.post(
                f"{DB}/accounts",
                {"accounts": [
                    # sacctmgr lowercases what it stores; so must we, for the same result.
                    {"name": account, "description": backend.account_description(project).lower(),
                     "organization": self._organisation}
                ]},
            )  # fmt: skip
        if found is None or not found[1]:
            # Also when the account exists for another cluster only: this adds ours.  An
            # explicit null user makes it the account's association (an empty one does not).
            await self._rest.post(
                f"{DB}/associations",
                {"associations": [
                    {"account": account, "cluster": await self.cluster(),
                     "parent_account": self._parent, "user": None}
                ]},
            )  # fmt: skip
            if await self._own_association(account) is None:
                raise backend.SchedulerError(f"slurmrestd did not add account {account}")
            self._record(f"added account {account} (parent {self._parent})")
        return account

    async def _user(self, name: str) -> dict[str, Any] | None:
        answer = await self._rest.request(
            "GET", f"{DB}/user/{quote(name, safe='')}", missing_ok=True
        )
        found = [u for u in _list(answer, "users") if u.get("name") == name]
        return found[0] if found else None

    async def _stored_tres(self, account: str) -> dict[str, int]:
        assoc = await self._own_association(account)
        if assoc is None:
            raise backend.SchedulerError(
                f"Slurm account {account} has no association on {self._cluster}"
            )
        group = _dig(assoc, "max", "tres", "group")
        return tres_from_rest(group.get("minutes") if isinstance(group, dict) else None)

    async def _write_with_sacctmgr(self, account: str, cluster: str, tres: str) -> None:
        if self._sacctmgr is None:
            raise backend.SchedulerError(
                f"slurmrestd answered success but did not store GrpTRESMins={tres} on "
                f"{account} (a Slurm 22.05 slurmdbd defect); configure sacctmgr to write it"
            )
        log.warning("slurmrestd skipped GrpTRESMins on %s; writing it with sacctmgr", account)
        await self._sacctmgr.change(
            "modify", "account", "where", f"name={account}", f"cluster={cluster}",
            "set", f"GrpTRESMins={tres}",
        )  # fmt: skip

    async def _cancel_pending(self, account: str, user: str | None) -> None:
        what = f"user {user} in {account}" if user else f"account {account}"
        jobs = _list(await self._rest.request("GET", f"{CTL}/jobs"), "jobs")
        cancelled = 0
        for job in jobs:
            if job.get("job_state") != "PENDING" or job.get("account") != account:
                continue
            if user is not None and job.get("user_name") != user:
                continue
            try:
                await self._rest.request("DELETE", f"{CTL}/job/{int(job['job_id'])}")
            except backend.SchedulerError as exc:
                # As the sacctmgr engine's scancel: one job that could not be cancelled (it
                # started or ended meanwhile) does not stop the removal; listing failures do.
                log.warning("could not cancel pending job %s of %s: %s", job["job_id"], what, exc)
                continue
            cancelled += 1
        if cancelled:
            self._record(f"cancelled {cancelled} pending jobs of {what}")

    def _record(self, description: str) -> None:
        log.info("slurmrestd: %s", description)
        if self._audit is not None:
            self._audit(f"slurm {self._cluster or ''}: {description}")


class RestAdder:
    """:class:`~.batches.UserAdder` with one ``POST .../users`` and one
    ``POST .../associations`` for all the users of a change.

    The users are posted first, whether they exist or not (slurmdbd takes an existing one
    as nothing new): slurmrestd answers success to an association of a user it does not
    know, and makes none.  A request naming one user slurmdbd refuses fails whole, and
    changes nothing.
    """

    def __init__(self, rest: SlurmRestClient) -> None:
        self._rest = rest

    async def add_when_due(
        self, names: Callable[[], Sequence[str]], account: str, cluster: str
    ) -> bool:
        """See :meth:`.batches.UserAdder.add_when_due` (always True: slurmrestd does not
        say whether anything changed; callers look before they add)."""

        def requests() -> list[tuple[str, Mapping[str, Any]]]:
            users = names()
            return [
                (f"{DB}/users", {"users": [{"name": name} for name in users]}),
                (f"{DB}/associations", {"associations": [
                    {"account": account, "cluster": cluster, "user": name, "is_default": 1}
                    for name in users
                ]}),
            ]  # fmt: skip

        await self._rest.post_all_when_due(requests)
        return True

    async def add_one(self, name: str, account: str, cluster: str) -> bool:
        """See :meth:`.batches.UserAdder.add_one`."""
        return await self.add_when_due(lambda: [name], account, cluster)


def _dig(data: Mapping[str, Any], *keys: str) -> Any:
    value: Any = data
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _list(answer: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
    """The objects of ``answer[key]``, or an error naming the malformed answer."""
    value = answer.get(key, [])
    if not isinstance(value, list):
        raise backend.SchedulerError(f"slurmrestd answered malformed JSON: {key!r} is not a list")
    return [item for item in value if isinstance(item, dict)]


def _all_associations(user: Mapping[str, Any]) -> list[Any]:
    value = user.get("associations")
    return value if isinstance(value, list) else []


def _associations(user: Mapping[str, Any] | None, cluster: str) -> tuple[str | None, set[str]]:
    """The user's default account and its accounts on ``cluster``."""
    if user is None:
        return None, set()
    accounts = {
        a["account"]
        for a in _all_associations(user)
        if isinstance(a, dict) and a.get("cluster") == cluster and isinstance(a.get("account"), str)
    }
    default = _dig(user, "default", "account")
    return (default if isinstance(default, str) and default else None), accounts


def _holds(stored: Mapping[str, int], tres: str) -> bool:
    """Whether ``stored`` is what writing ``tres`` leaves (``-1`` clears a component)."""
    for name, count in tres_from_rest(tres_to_rest(tres)).items():
        if (count < 0 and name in stored) or (count >= 0 and stored.get(name) != count):
            return False
    return True


def _local(epoch: int) -> str:
    """``epoch`` as slurmrestd reads a time: relative to now, so free of its time zone."""
    offset = int(time.time()) - epoch
    return f"now-{offset}seconds" if offset >= 0 else f"now+{-offset}seconds"


def _job(data: Mapping[str, Any]) -> SlurmJob | None:
    """One allocation of ``GET .../jobs`` as :class:`SlurmJob`; None if it never ran."""
    times = data.get("time")
    if not isinstance(times, dict):
        return None
    start, end = times.get("start"), times.get("end")
    if not isinstance(start, int) or start <= 0:
        return None  # never ran (pending, or cancelled while pending)
    elapsed = times.get("elapsed")
    eligible, submitted = times.get("eligible"), times.get("submission")
    queued = eligible if isinstance(eligible, int) and eligible > 0 else submitted
    return SlurmJob(
        job_id=str(data.get("job_id", "")),
        user=str(data.get("user", "")),
        start=start,
        end=end if isinstance(end, int) and end > 0 else None,
        elapsed=elapsed if isinstance(elapsed, int) else 0,
        alloc=tres_from_rest(_dig(data, "tres", "allocated")),
        queued_since=queued if isinstance(queued, int) and queued > 0 else None,
    )
