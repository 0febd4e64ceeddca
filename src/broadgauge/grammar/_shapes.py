"""Building blocks of :mod:`broadgauge.grammar.instructions`.

The :class:`Instruction` base class (with the keyword dispatch of
``Instruction.parse``) and the private "shape" base classes that implement
parsing for each argument layout: identifiers taken from the rest of the line,
single tokens, ``<subject> <volume> [limit]`` and ``<subject> [date range]``.
Concrete instructions live in :mod:`broadgauge.grammar.instructions`, which
registers them in :data:`REGISTRY`.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, TypeVar

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

_T = TypeVar("_T")

#: keyword (including aliases) -> instruction class; filled by ``instructions``
REGISTRY: dict[str, type[Instruction]] = {}


def _arg(keyword: str, what: str, text: str, parser: Callable[[str], _T]) -> _T:
    """Parse one argument, re-raising with the keyword and token named."""
    try:
        return parser(text)
    except GrammarError as exc:
        raise GrammarError(f"{keyword} failed to parse {what} {text!r}: {exc}") from None


def _need(keyword: str, parts: list[str], count: int, usage: str) -> None:
    if len(parts) < count:
        raise GrammarError(
            f"{keyword} failed to parse {' '.join(parts[1:])!r}: expected '{keyword} {usage}'"
        )


class Instruction:
    """Base class of every instruction; use :meth:`parse` to build one."""

    keyword: ClassVar[str]
    #: which identifier the bridge/portal "portal check" inspects (notes §4.4)
    portal_check: ClassVar[str | None] = None

    __slots__ = ()

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
        raise NotImplementedError

    def arguments(self) -> list[str]:
        """The canonical argument strings (as Rust ``Instruction::arguments``)."""
        raise NotImplementedError

    @property
    def command(self) -> str:
        """The canonical keyword (aliases are normalised)."""
        return self.keyword

    def _identity(self) -> UserIdentifier | ProjectIdentifier | PortalIdentifier | None:
        return None

    def checked_identifier(self) -> UserIdentifier | ProjectIdentifier | PortalIdentifier | None:
        """The identifier whose portal the portal check (notes §4.4) compares.

        ``None`` for instructions the check does not cover.
        """
        return None if self.portal_check is None else self._identity()

    def __str__(self) -> str:
        return " ".join([self.keyword, *self.arguments()])


# --- shapes: one identifier / mapping taken from "the rest" ----------------------


@dataclass(frozen=True)
class _UserRest(Instruction):
    user: UserIdentifier

    @classmethod
    def _from_parts(cls, parts: list[str], today: _dt.date | None) -> Instruction:
        return cls(_arg(cls.keyword, "user", " ".join(parts[1:]), UserIdentifier.parse))

    def arguments(self) -> list[str]:
        return [str(self.user)]

    def _identity(self) -> UserIdentifier:
        return self.user


@dataclass(frozen=True)
class _ProjectRest(Instruction):
    project: ProjectIdentifier

    @classmethod
    def _from_parts(cls, parts: list[str], today: _dt.date | None) -> Instruction:
        return cls(_arg(cls.keyword, "project", " ".join(parts[1:]), ProjectIdentifier.parse))

    def arguments(self) -> list[str]:
        return [str(self.project)]

    def _identity(self) -> ProjectIdentifier:
        return self.project


@dataclass(frozen=True)
class _PortalRest(Instruction):
    portal: PortalIdentifier

    @classmethod
    def _from_parts(cls, parts: list[str], today: _dt.date | None) -> Instruction:
        return cls(_arg(cls.keyword, "portal", " ".join(parts[1:]), PortalIdentifier.parse))

    def arguments(self) -> list[str]:
        return [str(self.portal)]

    def _identity(self) -> PortalIdentifier:
        return self.portal


@dataclass(frozen=True)
class _UserMappingRest(Instruction):
    mapping: UserMapping

    @classmethod
    def _from_parts(cls, parts: list[str], today: _dt.date | None) -> Instruction:
        return cls(_arg(cls.keyword, "mapping", " ".join(parts[1:]), UserMapping.parse))

    def arguments(self) -> list[str]:
        return [str(self.mapping)]

    def _identity(self) -> UserIdentifier:
        return self.mapping.user


@dataclass(frozen=True)
class _ProjectMappingRest(Instruction):
    mapping: ProjectMapping

    @classmethod
    def _from_parts(cls, parts: list[str], today: _dt.date | None) -> Instruction:
        return cls(_arg(cls.keyword, "mapping", " ".join(parts[1:]), ProjectMapping.parse))

    def arguments(self) -> list[str]:
        return [str(self.mapping)]

    def _identity(self) -> ProjectIdentifier:
        return self.mapping.project


@dataclass(frozen=True)
class _DestinationsRest(Instruction):
    offerings: Destinations

    @classmethod
    def _from_parts(cls, parts: list[str], today: _dt.date | None) -> Instruction:
        return cls(_arg(cls.keyword, "offerings", " ".join(parts[1:]), Destinations.parse))

    def arguments(self) -> list[str]:
        return [str(self.offerings)]


# --- shapes: single tokens ----------------------------------------------------------


@dataclass(frozen=True)
class _ProjectToken(Instruction):
    project: ProjectIdentifier

    @classmethod
    def _from_parts(cls, parts: list[str], today: _dt.date | None) -> Instruction:
        _need(cls.keyword, parts, 2, "<project>")
        return cls(_arg(cls.keyword, "project", parts[1], ProjectIdentifier.parse))

    def arguments(self) -> list[str]:
        return [str(self.project)]

    def _identity(self) -> ProjectIdentifier:
        return self.project


@dataclass(frozen=True)
class _UserToken(Instruction):
    user: UserIdentifier

    @classmethod
    def _from_parts(cls, parts: list[str], today: _dt.date | None) -> Instruction:
        _need(cls.keyword, parts, 2, "<user>")
        return cls(_arg(cls.keyword, "user", parts[1], UserIdentifier.parse))

    def arguments(self) -> list[str]:
        return [str(self.user)]

    def _identity(self) -> UserIdentifier:
        return self.user


@dataclass(frozen=True)
class _ProjectMappingToken(Instruction):
    mapping: ProjectMapping

    @classmethod
    def _from_parts(cls, parts: list[str], today: _dt.date | None) -> Instruction:
        _need(cls.keyword, parts, 2, "<mapping>")
        return cls(_arg(cls.keyword, "mapping", parts[1], ProjectMapping.parse))

    def arguments(self) -> list[str]:
        return [str(self.mapping)]

    def _identity(self) -> ProjectIdentifier:
        return self.mapping.project


@dataclass(frozen=True)
class _UserMappingToken(Instruction):
    mapping: UserMapping

    @classmethod
    def _from_parts(cls, parts: list[str], today: _dt.date | None) -> Instruction:
        _need(cls.keyword, parts, 2, "<mapping>")
        return cls(_arg(cls.keyword, "mapping", parts[1], UserMapping.parse))

    def arguments(self) -> list[str]:
        return [str(self.mapping)]

    def _identity(self) -> UserIdentifier:
        return self.mapping.user


@dataclass(frozen=True)
class _ProjectVolume(Instruction):
    project: ProjectIdentifier
    volume: Volume

    @classmethod
    def _from_parts(cls, parts: list[str], today: _dt.date | None) -> Instruction:
        _need(cls.keyword, parts, 3, "<project> <volume>")
        project = _arg(cls.keyword, "project", parts[1], ProjectIdentifier.parse)
        return cls(project, _arg(cls.keyword, "volume", parts[2], Volume.parse))

    def arguments(self) -> list[str]:
        return [str(self.project), str(self.volume)]

    def _identity(self) -> ProjectIdentifier:
        return self.project


@dataclass(frozen=True)
class _UserVolume(Instruction):
    user: UserIdentifier
    volume: Volume

    @classmethod
    def _from_parts(cls, parts: list[str], today: _dt.date | None) -> Instruction:
        _need(cls.keyword, parts, 3, "<user> <volume>")
        user = _arg(cls.keyword, "user", parts[1], UserIdentifier.parse)
        return cls(user, _arg(cls.keyword, "volume", parts[2], Volume.parse))

    def arguments(self) -> list[str]:
        return [str(self.user), str(self.volume)]

    def _identity(self) -> UserIdentifier:
        return self.user


@dataclass(frozen=True)
class _ProjectMappingVolume(Instruction):
    mapping: ProjectMapping
    volume: Volume

    @classmethod
    def _from_parts(cls, parts: list[str], today: _dt.date | None) -> Instruction:
        _need(cls.keyword, parts, 3, "<mapping> <volume>")
        mapping = _arg(cls.keyword, "mapping", parts[1], ProjectMapping.parse)
        return cls(mapping, _arg(cls.keyword, "volume", parts[2], Volume.parse))

    def arguments(self) -> list[str]:
        return [str(self.mapping), str(self.volume)]

    def _identity(self) -> ProjectIdentifier:
        return self.mapping.project


@dataclass(frozen=True)
class _UserMappingVolume(Instruction):
    mapping: UserMapping
    volume: Volume

    @classmethod
    def _from_parts(cls, parts: list[str], today: _dt.date | None) -> Instruction:
        _need(cls.keyword, parts, 3, "<mapping> <volume>")
        mapping = _arg(cls.keyword, "mapping", parts[1], UserMapping.parse)
        return cls(mapping, _arg(cls.keyword, "volume", parts[2], Volume.parse))

    def arguments(self) -> list[str]:
        return [str(self.mapping), str(self.volume)]

    def _identity(self) -> UserIdentifier:
        return self.mapping.user


def _limit(keyword: str, parts: list[str]) -> QuotaLimit:
    return _arg(keyword, "quota", " ".join(parts[3:]), QuotaLimit.parse)


@dataclass(frozen=True)
class _ProjectVolumeLimit(Instruction):
    project: ProjectIdentifier
    volume: Volume
    limit: QuotaLimit

    @classmethod
    def _from_parts(cls, parts: list[str], today: _dt.date | None) -> Instruction:
        _need(cls.keyword, parts, 4, "<project> <volume> <limit>")
        project = _arg(cls.keyword, "project", parts[1], ProjectIdentifier.parse)
        volume = _arg(cls.keyword, "volume", parts[2], Volume.parse)
        return cls(project, volume, _limit(cls.keyword, parts))

    def arguments(self) -> list[str]:
        return [str(self.project), str(self.volume), str(self.limit)]

    def _identity(self) -> ProjectIdentifier:
        return self.project


@dataclass(frozen=True)
class _UserVolumeLimit(Instruction):
    user: UserIdentifier
    volume: Volume
    limit: QuotaLimit

    @classmethod
    def _from_parts(cls, parts: list[str], today: _dt.date | None) -> Instruction:
        _need(cls.keyword, parts, 4, "<user> <volume> <limit>")
        user = _arg(cls.keyword, "user", parts[1], UserIdentifier.parse)
        volume = _arg(cls.keyword, "volume", parts[2], Volume.parse)
        return cls(user, volume, _limit(cls.keyword, parts))

    def arguments(self) -> list[str]:
        return [str(self.user), str(self.volume), str(self.limit)]

    def _identity(self) -> UserIdentifier:
        return self.user


@dataclass(frozen=True)
class _ProjectMappingVolumeLimit(Instruction):
    mapping: ProjectMapping
    volume: Volume
    limit: QuotaLimit

    @classmethod
    def _from_parts(cls, parts: list[str], today: _dt.date | None) -> Instruction:
        _need(cls.keyword, parts, 4, "<mapping> <volume> <limit>")
        mapping = _arg(cls.keyword, "mapping", parts[1], ProjectMapping.parse)
        volume = _arg(cls.keyword, "volume", parts[2], Volume.parse)
        return cls(mapping, volume, _limit(cls.keyword, parts))

    def arguments(self) -> list[str]:
        return [str(self.mapping), str(self.volume), str(self.limit)]

    def _identity(self) -> ProjectIdentifier:
        return self.mapping.project


@dataclass(frozen=True)
class _UserMappingVolumeLimit(Instruction):
    mapping: UserMapping
    volume: Volume
    limit: QuotaLimit

    @classmethod
    def _from_parts(cls, parts: list[str], today: _dt.date | None) -> Instruction:
        _need(cls.keyword, parts, 4, "<mapping> <volume> <limit>")
        mapping = _arg(cls.keyword, "mapping", parts[1], UserMapping.parse)
        volume = _arg(cls.keyword, "volume", parts[2], Volume.parse)
        return cls(mapping, volume, _limit(cls.keyword, parts))

    def arguments(self) -> list[str]:
        return [str(self.mapping), str(self.volume), str(self.limit)]

    def _identity(self) -> UserIdentifier:
        return self.mapping.user


def _range(keyword: str, parts: list[str], default: str, today: _dt.date | None) -> DateRange:
    text = parts[2] if len(parts) > 2 else default
    return _arg(keyword, "date range", text, lambda t: DateRange.parse(t, today=today))


@dataclass(frozen=True)
class _ReportInstruction(Instruction):
    """Shared behaviour of the report instructions (``<subject> [range]``)."""

    default_range: ClassVar[str]

    def _subject(self) -> str:
        raise NotImplementedError

    def _range(self) -> DateRange:
        raise NotImplementedError

    def arguments(self) -> list[str]:
        return [self._subject(), str(self._range())]


@dataclass(frozen=True)
class _ProjectDetailsInstruction(Instruction):
    project: ProjectIdentifier
    details: AwardDetails
    portal_check = "project"

    @classmethod
    def _from_parts(cls, parts: list[str], today: _dt.date | None) -> Instruction:
        # Rust panics (aborting the process) for fewer than two tokens and, for
        # create_*, when the details are missing; here both are plain errors.
        _need(cls.keyword, parts, 2, "<project> <details-json>")
        project = _arg(cls.keyword, "project", parts[1], ProjectIdentifier.parse)
        rest = " ".join(parts[2:])
        if len(parts) == 2:
            raise GrammarError(f"{cls.keyword} failed to parse: no award details for {project}")
        return cls(project, _arg(cls.keyword, "details", rest, AwardDetails.parse))

    def arguments(self) -> list[str]:
        return [str(self.project), str(self.details)]

    def _identity(self) -> ProjectIdentifier:
        return self.project


@dataclass(frozen=True)
class _ProjectReport(_ReportInstruction):
    project: ProjectIdentifier
    date_range: DateRange

    @classmethod
    def _from_parts(cls, parts: list[str], today: _dt.date | None) -> Instruction:
        _need(cls.keyword, parts, 2, "<project> [date range]")
        project = _arg(cls.keyword, "project", parts[1], ProjectIdentifier.parse)
        return cls(project, _range(cls.keyword, parts, cls.default_range, today))

    def _subject(self) -> str:
        return str(self.project)

    def _range(self) -> DateRange:
        return self.date_range

    def _identity(self) -> ProjectIdentifier:
        return self.project


@dataclass(frozen=True)
class _PortalReport(_ReportInstruction):
    portal: PortalIdentifier
    date_range: DateRange

    @classmethod
    def _from_parts(cls, parts: list[str], today: _dt.date | None) -> Instruction:
        _need(cls.keyword, parts, 2, "<portal> [date range]")
        portal = _arg(cls.keyword, "portal", parts[1], PortalIdentifier.parse)
        return cls(portal, _range(cls.keyword, parts, cls.default_range, today))

    def _subject(self) -> str:
        return str(self.portal)

    def _range(self) -> DateRange:
        return self.date_range

    def _identity(self) -> PortalIdentifier:
        return self.portal
