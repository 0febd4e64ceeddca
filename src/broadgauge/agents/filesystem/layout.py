"""The filesystem agent's volume layout: parsed config tables and the paths they give.

Pure: no I/O.  :func:`parse_layout` reads the top-level tables OpenPortal's filesystem agent
uses (notes §2.3, ``filesystem/src/volumeconfig.rs``) from :attr:`AgentConfig.other`::

    [quota_engines.ledger]
    type = "ledger"                      # ours; "linux" and OpenPortal's "fake" also accepted

    [user_volumes.home]
    roots = ["/data/home"]               # required, at least one
    subpath = "{project}/{user}"         # default; placeholders are case-insensitive
    permissions = "0755"                 # default; or one string per root
    is_home = true                       # automatic when there is only one user volume
    quota_engine = "ledger"              # optional; must name a [quota_engines.*] table
    max_quota = "1TB"                    # optional
    default_quota = "100GB"              # optional, not above max_quota

    [project_volumes.projects]
    roots = ["/data/projects"]
    subpath = "{project}"                # default
    permissions = "2770"                 # default (setgid: new files get the project group)
    links = ["/work/{project}"]          # optional, one per root, "" = no link

Paths are ``<root>/<subpath>`` with ``{project}`` = the *project part* of the OpenPortal
identifier and ``{user}`` = the local Unix user.  A path is returned as a :class:`Placement`
(a root plus the components under it) so the agent can walk it one component at a time
without ever following a link; a placeholder value that is no portable name (so also one
that would add or climb components: ``/``, ``.``, ``..``) is refused here.

A user volume's *project directory* (``<root>/{project}`` for the default subpath) is the
part of the subpath before the first component that names ``{user}``; it is created with the
project, owned by root and the project group.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import PurePosixPath
from typing import Any, Literal

from broadgauge.agents.naming import check_name
from broadgauge.grammar import GrammarError, ProjectMapping, QuotaLimit, UserMapping

VolumeKind = Literal["user", "project"]

DEFAULT_USER_SUBPATH = "{project}/{user}"
DEFAULT_PROJECT_SUBPATH = "{project}"
DEFAULT_USER_MODE = 0o755
DEFAULT_PROJECT_MODE = 0o2770
ENGINE_TYPES = frozenset({"ledger", "fake", "linux", "lustre"})

_PROJECT_RE = re.compile(r"\{project\}", re.IGNORECASE)
_USER_RE = re.compile(r"\{user\}", re.IGNORECASE)
_USER_KEYS = frozenset(
    {
        "roots",
        "subpath",
        "permissions",
        "is_home",
        "quota_engine",
        "max_quota",
        "default_quota",
        "mount_point",
        "default_inode_limit",
    }
)
_PROJECT_KEYS = (_USER_KEYS - {"is_home"}) | {"links"}


class LayoutError(ValueError):
    """The volume configuration, or a name placed into it, is not acceptable."""


@dataclass(frozen=True)
class EngineSpec:
    """One ``[quota_engines.<name>]`` table: its type and its other keys, unvalidated."""

    name: str
    type: str
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RootSpec:
    """One root of a volume, with the mode of the directories made under it."""

    root: PurePosixPath
    mode: int
    link: str | None = None


@dataclass(frozen=True)
class Placement:
    """A directory: a configured root and the plain components beneath it."""

    root: PurePosixPath
    parts: tuple[str, ...]
    mode: int

    @property
    def path(self) -> PurePosixPath:
        """The absolute path."""
        return self.root.joinpath(*self.parts)

    def __str__(self) -> str:
        return str(self.path)


@dataclass(frozen=True)
class VolumeSpec:
    """A user or project volume, validated."""

    name: str
    kind: VolumeKind
    roots: tuple[RootSpec, ...]
    subpath: str
    is_home: bool = False
    quota_engine: str | None = None
    max_quota: QuotaLimit | None = None
    default_quota: QuotaLimit | None = None
    mount_point: str | None = None
    default_inode_limit: int | None = None

    def __post_init__(self) -> None:
        if not self.roots:
            raise LayoutError(f"{self.kind} volume {self.name!r} has no roots")
        _subpath_parts(self.subpath, self.name)

    @property
    def parts(self) -> tuple[str, ...]:
        """The subpath template split into components."""
        return _subpath_parts(self.subpath, self.name)

    @property
    def project_parts(self) -> tuple[str, ...]:
        """The components before the first one that names ``{user}``."""
        parts = self.parts
        for index, part in enumerate(parts):
            if "{user}" in part:
                return parts[:index]
        return parts

    def user_dirs(self, mapping: UserMapping) -> list[Placement]:
        """The user's directory under every root (user volumes)."""
        values = {"project": mapping.user.project, "user": mapping.local_user}
        return [_place(r, self.parts, values, self.name) for r in self.roots]

    def project_dirs(self, mapping: ProjectMapping) -> list[Placement]:
        """The project's directory under every root.

        For a project volume, the project directory itself; for a user volume, the
        directory that holds the project's user directories (none if the subpath starts
        with ``{user}``).
        """
        values = {"project": mapping.project.project}
        parts = self.parts if self.kind == "project" else self.project_parts
        if not parts:
            return []
        return [_place(r, parts, values, self.name) for r in self.roots]

    def quota_dir(self, mapping: UserMapping | ProjectMapping) -> Placement:
        """The directory a quota engine is told about: the one under the first root."""
        if isinstance(mapping, UserMapping):
            return self.user_dirs(mapping)[0]
        values = {"project": mapping.project.project}
        return _place(self.roots[0], self.parts, values, self.name)

    def link_paths(self, mapping: ProjectMapping) -> list[tuple[Placement, PurePosixPath]]:
        """``(directory, link)`` for every root that has a link (project volumes)."""
        values = {"project": mapping.project.project}
        links: list[tuple[Placement, PurePosixPath]] = []
        for root in self.roots:
            if root.link:
                link = _PROJECT_RE.sub(lambda _: _value(values, "project"), root.link)
                links.append((_place(root, self.parts, values, self.name), PurePosixPath(link)))
        return links


@dataclass(frozen=True)
class Layout:
    """Every volume and quota engine of one filesystem agent, in config order."""

    user_volumes: Mapping[str, VolumeSpec] = field(default_factory=dict)
    project_volumes: Mapping[str, VolumeSpec] = field(default_factory=dict)
    quota_engines: Mapping[str, EngineSpec] = field(default_factory=dict)

    def home_volume(self) -> VolumeSpec:
        """The user volume marked ``is_home``."""
        for volume in self.user_volumes.values():
            if volume.is_home:
                return volume
        raise LayoutError("No user home volume configured")

    def user_volume(self, name: str) -> VolumeSpec:
        """The named user volume."""
        try:
            return self.user_volumes[name]
        except KeyError:
            raise LayoutError(f"User volume '{name}' not found") from None

    def project_volume(self, name: str) -> VolumeSpec:
        """The named project volume."""
        try:
            return self.project_volumes[name]
        except KeyError:
            raise LayoutError(f"Project volume '{name}' not found") from None

    def volumes(self) -> list[VolumeSpec]:
        """Project volumes then user volumes."""
        return [*self.project_volumes.values(), *self.user_volumes.values()]


# --- parsing --------------------------------------------------------------------------


def parse_layout(other: Mapping[str, Any]) -> Layout:
    """Build a :class:`Layout` from an agent config's top-level tables (see module doc)."""
    engines_table = _table(other.get("quota_engines", {}), "[quota_engines]")
    engines: dict[str, EngineSpec] = {}
    for name, table in engines_table.items():
        body = _table(table, f"[quota_engines.{name}]")
        kind = body.get("type")
        if not isinstance(kind, str) or kind not in ENGINE_TYPES:
            raise LayoutError(
                f"[quota_engines.{name}] type must be one of {', '.join(sorted(ENGINE_TYPES))}, "
                f"not {kind!r}"
            )
        engines[name] = EngineSpec(name, kind, {k: v for k, v in body.items() if k != "type"})

    users = {
        name: _volume(name, "user", _table(t, f"[user_volumes.{name}]"), engines)
        for name, t in _table(other.get("user_volumes", {}), "[user_volumes]").items()
    }
    projects = {
        name: _volume(name, "project", _table(t, f"[project_volumes.{name}]"), engines)
        for name, t in _table(other.get("project_volumes", {}), "[project_volumes]").items()
    }

    homes = [v for v in users.values() if v.is_home]
    if len(homes) > 1:
        raise LayoutError(
            "Multiple user volumes have is_home=true "
            f"({', '.join(v.name for v in homes)}); only one can be the home directory"
        )
    if len(users) == 1 and not homes:
        # As in OpenPortal: a single user volume is the home volume.
        (only,) = users.values()
        users[only.name] = replace(only, is_home=True)
    home = next((v for v in users.values() if v.is_home), None)
    if home is not None and len(home.roots) != 1:
        raise LayoutError(f"User home volume {home.name!r} must have exactly one root directory")
    return Layout(users, projects, engines)


def _volume(
    name: str, kind: VolumeKind, table: Mapping[str, Any], engines: Mapping[str, EngineSpec]
) -> VolumeSpec:
    where = f"[{kind}_volumes.{name}]"
    if not name or " " in name:
        raise LayoutError(f"{where}: a volume name must be non-empty and have no spaces")
    allowed = _USER_KEYS if kind == "user" else _PROJECT_KEYS
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise LayoutError(f"{where}: unknown key(s) {', '.join(unknown)}")

    roots = _strings(table.get("roots"), f"{where} roots", required=True)
    if not roots:
        raise LayoutError(f"{where}: a {kind} volume must have at least one root directory")
    root_paths = [_root(r, where) for r in roots]

    default_mode = DEFAULT_USER_MODE if kind == "user" else DEFAULT_PROJECT_MODE
    raw_modes = table.get("permissions")
    if raw_modes is None:
        modes = [default_mode] * len(roots)
    elif isinstance(raw_modes, str):
        modes = [parse_mode(raw_modes, where)] * len(roots)
    else:
        texts = _strings(raw_modes, f"{where} permissions", required=True)
        if len(texts) != len(roots):
            raise LayoutError(f"{where}: {len(roots)} roots but {len(texts)} permissions values")
        modes = [parse_mode(t, where) for t in texts]

    links: list[str | None] = [None] * len(roots)
    if kind == "project" and "links" in table:
        texts = _strings(table["links"], f"{where} links", required=True)
        if texts and len(texts) != len(roots):
            raise LayoutError(f"{where}: {len(roots)} roots but {len(texts)} link values")
        for index, text in enumerate(texts):
            links[index] = _link(text, where)

    default = DEFAULT_USER_SUBPATH if kind == "user" else DEFAULT_PROJECT_SUBPATH
    subpath = sanitize_subpath(_string(table.get("subpath", default), f"{where} subpath"))
    if "{project}" not in subpath:
        raise LayoutError(f"{where}: subpath {subpath!r} must contain the {{project}} placeholder")
    if kind == "project" and "{user}" in subpath:
        raise LayoutError(f"{where}: a project volume's subpath cannot use {{user}}")

    engine = table.get("quota_engine")
    if engine is not None:
        engine = _string(engine, f"{where} quota_engine")
        if engine not in engines:
            raise LayoutError(f"{where} references unknown quota engine: {engine!r}")
    max_quota = _limit(table.get("max_quota"), f"{where} max_quota")
    default_quota = _limit(table.get("default_quota"), f"{where} default_quota")
    if max_quota is not None and default_quota is not None and exceeds(default_quota, max_quota):
        raise LayoutError(
            f"{where}: default_quota ({default_quota}) cannot be larger than "
            f"max_quota ({max_quota})"
        )
    inodes = table.get("default_inode_limit")
    if inodes is not None and (isinstance(inodes, bool) or not isinstance(inodes, int)):
        raise LayoutError(f"{where}: default_inode_limit must be an integer")
    if isinstance(inodes, int) and inodes < 0:
        raise LayoutError(f"{where}: default_inode_limit cannot be negative")
    mount = table.get("mount_point")
    is_home = table.get("is_home", False)
    if not isinstance(is_home, bool):
        raise LayoutError(f"{where}: is_home must be true or false")
    return VolumeSpec(
        name=name,
        kind=kind,
        roots=tuple(RootSpec(p, m, lk) for p, m, lk in zip(root_paths, modes, links, strict=True)),
        subpath=subpath,
        is_home=is_home,
        quota_engine=engine,
        max_quota=max_quota,
        default_quota=default_quota,
        mount_point=None if mount is None else _string(mount, f"{where} mount_point"),
        default_inode_limit=inodes,
    )


def sanitize_subpath(subpath: str) -> str:
    """Normalise ``{PROJECT}``/``{User}``... to ``{project}``/``{user}``."""
    return _USER_RE.sub("{user}", _PROJECT_RE.sub("{project}", subpath))


def parse_mode(text: str, where: str = "permissions") -> int:
    """``"0755"``, ``"755"`` or ``"2770"`` as an integer mode (at most ``7777``)."""
    cleaned = text.strip()
    if not cleaned or not all(c in "01234567" for c in cleaned) or len(cleaned) > 4:
        raise LayoutError(f"{where}: permissions {text!r} are not an octal mode 0000-7777")
    return int(cleaned, 8)


def exceeds(limit: QuotaLimit, maximum: QuotaLimit) -> bool:
    """Whether ``limit`` is above ``maximum`` (unlimited is above every size)."""
    if maximum.size is None:
        return False
    if limit.size is None:
        return True
    return limit.size.bytes > maximum.size.bytes


def _subpath_parts(subpath: str, volume: str) -> tuple[str, ...]:
    # Empty components ("a//b", a leading "/") are dropped, as a shell would; "." and ".."
    # are refused so a subpath can never climb out of its root.
    parts = tuple(p for p in subpath.split("/") if p)
    if not parts:
        raise LayoutError(f"volume {volume!r}: subpath {subpath!r} is empty")
    for part in parts:
        if part in (".", "..") or "\0" in part:
            raise LayoutError(f"volume {volume!r}: subpath {subpath!r} may not use {part!r}")
    return parts


def _place(
    root: RootSpec, parts: Sequence[str], values: Mapping[str, str], volume: str
) -> Placement:
    placed: list[str] = []
    for part in parts:
        text = _PROJECT_RE.sub(lambda _: _value(values, "project"), part)
        text = _USER_RE.sub(lambda _: _value(values, "user"), text)
        placed.append(text)
    return Placement(root.root, tuple(placed), root.mode)


def _value(values: Mapping[str, str], key: str) -> str:
    value = values.get(key)
    if value is None:
        raise LayoutError(f"no {key} name to place in the path")
    # A name is placed inside one component: it may not add, empty or climb components
    # ("/", "", "." and ".." all break the naming rule), nor carry anything else odd.
    return check_name(value, f"{key} name", numeric_ok=True, error=LayoutError)


def _root(text: str, where: str) -> PurePosixPath:
    path = PurePosixPath(text)
    if not path.is_absolute():
        raise LayoutError(f"{where}: root {text!r} must be an absolute path")
    if ".." in path.parts:
        raise LayoutError(f"{where}: root {text!r} may not contain '..'")
    if path == PurePosixPath("/"):
        raise LayoutError(f"{where}: '/' cannot be a root")
    return path


def _link(text: str, where: str) -> str | None:
    cleaned = sanitize_subpath(text.strip())
    if not cleaned:
        return None
    path = PurePosixPath(cleaned)
    if not path.is_absolute() or ".." in path.parts:
        raise LayoutError(f"{where}: link {text!r} must be an absolute path without '..'")
    if "{project}" not in cleaned or "{user}" in cleaned:
        raise LayoutError(f"{where}: link {text!r} must use {{project}} (and not {{user}})")
    return cleaned


def _limit(value: object, where: str) -> QuotaLimit | None:
    if value is None:
        return None
    try:
        return QuotaLimit.parse(_string(value, where))
    except GrammarError as exc:
        raise LayoutError(f"{where}: {exc}") from None


def _table(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise LayoutError(f"{where} must be a table")
    return value


def _string(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise LayoutError(f"{where} must be a string")
    return value


def _strings(value: object, where: str, *, required: bool) -> list[str]:
    if value is None and not required:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise LayoutError(f"{where} must be a list of strings")
    return list(value)
