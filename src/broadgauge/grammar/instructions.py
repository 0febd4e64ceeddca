"""The 64 OpenPortal instructions (plus 3 aliases) as typed values.

``Instruction.parse(text)`` splits ``text`` on single ASCII spaces (notes §4.1):
token 0 is the case-sensitive keyword; arguments are either single tokens or
"the rest" re-joined with spaces, per instruction; surplus tokens are ignored.
``str(instruction)`` is the canonical text, byte-identical to OpenPortal's
``Instruction::to_string()``.  Instructions are frozen dataclasses, so they
compare and hash by value (two instructions of different kinds never compare
equal).

Each class below is one row of the instruction table: its argument shape (a
base class from :mod:`broadgauge.grammar._shapes`, which does the parsing and
rendering), its keyword and the identifier the portal check inspects.

Every malformed input raises :class:`GrammarError`, including the inputs that
make the Rust parser panic (``submit`` or ``create_project`` without
arguments, ``create_project p.portal`` without details).
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass

from ._shapes import (
    _PROJECT,
    _PROJECT_MAPPING,
    _USER,
    REGISTRY,
    Instruction,
    _Arg,
    _DestinationsRest,
    _need,
    _PortalReport,
    _PortalRest,
    _ProjectDetailsInstruction,
    _ProjectMappingReport,
    _ProjectMappingRest,
    _ProjectMappingToken,
    _ProjectMappingVolume,
    _ProjectMappingVolumeLimit,
    _ProjectReport,
    _ProjectRest,
    _ProjectToken,
    _ProjectVolume,
    _ProjectVolumeLimit,
    _UserMappingRest,
    _UserMappingToken,
    _UserMappingVolume,
    _UserMappingVolumeLimit,
    _UserRest,
    _UserToken,
    _UserVolume,
    _UserVolumeLimit,
)
from ._text import rust_trim
from .destination import Destination
from .errors import GrammarError
from .identifiers import ProjectIdentifier, ProjectMapping, UserIdentifier
from .values import Usage

__all__ = ["ALIASES", "INSTRUCTION_TYPES", "KEYWORDS", "Instruction"]


# --- the instructions ------------------------------------------------------------------


@dataclass(frozen=True)
class Submit(Instruction, keyword="submit"):
    """``submit <destination> <instruction...>`` - a bridge job for the portal."""

    destination: Destination
    instruction: Instruction
    # Rust indexes parts[1] unchecked and aborts on a bare "submit"; the count check
    # reports an error instead.
    _args = (
        _Arg("destination", Destination.parse),
        _Arg("instruction", Instruction.parse, rest=True, required=False, dated=True),
    )


class CreateProject(_ProjectDetailsInstruction, keyword="create_project"):
    """``create_project <project> <json>`` (alias ``create_award``)."""


class UpdateProject(_ProjectDetailsInstruction, keyword="update_project"):
    """``update_project <project> <json>`` (alias ``update_award``)."""


class GetProject(_ProjectRest, keyword="get_project", check="project"):
    """``get_project <project>``."""


class GetProjects(_PortalRest, keyword="get_projects", check="portal"):
    """``get_projects <portal>``."""


class GetAward(_ProjectRest, keyword="get_award", check="project"):
    """``get_award <project>``."""


class GetAwards(_PortalRest, keyword="get_awards"):
    """``get_awards <portal>`` (alias ``list_awards``)."""


class AddProject(_ProjectRest, keyword="add_project", check="project"):
    """``add_project <project>``."""


class RemoveProject(_ProjectRest, keyword="remove_project", check="project"):
    """``remove_project <project>``."""


class GetUsers(_ProjectRest, keyword="get_users", check="project"):
    """``get_users <project>``."""


class AddUser(_UserRest, keyword="add_user", check="user"):
    """``add_user <user>``."""


class RemoveUser(_UserRest, keyword="remove_user", check="user"):
    """``remove_user <user>``."""


class BlockUser(_UserRest, keyword="block_user"):
    """``block_user <user>``."""


class UnblockUser(_UserRest, keyword="unblock_user"):
    """``unblock_user <user>``."""


class IsBlockedUser(_UserRest, keyword="is_blocked_user"):
    """``is_blocked_user <user>``."""


class BlockProject(_ProjectRest, keyword="block_project"):
    """``block_project <project>``."""


class UnblockProject(_ProjectRest, keyword="unblock_project"):
    """``unblock_project <project>``."""


class IsBlockedProject(_ProjectRest, keyword="is_blocked_project"):
    """``is_blocked_project <project>``."""


class GetUserMapping(_UserRest, keyword="get_user_mapping", check="user"):
    """``get_user_mapping <user>``."""


class GetProjectMapping(_ProjectRest, keyword="get_project_mapping", check="project"):
    """``get_project_mapping <project>``."""


class GetHomeDir(_UserRest, keyword="get_home_dir", check="user"):
    """``get_home_dir <user>``."""


class GetUserDirs(_UserRest, keyword="get_user_dirs", check="user"):
    """``get_user_dirs <user>``."""


class GetProjectDirs(_ProjectRest, keyword="get_project_dirs", check="project"):
    """``get_project_dirs <project>``."""


class AddLocalUser(_UserMappingRest, keyword="add_local_user", check="user"):
    """``add_local_user <user mapping>``."""


class RemoveLocalUser(_UserMappingRest, keyword="remove_local_user", check="user"):
    """``remove_local_user <user mapping>``."""


class AddLocalProject(_ProjectMappingRest, keyword="add_local_project", check="project"):
    """``add_local_project <project mapping>``."""


class RemoveLocalProject(_ProjectMappingRest, keyword="remove_local_project", check="project"):
    """``remove_local_project <project mapping>``."""


class GetLocalUsageReport(_ProjectMappingReport, keyword="get_local_usage_report", check="project"):
    """``get_local_usage_report <project mapping> [range=this_week]``."""

    default_range = "this_week"


class GetLocalStorageReport(_ProjectMappingReport, keyword="get_local_storage_report"):
    """``get_local_storage_report <project mapping> [range=today]``."""

    default_range = "today"


class GetStorageReport(_ProjectReport, keyword="get_storage_report"):
    """``get_storage_report <project> [range=today]``."""

    default_range = "today"


class GetStorageReports(_PortalReport, keyword="get_storage_reports"):
    """``get_storage_reports <portal> [range=today]``."""

    default_range = "today"


class GetUsageReport(_ProjectReport, keyword="get_usage_report", check="project"):
    """``get_usage_report <project> [range=this_week]``."""

    default_range = "this_week"


class GetUsageReports(_PortalReport, keyword="get_usage_reports", check="portal"):
    """``get_usage_reports <portal> [range=this_week]``."""

    default_range = "this_week"


@dataclass(frozen=True)
class SetLocalLimit(Instruction, keyword="set_local_limit", check="project"):
    """``set_local_limit <project mapping> <seconds>``.

    Only token 2 is read, so a unit in token 3 is silently lost
    (``10 hours`` -> 10 seconds), exactly as in Rust.
    """

    mapping: ProjectMapping
    usage: Usage
    _args = (_PROJECT_MAPPING, _Arg("usage", Usage.parse, usage="<seconds>"))


class GetLocalLimit(_ProjectMappingToken, keyword="get_local_limit", check="project"):
    """``get_local_limit <project mapping>``."""


@dataclass(frozen=True)
class SetLimit(Instruction, keyword="set_limit", check="project"):
    """``set_limit <project> <count> [unit]`` - canonical form in seconds."""

    project: ProjectIdentifier
    usage: Usage
    _args = (_PROJECT, _Arg("usage", Usage.parse, rest=True))


class GetLimit(_ProjectToken, keyword="get_limit", check="project"):
    """``get_limit <project>``."""


class ClearProjectQuota(_ProjectVolume, keyword="clear_project_quota", check="project"):
    """``clear_project_quota <project> <volume>``."""


class SetProjectQuota(_ProjectVolumeLimit, keyword="set_project_quota", check="project"):
    """``set_project_quota <project> <volume> <limit...>``."""


class GetProjectQuota(_ProjectVolume, keyword="get_project_quota", check="project"):
    """``get_project_quota <project> <volume>``."""


class GetProjectQuotas(_ProjectToken, keyword="get_project_quotas", check="project"):
    """``get_project_quotas <project>``."""


class ClearUserQuota(_UserVolume, keyword="clear_user_quota", check="user"):
    """``clear_user_quota <user> <volume>``."""


class SetUserQuota(_UserVolumeLimit, keyword="set_user_quota", check="user"):
    """``set_user_quota <user> <volume> <limit...>``."""


class GetUserQuota(_UserVolume, keyword="get_user_quota", check="user"):
    """``get_user_quota <user> <volume>``."""


class GetUserQuotas(_UserToken, keyword="get_user_quotas", check="user"):
    """``get_user_quotas <user>``."""


class ClearLocalProjectQuota(
    _ProjectMappingVolume, keyword="clear_local_project_quota", check="project"
):
    """``clear_local_project_quota <project mapping> <volume>``."""


class SetLocalProjectQuota(
    _ProjectMappingVolumeLimit, keyword="set_local_project_quota", check="project"
):
    """``set_local_project_quota <project mapping> <volume> <limit...>``."""


class GetLocalProjectQuota(
    _ProjectMappingVolume, keyword="get_local_project_quota", check="project"
):
    """``get_local_project_quota <project mapping> <volume>``."""


class GetLocalProjectQuotas(
    _ProjectMappingToken, keyword="get_local_project_quotas", check="project"
):
    """``get_local_project_quotas <project mapping>``."""


class ClearLocalUserQuota(_UserMappingVolume, keyword="clear_local_user_quota", check="user"):
    """``clear_local_user_quota <user mapping> <volume>``."""


class SetLocalUserQuota(_UserMappingVolumeLimit, keyword="set_local_user_quota", check="user"):
    """``set_local_user_quota <user mapping> <volume> <limit...>``."""


class GetLocalUserQuota(_UserMappingVolume, keyword="get_local_user_quota", check="user"):
    """``get_local_user_quota <user mapping> <volume>``."""


class GetLocalUserQuotas(_UserMappingToken, keyword="get_local_user_quotas", check="user"):
    """``get_local_user_quotas <user mapping>``."""


class IsProtectedUser(_UserRest, keyword="is_protected_user", check="user"):
    """``is_protected_user <user>``."""


class IsExistingUser(_UserRest, keyword="is_existing_user", check="user"):
    """``is_existing_user <user>``."""


class IsExistingProject(_ProjectRest, keyword="is_existing_project", check="project"):
    """``is_existing_project <project>``."""


class GetLocalHomeDir(_UserMappingRest, keyword="get_local_home_dir", check="user"):
    """``get_local_home_dir <user mapping>``."""


class GetLocalUserDirs(_UserMappingRest, keyword="get_local_user_dirs", check="user"):
    """``get_local_user_dirs <user mapping>``."""


class GetLocalProjectDirs(_ProjectMappingRest, keyword="get_local_project_dirs", check="project"):
    """``get_local_project_dirs <project mapping>``."""


@dataclass(frozen=True)
class UpdateHomeDir(Instruction, keyword="update_homedir", check="user"):
    """``update_homedir <user> <path>`` - a path with spaces is truncated."""

    user: UserIdentifier
    homedir: str
    _args = (_USER, _Arg("homedir", str, usage="<path>"))

    @classmethod
    def _from_parts(cls, parts: list[str], today: _dt.date | None) -> Instruction:
        # The path is checked before the user, as in Rust.
        _need(cls.keyword, parts, 3, cls._usage())
        homedir = rust_trim(parts[2])
        if not homedir:
            raise GrammarError(f"update_homedir failed to parse: empty path in {parts[1:]!r}")
        return cls(_USER.read(cls.keyword, parts[1], today), homedir)


class SyncOfferings(_DestinationsRest, keyword="sync_offerings"):
    """``sync_offerings <destinations>``."""


class AddOfferings(_DestinationsRest, keyword="add_offerings"):
    """``add_offerings <destinations>``."""


class RemoveOfferings(_DestinationsRest, keyword="remove_offerings"):
    """``remove_offerings <destinations>``."""


@dataclass(frozen=True)
class GetOfferings(Instruction, keyword="get_offerings"):
    """``get_offerings`` (any further tokens are ignored)."""


# Every concrete instruction class defined above, in definition order (the reference's 64;
# Broadgauge's extensions register too, but are not among them).
INSTRUCTION_TYPES: tuple[type[Instruction], ...] = tuple(
    t for t in REGISTRY.values() if not t.extension
)

#: alias keyword -> canonical keyword
ALIASES: dict[str, str] = {
    "create_award": "create_project",
    "update_award": "update_project",
    "list_awards": "get_awards",
}

KEYWORDS: tuple[str, ...] = tuple(t.keyword for t in INSTRUCTION_TYPES)

REGISTRY.update({alias: REGISTRY[target] for alias, target in ALIASES.items()})

assert len(KEYWORDS) == 64 == len(set(KEYWORDS))
