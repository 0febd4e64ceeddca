"""How OpenPortal identities become Unix and Slurm names (notes §5.4, §5.6), and which names
the back ends accept.

* Unix user: ``<username>.<project>`` (dots kept), e.g. ``fred.proj``.
* Unix group of a project: ``<portal>.<project>``, e.g. ``org.proj``; projects of the
  reserved portals ``openportal``, ``system`` and ``instance`` map to the bare project name.
* Slurm account or user: the local name lowercased, with a legacy ``group.X`` reduced to ``X``.
* The per-instance group: ``op_<name>_<zone>`` with every other character made ``_``.

Names the back ends accept
    The grammar accepts almost any text in an identifier (``x,root``, ``-rf``, NUL, a name
    100,000 characters long), exactly as OpenPortal's parser does, and must go on doing so.
    What it accepts is not what a back end can hold: ``sacctmgr`` reads ``name=x,root`` as
    two users, ``setquota -u -rf`` reads an option, ``chown 123`` a number.  So every
    identifier is checked here where it becomes a local name (:func:`user_name`,
    :func:`project_group`, :func:`slurm_name`), by the instance before it asks any back end
    (:func:`check_instruction`), and by every engine again at its own entry points
    (:func:`check_name` with the engine's own error type).  The rule is :data:`RULE`.
"""

from __future__ import annotations

import dataclasses
import re
import string
from collections.abc import Callable

from broadgauge.grammar import (
    PortalIdentifier,
    ProjectIdentifier,
    ProjectMapping,
    UserIdentifier,
    UserMapping,
)
from broadgauge.runtime.envelope import JobRefused

RESERVED_PORTALS = frozenset({"openportal", "system", "instance"})
MANAGED_GROUP = "openportal"
BLOCKED_GROUP = "openportal.blocked"

#: The longest name accepted.  32 is what every back end we drive holds without truncating
#: or refusing: FreeIPA's default maximum user name length (``ipamaxusernamelength``),
#: groupadd's ``GROUP_NAME_MAX_LENGTH`` and useradd's historical limit, and the 32 bytes of
#: ``ut_user`` in utmp/wtmp (``who`` and ``last`` cut longer names, so two accounts would look
#: alike).  glibc allows longer ``LOGIN_NAME_MAX`` names, but not every tool on a site does.
NAME_MAX = 32
#: POSIX's portable filename character set: no character any of our tools reads as syntax
#: (``,`` ``=`` ``:`` ``/`` quotes, spaces, LDAP filter characters, shell metacharacters).
PORTABLE = frozenset(string.ascii_letters + string.digits + "._-")
#: The rule, as every refusal states it.
RULE = (
    "allowed: A-Z a-z 0-9 . _ -, not starting with '-', not all digits, not '.' or '..', "
    f"at most {NAME_MAX} characters"
)
_PART_RULE = f"allowed: A-Z a-z 0-9 . _ -, not starting with '-', at most {NAME_MAX} characters"
#: Builds the exception an engine raises for a refused name, from its message.
ErrorType = Callable[[str], Exception]
#: How much of a refused name a message quotes (a name may be 100,000 characters long).
_SHOWN = 40


class UnportableName(JobRefused):
    """A name no back end can safely hold; the message names the rule that failed.

    It is a refusal, so an agent returns the message as the job's error.
    """


def name_problem(name: str, *, numeric_ok: bool = False) -> str | None:
    """Why ``name`` breaks the rule (:data:`RULE`), or ``None`` when it is portable.

    ``numeric_ok`` lets an all-digit name through: right for one part of an identifier (a
    student number as a user name), which never reaches a tool on its own.
    """
    if not name:
        return "it is empty"
    if len(name) > NAME_MAX:
        return f"it is {len(name)} characters long"
    bad = next((ch for ch in name if ch not in PORTABLE), None)
    if bad is not None:
        return f"{bad!r} is not allowed"
    if name.startswith("-"):
        return "it starts with '-', which command-line tools read as an option"
    if name in (".", ".."):
        return f"{name!r} names a directory"
    if not numeric_ok and name.isdigit():
        return "it is all digits, which tools read as a numeric id"
    return None


def check_name(
    name: str, what: str, *, numeric_ok: bool = False, error: ErrorType = UnportableName
) -> str:
    """Return ``name`` if it is portable; else raise ``error`` naming ``what`` and the rule.

    Every engine calls this at its entry points with its own ``error`` type, e.g.
    ``check_name(owner, "quota owner", error=QuotaError)``.
    """
    problem = name_problem(name, numeric_ok=numeric_ok)
    if problem is None:
        return name
    shown = repr(name) if len(name) <= _SHOWN else f"{name[:_SHOWN]!r}... ({len(name)} characters)"
    rule = _PART_RULE if numeric_ok else RULE
    raise error(f"{what} {shown} is not a portable POSIX name: {problem} ({rule})")


def check_project(
    project: ProjectIdentifier, error: ErrorType = UnportableName
) -> ProjectIdentifier:
    """Return ``project`` if both its parts are portable (the project part names directories)."""
    check_name(project.project, "project name", numeric_ok=True, error=error)
    check_name(project.portal, "portal name", numeric_ok=True, error=error)
    return project


def check_user(user: UserIdentifier, error: ErrorType = UnportableName) -> UserIdentifier:
    """Return ``user`` if its user name, project and portal parts are all portable."""
    check_name(user.username, "user name", numeric_ok=True, error=error)
    check_project(user.project_identifier, error)
    return user


def portal_name(portal: PortalIdentifier, error: ErrorType = UnportableName) -> str:
    """The portal's name, if portable (it is part of every group name of the portal)."""
    return check_name(portal.portal, "portal name", numeric_ok=True, error=error)


def check_project_mapping(
    mapping: ProjectMapping, error: ErrorType = UnportableName
) -> ProjectMapping:
    """Return ``mapping`` if its project and its local group are portable."""
    check_project(mapping.project, error)
    check_name(mapping.local_group, "Unix group name", error=error)
    return mapping


def check_user_mapping(mapping: UserMapping, error: ErrorType = UnportableName) -> UserMapping:
    """Return ``mapping`` if its identity, local user and local group are portable."""
    check_user(mapping.user, error)
    check_name(mapping.local_user, "Unix user name", error=error)
    check_name(mapping.local_group, "Unix group name", error=error)
    return mapping


def check_instruction(instruction: object, error: ErrorType = UnportableName) -> None:
    """Refuse an instruction any of whose identifiers or mappings breaks the rule.

    Run before an agent touches a back end, so a bad name changes nothing anywhere.
    """
    if not dataclasses.is_dataclass(instruction):
        return
    for field in dataclasses.fields(instruction):
        value = getattr(instruction, field.name)
        if isinstance(value, UserIdentifier):
            user_name(value, error)
        elif isinstance(value, ProjectIdentifier):
            project_group(value, error)
        elif isinstance(value, PortalIdentifier):
            portal_name(value, error)
        elif isinstance(value, UserMapping):
            check_user_mapping(value, error)
        elif isinstance(value, ProjectMapping):
            check_project_mapping(value, error)


def project_group(project: ProjectIdentifier, error: ErrorType = UnportableName) -> str:
    """The Unix group of a project (refused with ``error`` unless portable)."""
    check_project(project, error)
    if project.portal in RESERVED_PORTALS:
        group = project.project
    else:
        group = f"{project.portal}.{project.project}"
    return check_name(group, "Unix group name", error=error)


def project_mapping(project: ProjectIdentifier) -> ProjectMapping:
    """The mapping of a project to its Unix group."""
    return ProjectMapping(project, project_group(project))


def user_name(user: UserIdentifier, error: ErrorType = UnportableName) -> str:
    """The Unix user name of an identity (refused with ``error`` unless portable)."""
    check_user(user, error)
    return check_name(f"{user.username}.{user.project}", "Unix user name", error=error)


def user_mapping(user: UserIdentifier) -> UserMapping:
    """The mapping of an identity to its Unix user and primary group."""
    return UserMapping(user, user_name(user), project_group(user.project_identifier))


def slurm_name(local_name: str, what: str = "Slurm name", error: ErrorType = UnportableName) -> str:
    """A Unix user or group name as Slurm stores it; both are checked against the rule.

    OpenPortal also turns ``/`` and spaces into ``_``; a portable name has neither, and
    mending them would let ``x y`` through as ``x_y``, so they are refused instead.
    """
    check_name(local_name, what, error=error)
    return check_name(local_name.removeprefix("group.").lower(), what, error=error)


def instance_group(name: str, zone: str) -> str:
    """The group that marks users of one instance (``op_cluster_default``)."""
    return "op_" + re.sub(r"[^A-Za-z0-9]", "_", f"{name}@{zone}")
