"""The embedded scheduler backend: a SQLite ledger that behaves like Slurm accounting.

For sites (and demos) without Slurm.  It keeps what ``slurmdbd`` would keep, with the same
names and rules as :mod:`.slurm`: accounts (``slurm_name`` of the project group, organisation
``openportal``), user associations with a default account, a compute limit per account, and
usage records.  Usage cannot come from jobs here, so :meth:`LedgerScheduler.record_usage` adds
it (node-seconds, like the Slurm backend's reports).

Every call is idempotent; an account registered for another organisation (see
:meth:`LedgerScheduler.register_site_account`) is refused exactly as in Slurm; removing a
user or project never deletes usage.  Days are UTC days, as in the Slurm backend.  Names are
refused exactly as in Slurm too (:func:`.backend.account_name`, :func:`.backend.user_name`),
before any write.
"""

from __future__ import annotations

import datetime as _dt
import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from broadgauge.agents._sqlite import SqliteFile
from broadgauge.grammar.calendar import Date
from broadgauge.grammar.identifiers import ProjectMapping, UserMapping
from broadgauge.grammar.reports import DailyProjectUsageReport, ProjectUsageReport
from broadgauge.grammar.values import DateRange, Usage

from . import backend

__all__ = ["LedgerScheduler"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    name TEXT PRIMARY KEY,
    organisation TEXT NOT NULL,
    description TEXT NOT NULL,
    parent TEXT NOT NULL,
    limit_seconds INTEGER NOT NULL DEFAULT 0,
    created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    default_account TEXT
);
CREATE TABLE IF NOT EXISTS associations (
    user TEXT NOT NULL,
    account TEXT NOT NULL,
    created TEXT NOT NULL,
    PRIMARY KEY (user, account)
);
CREATE TABLE IF NOT EXISTS usage (
    id INTEGER PRIMARY KEY,
    account TEXT NOT NULL,
    user TEXT NOT NULL,
    day INTEGER NOT NULL,  -- days since 1970-01-01 (UTC)
    seconds INTEGER NOT NULL,
    jobs INTEGER NOT NULL,
    wait_seconds INTEGER NOT NULL,
    recorded TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS usage_by_account_day ON usage (account, day);
"""


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _today() -> Date:
    return Date.from_python(_dt.datetime.now(_dt.UTC).date())


class LedgerScheduler:
    """:class:`~broadgauge.agents.scheduler.backend.SchedulerBackend` on a SQLite file."""

    def __init__(
        self,
        path: str | Path,
        *,
        audit: Callable[[str], None] | None = None,
        parent_account: str = "root",
    ) -> None:
        """Open (or create) the ledger at ``path`` (``":memory:"`` for a throwaway one)."""
        self._audit = audit
        self._parent = parent_account
        self._path = path
        self._file = SqliteFile(path, _SCHEMA, what="the scheduler ledger")

    # ---- plumbing ----------------------------------------------------------------------

    async def _call(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``work`` in one transaction on a worker thread.

        SQLite's own failures (the file still locked by another process when the busy
        timeout ends, a full disk) become :class:`~.backend.SchedulerError` naming the
        ledger, so the job's error says which back end failed and why.
        """
        try:
            return await self._file.transaction(work)
        except sqlite3.OperationalError as exc:
            raise backend.SchedulerError(f"the scheduler ledger {self._path}: {exc}") from exc

    def _record(self, description: str) -> None:
        log.info("ledger: %s", description)
        if self._audit is not None:
            self._audit(f"ledger: {description}")

    @staticmethod
    def _managed(db: sqlite3.Connection, account: str) -> bool:
        """Whether ``account`` exists; raises when another organisation owns it."""
        row = db.execute("SELECT organisation FROM accounts WHERE name = ?", (account,)).fetchone()
        if row is not None and row[0] != backend.MANAGED_ORGANISATION:
            raise backend.SchedulerError(
                f"account {account} belongs to organisation {row[0]!r}, "
                f"not {backend.MANAGED_ORGANISATION!r}: refusing to manage it"
            )
        return row is not None

    def _ensure_account(self, db: sqlite3.Connection, project: ProjectMapping) -> str:
        account = backend.account_name(project)
        if not self._managed(db, account):
            db.execute(
                "INSERT INTO accounts (name, organisation, description, parent, created)"
                " VALUES (?, ?, ?, ?, ?)",
                (
                    account,
                    backend.MANAGED_ORGANISATION,
                    backend.account_description(project),
                    self._parent,
                    _now(),
                ),
            )
            self._record(f"added account {account} (parent {self._parent})")
        return account

    def _existing(self, db: sqlite3.Connection, project: ProjectMapping) -> str:
        account = backend.account_name(project)
        if not self._managed(db, account):
            raise backend.SchedulerError(f"account {account} does not exist")
        return account

    def _set_default(self, db: sqlite3.Connection, user: str, account: str | None) -> None:
        db.execute(
            "INSERT INTO users (name, default_account) VALUES (?, ?)"
            " ON CONFLICT (name) DO UPDATE SET default_account = excluded.default_account",
            (user, account),
        )
        self._record(f"set default account of {user} to {account}")

    # ---- SchedulerBackend --------------------------------------------------------------

    async def add_project(self, project: ProjectMapping) -> None:
        """Create the project's account (idempotent; refused if someone else owns it)."""
        backend.account_name(project)
        await self._call(lambda db: self._ensure_account(db, project))

    async def remove_project(self, project: ProjectMapping) -> None:
        """Keep the account and its usage (the ledger runs no jobs to cancel)."""
        account = backend.account_name(project)
        await self._call(lambda db: self._managed(db, account))

    async def add_user(self, user: UserMapping) -> None:
        """Associate the user with its project's account and make that its default."""
        name = backend.user_name(user)
        backend.account_name(user.project_mapping)  # both names checked before the transaction

        def work(db: sqlite3.Connection) -> None:
            account = self._ensure_account(db, user.project_mapping)
            added = db.execute(
                "INSERT OR IGNORE INTO associations (user, account, created) VALUES (?, ?, ?)",
                (name, account, _now()),
            ).rowcount
            if added:
                self._record(f"added user {name} to account {account}")
            row = db.execute("SELECT default_account FROM users WHERE name = ?", (name,))
            current = row.fetchone()
            if current is None or current[0] != account:
                self._set_default(db, name, account)

        await self._call(work)

    async def remove_user(self, user: UserMapping) -> None:
        """Remove the user's association with the account (usage records stay)."""
        name = backend.user_name(user)
        account = backend.account_name(user.project_mapping)

        def work(db: sqlite3.Connection) -> None:
            if not self._managed(db, account):
                return
            removed = db.execute(
                "DELETE FROM associations WHERE user = ? AND account = ?", (name, account)
            ).rowcount
            if not removed:
                return
            self._record(f"removed user {name} from account {account}")
            remaining = [
                row[0]
                for row in db.execute(
                    "SELECT account FROM associations WHERE user = ? ORDER BY account", (name,)
                )
            ]
            default = db.execute("SELECT default_account FROM users WHERE name = ?", (name,))
            current = default.fetchone()
            if not remaining:
                # As Slurm: a user without associations is gone (its usage is not).
                db.execute("DELETE FROM users WHERE name = ?", (name,))
            elif current is None or current[0] not in remaining:
                self._set_default(db, name, remaining[0])

        await self._call(work)

    async def get_limit(self, project: ProjectMapping) -> Usage:
        """The account's limit (zero seconds when none is set)."""

        def work(db: sqlite3.Connection) -> Usage:
            account = self._existing(db, project)
            row = db.execute("SELECT limit_seconds FROM accounts WHERE name = ?", (account,))
            return Usage(row.fetchone()[0])

        return await self._call(work)

    async def set_limit(self, project: ProjectMapping, limit: Usage) -> Usage:
        """Store the limit (zero clears it); return what is stored."""

        def work(db: sqlite3.Connection) -> Usage:
            account = self._existing(db, project)
            changed = db.execute(
                "UPDATE accounts SET limit_seconds = ? WHERE name = ? AND limit_seconds != ?",
                (limit.seconds, account, limit.seconds),
            ).rowcount
            if changed:
                self._record(f"set limit of account {account} to {limit.seconds} s")
            row = db.execute("SELECT limit_seconds FROM accounts WHERE name = ?", (account,))
            return Usage(row.fetchone()[0])

        return await self._call(work)

    async def get_usage_report(
        self, project: ProjectMapping, dates: DateRange
    ) -> ProjectUsageReport:
        """Per-day, per-user usage; days after today are left out, past days are complete."""
        account = backend.account_name(project)
        today = _today()
        days = [day for day in dates.days() if day <= today]

        def work(db: sqlite3.Connection) -> list[Any] | None:
            if not days or not self._managed(db, account):
                return None
            return db.execute(
                "SELECT day, user, SUM(seconds), SUM(jobs), SUM(wait_seconds) FROM usage"
                " WHERE account = ? AND day BETWEEN ? AND ? GROUP BY day, user",
                (account, days[0].days, days[-1].days),
            ).fetchall()

        rows = await self._call(work)
        if rows is None:
            return ProjectUsageReport(project.project)
        by_day: dict[int, list[Any]] = {}
        for row in rows:
            by_day.setdefault(row[0], []).append(row)
        reports: dict[Date, DailyProjectUsageReport] = {}
        for day in days:
            entries = by_day.get(day.days, [])
            counts = {user: jobs for _, user, _, jobs, _ in entries if jobs}
            waits = {user: wait for _, user, _, jobs, wait in entries if jobs}
            reports[day] = DailyProjectUsageReport(
                reports={user: Usage(seconds) for _, user, seconds, _, _ in entries},
                user_job_counts=counts,
                user_wait_seconds=waits,
                num_jobs=sum(counts.values()),
                total_wait_seconds=sum(waits.values()),
                is_complete=day < today,
            )
        return ProjectUsageReport(project.project, reports)

    async def close(self) -> None:
        """Close the database."""
        self._file.close()

    # ---- ledger-only -------------------------------------------------------------------

    async def record_usage(
        self,
        user: UserMapping,
        day: Date | _dt.date,
        seconds: int | Usage,
        *,
        jobs: int = 1,
        wait_seconds: int = 0,
    ) -> None:
        """Add ``seconds`` of usage (node-seconds) by ``user`` in its account on ``day``.

        Usage may be recorded after the user was removed (a job that was still running),
        but not against an account that does not exist.
        """
        amount = seconds.seconds if isinstance(seconds, Usage) else seconds
        when = day if isinstance(day, Date) else Date.from_python(day)
        if amount < 0 or jobs < 0 or wait_seconds < 0:
            raise ValueError("usage, jobs and wait seconds cannot be negative")
        name = backend.user_name(user)

        def work(db: sqlite3.Connection) -> None:
            account = self._existing(db, user.project_mapping)
            db.execute(
                "INSERT INTO usage (account, user, day, seconds, jobs, wait_seconds, recorded)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (account, name, when.days, amount, jobs, wait_seconds, _now()),
            )

        await self._call(work)

    async def register_site_account(self, name: str, organisation: str) -> None:
        """Record an account the site already has (e.g. another organisation's, which the
        ledger must then refuse to manage, as Slurm's would be)."""

        def work(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT OR IGNORE INTO accounts (name, organisation, description, parent, created)"
                " VALUES (?, ?, '', ?, ?)",
                (name, organisation.lower(), self._parent, _now()),
            )

        await self._call(work)

    async def associations(self, account: str) -> dict[str, bool]:
        """The users associated with ``account``, each with whether it is their default."""

        def work(db: sqlite3.Connection) -> dict[str, bool]:
            rows = db.execute(
                "SELECT a.user, u.default_account = a.account FROM associations a"
                " LEFT JOIN users u ON u.name = a.user WHERE a.account = ? ORDER BY a.user",
                (account,),
            )
            return {user: bool(is_default) for user, is_default in rows}

        return await self._call(work)

    async def accounts(self) -> dict[str, str]:
        """Every account with its organisation."""

        def work(db: sqlite3.Connection) -> dict[str, str]:
            rows = db.execute("SELECT name, organisation FROM accounts ORDER BY name")
            return {name: organisation for name, organisation in rows}

        return await self._call(work)
