"""The Lustre quota engine: ``lfs project``, ``lfs setquota`` and ``lfs quota``.

Configured as OpenPortal's ``[quota_engines.<name>] type = "lustre"`` table (the same keys,
so a site's existing config works unchanged)::

    [quota_engines.lustre]
    type = "lustre"
    lfs_command = "lfs"              # default; may carry a prefix ("sudo lfs")
    max_runners = 4                  # default: lfs commands at once (recursive ones apart)
    command_timeout_secs = 30        # default
    recursive_timeout_secs = 18000   # default (5 hours): ``lfs project -r`` on big trees

    [quota_engines.lustre.id_strategies]
    home = "{UID-1483800000}01"      # user volume: a project id computed from the uid
    projects = "{GID}"               # project volume: from the project group's gid

Every volume that uses the engine needs a ``mount_point`` and an entry in ``id_strategies``
(OpenPortal also reads the entries flattened into the engine table, ``home = "..."``, and so
does this engine).  An entry is either

* a **format** (OpenPortal's): a Lustre *project id* computed from ``UID`` (user volumes) or
  ``GID`` (project volumes).  Digits are kept, ``UID``/``GID`` replaced by the number, and
  ``{...}`` groups evaluated left to right with ``+`` and ``-``: ``"{UID-100000}01"`` gives
  ``12501`` for uid 100125.  The quota is a *project quota*: each of the volume's directories
  (one per root) gets the id with ``lfs project -p ID -s -r DIR`` (recursive, inheriting),
  then ``lfs setquota -p ID -b 0 -B KIB -i 0 -I INODES MOUNT`` and ``lfs quota -p ID MOUNT``;
* ``"user"`` (user volumes) or ``"group"`` (project volumes), a Broadgauge addition: a plain
  *user* or *group* quota by name, ``lfs setquota -u NAME ...`` / ``-g NAME ...``, with no
  ``lfs project`` step.

Behaviour, as the reference's Lustre engine, with these choices:

* set: the project id is assigned only where ``lfs project -d DIR`` shows another one (or
  no inherit flag); block limit in KiB rounded up, soft limits 0 (none), inode limit the
  volume's ``default_inode_limit`` (default 1 000 000) given exactly (the reference writes
  ``1000k``, which ``lfs`` reads as 1 024 000).  The quota read back is returned.
* get: a directory whose project id is 0 is not set up yet: ``unlimited``, usage unknown.
  A directory with another id is an error that names both ids.
* clear: directories carrying this id lose it (``lfs project -C -r DIR``), then
  ``lfs setquota ... -D MOUNT`` puts the id back on the filesystem's default limits.
* ``OPENPORTAL_LUSTRE_DRY_RUN`` = ``1``/``true``: no ``lfs`` runs; each command is logged
  and every quota reads ``unlimited``.  ``OPENPORTAL_LUSTRE_ID_ONLY``: only ``lfs project``
  runs (ids are assigned and cleared), never ``setquota``/``quota``.  Both are read at each
  operation, as the reference does.
* At most ``max_runners`` ``lfs`` commands run at once per engine; recursive ``lfs project``
  commands run one at a time beside them (they can take hours), and identical ones in
  flight are shared.  A command that outlives its timeout (``command_timeout_secs``, or
  ``recursive_timeout_secs`` for recursive ones, never less than the first) is killed with
  its process group, and the operation fails with a message naming the command.  Unlike the
  reference, a timed-out recursive command does not carry on in the background.
* Owners are checked by :func:`~.quota.check_owner` before anything runs; names become
  numbers through the agent's :class:`~.ids.IdResolver` (NSS by default).

Lustre cannot run on a test machine: the tests drive a stand-in ``lfs``
(``tests/backends/lfs_standin.py``) built from Lustre's manual pages and ``lfs.c``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shlex
import shutil
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, Literal

from broadgauge.agents.filesystem.ids import IdResolver, NssResolver, UnknownName
from broadgauge.agents.filesystem.layout import EngineSpec, Layout, LayoutError, VolumeSpec
from broadgauge.agents.filesystem.linux import KIB, limit_to_kib
from broadgauge.agents.filesystem.quota import QuotaError, check_owner
from broadgauge.grammar import Quota, QuotaLimit, StorageSize

log = logging.getLogger("broadgauge.agents.filesystem")

DRY_RUN_ENV = "OPENPORTAL_LUSTRE_DRY_RUN"
ID_ONLY_ENV = "OPENPORTAL_LUSTRE_ID_ONLY"
DEFAULT_INODE_LIMIT = 1_000_000
#: ``lfs`` refuses UINT32_MAX (the invalid project id) and 0 (root).
MAX_QUOTA_ID = 2**32 - 2
OWNER_STRATEGIES = {"user": "user", "group": "project"}

_OPTION_KEYS = frozenset(
    {"lfs_command", "max_runners", "command_timeout_secs", "recursive_timeout_secs"}
)
_PIECE = re.compile(r"\{([^{}]*)\}|UID|GID|[0-9]+")
_TERM = re.compile(r"\s*(UID|GID|[0-9]+)\s*")
_TITLE = re.compile(r"^Disk quotas for (usr|grp|prj) (.+) \(([ugp])id ([0-9]+)\):$")
_COLUMNS = (
    ("kbytes", "quota", "limit", "grace", "files", "quota", "limit", "grace"),
    ("kbytes", "bquota", "blimit", "bgrace", "files", "iquota", "ilimit", "igrace"),
)


def mode_flag(name: str) -> bool:
    """Whether the environment variable ``name`` is ``1`` or ``true`` (any case)."""
    return os.environ.get(name, "").strip().lower() in ("1", "true")


# --- id strategies ---------------------------------------------------------------------------


@dataclass(frozen=True)
class IdStrategy:
    """A format that turns a uid or gid into a Lustre project id (see module doc)."""

    format: str
    pieces: tuple[tuple[str, str], ...] = field(compare=False, repr=False)

    @classmethod
    def parse(cls, text: str, where: str) -> IdStrategy:
        """Check ``text`` completely now, so a bad format stops the agent at start-up."""
        if text != text.strip() or not text:
            raise LayoutError(f"{where}: id strategy {text!r} is empty or has outer spaces")
        pieces: list[tuple[str, str]] = []
        at = 0
        for match in _PIECE.finditer(text):
            if match.start() != at:
                break
            at = match.end()
            if match.group(1) is None:
                pieces.append(("term", match.group(0)))
                continue
            expression = match.group(1)
            if expression != expression.strip() or not _terms(expression):
                raise LayoutError(
                    f"{where}: {{{expression}}} in {text!r} is not NUMBER, UID or GID joined "
                    "by + and - (no spaces inside the braces' ends)"
                )
            pieces.append(("expr", expression))
        if at != len(text):
            raise LayoutError(
                f"{where}: id strategy {text!r} may hold only digits, UID, GID and "
                f"{{...}} expressions (unexpected {text[at:]!r})"
            )
        return cls(text, tuple(pieces))

    @property
    def uses_uid(self) -> bool:
        """Whether the format needs the user's uid."""
        return "UID" in self.format

    @property
    def uses_gid(self) -> bool:
        """Whether the format needs the group's gid."""
        return "GID" in self.format

    def compute(self, uid: int | None = None, gid: int | None = None) -> int:
        """The project id; :class:`QuotaError` if it is negative, 0 or too large."""
        values = {"UID": uid, "GID": gid}
        digits = ""
        for kind, text in self.pieces:
            if kind == "term":  # literal digits stay as written ("01" is not "1")
                digits += text if text.isdigit() else str(_value(text, values, self.format))
                continue
            total = 0
            for sign, term in _terms(text) or []:
                total += sign * _value(term, values, self.format)
                if total < 0:
                    raise QuotaError(f"id strategy {self.format!r}: {{{text}}} goes below 0")
            digits += str(total)
        number = int(digits)
        if not 0 < number <= MAX_QUOTA_ID:
            raise QuotaError(
                f"id strategy {self.format!r} gave {number}, outside 1..{MAX_QUOTA_ID}"
            )
        return number


def _terms(expression: str) -> list[tuple[int, str]] | None:
    """``[(sign, term), ...]`` for ``a+b-c``; ``None`` if it is not that shape."""
    found: list[tuple[int, str]] = []
    sign, rest = 1, expression
    while True:
        match = _TERM.match(rest)
        if match is None:
            return None
        found.append((sign, match.group(1)))
        rest = rest[match.end() :]
        if not rest:
            return found
        if rest[0] not in "+-":
            return None
        sign, rest = (1 if rest[0] == "+" else -1), rest[1:]


def _value(term: str, values: Mapping[str, int | None], fmt: str) -> int:
    if term.isdigit():
        return int(term)
    number = values.get(term)
    if number is None:
        raise QuotaError(f"id strategy {fmt!r} needs a {term}, which this volume has not")
    return number


# --- configuration ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LustreVolume:
    """One volume served by the engine: its roots, mount point, limits and id strategy."""

    name: str
    kind: Literal["user", "project"]
    roots: tuple[PurePosixPath, ...]
    depth: int
    mount_point: str
    inode_limit: int
    strategy: IdStrategy | None  # None: a user or group quota by name

    def directories(self, path: PurePosixPath) -> list[str] | None:
        """The directory under every root for ``path`` (placed under the first root)."""
        first = self.roots[0]
        if not path.is_relative_to(first):
            return None
        relative = path.relative_to(first)
        if len(relative.parts) != self.depth:
            return None
        return [str(root / relative) for root in self.roots]


@dataclass(frozen=True)
class LustreOptions:
    """The engine's own keys, validated."""

    lfs_command: tuple[str, ...] = ("lfs",)
    max_runners: int = 4
    command_timeout: float = 30.0
    recursive_timeout: float = 18000.0


def lustre_engine_from_spec(
    spec: EngineSpec, layout: Layout, resolver: IdResolver | None = None
) -> LustreQuotaEngine:
    """Build the engine of ``[quota_engines.<name>]``; :class:`LayoutError` names the key."""
    where = f"[quota_engines.{spec.name}]"
    options = spec.options
    command = options.get("lfs_command", "lfs")
    if not isinstance(command, str) or not command.split():
        raise LayoutError(f"{where} lfs_command must be a non-empty command")
    argv = tuple(shlex.split(command))
    if shutil.which(argv[0]) is None:
        raise LayoutError(f"{where} lfs_command: {argv[0]!r} was not found or is not executable")
    runners = options.get("max_runners", 4)
    if isinstance(runners, bool) or not isinstance(runners, int) or runners < 1:
        raise LayoutError(f"{where} max_runners must be a positive integer")
    timeout = _seconds(options, "command_timeout_secs", 30, where)
    recursive = max(timeout, _seconds(options, "recursive_timeout_secs", 18000, where))
    strategies = _strategies(options, where)
    volumes = []
    for volume in layout.volumes():
        if volume.quota_engine == spec.name:
            volumes.append(_lustre_volume(volume, strategies.pop(volume.name, None), where))
    for name in strategies:
        log.warning("%s id_strategies names %r, which does not use this engine", where, name)
    return LustreQuotaEngine(
        LustreOptions(argv, runners, timeout, recursive), volumes, resolver or NssResolver()
    )


def _seconds(options: Mapping[str, Any], key: str, default: float, where: str) -> float:
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise LayoutError(f"{where} {key} must be a positive number of seconds")
    return float(value)


def _strategies(options: Mapping[str, Any], where: str) -> dict[str, str]:
    """Volume name -> format, from ``id_strategies`` and from keys flattened beside it."""
    table = options.get("id_strategies", {})
    if not isinstance(table, Mapping):
        raise LayoutError(f"{where} id_strategies must be a table of volume = format")
    flattened = {k: v for k, v in options.items() if k not in _OPTION_KEYS | {"id_strategies"}}
    found: dict[str, str] = {}
    for name, given in [*table.items(), *flattened.items()]:
        key = f"{where} id_strategies.{name}"
        value = given
        if isinstance(given, Mapping):
            if set(given) != {"format"}:
                raise LayoutError(f'{key} must be a string or {{ format = "..." }}')
            value = given["format"]
        if not isinstance(value, str):
            raise LayoutError(f"{key} must be a string (unknown key {name!r}?)")
        if name in found:
            raise LayoutError(f"{key} is given twice")
        found[name] = value
    return found


def _lustre_volume(volume: VolumeSpec, text: str | None, where: str) -> LustreVolume:
    table = f"[{volume.kind}_volumes.{volume.name}]"
    if volume.mount_point is None or not PurePosixPath(volume.mount_point).is_absolute():
        raise LayoutError(f"{table} mount_point must be set (absolute) to use {where}")
    if text is None:
        raise LayoutError(f"{where} id_strategies has no entry for volume {volume.name!r}")
    strategy: IdStrategy | None = None
    if text in OWNER_STRATEGIES:
        if OWNER_STRATEGIES[text] != volume.kind:
            raise LayoutError(
                f"{where} id_strategies.{volume.name}: {text!r} does not fit a {volume.kind} volume"
            )
    else:
        strategy = IdStrategy.parse(text, f"{where} id_strategies.{volume.name}")
        # A user-volume quota is asked for with the user's name only, and a project's
        # with its group only: the other number is not known when the quota is set.
        wrong = strategy.uses_gid if volume.kind == "user" else strategy.uses_uid
        if wrong:
            needs = "GID" if volume.kind == "user" else "UID"
            raise LayoutError(
                f"{where} id_strategies.{volume.name}: a {volume.kind} volume's strategy "
                f"cannot use {needs}"
            )
    inodes = volume.default_inode_limit
    return LustreVolume(
        name=volume.name,
        kind=volume.kind,
        roots=tuple(r.root for r in volume.roots),
        depth=len(volume.parts),
        mount_point=volume.mount_point,
        inode_limit=DEFAULT_INODE_LIMIT if inodes is None else inodes,
        strategy=strategy,
    )


# --- the engine ------------------------------------------------------------------------------


class LustreQuotaEngine:
    """Project, user and group quotas on Lustre through ``lfs`` (see module doc)."""

    def __init__(
        self, options: LustreOptions, volumes: Sequence[LustreVolume], resolver: IdResolver
    ) -> None:
        self.options = options
        self.volumes = tuple(volumes)
        self.resolver = resolver
        self._runners = asyncio.Semaphore(options.max_runners)
        self._recursive_lock = asyncio.Lock()
        self._recursive: dict[tuple[str, ...], asyncio.Future[str]] = {}
        #: How many ``lfs`` commands wait for a runner now (for tests and diagnostics).
        self.waiting = 0

    # --- the QuotaEngine protocol ----------------------------------------------------------

    async def set_quota(self, path: str, owner: str, is_group: bool, limit: QuotaLimit) -> Quota:
        """Assign the project id (if any), set the hard limits, and read the quota back."""
        check_owner(owner, is_group)
        volume, directories = self._target(path, is_group)
        kib = limit_to_kib(limit)
        dry, id_only = mode_flag(DRY_RUN_ENV), mode_flag(ID_ONLY_ENV)
        flag, who = self._who(volume, owner)
        if volume.strategy is not None:
            for directory in directories:
                await self._assign(directory, who, dry)
        if id_only:
            log.info("%s set: limits skipped (%s)", ID_ONLY_ENV, _describe(volume, flag, who))
            return Quota(QuotaLimit.UNLIMITED)
        limits = ["-b", "0", "-B", str(kib), "-i", "0", "-I", str(volume.inode_limit)]
        await self._lfs(["setquota", flag, who, *limits, volume.mount_point], dry=dry)
        if dry:
            return Quota(QuotaLimit.UNLIMITED)
        return await self._query(volume, flag, who)

    async def get_quota(self, path: str, owner: str, is_group: bool) -> Quota:
        """The quota ``lfs quota`` reports (``unlimited`` where no project id is set yet)."""
        check_owner(owner, is_group)
        volume, directories = self._target(path, is_group)
        flag, who = self._who(volume, owner)
        if mode_flag(DRY_RUN_ENV):
            return Quota(QuotaLimit.UNLIMITED)
        if volume.strategy is not None:
            found = {d: (await self._project_of(d))[0] for d in directories}
            for directory, number in found.items():
                if number not in (0, int(who)):
                    raise QuotaError(
                        f"{directory} has Lustre project id {number}, expected {who} for "
                        f"{owner}; set the quota to assign it"
                    )
            if 0 in found.values():
                return Quota(QuotaLimit.UNLIMITED)  # not set up yet: nothing limits it
        if mode_flag(ID_ONLY_ENV):
            return Quota(QuotaLimit.UNLIMITED)
        return await self._query(volume, flag, who)

    async def clear_quota(self, path: str, owner: str, is_group: bool) -> None:
        """Take the project id off its directories, then back to the default limits."""
        check_owner(owner, is_group)
        volume, directories = self._target(path, is_group)
        dry, id_only = mode_flag(DRY_RUN_ENV), mode_flag(ID_ONLY_ENV)
        flag, who = self._who(volume, owner)
        if volume.strategy is not None:
            for directory in directories:
                if not dry:
                    found, _ = await self._project_of(directory)
                    if str(found) != who:
                        # Not ours (or already clear): leave another id's tree alone.
                        log.info("%s has project id %s, not %s: left", directory, found, who)
                        continue
                await self._lfs(["project", "-C", "-r", directory], dry=dry, recursive=True)
        if not id_only:
            await self._lfs(["setquota", flag, who, "-D", volume.mount_point], dry=dry)

    # --- steps -----------------------------------------------------------------------------

    def _target(self, path: str, is_group: bool) -> tuple[LustreVolume, list[str]]:
        kind = "project" if is_group else "user"
        place = PurePosixPath(path)
        found = [
            (volume, dirs)
            for volume in self.volumes
            if volume.kind == kind and (dirs := volume.directories(place)) is not None
        ]
        if len(found) != 1:
            problem = "lies in no" if not found else "matches more than one"
            raise QuotaError(f"{path} {problem} {kind} volume of this Lustre engine")
        return found[0]

    def _who(self, volume: LustreVolume, owner: str) -> tuple[str, str]:
        """``(flag, id or name)`` for ``lfs setquota``/``lfs quota``."""
        if volume.strategy is None:
            return ("-g" if volume.kind == "project" else "-u"), owner
        try:
            if volume.kind == "user":
                number = volume.strategy.compute(uid=self.resolver.uid(owner))
            else:
                number = volume.strategy.compute(gid=self.resolver.gid(owner))
        except UnknownName as exc:
            raise QuotaError(str(exc)) from None
        return "-p", str(number)

    async def _assign(self, directory: str, project: str, dry: bool) -> None:
        if not dry and await self._project_of(directory) == (int(project), True):
            return
        await self._lfs(["project", "-p", project, "-s", "-r", directory], dry=dry, recursive=True)

    async def _project_of(self, directory: str) -> tuple[int, bool]:
        """``(project id, inherit flag)`` of the directory itself (``lfs project -d``)."""
        output = await self._lfs(["project", "-d", directory])
        return parse_project_list(output, directory)

    async def _query(self, volume: LustreVolume, flag: str, who: str) -> Quota:
        output = await self._lfs(["quota", flag, who, volume.mount_point])
        kind = {"-u": "usr", "-g": "grp", "-p": "prj"}[flag]
        return parse_lfs_quota(output, kind, who, volume.mount_point)

    # --- running lfs -----------------------------------------------------------------------

    async def _lfs(self, args: list[str], *, dry: bool = False, recursive: bool = False) -> str:
        if dry:
            log.info(
                "DRY RUN (%s): %s", DRY_RUN_ENV, shlex.join([*self.options.lfs_command, *args])
            )
            return ""
        if recursive:
            return await self._shared_recursive(tuple(args))
        self.waiting += 1
        try:
            await self._runners.acquire()
        finally:
            self.waiting -= 1
        try:
            return await self._exec(args, self.options.command_timeout)
        finally:
            self._runners.release()

    async def _shared_recursive(self, key: tuple[str, ...]) -> str:
        # One recursive walk at a time (each can take hours), and a second request for the
        # same walk waits for the first instead of walking again.
        future = self._recursive.get(key)
        if future is None:
            future = asyncio.ensure_future(self._recursive_run(list(key)))
            self._recursive[key] = future
            future.add_done_callback(lambda done: self._forget(key, done))
        return await asyncio.shield(future)

    async def _recursive_run(self, args: list[str]) -> str:
        async with self._recursive_lock:
            return await self._exec(args, self.options.recursive_timeout)

    def _forget(self, key: tuple[str, ...], done: asyncio.Future[str]) -> None:
        self._recursive.pop(key, None)
        if not done.cancelled():
            done.exception()  # retrieved here: every waiter may have gone

    async def _exec(self, args: list[str], timeout: float) -> str:
        argv = [*self.options.lfs_command, *args]
        shown = shlex.join(argv)
        log.info("lfs: %s", shown)
        process = await _spawn(argv, shown)
        try:
            async with asyncio.timeout(timeout):
                stdout, stderr = await process.communicate()
        except TimeoutError:
            _kill_group(process)
            await process.wait()
            raise QuotaError(
                f"{shown} did not finish within {timeout:g} s and was killed"
            ) from None
        except asyncio.CancelledError:
            _kill_group(process)
            raise
        if process.returncode != 0:
            said = (stderr or stdout).decode(errors="replace").strip()
            raise QuotaError(f"{shown} failed (exit {process.returncode}): {said}")
        return stdout.decode(errors="replace")


async def _spawn(argv: list[str], shown: str) -> asyncio.subprocess.Process:
    """Start ``argv`` in its own session (so a wrapper's children can be killed with it)."""
    pipe, nothing = asyncio.subprocess.PIPE, asyncio.subprocess.DEVNULL
    try:
        return await asyncio.create_subprocess_exec(
            *argv, stdin=nothing, stdout=pipe, stderr=pipe, start_new_session=True
        )
    except OSError as exc:
        raise QuotaError(f"cannot run {shown}: {exc}") from exc


def _kill_group(process: asyncio.subprocess.Process) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            process.kill()


def _describe(volume: LustreVolume, flag: str, who: str) -> str:
    return f"lfs setquota {flag} {who} on {volume.mount_point} for volume {volume.name}"


# --- parsing lfs output ----------------------------------------------------------------------


def parse_project_list(output: str, directory: str) -> tuple[int, bool]:
    """``(id, inherit)`` from ``lfs project -d DIR``: ``"%5u %c %s"``, e.g. ``" 1000 P /d"``."""
    for line in output.splitlines():
        parts = line.strip().split(None, 2)
        flag = parts[1] if len(parts) == 3 else ""
        if flag in ("P", "-") and parts[2] == directory and parts[0].isdigit():
            return int(parts[0]), flag == "P"
    raise QuotaError(f"lfs project -d {directory} gave no line for it: {output.strip()!r}")


def parse_lfs_quota(output: str, kind: str, who: str, mount: str) -> Quota:
    """The quota in ``lfs quota -u|-g|-p WHO MOUNT`` output.

    The title must name the asked-for ``kind`` (``usr``, ``grp``, ``prj``) and ``who``; the
    column header is Lustre 2.12-2.15's (``kbytes quota limit grace ...``) or 2.16's
    (``kbytes bquota blimit bgrace ...``); a mount point longer than 15 characters stands on
    its own line.  ``*`` (over quota) is stripped; ``[...]`` (inaccurate) is an error.
    """
    lines = [line for line in output.splitlines() if line.strip()]
    title = next((i for i, line in enumerate(lines) if _TITLE.match(line.strip())), None)
    if title is None:
        raise QuotaError(f"lfs quota gave no 'Disk quotas for' title: {output.strip()!r}")
    match = _TITLE.match(lines[title].strip())
    assert match is not None
    if match.group(1) != kind or match.group(2) != who:
        raise QuotaError(
            f"lfs quota answered for {match.group(1)} {match.group(2)}, not {kind} {who}"
        )
    rest = lines[title + 1 :]
    header = rest[0].split() if rest else []
    if not header or header[0] != "Filesystem" or tuple(header[1:]) not in _COLUMNS:
        raise QuotaError(f"lfs quota gave an unknown column header: {' '.join(header)!r}")
    row = rest[1].split() if len(rest) > 1 else []
    if row == [mount] and len(rest) > 2:
        row = [mount, *rest[2].split()]
    if len(row) < 5 or row[0] != mount:
        raise QuotaError(f"lfs quota gave no row for {mount}: {output.strip()!r}")
    used, hard = _kib(row[1], "kbytes"), _kib(row[3], "limit")
    limit = QuotaLimit.UNLIMITED if hard == 0 else QuotaLimit(StorageSize(hard * KIB))
    return Quota(limit, StorageSize(used * KIB))


def _kib(text: str, column: str) -> int:
    value = text.removesuffix("*")
    if not value.isdigit():
        raise QuotaError(f"lfs quota gave an unreadable {column} value {text!r}")
    return int(value)
