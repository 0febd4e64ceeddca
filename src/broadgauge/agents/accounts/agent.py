"""The account agent: each instruction it accepts, and the backend call that serves it.

It takes orders only from its instance (the runtime's direction rules refuse anything from
below), and every change goes through an :class:`AccountBackend`, whose rules (naming,
protected users, idempotency, never deleting) are documented there.
"""

from __future__ import annotations

from broadgauge.agents._envelope import answer, typed
from broadgauge.agents.accounts.backend import AccountBackend
from broadgauge.grammar import instructions as ins
from broadgauge.runtime.agent import Agent


def serve_accounts(agent: Agent, directory: AccountBackend) -> None:
    """Register the account agent's handlers on ``agent``."""
    d = directory
    answer(agent, ins.AddProject, lambda i: d.add_project(i.project))
    answer(agent, ins.RemoveProject, lambda i: d.remove_project(i.project))
    answer(agent, ins.GetProjects, lambda i: typed(d.get_projects(i.portal), "Vec<ProjectMapping>"))
    answer(agent, ins.GetProjectMapping, lambda i: d.get_project_mapping(i.project))
    answer(agent, ins.IsExistingProject, lambda i: d.is_existing_project(i.project))
    answer(agent, ins.AddUser, lambda i: d.add_user(i.user))
    answer(agent, ins.RemoveUser, lambda i: d.remove_user(i.user))
    answer(agent, ins.GetUsers, lambda i: typed(d.get_users(i.project), "Vec<UserMapping>"))
    answer(agent, ins.GetUserMapping, lambda i: d.get_user_mapping(i.user))
    answer(agent, ins.IsExistingUser, lambda i: d.is_existing_user(i.user))
    answer(agent, ins.IsProtectedUser, lambda i: d.is_protected_user(i.user))
    answer(agent, ins.BlockUser, lambda i: d.block_user(i.user))
    answer(agent, ins.UnblockUser, lambda i: d.unblock_user(i.user))
    answer(agent, ins.IsBlockedUser, lambda i: d.is_blocked_user(i.user))
    answer(agent, ins.UpdateHomeDir, lambda i: d.update_homedir(i.user, i.homedir))
