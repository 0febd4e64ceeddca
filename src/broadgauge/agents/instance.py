"""The instance agent (a cluster): where instructions become accounts, directories and limits.

The instance does no privileged work itself.  It turns each instruction into two-hop jobs for
its own account, filesystem and scheduler agents (``cluster.account add_user …``) and waits
for each answer.  What happens on each instruction, in order:

``add_user U``
    protected users are returned untouched, blocked ones too (never re-enabled here);
    otherwise: 1. mappings (the account agent's ``add_project`` gives the project group);
    2. account ``add_user`` gives the user's mapping ``M``;
    3. filesystem ``add_local_user M`` makes the project and home directories, and the account
    learns the home directory (``update_homedir``);
    4. scheduler ``add_local_project`` and ``add_local_user M`` add the association.
    If a step fails and the user did not exist before, the finished steps are undone.
``remove_user U``
    the same in reverse: scheduler, then filesystem, then account.  Protected users are
    returned untouched.
``add_project`` / ``remove_project``
    account group, project directories and scheduler account (in reverse to remove, after
    removing every remaining member).
``block_user``, ``unblock_user``, ``block_project``, ``unblock_project``, ``is_blocked_*``
    through the account agent (project forms act on each member).
limits, quotas, directories, usage and storage reports
    resolve the mapping through the account agent, then ask the scheduler or filesystem.

Unlike OpenPortal 0.32.2, a scheduler failure fails the instruction (it does not pass
silently), and clearing a quota succeeds with no result.

Before any of this, every user, project and portal an instruction names is checked against
the rule of the back ends (:mod:`broadgauge.agents.naming`): a name that breaks it ends the
job in an error naming the rule, and no account, directory or association is touched.
Then every leaf agent the instruction needs (:mod:`broadgauge.agents.leaves`) must be
connected, again before any back end is asked anything: one that is not linked at all ends
the job at once in an error naming the missing role and how to link it; one that is linked
but away is waited for (up to 10 s, logged).  OpenPortal only finds out half-way through,
after the account agent has made the account.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from broadgauge.agents._envelope import instruction_of, notify_portal
from broadgauge.agents.leaves import (
    ACCOUNT_QUESTIONS,
    FILESYSTEM_QUESTIONS,
    REQUIRED_AGENTS,
    LeafAgents,
)
from broadgauge.agents.naming import (
    check_instruction,
    check_project_mapping,
    check_user_mapping,
)
from broadgauge.grammar import (
    DateRange,
    PortalIdentifier,
    ProjectIdentifier,
    ProjectMapping,
    ProjectStorageReport,
    ProjectUsageReport,
    StorageReport,
    UsageReport,
    UserIdentifier,
    UserMapping,
)
from broadgauge.grammar import instructions as ins
from broadgauge.jobs.agent_type import AgentType
from broadgauge.jobs.notification import EventKind
from broadgauge.runtime.agent import Agent, Envelope, JobFailed, JobRefused, Typed
from broadgauge.wire import PeerId

log = logging.getLogger("broadgauge.agents.instance")

#: A project's report, as the instance's local agents give it.
_R = TypeVar("_R", ProjectUsageReport, ProjectStorageReport)
#: Who gives each kind of report, and the instruction that asks for it.
_LOCAL_REPORTS: dict[type, tuple[AgentType, str]] = {
    ProjectUsageReport: (AgentType.SCHEDULER, "get_local_usage_report"),
    ProjectStorageReport: (AgentType.FILESYSTEM, "get_local_storage_report"),
}

SUBJOB_TIMEOUT = 60.0


class Instance:
    """The business rules of an instance agent, registered as handlers on ``agent``."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.leaves = LeafAgents(agent)
        handlers: dict[str, Callable[[Envelope], Awaitable[object]]] = {
            "add_user": self.add_user,
            "remove_user": self.remove_user,
            "add_project": self.add_project,
            "remove_project": self.remove_project,
            "block_user": self.block_user,
            "unblock_user": self.unblock_user,
            "block_project": self.block_project,
            "unblock_project": self.unblock_project,
            "is_blocked_project": self.is_blocked_project,
            "set_limit": self.set_limit,
            "get_limit": self.get_limit,
            "get_usage_report": self.get_usage_report,
            "get_usage_reports": self.get_usage_reports,
            "get_storage_report": self.get_storage_report,
            "get_storage_reports": self.get_storage_reports,
            "get_home_dir": self.get_home_dir,
            "get_user_dirs": self.get_user_dirs,
            "get_project_dirs": self.get_project_dirs,
        }
        for keyword in ACCOUNT_QUESTIONS:
            handlers[keyword] = self._delegate(AgentType.ACCOUNT)
        for keyword in FILESYSTEM_QUESTIONS:
            handlers[keyword] = self._delegate(AgentType.FILESYSTEM)
        for keyword in ("project", "user"):
            for verb in ("set", "get", "clear"):
                handlers[f"{verb}_{keyword}_quota"] = self.quota
            handlers[f"get_{keyword}_quotas"] = self.quota
        for keyword, handler in handlers.items():
            agent.add_handler(keyword, self._checked(handler))

    def _checked(
        self, handler: Callable[[Envelope], Awaitable[object]]
    ) -> Callable[[Envelope], Awaitable[object]]:
        """``handler``, run only once the names passed the rule and its agents are here."""

        async def run(envelope: Envelope) -> object:
            # Here, not in each handler: no handler may ask a back end about a bad name, or
            # start work that a missing agent would leave half done (the account, filesystem
            # and scheduler would each act, then need undoing).
            instruction = envelope.job.instruction
            check_instruction(instruction)
            await self.leaves.require(REQUIRED_AGENTS.get(instruction.keyword, ()))
            return await handler(envelope)

        return run

    # --- asking our own agents ---------------------------------------------------------

    async def leaf(self, role: AgentType) -> PeerId:
        """Our connected ``role`` agent; :class:`JobRefused` at once if there is none."""
        return await self.leaves.leaf(role)

    async def ask(self, role: AgentType, instruction: str) -> object:
        """Run ``instruction`` on our ``role`` agent and return its decoded result."""
        peer = await self.leaf(role)
        job = await self.agent.run(
            f"{self.agent.name}.{peer.name}", instruction, timeout=SUBJOB_TIMEOUT
        )
        return job.result_value()

    def _delegate(self, role: AgentType) -> Callable[[Envelope], Awaitable[object]]:
        async def delegate(envelope: Envelope) -> object:
            peer = await self.leaf(role)
            return await self.agent.run(
                f"{self.agent.name}.{peer.name}",
                envelope.job.command.instruction_text,
                timeout=SUBJOB_TIMEOUT,
            )

        return delegate

    async def _account_bool(self, instruction: str) -> bool:
        return bool(await self.ask(AgentType.ACCOUNT, instruction))

    async def user_mapping(self, user: UserIdentifier) -> UserMapping:
        """The account agent's mapping of ``user``."""
        mapping = await self.ask(AgentType.ACCOUNT, f"get_user_mapping {user}")
        assert isinstance(mapping, UserMapping)
        # The account back end chose these names: check them before other agents use them.
        return check_user_mapping(mapping)

    async def project_mapping(self, project: ProjectIdentifier) -> ProjectMapping:
        """The account agent's mapping of ``project``."""
        mapping = await self.ask(AgentType.ACCOUNT, f"get_project_mapping {project}")
        assert isinstance(mapping, ProjectMapping)
        return check_project_mapping(mapping)

    # --- users -------------------------------------------------------------------------

    async def add_user(self, envelope: Envelope) -> UserMapping:
        """Account, directories, scheduler association; undone if a step fails.

        Steps that do not depend on each other run at once: the three account checks;
        once the account exists, the filesystem and scheduler branches; and in the
        filesystem branch, making the directories and asking for the home directory.
        """
        user = instruction_of(envelope, ins.AddUser).user
        protected, blocked, existed = await asyncio.gather(
            self._account_bool(f"is_protected_user {user}"),
            self._account_bool(f"is_blocked_user {user}"),
            self._account_bool(f"is_existing_user {user}"),
        )
        if protected or blocked:
            return await self.user_mapping(user)
        done: list[str] = []
        try:
            project = await self.ask(AgentType.ACCOUNT, f"add_project {user.project_identifier}")
            assert isinstance(project, ProjectMapping)
            mapping = await self.ask(AgentType.ACCOUNT, f"add_user {user}")
            assert isinstance(mapping, UserMapping)
            done.append("account")
            check_project_mapping(project)
            check_user_mapping(mapping)

            async def make_directories() -> None:
                await self.ask(AgentType.FILESYSTEM, f"add_local_user {mapping}")
                done.append("filesystem")

            async def directories() -> None:
                # The home directory's path follows from the mapping alone, so it is asked
                # for while the directories are made; both end before anything fails, so
                # an undo knows whether directories were made.
                made, home = await asyncio.gather(
                    make_directories(),
                    self.ask(AgentType.FILESYSTEM, f"get_local_home_dir {mapping}"),
                    return_exceptions=True,
                )
                for outcome in (made, home):
                    if isinstance(outcome, BaseException):
                        raise outcome
                if isinstance(home, str) and home:
                    if any(c.isspace() for c in home):
                        raise JobRefused(f"home directory {home!r} contains whitespace")
                    await self.ask(AgentType.ACCOUNT, f"update_homedir {user} {home}")

            async def association() -> None:
                await self.ask(AgentType.SCHEDULER, f"add_local_project {project}")
                await self.ask(AgentType.SCHEDULER, f"add_local_user {mapping}")
                done.append("scheduler")

            outcomes = await asyncio.gather(directories(), association(), return_exceptions=True)
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    raise outcome
        except (JobFailed, JobRefused) as exc:
            if not existed and done:
                await self._undo_user(user, done)
            raise JobRefused(f"add_user {user} failed: {exc}") from exc
        await self._notify(envelope, EventKind.USER_ADDED, str(user))
        return mapping

    async def _undo_user(self, user: UserIdentifier, done: list[str]) -> None:
        log.warning("%s: undoing a partial add_user %s (%s)", self.agent.name, user, done)
        try:
            mapping = await self.user_mapping(user)
            if "scheduler" in done:
                await self.ask(AgentType.SCHEDULER, f"remove_local_user {mapping}")
            if "filesystem" in done:
                await self.ask(AgentType.FILESYSTEM, f"remove_local_user {mapping}")
            await self.ask(AgentType.ACCOUNT, f"remove_user {user}")
        except (JobFailed, JobRefused) as exc:
            log.error("%s: could not undo add_user %s: %s", self.agent.name, user, exc)

    async def remove_user(self, envelope: Envelope) -> UserMapping:
        """Scheduler, then directories, then the account (which keeps its UID)."""
        user = instruction_of(envelope, ins.RemoveUser).user
        existed = await self._account_bool(f"is_existing_user {user}")
        mapping, changed = await self._remove_user(user)
        if changed and existed:
            await self._notify(envelope, EventKind.USER_REMOVED, str(user))
        return mapping

    async def _remove_user(self, user: UserIdentifier) -> tuple[UserMapping, bool]:
        """Remove ``user``; the mapping, and whether anything changed (not if protected)."""
        mapping = await self.user_mapping(user)
        if await self._account_bool(f"is_protected_user {user}"):
            return mapping, False
        await self.ask(AgentType.SCHEDULER, f"remove_local_user {mapping}")
        await self.ask(AgentType.FILESYSTEM, f"remove_local_user {mapping}")
        removed = await self.ask(AgentType.ACCOUNT, f"remove_user {user}")
        assert isinstance(removed, UserMapping)
        return removed, True

    async def block_user(self, envelope: Envelope) -> object:
        """Lock the account (protected users are returned untouched)."""
        user = instruction_of(envelope, ins.BlockUser).user
        return await self._set_blocked(envelope, user, block=True)

    async def unblock_user(self, envelope: Envelope) -> object:
        """Unlock the account."""
        user = instruction_of(envelope, ins.UnblockUser).user
        return await self._set_blocked(envelope, user, block=False)

    async def _set_blocked(self, envelope: Envelope, user: UserIdentifier, block: bool) -> object:
        if await self._account_bool(f"is_protected_user {user}"):
            return await self.user_mapping(user)
        verb = "block_user" if block else "unblock_user"
        mapping = await self.ask(AgentType.ACCOUNT, f"{verb} {user}")
        kind = EventKind.USER_BLOCKED if block else EventKind.USER_UNBLOCKED
        await self._notify(envelope, kind, str(user))
        return mapping

    # --- projects ----------------------------------------------------------------------

    async def add_project(self, envelope: Envelope) -> ProjectMapping:
        """Group, project directories, scheduler account."""
        project = instruction_of(envelope, ins.AddProject).project
        mapping = await self.ask(AgentType.ACCOUNT, f"add_project {project}")
        assert isinstance(mapping, ProjectMapping)
        check_project_mapping(mapping)
        await self.ask(AgentType.FILESYSTEM, f"add_local_project {mapping}")
        await self.ask(AgentType.SCHEDULER, f"add_local_project {mapping}")
        await self._notify(envelope, EventKind.PROJECT_ADDED, str(project))
        return mapping

    async def remove_project(self, envelope: Envelope) -> ProjectMapping:
        """Every member removed, then scheduler account, directories and group (kept)."""
        project = instruction_of(envelope, ins.RemoveProject).project
        mapping = await self.project_mapping(project)
        for member in await self._members(project):
            await self._remove_user(member.user)
        if await self._members(project):
            # Protected members remain: leave the project's disks and account alone.
            return mapping
        await self.ask(AgentType.SCHEDULER, f"remove_local_project {mapping}")
        await self.ask(AgentType.FILESYSTEM, f"remove_local_project {mapping}")
        removed = await self.ask(AgentType.ACCOUNT, f"remove_project {project}")
        assert isinstance(removed, ProjectMapping)
        await self._notify(envelope, EventKind.PROJECT_REMOVED, str(project))
        return removed

    async def _members(self, project: ProjectIdentifier) -> list[UserMapping]:
        members = await self.ask(AgentType.ACCOUNT, f"get_users {project}")
        assert isinstance(members, list)
        return [m for m in members if isinstance(m, UserMapping)]

    async def block_project(self, envelope: Envelope) -> Typed:
        """Block every member; a member that fails is logged and skipped."""
        project = instruction_of(envelope, ins.BlockProject).project
        return await self._set_project_blocked(envelope, project, block=True)

    async def unblock_project(self, envelope: Envelope) -> Typed:
        """Unblock every member."""
        project = instruction_of(envelope, ins.UnblockProject).project
        return await self._set_project_blocked(envelope, project, block=False)

    async def _set_project_blocked(
        self, envelope: Envelope, project: ProjectIdentifier, block: bool
    ) -> Typed:
        results: list[object] = []
        for member in await self._members(project):
            try:
                results.append(await self._set_blocked(envelope, member.user, block))
            except (JobFailed, JobRefused) as exc:
                log.error("%s: could not (un)block %s: %s", self.agent.name, member.user, exc)
        kind = EventKind.PROJECT_BLOCKED if block else EventKind.PROJECT_UNBLOCKED
        await self._notify(envelope, kind, str(project))
        return Typed(results, "Vec<UserMapping>")

    async def is_blocked_project(self, envelope: Envelope) -> bool:
        """True when the project has members and every one is blocked."""
        project = instruction_of(envelope, ins.IsBlockedProject).project
        members = await self._members(project)
        if not members:
            return False
        for member in members:
            if not await self._account_bool(f"is_blocked_user {member.user}"):
                return False
        return True

    # --- limits and quotas -------------------------------------------------------------

    async def set_limit(self, envelope: Envelope) -> object:
        """The project's compute limit, set on its scheduler account."""
        instruction = instruction_of(envelope, ins.SetLimit)
        mapping = await self.project_mapping(instruction.project)
        return await self.ask(
            AgentType.SCHEDULER, f"set_local_limit {mapping} {instruction.usage.seconds}"
        )

    async def get_limit(self, envelope: Envelope) -> object:
        """The project's compute limit."""
        mapping = await self.project_mapping(instruction_of(envelope, ins.GetLimit).project)
        return await self.ask(AgentType.SCHEDULER, f"get_local_limit {mapping}")

    async def quota(self, envelope: Envelope) -> object:
        """Any project or user quota instruction: resolve the mapping, ask the filesystem.

        ``set_project_quota P V L`` becomes ``set_local_project_quota <mapping of P> V L``,
        and likewise for get, clear, the plural forms and user quotas.
        """
        instruction = envelope.job.instruction
        verb, _, rest = instruction.keyword.partition("_")
        project = getattr(instruction, "project", None)
        if isinstance(project, ProjectIdentifier):
            mapping: object = await self.project_mapping(project)
        else:
            user = getattr(instruction, "user", None)
            if not isinstance(user, UserIdentifier):
                raise JobRefused(f"{instruction.keyword} names neither a project nor a user")
            mapping = await self.user_mapping(user)
        words = [f"{verb}_local_{rest}", str(mapping)]
        words += [
            str(getattr(instruction, field))
            for field in ("volume", "limit")
            if hasattr(instruction, field)
        ]
        return await self.ask(AgentType.FILESYSTEM, " ".join(words))

    # --- directories -------------------------------------------------------------------

    async def get_home_dir(self, envelope: Envelope) -> object:
        """The user's home directory."""
        mapping = await self.user_mapping(instruction_of(envelope, ins.GetHomeDir).user)
        return await self.ask(AgentType.FILESYSTEM, f"get_local_home_dir {mapping}")

    async def get_user_dirs(self, envelope: Envelope) -> object:
        """Every directory of the user."""
        mapping = await self.user_mapping(instruction_of(envelope, ins.GetUserDirs).user)
        return await self.ask(AgentType.FILESYSTEM, f"get_local_user_dirs {mapping}")

    async def get_project_dirs(self, envelope: Envelope) -> object:
        """Every directory of the project."""
        project = instruction_of(envelope, ins.GetProjectDirs).project
        mapping = await self.project_mapping(project)
        return await self.ask(AgentType.FILESYSTEM, f"get_local_project_dirs {mapping}")

    # --- reports -----------------------------------------------------------------------

    async def _users_of(self, project: ProjectIdentifier) -> dict[UserIdentifier, str]:
        return {m.user: m.local_user for m in await self._members(project)}

    async def get_usage_report(self, envelope: Envelope) -> ProjectUsageReport:
        """The scheduler's report, with local users named by their identities."""
        i = instruction_of(envelope, ins.GetUsageReport)
        return await self._project_report(ProjectUsageReport, i.project, i.date_range)

    async def get_usage_reports(self, envelope: Envelope) -> UsageReport:
        """Usage of every project of a portal."""
        i = instruction_of(envelope, ins.GetUsageReports)
        reports = await self._portal_reports(ProjectUsageReport, i.portal, i.date_range)
        return UsageReport(i.portal, reports=reports)

    async def get_storage_report(self, envelope: Envelope) -> ProjectStorageReport:
        """The filesystem's storage report of a project."""
        i = instruction_of(envelope, ins.GetStorageReport)
        return await self._project_report(ProjectStorageReport, i.project, i.date_range)

    async def get_storage_reports(self, envelope: Envelope) -> StorageReport:
        """Storage of every project of a portal."""
        i = instruction_of(envelope, ins.GetStorageReports)
        reports = await self._portal_reports(ProjectStorageReport, i.portal, i.date_range)
        return StorageReport(i.portal, reports=reports)

    async def _project_report(
        self, kind: type[_R], project: ProjectIdentifier, dates: DateRange
    ) -> _R:
        """The local report of ``kind`` on one project, with its users named by identity."""
        role, keyword = _LOCAL_REPORTS[kind]
        mapping = await self.project_mapping(project)
        report = await self.ask(role, f"{keyword} {mapping} {dates}")
        assert isinstance(report, kind)
        report.users.update(await self._users_of(project))
        return report

    async def _portal_reports(
        self, kind: type[_R], portal: PortalIdentifier, dates: DateRange
    ) -> dict[ProjectIdentifier, _R]:
        """The reports of ``kind`` on every project of ``portal``, one project at a time."""
        return {
            mapping.project: await self._project_report(kind, mapping.project, dates)
            for mapping in await self._projects(portal)
        }

    async def _projects(self, portal: PortalIdentifier) -> list[ProjectMapping]:
        projects = await self.ask(AgentType.ACCOUNT, f"get_projects {portal}")
        assert isinstance(projects, list)
        return [p for p in projects if isinstance(p, ProjectMapping)]

    # --- notifications -----------------------------------------------------------------

    async def _notify(self, envelope: Envelope, kind: EventKind, argument: str) -> None:
        await notify_portal(self.agent, envelope, kind, argument)
