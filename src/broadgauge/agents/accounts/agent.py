"""The account agent: each instruction it accepts, and the backend call that serves it.

It takes orders only from its instance (the runtime's direction rules refuse anything from
below), and every change goes through an :class:`AccountBackend`, whose rules (naming,
protected users, idempotency, never deleting) are documented there.
"""

from __future__ import annotations

from broadgauge.agents._envelope import instruction_of
from broadgauge.agents.accounts.backend import AccountBackend
from broadgauge.grammar import instructions as ins
from broadgauge.jobs.agent import Agent, Envelope, Typed


def serve_accounts(agent: Agent, directory: AccountBackend) -> None:
    """Register the account agent's handlers on ``agent``."""

    @agent.handler("add_project")
    async def add_project(envelope: Envelope) -> object:
        instruction = instruction_of(envelope, ins.AddProject)
        return await directory.add_project(instruction.project)

    @agent.handler("remove_project")
    async def remove_project(envelope: Envelope) -> object:
        return await directory.remove_project(instruction_of(envelope, ins.RemoveProject).project)

    @agent.handler("get_projects")
    async def get_projects(envelope: Envelope) -> object:
        projects = await directory.get_projects(instruction_of(envelope, ins.GetProjects).portal)
        return Typed(projects, "Vec<ProjectMapping>")

    @agent.handler("get_project_mapping")
    async def get_project_mapping(envelope: Envelope) -> object:
        return await directory.get_project_mapping(
            instruction_of(envelope, ins.GetProjectMapping).project
        )

    @agent.handler("is_existing_project")
    async def is_existing_project(envelope: Envelope) -> object:
        return await directory.is_existing_project(
            instruction_of(envelope, ins.IsExistingProject).project
        )

    @agent.handler("add_user")
    async def add_user(envelope: Envelope) -> object:
        return await directory.add_user(instruction_of(envelope, ins.AddUser).user)

    @agent.handler("remove_user")
    async def remove_user(envelope: Envelope) -> object:
        return await directory.remove_user(instruction_of(envelope, ins.RemoveUser).user)

    @agent.handler("get_users")
    async def get_users(envelope: Envelope) -> object:
        users = await directory.get_users(instruction_of(envelope, ins.GetUsers).project)
        return Typed(users, "Vec<UserMapping>")

    @agent.handler("get_user_mapping")
    async def get_user_mapping(envelope: Envelope) -> object:
        return await directory.get_user_mapping(instruction_of(envelope, ins.GetUserMapping).user)

    @agent.handler("is_existing_user")
    async def is_existing_user(envelope: Envelope) -> object:
        return await directory.is_existing_user(instruction_of(envelope, ins.IsExistingUser).user)

    @agent.handler("is_protected_user")
    async def is_protected_user(envelope: Envelope) -> object:
        return await directory.is_protected_user(instruction_of(envelope, ins.IsProtectedUser).user)

    @agent.handler("block_user")
    async def block_user(envelope: Envelope) -> object:
        return await directory.block_user(instruction_of(envelope, ins.BlockUser).user)

    @agent.handler("unblock_user")
    async def unblock_user(envelope: Envelope) -> object:
        return await directory.unblock_user(instruction_of(envelope, ins.UnblockUser).user)

    @agent.handler("is_blocked_user")
    async def is_blocked_user(envelope: Envelope) -> object:
        return await directory.is_blocked_user(instruction_of(envelope, ins.IsBlockedUser).user)

    @agent.handler("update_homedir")
    async def update_homedir(envelope: Envelope) -> object:
        instruction = instruction_of(envelope, ins.UpdateHomeDir)
        return await directory.update_homedir(instruction.user, instruction.homedir)
