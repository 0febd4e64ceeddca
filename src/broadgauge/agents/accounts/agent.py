"""The account agent: each instruction it accepts, and the backend call that serves it.

It takes orders only from its instance (the runtime's direction rules refuse anything from
below), and every change goes through an :class:`AccountBackend`, whose rules (naming,
protected users, idempotency, never deleting) are documented there.
"""

from __future__ import annotations

from collections.abc import Callable

from broadgauge.agents._envelope import instruction_of
from broadgauge.agents.accounts.backend import AccountBackend, AccountError
from broadgauge.grammar import instructions as ins
from broadgauge.jobs.agent import Agent, Envelope, Handler, JobRefused, Typed


def serve_accounts(agent: Agent, directory: AccountBackend) -> None:
    """Register the account agent's handlers on ``agent``."""
    handler = _refusing(agent)

    @handler("add_project")
    async def add_project(envelope: Envelope) -> object:
        instruction = instruction_of(envelope, ins.AddProject)
        return await directory.add_project(instruction.project)

    @handler("remove_project")
    async def remove_project(envelope: Envelope) -> object:
        return await directory.remove_project(instruction_of(envelope, ins.RemoveProject).project)

    @handler("get_projects")
    async def get_projects(envelope: Envelope) -> object:
        projects = await directory.get_projects(instruction_of(envelope, ins.GetProjects).portal)
        return Typed(projects, "Vec<ProjectMapping>")

    @handler("get_project_mapping")
    async def get_project_mapping(envelope: Envelope) -> object:
        return await directory.get_project_mapping(
            instruction_of(envelope, ins.GetProjectMapping).project
        )

    @handler("is_existing_project")
    async def is_existing_project(envelope: Envelope) -> object:
        return await directory.is_existing_project(
            instruction_of(envelope, ins.IsExistingProject).project
        )

    @handler("add_user")
    async def add_user(envelope: Envelope) -> object:
        return await directory.add_user(instruction_of(envelope, ins.AddUser).user)

    @handler("remove_user")
    async def remove_user(envelope: Envelope) -> object:
        return await directory.remove_user(instruction_of(envelope, ins.RemoveUser).user)

    @handler("get_users")
    async def get_users(envelope: Envelope) -> object:
        users = await directory.get_users(instruction_of(envelope, ins.GetUsers).project)
        return Typed(users, "Vec<UserMapping>")

    @handler("get_user_mapping")
    async def get_user_mapping(envelope: Envelope) -> object:
        return await directory.get_user_mapping(instruction_of(envelope, ins.GetUserMapping).user)

    @handler("is_existing_user")
    async def is_existing_user(envelope: Envelope) -> object:
        return await directory.is_existing_user(instruction_of(envelope, ins.IsExistingUser).user)

    @handler("is_protected_user")
    async def is_protected_user(envelope: Envelope) -> object:
        return await directory.is_protected_user(instruction_of(envelope, ins.IsProtectedUser).user)

    @handler("block_user")
    async def block_user(envelope: Envelope) -> object:
        return await directory.block_user(instruction_of(envelope, ins.BlockUser).user)

    @handler("unblock_user")
    async def unblock_user(envelope: Envelope) -> object:
        return await directory.unblock_user(instruction_of(envelope, ins.UnblockUser).user)

    @handler("is_blocked_user")
    async def is_blocked_user(envelope: Envelope) -> object:
        return await directory.is_blocked_user(instruction_of(envelope, ins.IsBlockedUser).user)

    @handler("update_homedir")
    async def update_homedir(envelope: Envelope) -> object:
        instruction = instruction_of(envelope, ins.UpdateHomeDir)
        return await directory.update_homedir(instruction.user, instruction.homedir)


def _refusing(agent: Agent) -> Callable[[str], Callable[[Handler], Handler]]:
    """Like ``agent.handler``, but a directory's :class:`AccountError` becomes a refusal.

    The error text (which names what failed and why, never a secret) goes back to the
    asking agent as the job's error, without a traceback in this agent's log.
    """

    def handler(keyword: str) -> Callable[[Handler], Handler]:
        def register(serve: Handler) -> Handler:
            async def refusing(envelope: Envelope) -> object:
                try:
                    return await serve(envelope)
                except AccountError as exc:
                    raise JobRefused(str(exc)) from exc

            agent.add_handler(keyword, refusing)
            return serve

        return register

    return handler
