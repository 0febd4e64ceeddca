"""The business rules of a notebook instance agent: one JupyterHub behind a notebook platform.

The seed's second platform.  The network reaches it as ``portal.provider.notebooks.<hub>``,
and the same instructions as a cluster's mean the natural thing for a notebook service:

``add_project`` / ``remove_project``
    a hub group per project, named after the project's Unix group; removing a project removes
    its members first, then the group.
``add_user`` / ``remove_user``
    the hub user (the identity's Unix name), and membership of its project's group; removing
    stops the user's servers and deletes the hub user.
``block_user`` / ``unblock_user`` (and the ``_project`` forms)
    stop the user's servers and refuse new ones, at the agent and at the hub (membership of
    :data:`~broadgauge.agents.notebook.backend.BLOCKED_GROUP`).
``get_users``, ``is_existing_user``, ``is_blocked_user``, the mappings
    read from the hub.
``set_limit`` / ``get_limit``
    the project's allowance of notebook server time: a start is refused once the project has
    used it.  (JupyterHub's REST API cannot change a spawner's ``cpu_limit`` or ``mem_limit``,
    so a limit is server time, not cores.)
``get_usage_report`` / ``get_usage_reports``
    server seconds per user and day, from the hub's server records kept in a
    :class:`~broadgauge.agents.notebook.sessions.SessionLedger`.
``start_notebook`` / ``stop_notebook`` (Broadgauge extensions)
    start a user's server and answer its URL; stop it.

Any other instruction (quotas, directories, storage reports, the leaf agents' ``*_local_*``
instructions) has no meaning here, and its job ends in an error that says so.

Where the hub authenticates against the site's accounts (``notebook-accounts = "agent"``),
the instance first asks its account agent, as a cluster instance does, and the hub user is
the account's local user; otherwise the names follow :mod:`broadgauge.agents.naming`.
Every name is checked against the naming rule before the hub is asked anything.
"""

from __future__ import annotations

import datetime as _dt
import logging
from collections.abc import Awaitable, Callable

from broadgauge.agents._envelope import instruction_of, notify_portal
from broadgauge.agents.leaves import LeafAgents
from broadgauge.agents.naming import (
    check_instruction,
    check_project_mapping,
    check_user_mapping,
    project_mapping,
    user_mapping,
)
from broadgauge.agents.notebook.backend import BLOCKED_GROUP, NotebookBackend, NotebookError
from broadgauge.agents.notebook.sessions import SessionLedger
from broadgauge.grammar import (
    KEYWORDS,
    DailyProjectUsageReport,
    Date,
    PortalIdentifier,
    ProjectIdentifier,
    ProjectMapping,
    ProjectUsageReport,
    Usage,
    UsageReport,
    UserIdentifier,
    UserMapping,
)
from broadgauge.grammar import extensions as ext
from broadgauge.grammar import instructions as ins
from broadgauge.jobs.agent_type import AgentType
from broadgauge.jobs.notification import EventKind
from broadgauge.runtime.agent import Agent, Envelope, JobFailed, JobRefused, Typed

log = logging.getLogger("broadgauge.agents.notebook")

#: How long a question to the account agent may take.
SUBJOB_TIMEOUT = 60.0

Handler = Callable[[Envelope], Awaitable[object]]


class NotebookInstance:
    """The notebook rules, registered as handlers on ``agent``.

    ``hub`` is the JupyterHub (or the embedded stand-in); ``ledger`` records its servers'
    sessions; ``accounts`` says whether hub users are made by the site's account agent.
    """

    def __init__(
        self,
        agent: Agent,
        hub: NotebookBackend,
        ledger: SessionLedger,
        *,
        accounts: bool = False,
    ) -> None:
        self.agent = agent
        self.hub = hub
        self.ledger = ledger
        self.accounts = accounts
        self.leaves = LeafAgents(agent)
        handlers: dict[str, Handler] = {
            "add_project": self.add_project,
            "remove_project": self.remove_project,
            "add_user": self.add_user,
            "remove_user": self.remove_user,
            "block_user": self.block_user,
            "unblock_user": self.unblock_user,
            "block_project": self.block_project,
            "unblock_project": self.unblock_project,
            "is_blocked_user": self.is_blocked_user,
            "is_blocked_project": self.is_blocked_project,
            "is_existing_user": self.is_existing_user,
            "is_existing_project": self.is_existing_project,
            "get_users": self.get_users,
            "get_user_mapping": self.get_user_mapping,
            "get_project_mapping": self.get_project_mapping,
            "set_limit": self.set_limit,
            "get_limit": self.get_limit,
            "get_usage_report": self.get_usage_report,
            "get_usage_reports": self.get_usage_reports,
            "start_notebook": self.start_notebook,
            "stop_notebook": self.stop_notebook,
        }
        for keyword in KEYWORDS:
            agent.add_handler(keyword, self._checked(handlers.get(keyword, self.unsupported)))
        for keyword in ext.EXTENSION_KEYWORDS:
            agent.add_handler(keyword, self._checked(handlers[keyword]))

    def _checked(self, handler: Handler) -> Handler:
        async def run(envelope: Envelope) -> object:
            # Before the hub or the account agent is asked anything about a bad name.
            check_instruction(envelope.job.instruction)
            return await handler(envelope)

        return run

    async def unsupported(self, envelope: Envelope) -> object:
        """Refuse an instruction that means nothing to a notebook service."""
        keyword = envelope.job.instruction.keyword
        raise JobRefused(
            f"{keyword} has no meaning for a notebook service: {self.agent.name} manages a "
            "JupyterHub (users, project groups, servers, server-time limits and usage), "
            "not directories, quotas or storage"
        )

    # --- names -------------------------------------------------------------------------

    async def _ask_accounts(self, instruction: str) -> object:
        peer = await self.leaves.leaf(AgentType.ACCOUNT)
        job = await self.agent.run(
            f"{self.agent.name}.{peer.name}", instruction, timeout=SUBJOB_TIMEOUT
        )
        return job.result_value()

    async def user_mapping(self, user: UserIdentifier) -> UserMapping:
        """The hub user of ``user`` (from the account agent where it makes the accounts)."""
        if not self.accounts:
            return user_mapping(user)
        mapping = await self._ask_accounts(f"get_user_mapping {user}")
        assert isinstance(mapping, UserMapping)
        return check_user_mapping(mapping)

    async def project_mapping(self, project: ProjectIdentifier) -> ProjectMapping:
        """The hub group of ``project``."""
        if not self.accounts:
            return project_mapping(project)
        mapping = await self._ask_accounts(f"get_project_mapping {project}")
        assert isinstance(mapping, ProjectMapping)
        return check_project_mapping(mapping)

    async def _members(self, project: ProjectIdentifier) -> list[UserMapping]:
        """The project's users: the account agent's, or the hub group's members that are
        named ``<user>.<project>`` (hub users we did not make have no identity)."""
        if self.accounts:
            members = await self._ask_accounts(f"get_users {project}")
            assert isinstance(members, list)
            return [check_user_mapping(m) for m in members if isinstance(m, UserMapping)]
        group = project_mapping(project).local_group
        found = []
        for name in await self.hub.group_members(group) or []:
            username, dot, rest = name.partition(".")
            if not dot or rest != project.project:
                continue
            try:
                mapping = user_mapping(UserIdentifier(username, project.project, project.portal))
            except ValueError:
                continue
            if mapping.local_user == name:
                found.append(mapping)
        return found

    async def _projects(self, portal: PortalIdentifier) -> list[ProjectIdentifier]:
        """The projects of ``portal`` this hub has a group for."""
        if self.accounts:
            projects = await self._ask_accounts(f"get_projects {portal}")
            assert isinstance(projects, list)
            return [p.project for p in projects if isinstance(p, ProjectMapping)]
        found = []
        for group in await self.hub.groups():
            name = group.removeprefix(f"{portal.portal}.")
            try:
                project = ProjectIdentifier(name, portal.portal)
                if project_mapping(project).local_group == group:
                    found.append(project)
            except ValueError:
                continue
        return found

    # --- projects ----------------------------------------------------------------------

    async def add_project(self, envelope: Envelope) -> ProjectMapping:
        """The project's hub group (and its account group, where accounts are the site's)."""
        project = instruction_of(envelope, ins.AddProject).project
        if self.accounts:
            made = await self._ask_accounts(f"add_project {project}")
            assert isinstance(made, ProjectMapping)
        mapping = await self.project_mapping(project)
        await self.hub.add_group(mapping.local_group)
        await notify_portal(self.agent, envelope, EventKind.PROJECT_ADDED, str(project))
        return mapping

    async def remove_project(self, envelope: Envelope) -> ProjectMapping:
        """Every member removed, then the group.  Usage history is kept."""
        project = instruction_of(envelope, ins.RemoveProject).project
        mapping = await self.project_mapping(project)
        for member in await self._members(project):
            await self._remove_user(member)
        await self.hub.remove_group(mapping.local_group)
        if self.accounts:
            await self._ask_accounts(f"remove_project {project}")
        await notify_portal(self.agent, envelope, EventKind.PROJECT_REMOVED, str(project))
        return mapping

    async def is_existing_project(self, envelope: Envelope) -> bool:
        """Whether the project's hub group exists."""
        project = instruction_of(envelope, ins.IsExistingProject).project
        group = (await self.project_mapping(project)).local_group
        return await self.hub.group_members(group) is not None

    async def get_project_mapping(self, envelope: Envelope) -> ProjectMapping:
        """The project's hub group."""
        return await self.project_mapping(instruction_of(envelope, ins.GetProjectMapping).project)

    async def get_users(self, envelope: Envelope) -> Typed:
        """The project's users, from its hub group."""
        project = instruction_of(envelope, ins.GetUsers).project
        return Typed(await self._members(project), "Vec<UserMapping>")

    # --- users -------------------------------------------------------------------------

    async def add_user(self, envelope: Envelope) -> UserMapping:
        """The hub user in its project's group; the account first where the site makes it.

        The project's group is made if missing, as a cluster instance makes the project's
        account.  If the hub step fails, an account this job made is removed again.
        """
        user = instruction_of(envelope, ins.AddUser).user
        made_account = False
        if self.accounts:
            existed = bool(await self._ask_accounts(f"is_existing_user {user}"))
            await self._ask_accounts(f"add_project {user.project_identifier}")
            await self._ask_accounts(f"add_user {user}")
            made_account = not existed
        mapping = await self.user_mapping(user)
        try:
            await self.hub.add_group(mapping.local_group)
            await self.hub.add_user(mapping.local_user, mapping.local_group)
        except (NotebookError, JobFailed, JobRefused) as exc:
            if made_account:
                log.warning("%s: undoing the account of %s: %s", self.agent.name, user, exc)
                await self._ask_accounts(f"remove_user {user}")
            raise JobRefused(f"add_user {user} failed: {exc}") from exc
        await notify_portal(self.agent, envelope, EventKind.USER_ADDED, str(user))
        return mapping

    async def remove_user(self, envelope: Envelope) -> UserMapping:
        """Stop the user's servers, delete the hub user (and the account, where it is ours)."""
        user = instruction_of(envelope, ins.RemoveUser).user
        mapping = await self.user_mapping(user)
        existed = await self.hub.user_exists(mapping.local_user)
        await self._remove_user(mapping)
        if existed:
            await notify_portal(self.agent, envelope, EventKind.USER_REMOVED, str(user))
        return mapping

    async def _remove_user(self, mapping: UserMapping) -> None:
        await self._stop(mapping.local_user)
        await self.hub.remove_user(mapping.local_user)
        if self.accounts:
            await self._ask_accounts(f"remove_user {mapping.user}")

    async def is_existing_user(self, envelope: Envelope) -> bool:
        """Whether the hub has the user (and, with site accounts, the site has its account)."""
        user = instruction_of(envelope, ins.IsExistingUser).user
        if self.accounts and not await self._ask_accounts(f"is_existing_user {user}"):
            return False
        mapping = await self.user_mapping(user)
        return await self.hub.user_exists(mapping.local_user)

    async def get_user_mapping(self, envelope: Envelope) -> UserMapping:
        """The user's hub name and group."""
        return await self.user_mapping(instruction_of(envelope, ins.GetUserMapping).user)

    # --- blocking ----------------------------------------------------------------------

    async def block_user(self, envelope: Envelope) -> UserMapping:
        """Stop the user's servers and refuse new ones."""
        user = instruction_of(envelope, ins.BlockUser).user
        return await self._set_blocked(envelope, user, block=True)

    async def unblock_user(self, envelope: Envelope) -> UserMapping:
        """Allow the user to start servers again."""
        user = instruction_of(envelope, ins.UnblockUser).user
        return await self._set_blocked(envelope, user, block=False)

    async def _set_blocked(
        self, envelope: Envelope, user: UserIdentifier, *, block: bool
    ) -> UserMapping:
        mapping = await self.user_mapping(user)
        if not await self.hub.user_exists(mapping.local_user):
            raise NotebookError(f"{user} has no hub user ({mapping.local_user}) to (un)block")
        if block:
            await self._stop(mapping.local_user)
        await self.hub.set_blocked(mapping.local_user, block)
        kind = EventKind.USER_BLOCKED if block else EventKind.USER_UNBLOCKED
        await notify_portal(self.agent, envelope, kind, str(user))
        return mapping

    async def is_blocked_user(self, envelope: Envelope) -> bool:
        """Whether the user may not start servers."""
        mapping = await self.user_mapping(instruction_of(envelope, ins.IsBlockedUser).user)
        return await self.hub.is_blocked(mapping.local_user)

    async def block_project(self, envelope: Envelope) -> Typed:
        """Block every member (one that fails is logged and skipped)."""
        project = instruction_of(envelope, ins.BlockProject).project
        return await self._set_project_blocked(envelope, project, block=True)

    async def unblock_project(self, envelope: Envelope) -> Typed:
        """Unblock every member."""
        project = instruction_of(envelope, ins.UnblockProject).project
        return await self._set_project_blocked(envelope, project, block=False)

    async def _set_project_blocked(
        self, envelope: Envelope, project: ProjectIdentifier, *, block: bool
    ) -> Typed:
        results: list[UserMapping] = []
        for member in await self._members(project):
            try:
                results.append(await self._set_blocked(envelope, member.user, block=block))
            except (JobFailed, JobRefused) as exc:
                log.error("%s: could not (un)block %s: %s", self.agent.name, member.user, exc)
        kind = EventKind.PROJECT_BLOCKED if block else EventKind.PROJECT_UNBLOCKED
        await notify_portal(self.agent, envelope, kind, str(project))
        return Typed(results, "Vec<UserMapping>")

    async def is_blocked_project(self, envelope: Envelope) -> bool:
        """True when the project has members and every one is blocked."""
        project = instruction_of(envelope, ins.IsBlockedProject).project
        members = await self._members(project)
        for member in members:
            if not await self.hub.is_blocked(member.local_user):
                return False
        return bool(members)

    # --- servers -----------------------------------------------------------------------

    def _now(self) -> _dt.datetime:
        return _dt.datetime.fromtimestamp(self.agent.clock(), _dt.UTC)

    async def observe(self) -> None:
        """Record the hub's running servers in the ledger (opening and closing sessions).

        A server counts against its user's project group: the one group of the user that is
        not :data:`BLOCKED_GROUP` (a hub user is made for one project).  Servers of users in
        no such group (not made by us) are not counted.
        """
        running = {}
        for server in await self.hub.servers():
            groups = sorted(g for g in server.groups if g != BLOCKED_GROUP)
            if groups:
                running[server.user] = (server.started, groups[0])
        await self.ledger.observe(self._now(), running)

    async def _stop(self, name: str) -> None:
        await self.hub.stop_server(name)
        await self.ledger.stopped(name, self._now())

    async def start_notebook(self, envelope: Envelope) -> str:
        """Start the user's server (refused when blocked or over the project's limit)."""
        user = instruction_of(envelope, ext.StartNotebook).user
        mapping = await self.user_mapping(user)
        if await self.hub.is_blocked(mapping.local_user):
            raise NotebookError(f"{user} is blocked: no notebook server may be started")
        await self.observe()
        group = mapping.local_group
        limit = await self.ledger.get_limit(group)
        if limit:
            used = await self.ledger.total(group, self._now())
            if used >= limit:
                raise NotebookError(
                    f"project {user.project_identifier} has used {used} s of its "
                    f"{limit} s of notebook server time"
                )
        server = await self.hub.start_server(mapping.local_user)
        await self.ledger.observe(self._now(), {mapping.local_user: (server.started, group)})
        return server.url

    async def stop_notebook(self, envelope: Envelope) -> None:
        """Stop the user's server (stopping a stopped one succeeds)."""
        mapping = await self.user_mapping(instruction_of(envelope, ext.StopNotebook).user)
        await self.observe()
        await self._stop(mapping.local_user)

    # --- limits and usage --------------------------------------------------------------

    async def set_limit(self, envelope: Envelope) -> Usage:
        """The project's allowance of notebook server time."""
        instruction = instruction_of(envelope, ins.SetLimit)
        mapping = await self.project_mapping(instruction.project)
        stored = await self.ledger.set_limit(mapping.local_group, instruction.usage.seconds)
        self.agent.audit_operation(
            f"set notebook server time limit of {mapping.local_group} to {stored} s"
        )
        return Usage(stored)

    async def get_limit(self, envelope: Envelope) -> Usage:
        """The project's allowance of notebook server time (0: none)."""
        mapping = await self.project_mapping(instruction_of(envelope, ins.GetLimit).project)
        return Usage(await self.ledger.get_limit(mapping.local_group))

    async def get_usage_report(self, envelope: Envelope) -> ProjectUsageReport:
        """Server seconds per user and day; past days are complete."""
        i = instruction_of(envelope, ins.GetUsageReport)
        await self.observe()
        return await self._report(i.project, i.date_range.days())

    async def get_usage_reports(self, envelope: Envelope) -> UsageReport:
        """The usage of every project of the portal that this hub has a group for."""
        i = instruction_of(envelope, ins.GetUsageReports)
        await self.observe()
        reports = {
            project: await self._report(project, i.date_range.days())
            for project in await self._projects(i.portal)
        }
        return UsageReport(i.portal, reports=reports)

    async def _report(self, project: ProjectIdentifier, days: list[Date]) -> ProjectUsageReport:
        now = self._now()
        today = Date.from_python(now.date())
        days = [day for day in days if day.days <= today.days]
        mapping = await self.project_mapping(project)
        if not days:
            return ProjectUsageReport(project)
        usage = await self.ledger.usage(
            mapping.local_group, days[0].to_python(), days[-1].to_python(), now
        )
        reports = {
            day: DailyProjectUsageReport(
                reports={
                    user: Usage(seconds) for user, seconds in usage.get(day.to_python(), {}).items()
                },
                is_complete=day.days < today.days,
            )
            for day in days
        }
        users = {m.user: m.local_user for m in await self._members(project)}
        return ProjectUsageReport(project, reports, users)
