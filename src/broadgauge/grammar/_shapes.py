"""Building blocks of :mod:`broadgauge.grammar.instructions`.

The :class:`Instruction` base class (with the keyword dispatch of
``Instruction.parse``) reads and writes every instruction from a table: each
instruction class lists its arguments as :class:`_Arg` entries, and the base
class splits, checks, parses and renders them.  The private "shape" classes
below declare the typed fields of each argument layout (identifiers taken from
the rest of the line, single tokens, ``<subject> <volume> [limit]`` and
``<subject> [date range]``); concrete instructions in
:mod:`broadgauge.grammar.instructions` subclass a shape with their keyword and
register themselves in :data:`REGISTRY`.
"""

from __future__ import annotations

import datetime as _dt
import functools
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Final, TypeVar

from .award import AwardDetails
from .destination import Destinations
from .errors import GrammarError
from .identifiers import (
    PortalIdentifier,
    ProjectIdentifier,
    ProjectMapping,
    UserIdentifier,
    UserMapping,
)
from .values import DateRange, QuotaLimit, Volume

__all__ = ["REGISTRY", "Instruction"]

Identifier = UserIdentifier | ProjectIdentifier | PortalIdentifier

#: keyword (including aliases) -> instruction class; filled as classes are defined
REGISTRY: dict[str, type[Instruction]] = {}


def _need(keyword: str, parts: list[str], count: int, usage: str) -> None:
    if len(parts) < count:
        raise GrammarError(
            f"{keyword} failed to parse {' '.join(parts[1:])!r}: expected '{keyword} {usage}'"
        )


@dataclass(frozen=True)
class _Arg:
    """How one argument of an instruction is read and which field it fills.

    Argument ``i`` (counting from 1 after the keyword) is ``parts[i]``, or with
    ``rest`` the tokens from ``i`` on re-joined with single spaces.  Every
    ``required`` argument must be there (an error quoting ``usage`` otherwise);
    a missing optional token falls back to the class's ``default_range``.
    ``parse`` gets the text (and ``today=`` when ``dated``); its error is
    reported as ``<keyword> failed to parse <label> ...``.  ``identity`` picks
    the identifier the portal check inspects from the value.
    """

    field: str
    parse: Callable[..., Any]
    label: str = ""
    usage: str = ""
    rest: bool = False
    required: bool = True
    dated: bool = False
    identity: Callable[[Any], Identifier] | None = None

    def __post_init__(self) -> None:
        label = self.label or self.field
        object.__setattr__(self, "label", label)
        object.__setattr__(self, "usage", self.usage or f"<{label}>")

    def read(self, keyword: str, text: str, today: _dt.date | None) -> Any:
        """Parse this argument from ``text``, naming the keyword and token on error."""
        try:
            return self.parse(text, today=today) if self.dated else self.parse(text)
        except GrammarError as exc:
            raise GrammarError(f"{keyword} failed to parse {self.label} {text!r}: {exc}") from None


def _itself(value: Identifier) -> Identifier:
    return value


#: How many parsed identifiers of each kind are kept for sharing (see :func:`_shared`); one
#: weighs about 100-200 bytes.
IDENTIFIERS_KEPT: Final = 4096

_Parsed = TypeVar("_Parsed")


def _shared(parse: Callable[[str], _Parsed]) -> Callable[[str], _Parsed]:
    """``parse``, returning one shared value for the same text while it is recent.

    Identifiers are immutable, and the same one recurs in many jobs on a board: every sub-job
    of an ``add_user`` names its user, and every version of a job repeats its command.  The
    finished jobs a board keeps until they expire are most of an agent's memory under load,
    so sharing their identifiers keeps the high-water mark down (and saves the parse).
    """
    return functools.lru_cache(maxsize=IDENTIFIERS_KEPT)(parse)


_USER = _Arg("user", _shared(UserIdentifier.parse), identity=_itself)
_PROJECT = _Arg("project", _shared(ProjectIdentifier.parse), identity=_itself)
_PORTAL = _Arg("portal", _shared(PortalIdentifier.parse), identity=_itself)
_USER_MAPPING = _Arg("mapping", _shared(UserMapping.parse), identity=lambda mapping: mapping.user)
_PROJECT_MAPPING = _Arg(
    "mapping", _shared(ProjectMapping.parse), identity=lambda mapping: mapping.project
)
_OFFERINGS = _Arg("offerings", Destinations.parse)
_VOLUME = _Arg("volume", Volume.parse)
_LIMIT = _Arg("limit", QuotaLimit.parse, label="quota", usage="<limit>", rest=True)
_RANGE = _Arg(
    "date_range",
    DateRange.parse,
    label="date range",
    usage="[date range]",
    required=False,
    dated=True,
)
_DETAILS = _Arg("details", AwardDetails.parse, usage="<details-json>", rest=True)


def _whole_line(arg: _Arg) -> _Arg:
    """``arg`` read from everything after the keyword, with no count check (as Rust)."""
    return replace(arg, rest=True, required=False)


class Instruction:
    """Base class of every instruction; use :meth:`parse` to build one.

    A subclass names its keyword (and which identifier the portal check
    inspects) in its class statement, ``class AddUser(_UserRest,
    keyword="add_user", check="user")``, and is registered for :meth:`parse`.
    """

    keyword: ClassVar[str]
    #: which identifier the bridge/portal "portal check" inspects (notes §4.4)
    portal_check: ClassVar[str | None] = None
    #: the arguments after the keyword, in field order
    _args: ClassVar[tuple[_Arg, ...]] = ()
    #: how many of them must be present (worked out once per class)
    _required: ClassVar[int] = 0
    #: the range a report instruction covers when none is given
    default_range: ClassVar[str]
    #: a Broadgauge addition, unknown to OpenPortal (:mod:`broadgauge.grammar.extensions`)
    extension: ClassVar[bool] = False

    __slots__ = ()

    def __init_subclass__(
        cls,
        *,
        keyword: str | None = None,
        check: str | None = None,
        extension: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init_subclass__(**kwargs)
        cls._required = sum(arg.required for arg in cls._args)
        cls.extension = extension
        if check is not None:
            cls.portal_check = check
        if keyword is not None:
            cls.keyword = keyword
            REGISTRY[keyword] = cls

    @staticmethod
    def parse(text: str, *, today: _dt.date | None = None) -> Instruction:
        """Parse an instruction string (named date ranges resolve against ``today``)."""
        parts = text.split(" ")
        keyword = parts[0]
        cls = REGISTRY.get(keyword)
        if cls is None:
            raise GrammarError(f"Invalid instruction: {text!r} (unknown keyword {keyword!r})")
        return cls._from_parts(parts, today)

    @classmethod
    def _from_parts(cls, parts: list[str], today: _dt.date | None) -> Instruction:
        """Check the token count, then parse each argument in order (surplus is ignored)."""
        keyword = cls.keyword
        # Every job's command is parsed at every hop: the common shapes take a fast path.
        if len(parts) <= cls._required:
            _need(keyword, parts, 1 + cls._required, cls._usage())
        values = []
        index = 1
        for arg in cls._args:
            if arg.rest:
                text = " ".join(parts[index:])
            else:
                text = parts[index] if index < len(parts) else cls.default_range
            values.append(arg.read(keyword, text, today))
            index += 1
        return cls(*values)

    @classmethod
    def _usage(cls) -> str:
        return " ".join(arg.usage for arg in cls._args)

    def arguments(self) -> list[str]:
        """The canonical argument strings (as Rust ``Instruction::arguments``)."""
        return [str(getattr(self, arg.field)) for arg in self._args]

    @property
    def command(self) -> str:
        """The canonical keyword (aliases are normalised)."""
        return self.keyword

    def checked_identifier(self) -> Identifier | None:
        """The identifier whose portal the portal check (notes §4.4) compares.

        ``None`` for instructions the check does not cover.
        """
        if self.portal_check is None:
            return None
        subject = self._args[0]
        assert subject.identity is not None
        return subject.identity(getattr(self, subject.field))

    def __str__(self) -> str:
        return " ".join([self.keyword, *self.arguments()])


# --- shapes: the subject of an instruction (its first argument's field) -----------------
#
# Each layout below adds its fields to a subject (``<subject> <volume>``, then
# ``<subject> <volume> <limit>``...) and lists how all its arguments are read.


@dataclass(frozen=True)
class _User(Instruction):
    user: UserIdentifier


@dataclass(frozen=True)
class _Project(Instruction):
    project: ProjectIdentifier


@dataclass(frozen=True)
class _Portal(Instruction):
    portal: PortalIdentifier


@dataclass(frozen=True)
class _UserMapping(Instruction):
    mapping: UserMapping


@dataclass(frozen=True)
class _ProjectMapping(Instruction):
    mapping: ProjectMapping


# --- shapes: the subject taken from the rest of the line ------------------------------


class _UserRest(_User):
    _args = (_whole_line(_USER),)


class _ProjectRest(_Project):
    _args = (_whole_line(_PROJECT),)


class _PortalRest(_Portal):
    _args = (_whole_line(_PORTAL),)


class _UserMappingRest(_UserMapping):
    _args = (_whole_line(_USER_MAPPING),)


class _ProjectMappingRest(_ProjectMapping):
    _args = (_whole_line(_PROJECT_MAPPING),)


@dataclass(frozen=True)
class _DestinationsRest(Instruction):
    offerings: Destinations
    _args = (_whole_line(_OFFERINGS),)


# --- shapes: the subject as a single token --------------------------------------------


class _ProjectToken(_Project):
    _args = (_PROJECT,)


class _UserToken(_User):
    _args = (_USER,)


class _ProjectMappingToken(_ProjectMapping):
    _args = (_PROJECT_MAPPING,)


class _UserMappingToken(_UserMapping):
    _args = (_USER_MAPPING,)


# --- shapes: <subject> <volume>, then <subject> <volume> <limit...> -------------------


@dataclass(frozen=True)
class _ProjectVolume(_Project):
    volume: Volume
    _args: ClassVar[tuple[_Arg, ...]] = (_PROJECT, _VOLUME)  # extended below


@dataclass(frozen=True)
class _UserVolume(_User):
    volume: Volume
    _args: ClassVar[tuple[_Arg, ...]] = (_USER, _VOLUME)  # extended below


@dataclass(frozen=True)
class _ProjectMappingVolume(_ProjectMapping):
    volume: Volume
    _args: ClassVar[tuple[_Arg, ...]] = (_PROJECT_MAPPING, _VOLUME)  # extended below


@dataclass(frozen=True)
class _UserMappingVolume(_UserMapping):
    volume: Volume
    _args: ClassVar[tuple[_Arg, ...]] = (_USER_MAPPING, _VOLUME)  # extended below


@dataclass(frozen=True)
class _ProjectVolumeLimit(_ProjectVolume):
    limit: QuotaLimit
    _args = (*_ProjectVolume._args, _LIMIT)


@dataclass(frozen=True)
class _UserVolumeLimit(_UserVolume):
    limit: QuotaLimit
    _args = (*_UserVolume._args, _LIMIT)


@dataclass(frozen=True)
class _ProjectMappingVolumeLimit(_ProjectMappingVolume):
    limit: QuotaLimit
    _args = (*_ProjectMappingVolume._args, _LIMIT)


@dataclass(frozen=True)
class _UserMappingVolumeLimit(_UserMappingVolume):
    limit: QuotaLimit
    _args = (*_UserMappingVolume._args, _LIMIT)


# --- shapes: <subject> [date range] -------------------------------------------------


@dataclass(frozen=True)
class _ProjectReport(_Project):
    date_range: DateRange
    _args = (_PROJECT, _RANGE)


@dataclass(frozen=True)
class _PortalReport(_Portal):
    date_range: DateRange
    _args = (_PORTAL, _RANGE)


@dataclass(frozen=True)
class _ProjectMappingReport(_ProjectMapping):
    date_range: DateRange
    _args = (_PROJECT_MAPPING, _RANGE)


# --- the award-details shape (create_project, update_project) ----------------------


@dataclass(frozen=True)
class _ProjectDetailsInstruction(_Project):
    details: AwardDetails
    portal_check = "project"
    _args = (_PROJECT, _DETAILS)

    @classmethod
    def _from_parts(cls, parts: list[str], today: _dt.date | None) -> Instruction:
        # Rust panics (aborting the process) for fewer than two tokens and, for
        # create_*, when the details are missing; here both are plain errors.
        _need(cls.keyword, parts, 2, cls._usage())
        project = _PROJECT.read(cls.keyword, parts[1], today)
        if len(parts) == 2:
            raise GrammarError(f"{cls.keyword} failed to parse: no award details for {project}")
        return cls(project, _DETAILS.read(cls.keyword, " ".join(parts[2:]), today))
