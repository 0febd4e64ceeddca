"""Portal, project and user identifiers and their local mappings.

Text forms (OpenPortal 0.32.2, notes §4.2):

* ``PortalIdentifier``  ``portal`` - trimmed, non-empty, no ASCII space, no ``.``
* ``ProjectIdentifier`` ``project.portal`` - exactly two ``.``-separated parts,
  each trimmed and non-empty
* ``UserIdentifier``    ``username.project.portal`` - exactly three parts
* ``ProjectMapping``    ``project.portal:local_group``
* ``UserMapping``       ``username.project.portal:local_user:local_group``

Local names are trimmed, non-empty and may not start or end with ``.`` or
``/``.  Identifiers are case-sensitive and never normalised beyond trimming.
All values serialise to JSON as their canonical string.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._text import rust_trim
from .errors import GrammarError

__all__ = [
    "PortalIdentifier",
    "ProjectIdentifier",
    "ProjectMapping",
    "UserIdentifier",
    "UserMapping",
]


def _split(text: str, separator: str, kind: str, count: int) -> list[str]:
    parts = text.split(separator)
    if len(parts) != count:
        needs = "one" if count == 2 else "two"
        raise GrammarError(f"Invalid {kind}: {text!r} needs exactly {needs} {separator!r}")
    return parts


def _dotted(text: str, kind: str, names: tuple[str, ...]) -> list[str]:
    """The ``.``-separated parts of an identifier, each trimmed and non-empty."""
    parts = _split(text, ".", kind, len(names))
    for index, (part, what) in enumerate(zip(parts, names, strict=True)):
        parts[index] = rust_trim(part)
        if not parts[index]:
            raise GrammarError(f"Invalid {kind} - {what} cannot be empty {text!r}")
    return parts


def _check_components(kind: str, *parts: str) -> None:
    for part in parts:
        if not part or part != rust_trim(part) or "." in part:
            raise GrammarError(f"Invalid {kind} component {part!r}")


@dataclass(frozen=True, slots=True)
class PortalIdentifier:
    """The name of a portal, e.g. ``brics``."""

    portal: str

    def __post_init__(self) -> None:
        if not self.portal or self.portal != rust_trim(self.portal):
            raise GrammarError(f"Invalid PortalIdentifier {self.portal!r}")
        if " " in self.portal or "." in self.portal:
            raise GrammarError(
                f"Invalid PortalIdentifier - portal cannot contain spaces or periods "
                f"{self.portal!r}"
            )

    @classmethod
    def parse(cls, text: str) -> PortalIdentifier:
        """Parse ``portal`` (surrounding whitespace is trimmed)."""
        portal = rust_trim(text)
        if not portal:
            raise GrammarError(f"Invalid PortalIdentifier - portal cannot be empty {text!r}")
        if " " in portal or "." in portal:
            raise GrammarError(
                f"Invalid PortalIdentifier - portal cannot contain spaces or periods {text!r}"
            )
        return cls(portal)

    def __str__(self) -> str:
        return self.portal


@dataclass(frozen=True, slots=True)
class ProjectIdentifier:
    """A project within a portal: ``project.portal``."""

    project: str
    portal: str

    def __post_init__(self) -> None:
        _check_components("ProjectIdentifier", self.project, self.portal)

    @classmethod
    def parse(cls, text: str) -> ProjectIdentifier:
        """Parse ``project.portal``; each part is trimmed and must be non-empty."""
        return cls(*_dotted(text, "ProjectIdentifier", ("project", "portal")))

    @property
    def portal_identifier(self) -> PortalIdentifier:
        """The portal this project belongs to."""
        return PortalIdentifier(self.portal)

    def __str__(self) -> str:
        return f"{self.project}.{self.portal}"


@dataclass(frozen=True, slots=True)
class UserIdentifier:
    """A user within a project: ``username.project.portal``."""

    username: str
    project: str
    portal: str

    def __post_init__(self) -> None:
        _check_components("UserIdentifier", self.username, self.project, self.portal)

    @classmethod
    def parse(cls, text: str) -> UserIdentifier:
        """Parse ``username.project.portal``; each part is trimmed, non-empty."""
        return cls(*_dotted(text, "UserIdentifier", ("username", "project", "portal")))

    @property
    def project_identifier(self) -> ProjectIdentifier:
        """The project this user belongs to."""
        return ProjectIdentifier(self.project, self.portal)

    @property
    def portal_identifier(self) -> PortalIdentifier:
        """The portal this user belongs to."""
        return PortalIdentifier(self.portal)

    def __str__(self) -> str:
        return f"{self.username}.{self.project}.{self.portal}"


def _local_name(value: str, kind: str, what: str) -> str:
    name = rust_trim(value)
    if not name:
        raise GrammarError(f"Invalid {kind} - {what} cannot be empty {value!r}")
    if name[0] in "./" or name[-1] in "./":
        raise GrammarError(f"Invalid {kind} - {what} may not start or end with '.' or '/' {name!r}")
    return name


def _check_local_name(value: str, kind: str, what: str) -> None:
    if _local_name(value, kind, what) != value:
        raise GrammarError(f"Invalid {kind} {what} {value!r}")


@dataclass(frozen=True, slots=True)
class ProjectMapping:
    """A project mapped to its local (Unix) group: ``project.portal:group``."""

    project: ProjectIdentifier
    local_group: str

    def __post_init__(self) -> None:
        _check_local_name(self.local_group, "ProjectMapping", "local_group")

    @classmethod
    def parse(cls, text: str) -> ProjectMapping:
        """Parse ``project.portal:local_group``."""
        parts = _split(text, ":", "ProjectMapping", 2)
        project = ProjectIdentifier.parse(parts[0])
        return cls(project, _local_name(parts[1], "ProjectMapping", "local_group"))

    def __str__(self) -> str:
        return f"{self.project}:{self.local_group}"


@dataclass(frozen=True, slots=True)
class UserMapping:
    """A user mapped to a local account: ``u.p.portal:local_user:local_group``."""

    user: UserIdentifier
    local_user: str
    local_group: str

    def __post_init__(self) -> None:
        _check_local_name(self.local_user, "UserMapping", "local_user")
        _check_local_name(self.local_group, "UserMapping", "local_group")

    @classmethod
    def parse(cls, text: str) -> UserMapping:
        """Parse ``username.project.portal:local_user:local_group``."""
        parts = _split(text, ":", "UserMapping", 3)
        user = UserIdentifier.parse(parts[0])
        local_user = _local_name(parts[1], "UserMapping", "local_user")
        local_group = _local_name(parts[2], "UserMapping", "local_group")
        return cls(user, local_user, local_group)

    @property
    def project_mapping(self) -> ProjectMapping:
        """The mapping of this user's project to the same local group."""
        return ProjectMapping(self.user.project_identifier, self.local_group)

    def __str__(self) -> str:
        return f"{self.user}:{self.local_user}:{self.local_group}"
