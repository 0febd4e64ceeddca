"""The 64 OpenPortal instructions (plus 3 aliases) as typed values.

``Instruction.parse(text)`` splits ``text`` on single ASCII spaces (notes §4.1):
token 0 is the case-sensitive keyword; arguments are either single tokens or
"the rest" re-joined with spaces, per instruction; surplus tokens are ignored.
``str(instruction)`` is the canonical text, byte-identical to OpenPortal's
``Instruction::to_string()``.  Instructions are frozen dataclasses, so they
compare and hash by value (two instructions of different kinds never compare
equal).

Every malformed input raises :class:`GrammarError`, including the inputs that
make the Rust parser panic (``submit`` or ``create_project`` without
arguments, ``create_project p.portal`` without details).
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass

from ._shapes import (
    REGISTRY,
    Instruction,
    _arg,
    _DestinationsRest,
    _need,
    _PortalReport,
    _PortalRest,
    _ProjectDetailsInstruction,
    _ProjectMappingRest,
    _ProjectMappingToken,
    _ProjectMappingVolume,
    _ProjectMappingVolumeLimit,
    _ProjectReport,
    _ProjectRest,
    _ProjectToken,
    _ProjectVolume,
    _ProjectVolumeLimit,
    _range,
    _ReportInstruction,
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
from .values import DateRange, Usage

__all__ = ["ALIASES", "INSTRUCTION_TYPES", "KEYWORDS", "Instruction"]


# --- the instructions ------------------------------------------------------------------


@dataclass(frozen=True)
class Submit(Instruction):
    """``submit <destination> <instruction...>`` - a bridge job for the portal."""

    keyword = "submit"
    destination: Destination
    instruction: Instruction

    @classmethod
    def _from_parts(cls, parts: list[str], today: _dt.date | None) -> Instruction:
        # Rust indexes parts[1] unchecked here and aborts; we report an error.
        _need(cls.keyword, parts, 2, "<destination> <instruction>")
        destination = _arg(cls.keyword, "destination", parts[1], Destination.parse)
        inner = _arg(
            cls.keyword,
            "instruction",
            " ".join(parts[2:]),
            lambda t: Instruction.parse(t, today=today),
        )
        return cls(destination, inner)

    def arguments(self) -> list[str]:
        return [str(self.destination), str(self.instruction)]


@dataclass(frozen=True)
class CreateProject(_ProjectDetailsInstruction):
    """``create_project <project> <json>`` (alias ``create_award``)."""

    keyword = "create_project"


@dataclass(frozen=True)
class UpdateProject(_ProjectDetailsInstruction):
    """``update_project <project> <json>`` (alias ``update_award``)."""

    keyword = "update_project"


class GetProject(_ProjectRest):
    """``get_project <project>``."""

    keyword = "get_project"
    portal_check = "project"


class GetProjects(_PortalRest):
    """``get_projects <portal>``."""

    keyword = "get_projects"
    portal_check = "portal"


class GetAward(_ProjectRest):
    """``get_award <project>``."""

    keyword = "get_award"
    portal_check = "project"


class GetAwards(_PortalRest):
    """``get_awards <portal>`` (alias ``list_awards``)."""

    keyword = "get_awards"


class AddProject(_ProjectRest):
    """``add_project <project>``."""

    keyword = "add_project"
    portal_check = "project"


class RemoveProject(_ProjectRest):
    """``remove_project <project>``."""

    keyword = "remove_project"
    portal_check = "project"


class GetUsers(_ProjectRest):
    """``get_users <project>``."""

    keyword = "get_users"
    portal_check = "project"


class AddUser(_UserRest):
    """``add_user <user>``."""

    keyword = "add_user"
    portal_check = "user"


class RemoveUser(_UserRest):
    """``remove_user <user>``."""

    keyword = "remove_user"
    portal_check = "user"


class BlockUser(_UserRest):
    """``block_user <user>``."""

    keyword = "block_user"


class UnblockUser(_UserRest):
    """``unblock_user <user>``."""

    keyword = "unblock_user"


class IsBlockedUser(_UserRest):
    """``is_blocked_user <user>``."""

    keyword = "is_blocked_user"


class BlockProject(_ProjectRest):
    """``block_project <project>``."""

    keyword = "block_project"


class UnblockProject(_ProjectRest):
    """``unblock_project <project>``."""

    keyword = "unblock_project"


class IsBlockedProject(_ProjectRest):
    """``is_blocked_project <project>``."""

    keyword = "is_blocked_project"


class GetUserMapping(_UserRest):
    """``get_user_mapping <user>``."""

    keyword = "get_user_mapping"
    portal_check = "user"


class GetProjectMapping(_ProjectRest):
    """``get_project_mapping <project>``."""

    keyword = "get_project_mapping"
    portal_check = "project"


class GetHomeDir(_UserRest):
    """``get_home_dir <user>``."""

    keyword = "get_home_dir"
    portal_check = "user"


class GetUserDirs(_UserRest):
    """``get_user_dirs <user>``."""

    keyword = "get_user_dirs"
    portal_check = "user"


class GetProjectDirs(_ProjectRest):
    """``get_project_dirs <project>``."""

    keyword = "get_project_dirs"
    portal_check = "project"


class AddLocalUser(_UserMappingRest):
    """``add_local_user <user mapping>``."""

    keyword = "add_local_user"
    portal_check = "user"


class RemoveLocalUser(_UserMappingRest):
    """``remove_local_user <user mapping>``."""

    keyword = "remove_local_user"
    portal_check = "user"


class AddLocalProject(_ProjectMappingRest):
    """``add_local_project <project mapping>``."""

    keyword = "add_local_project"
    portal_check = "project"


class RemoveLocalProject(_ProjectMappingRest):
    """``remove_local_project <project mapping>``."""

    keyword = "remove_local_project"
    portal_check = "project"


@dataclass(frozen=True)
class GetLocalUsageReport(_ReportInstruction):
    """``get_local_usage_report <project mapping> [range=this_week]``."""

    keyword = "get_local_usage_report"
    portal_check = "project"
    mapping: ProjectMapping
    date_range: DateRange

    @classmethod
    def _from_parts(cls, parts: list[str], today: _dt.date | None) -> Instruction:
        _need(cls.keyword, parts, 2, "<mapping> [date range]")
        mapping = _arg(cls.keyword, "mapping", parts[1], ProjectMapping.parse)
        return cls(mapping, _range(cls.keyword, parts, "this_week", today))

    def _subject(self) -> str:
        return str(self.mapping)

    def _range(self) -> DateRange:
        return self.date_range

    def _identity(self) -> ProjectIdentifier:
        return self.mapping.project


@dataclass(frozen=True)
class GetLocalStorageReport(_ReportInstruction):
    """``get_local_storage_report <project mapping> [range=today]``."""

    keyword = "get_local_storage_report"
    mapping: ProjectMapping
    date_range: DateRange

    @classmethod
    def _from_parts(cls, parts: list[str], today: _dt.date | None) -> Instruction:
        _need(cls.keyword, parts, 2, "<mapping> [date range]")
        mapping = _arg(cls.keyword, "mapping", parts[1], ProjectMapping.parse)
        return cls(mapping, _range(cls.keyword, parts, "today", today))

    def _subject(self) -> str:
        return str(self.mapping)

    def _range(self) -> DateRange:
        return self.date_range


class GetStorageReport(_ProjectReport):
    """``get_storage_report <project> [range=today]``."""

    keyword = "get_storage_report"
    default_range = "today"


class GetStorageReports(_PortalReport):
    """``get_storage_reports <portal> [range=today]``."""

    keyword = "get_storage_reports"
    default_range = "today"


class GetUsageReport(_ProjectReport):
    """``get_usage_report <project> [range=this_week]``."""

    keyword = "get_usage_report"
    default_range = "this_week"
    portal_check = "project"


class GetUsageReports(_PortalReport):
    """``get_usage_reports <portal> [range=this_week]``."""

    keyword = "get_usage_reports"
    default_range = "this_week"
    portal_check = "portal"


@dataclass(frozen=True)
class SetLocalLimit(Instruction):
    """``set_local_limit <project mapping> <seconds>``.

    Only token 2 is read, so a unit in token 3 is silently lost
    (``10 hours`` -> 10 seconds), exactly as in Rust.
    """

    keyword = "set_local_limit"
    portal_check = "project"
    mapping: ProjectMapping
    usage: Usage

    @classmethod
    def _from_parts(cls, parts: list[str], today: _dt.date | None) -> Instruction:
        _need(cls.keyword, parts, 3, "<mapping> <seconds>")
        mapping = _arg(cls.keyword, "mapping", parts[1], ProjectMapping.parse)
        return cls(mapping, _arg(cls.keyword, "usage", parts[2], Usage.parse))

    def arguments(self) -> list[str]:
        return [str(self.mapping), str(self.usage.seconds)]

    def _identity(self) -> ProjectIdentifier:
        return self.mapping.project


class GetLocalLimit(_ProjectMappingToken):
    """``get_local_limit <project mapping>``."""

    keyword = "get_local_limit"
    portal_check = "project"


@dataclass(frozen=True)
class SetLimit(Instruction):
    """``set_limit <project> <count> [unit]`` - canonical form in seconds."""

    keyword = "set_limit"
    portal_check = "project"
    project: ProjectIdentifier
    usage: Usage

    @classmethod
    def _from_parts(cls, parts: list[str], today: _dt.date | None) -> Instruction:
        _need(cls.keyword, parts, 3, "<project> <usage>")
        project = _arg(cls.keyword, "project", parts[1], ProjectIdentifier.parse)
        return cls(project, _arg(cls.keyword, "usage", " ".join(parts[2:]), Usage.parse))

    def arguments(self) -> list[str]:
        return [str(self.project), str(self.usage.seconds)]

    def _identity(self) -> ProjectIdentifier:
        return self.project


class GetLimit(_ProjectToken):
    """``get_limit <project>``."""

    keyword = "get_limit"
    portal_check = "project"


class ClearProjectQuota(_ProjectVolume):
    """``clear_project_quota <project> <volume>``."""

    keyword = "clear_project_quota"
    portal_check = "project"


class SetProjectQuota(_ProjectVolumeLimit):
    """``set_project_quota <project> <volume> <limit...>``."""

    keyword = "set_project_quota"
    portal_check = "project"


class GetProjectQuota(_ProjectVolume):
    """``get_project_quota <project> <volume>``."""

    keyword = "get_project_quota"
    portal_check = "project"


class GetProjectQuotas(_ProjectToken):
    """``get_project_quotas <project>``."""

    keyword = "get_project_quotas"
    portal_check = "project"


class ClearUserQuota(_UserVolume):
    """``clear_user_quota <user> <volume>``."""

    keyword = "clear_user_quota"
    portal_check = "user"


class SetUserQuota(_UserVolumeLimit):
    """``set_user_quota <user> <volume> <limit...>``."""

    keyword = "set_user_quota"
    portal_check = "user"


class GetUserQuota(_UserVolume):
    """``get_user_quota <user> <volume>``."""

    keyword = "get_user_quota"
    portal_check = "user"


class GetUserQuotas(_UserToken):
    """``get_user_quotas <user>``."""

    keyword = "get_user_quotas"
    portal_check = "user"


class ClearLocalProjectQuota(_ProjectMappingVolume):
    """``clear_local_project_quota <project mapping> <volume>``."""

    keyword = "clear_local_project_quota"
    portal_check = "project"


class SetLocalProjectQuota(_ProjectMappingVolumeLimit):
    """``set_local_project_quota <project mapping> <volume> <limit...>``."""

    keyword = "set_local_project_quota"
    portal_check = "project"


class GetLocalProjectQuota(_ProjectMappingVolume):
    """``get_local_project_quota <project mapping> <volume>``."""

    keyword = "get_local_project_quota"
    portal_check = "project"


class GetLocalProjectQuotas(_ProjectMappingToken):
    """``get_local_project_quotas <project mapping>``."""

    keyword = "get_local_project_quotas"
    portal_check = "project"


class ClearLocalUserQuota(_UserMappingVolume):
    """``clear_local_user_quota <user mapping> <volume>``."""

    keyword = "clear_local_user_quota"
    portal_check = "user"


class SetLocalUserQuota(_UserMappingVolumeLimit):
    """``set_local_user_quota <user mapping> <volume> <limit...>``."""

    keyword = "set_local_user_quota"
    portal_check = "user"


class GetLocalUserQuota(_UserMappingVolume):
    """``get_local_user_quota <user mapping> <volume>``."""

    keyword = "get_local_user_quota"
    portal_check = "user"


class GetLocalUserQuotas(_UserMappingToken):
    """``get_local_user_quotas <user mapping>``."""

    keyword = "get_local_user_quotas"
    portal_check = "user"


class IsProtectedUser(_UserRest):
    """``is_protected_user <user>``."""

    keyword = "is_protected_user"
    portal_check = "user"


class IsExistingUser(_UserRest):
    """``is_existing_user <user>``."""

    keyword = "is_existing_user"
    portal_check = "user"


class IsExistingProject(_ProjectRest):
    """``is_existing_project <project>``."""

    keyword = "is_existing_project"
    portal_check = "project"


class GetLocalHomeDir(_UserMappingRest):
    """``get_local_home_dir <user mapping>``."""

    keyword = "get_local_home_dir"
    portal_check = "user"


class GetLocalUserDirs(_UserMappingRest):
    """``get_local_user_dirs <user mapping>``."""

    keyword = "get_local_user_dirs"
    portal_check = "user"


class GetLocalProjectDirs(_ProjectMappingRest):
    """``get_local_project_dirs <project mapping>``."""

    keyword = "get_local_project_dirs"
    portal_check = "project"


@dataclass(frozen=True)
class UpdateHomeDir(Instruction):
    """``update_homedir <user> <path>`` - a path with spaces is truncated."""

    keyword = "update_homedir"
    portal_check = "user"
    user: UserIdentifier
    homedir: str

    @classmethod
    def _from_parts(cls, parts: list[str], today: _dt.date | None) -> Instruction:
        _need(cls.keyword, parts, 3, "<user> <path>")
        homedir = rust_trim(parts[2])
        if not homedir:
            raise GrammarError(f"update_homedir failed to parse: empty path in {parts[1:]!r}")
        return cls(_arg(cls.keyword, "user", parts[1], UserIdentifier.parse), homedir)

    def arguments(self) -> list[str]:
        return [str(self.user), self.homedir]

    def _identity(self) -> UserIdentifier:
        return self.user


class SyncOfferings(_DestinationsRest):
    """``sync_offerings <destinations>``."""

    keyword = "sync_offerings"


class AddOfferings(_DestinationsRest):
    """``add_offerings <destinations>``."""

    keyword = "add_offerings"


class RemoveOfferings(_DestinationsRest):
    """``remove_offerings <destinations>``."""

    keyword = "remove_offerings"


@dataclass(frozen=True)
class GetOfferings(Instruction):
    """``get_offerings`` (any further tokens are ignored)."""

    keyword = "get_offerings"

    @classmethod
    def _from_parts(cls, parts: list[str], today: _dt.date | None) -> Instruction:
        return cls()

    def arguments(self) -> list[str]:
        return []


# Every concrete instruction class defined above, in definition order.
INSTRUCTION_TYPES: tuple[type[Instruction], ...] = tuple(
    obj
    for obj in list(globals().values())
    if isinstance(obj, type) and issubclass(obj, Instruction) and "keyword" in vars(obj)
)

#: alias keyword -> canonical keyword
ALIASES: dict[str, str] = {
    "create_award": "create_project",
    "update_award": "update_project",
    "list_awards": "get_awards",
}

KEYWORDS: tuple[str, ...] = tuple(t.keyword for t in INSTRUCTION_TYPES)

REGISTRY.update({t.keyword: t for t in INSTRUCTION_TYPES})
REGISTRY.update({alias: REGISTRY[target] for alias, target in ALIASES.items()})

assert len(KEYWORDS) == 64 == len(set(KEYWORDS))
