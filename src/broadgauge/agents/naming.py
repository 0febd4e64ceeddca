"""How OpenPortal identities become Unix and Slurm names (notes §5.4, §5.6).

* Unix user: ``<username>.<project>`` (dots kept), e.g. ``fred.proj``.
* Unix group of a project: ``<portal>.<project>``, e.g. ``org.proj``; projects of the
  reserved portals ``openportal``, ``system`` and ``instance`` map to the bare project name.
* Slurm account or user: the local name with ``/`` and spaces turned into ``_``, lowercased,
  with a legacy ``group.X`` reduced to ``X``.
* The per-instance group: ``op_<name>_<zone>`` with every other character made ``_``.
"""

from __future__ import annotations

import re

from broadgauge.grammar import ProjectIdentifier, ProjectMapping, UserIdentifier, UserMapping

RESERVED_PORTALS = frozenset({"openportal", "system", "instance"})
MANAGED_GROUP = "openportal"
BLOCKED_GROUP = "openportal.blocked"


def project_group(project: ProjectIdentifier) -> str:
    """The Unix group of a project."""
    if project.portal in RESERVED_PORTALS:
        return project.project
    return f"{project.portal}.{project.project}"


def project_mapping(project: ProjectIdentifier) -> ProjectMapping:
    """The mapping of a project to its Unix group."""
    return ProjectMapping(project, project_group(project))


def user_name(user: UserIdentifier) -> str:
    """The Unix user name of an identity."""
    return f"{user.username}.{user.project}"


def user_mapping(user: UserIdentifier) -> UserMapping:
    """The mapping of an identity to its Unix user and primary group."""
    return UserMapping(user, user_name(user), project_group(user.project_identifier))


def slurm_name(local_name: str) -> str:
    """A Unix user or group name cleaned for Slurm."""
    name = local_name.removeprefix("group.") if local_name.startswith("group.") else local_name
    return name.replace("/", "_").replace(" ", "_").lower()


def instance_group(name: str, zone: str) -> str:
    """The group that marks users of one instance (``op_cluster_default``)."""
    return "op_" + re.sub(r"[^A-Za-z0-9]", "_", f"{name}@{zone}")
