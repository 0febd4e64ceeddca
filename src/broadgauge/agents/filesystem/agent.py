"""The filesystem agent: home and project directories, and quotas (notes §5.5).

:class:`FilesystemRole` registers one handler per instruction on an :class:`Agent`:

* ``add_local_project`` - each project volume's directory (``root:<group>``, default
  ``2770``: setgid, so new files belong to the project group), the project-level directory
  of each user volume (``root:<group>``, the volume's mode), configured links, then default
  project quotas.
* ``add_local_user`` - the project first, then one directory per user-volume root owned
  ``<user>:<group>`` with the volume's mode, then default user quotas.
* ``remove_local_user`` / ``remove_local_project`` - move the directories to
  ``<parent>/.recycle/<name>`` (re-adding restores them); with ``delete_on_remove=True``
  (opt-in) the trees are deleted instead.
* ``get_local_home_dir`` (first root of the ``is_home`` volume), ``get_local_user_dirs``,
  ``get_local_project_dirs``, ``get_local_storage_report`` (today only, as in OpenPortal;
  the user list comes from a ``get_users`` call back to the sender), and the
  ``set/get/clear_local_{project,user}_quota`` + ``get_local_{project,user}_quotas`` family.

Every handler is idempotent: existing directories get their owner and mode corrected, and a
default quota is applied only where no limit is set yet (OpenPortal resets it on every add,
which would undo a quota raised on request).  Directory work never leaves a volume root
(:mod:`.tree`) and runs in a worker thread, one operation at a time.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import logging
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from broadgauge.agents._envelope import instruction_of
from broadgauge.agents.filesystem import tree
from broadgauge.agents.filesystem.ids import IdResolver, UnknownName
from broadgauge.agents.filesystem.layout import (
    EngineSpec,
    Layout,
    LayoutError,
    Placement,
    VolumeSpec,
    exceeds,
    parse_layout,
)
from broadgauge.agents.filesystem.ledger import LedgerQuotaEngine
from broadgauge.agents.filesystem.linux import LinuxQuotaEngine
from broadgauge.agents.filesystem.lustre import lustre_engine_from_spec
from broadgauge.agents.filesystem.quota import QuotaEngine, QuotaError
from broadgauge.agents.naming import check_instruction
from broadgauge.grammar import (
    Date,
    GrammarError,
    ProjectIdentifier,
    ProjectMapping,
    ProjectStorageReport,
    Quota,
    QuotaLimit,
    Timestamp,
    UserMapping,
    Volume,
)
from broadgauge.grammar import instructions as ins
from broadgauge.jobs.job import Job
from broadgauge.runtime.agent import Agent, Envelope, Handler, JobRefused

log = logging.getLogger("broadgauge.agents.filesystem")

#: Called with a short description of each change made (directories, links, quotas).
AuditHook = Callable[[str], None]
#: Returns the users of a project for a storage report (default: ask the sender).
UsersLookup = Callable[[Envelope, ProjectIdentifier], Awaitable[list[UserMapping]]]

ROOT_UID = 0

_T = TypeVar("_T")


class FilesystemRole:
    """The filesystem agent's behaviour, registered on ``agent`` when constructed."""

    def __init__(
        self,
        agent: Agent,
        volumes: Layout,
        resolver: IdResolver,
        engines: Mapping[str, QuotaEngine],
        *,
        delete_on_remove: bool = False,
        audit: AuditHook | None = None,
        chown: bool = True,
        users_of: UsersLookup | None = None,
        today: Callable[[], _dt.date] = _dt.date.today,
    ) -> None:
        """``chown=False`` leaves ownership alone (a sandbox not running as root)."""
        for volume in volumes.volumes():
            if volume.quota_engine is not None and volume.quota_engine not in engines:
                raise LayoutError(
                    f"volume {volume.name!r} uses quota engine {volume.quota_engine!r}, "
                    "which was not built"
                )
        self.agent = agent
        self.layout = volumes
        self.resolver = resolver
        self.engines = dict(engines)
        self.delete_on_remove = delete_on_remove
        self.chown = chown
        self._audit = audit
        self._users_of = users_of if users_of is not None else self._users_from_sender
        self._today = today
        self._lock = asyncio.Lock()
        self.handlers: dict[str, Handler] = {
            "add_local_project": self.add_local_project,
            "remove_local_project": self.remove_local_project,
            "add_local_user": self.add_local_user,
            "remove_local_user": self.remove_local_user,
            "get_local_home_dir": self.get_local_home_dir,
            "get_local_user_dirs": self.get_local_user_dirs,
            "get_local_project_dirs": self.get_local_project_dirs,
            "get_local_storage_report": self.get_local_storage_report,
            "set_local_project_quota": self.set_local_project_quota,
            "get_local_project_quota": self.get_local_project_quota,
            "clear_local_project_quota": self.clear_local_project_quota,
            "get_local_project_quotas": self.get_local_project_quotas,
            "set_local_user_quota": self.set_local_user_quota,
            "get_local_user_quota": self.get_local_user_quota,
            "clear_local_user_quota": self.clear_local_user_quota,
            "get_local_user_quotas": self.get_local_user_quotas,
        }
        for keyword, handler in self.handlers.items():
            agent.add_handler(keyword, _refusing(handler))

    async def dispatch(self, envelope: Envelope) -> object:
        """Run the handler for ``envelope``'s instruction, as the runtime would."""
        handler = self.handlers.get(envelope.job.instruction.keyword)
        if handler is None:
            raise JobRefused(f"Invalid instruction: {envelope.job.instruction}")
        return await _refusing(handler)(envelope)

    # --- directories -----------------------------------------------------------------------

    async def add_local_project(self, envelope: Envelope) -> object:
        """Create (or correct) the project's directories and links; default quotas."""
        await self.ensure_project(instruction_of(envelope, ins.AddLocalProject).mapping)
        return None

    async def remove_local_project(self, envelope: Envelope) -> object:
        """Recycle (or delete) the project's directories and remove its links."""
        mapping = instruction_of(envelope, ins.RemoveLocalProject).mapping
        for volume in self.layout.project_volumes.values():
            for place, link in volume.link_paths(mapping):
                await self._fs(tree.remove_link, place.path, link)
        for place in self._project_places(mapping):
            await self._remove(place)
        return None

    async def add_local_user(self, envelope: Envelope) -> object:
        """Ensure the project, then the user's directories; default user quotas."""
        mapping = instruction_of(envelope, ins.AddLocalUser).mapping
        # Every path and id first, so a bad name is refused before anything is made: the
        # user's ids are looked up with the project's, before its directories are made.
        places = [
            p for v in self.layout.user_volumes.values() for p in self._user_places(v, mapping)
        ]
        uid, gid = await self.ensure_project(mapping.project_mapping, user=mapping)

        def make(made: list[str]) -> None:
            for place in places:
                made.extend(tree.ensure_dir(place, uid, gid, place.mode))

        await self._in_worker(make)
        for volume in self.layout.user_volumes.values():
            await self._default_quota(volume, mapping)
        return None

    async def remove_local_user(self, envelope: Envelope) -> object:
        """Recycle (or delete) the user's directories."""
        mapping = instruction_of(envelope, ins.RemoveLocalUser).mapping
        for volume in self.layout.user_volumes.values():
            for place in self._user_places(volume, mapping):
                await self._remove(place)
        return None

    async def get_local_home_dir(self, envelope: Envelope) -> object:
        """The user's directory under the first root of the home volume."""
        mapping = instruction_of(envelope, ins.GetLocalHomeDir).mapping
        return str(self.layout.home_volume().user_dirs(mapping)[0])

    async def get_local_user_dirs(self, envelope: Envelope) -> object:
        """The user's directory in every user volume root, in config order."""
        mapping = instruction_of(envelope, ins.GetLocalUserDirs).mapping
        dirs = [str(p) for v in self.layout.user_volumes.values() for p in v.user_dirs(mapping)]
        if not dirs:
            # An empty list has no result type the runtime can name; say why instead.
            raise JobRefused("No user volumes are configured")
        return dirs

    async def get_local_project_dirs(self, envelope: Envelope) -> object:
        """The project's directory in every project volume root, in config order."""
        mapping = instruction_of(envelope, ins.GetLocalProjectDirs).mapping
        dirs = [
            str(p) for v in self.layout.project_volumes.values() for p in v.project_dirs(mapping)
        ]
        if not dirs:
            raise JobRefused("No project volumes are configured")
        return dirs

    async def ensure_project(
        self, mapping: ProjectMapping, *, user: UserMapping | None = None
    ) -> tuple[int | None, int | None]:
        """Project directories, then links, then default project quotas.

        With ``user``, that user's uid and gid are looked up first and returned, so a name
        that does not resolve stops everything before anything is made.  The look-ups and
        the directory work share one trip to the worker thread: a resolver may read a
        database (never on the event loop), and each trip waits for the loop to come back.
        """
        places = self._project_places(mapping)
        links = [
            (place.path, link)
            for volume in self.layout.project_volumes.values()
            for place, link in volume.link_paths(mapping)
        ]
        owner = ROOT_UID if self.chown else None

        def make(made: list[str]) -> tuple[int | None, int | None]:
            ids = (None, None) if user is None else self._ids(user.local_user, user.local_group)
            group = self._ids(None, mapping.local_group)[1]
            for place in places:
                made.extend(tree.ensure_dir(place, owner, group, place.mode))
            for target, link in links:
                made.extend(tree.ensure_link(target, link))
            return ids

        user_ids = await self._in_worker(make)
        for volume in self.layout.project_volumes.values():
            await self._default_quota(volume, mapping)
        return user_ids

    # --- storage report --------------------------------------------------------------------

    async def get_local_storage_report(self, envelope: Envelope) -> object:
        """Project and per-user quotas now; only today's date is supported."""
        instruction = instruction_of(envelope, ins.GetLocalStorageReport)
        today = Date.from_python(self._today())
        if (instruction.date_range.start, instruction.date_range.end) != (today, today):
            raise JobRefused(
                "Storage reports only support today's date; requested range: "
                f"{instruction.date_range}"
            )
        mapping = instruction.mapping
        project_quotas = await self._quotas(self.layout.project_volumes, mapping)
        users = await self._users_of(envelope, mapping.project)
        return ProjectStorageReport(
            project=mapping.project,
            generated_at=Timestamp.from_python(_dt.datetime.now(_dt.UTC)),
            project_quotas=project_quotas,
            user_quotas={u.user: await self._quotas(self.layout.user_volumes, u) for u in users},
            users={u.user: u.local_user for u in users},
        )

    async def _users_from_sender(
        self, envelope: Envelope, project: ProjectIdentifier
    ) -> list[UserMapping]:
        # As OpenPortal: ask the agent that sent the job (the instance) for the users.
        job = Job.parse(
            f"{envelope.recipient}.{envelope.sender.peer.name} get_users {project}",
            now=self.agent.clock(),
        )
        budget = max(1.0, envelope.job.expires - self.agent.clock())
        finished = await self.agent.submit(job, zone=envelope.zone, timeout=budget)
        users = finished.result_value()
        if users is None:
            return []
        if not isinstance(users, list) or not all(isinstance(u, UserMapping) for u in users):
            raise JobRefused(f"get_users {project} did not return a list of user mappings")
        return users

    # --- quotas ----------------------------------------------------------------------------

    async def set_local_project_quota(self, envelope: Envelope) -> object:
        """Set a project (group) quota on a project volume."""
        i = instruction_of(envelope, ins.SetLocalProjectQuota)
        volume = self.layout.project_volume(i.volume.name)
        return await self._set(volume, i.mapping, i.limit)

    async def get_local_project_quota(self, envelope: Envelope) -> object:
        """A project's quota on a project volume."""
        i = instruction_of(envelope, ins.GetLocalProjectQuota)
        return await self._get(self.layout.project_volume(i.volume.name), i.mapping)

    async def clear_local_project_quota(self, envelope: Envelope) -> object:
        """Remove a project's quota on a project volume."""
        i = instruction_of(envelope, ins.ClearLocalProjectQuota)
        await self._clear(self.layout.project_volume(i.volume.name), i.mapping)
        return None

    async def get_local_project_quotas(self, envelope: Envelope) -> object:
        """A project's quota on every project volume that has a quota engine."""
        mapping = instruction_of(envelope, ins.GetLocalProjectQuotas).mapping
        return await self._quotas(self.layout.project_volumes, mapping)

    async def set_local_user_quota(self, envelope: Envelope) -> object:
        """Set a user quota on a user volume."""
        i = instruction_of(envelope, ins.SetLocalUserQuota)
        return await self._set(self.layout.user_volume(i.volume.name), i.mapping, i.limit)

    async def get_local_user_quota(self, envelope: Envelope) -> object:
        """A user's quota on a user volume."""
        i = instruction_of(envelope, ins.GetLocalUserQuota)
        return await self._get(self.layout.user_volume(i.volume.name), i.mapping)

    async def clear_local_user_quota(self, envelope: Envelope) -> object:
        """Remove a user's quota on a user volume."""
        i = instruction_of(envelope, ins.ClearLocalUserQuota)
        await self._clear(self.layout.user_volume(i.volume.name), i.mapping)
        return None

    async def get_local_user_quotas(self, envelope: Envelope) -> object:
        """A user's quota on every user volume that has a quota engine."""
        mapping = instruction_of(envelope, ins.GetLocalUserQuotas).mapping
        return await self._quotas(self.layout.user_volumes, mapping)

    async def _set(
        self, volume: VolumeSpec, mapping: UserMapping | ProjectMapping, limit: QuotaLimit
    ) -> Quota:
        engine = self._engine(volume)
        if engine is None:
            return Quota(QuotaLimit.UNLIMITED)  # OpenPortal: no engine, nothing to limit
        if volume.max_quota is not None and exceeds(limit, volume.max_quota):
            raise JobRefused(
                f"Requested quota limit ({limit}) exceeds maximum allowed quota "
                f"({volume.max_quota}) for {_who(mapping)} on volume {volume.name}"
            )
        path, owner, is_group = _target(volume, mapping)
        quota = await engine.set_quota(path, owner, is_group, limit)
        self._record(f"set quota of {owner} on {volume.name} ({path}) to {limit}")
        return quota

    async def _get(self, volume: VolumeSpec, mapping: UserMapping | ProjectMapping) -> Quota:
        engine = self._engine(volume)
        if engine is None:
            return Quota(QuotaLimit.UNLIMITED)
        return await engine.get_quota(*_target(volume, mapping))

    async def _clear(self, volume: VolumeSpec, mapping: UserMapping | ProjectMapping) -> None:
        engine = self._engine(volume)
        if engine is None:
            return
        path, owner, is_group = _target(volume, mapping)
        await engine.clear_quota(path, owner, is_group)
        self._record(f"cleared quota of {owner} on {volume.name} ({path})")

    async def _quotas(
        self, volumes: Mapping[str, VolumeSpec], mapping: UserMapping | ProjectMapping
    ) -> dict[Volume, Quota]:
        quotas: dict[Volume, Quota] = {}
        for volume in volumes.values():
            if self._engine(volume) is None:
                continue
            try:
                quotas[Volume(volume.name)] = await self._get(volume, mapping)
            except (QuotaError, LayoutError) as exc:
                # As OpenPortal: one failing volume does not sink the whole answer.
                log.warning("quota of %s on %s unavailable: %s", _who(mapping), volume.name, exc)
        return quotas

    async def _default_quota(
        self, volume: VolumeSpec, mapping: UserMapping | ProjectMapping
    ) -> None:
        if volume.default_quota is None or self._engine(volume) is None:
            return
        try:
            current = await self._get(volume, mapping)
            if current.limit.is_unlimited:
                await self._set(volume, mapping, volume.default_quota)
        except (QuotaError, JobRefused, LayoutError) as exc:
            # A quota failure must not undo the directories: log it; the next add retries.
            log.warning("default quota for %s on %s not set: %s", _who(mapping), volume.name, exc)

    def _engine(self, volume: VolumeSpec) -> QuotaEngine | None:
        return None if volume.quota_engine is None else self.engines[volume.quota_engine]

    # --- helpers -----------------------------------------------------------------------

    def _project_places(self, mapping: ProjectMapping) -> list[Placement]:
        return [p for v in self.layout.volumes() for p in v.project_dirs(mapping)]

    def _user_places(self, volume: VolumeSpec, mapping: UserMapping) -> list[Placement]:
        # A flat user volume (no {user} in its subpath) has no per-user directory: the
        # path is the project-level one, owned by the project, and never removed per user.
        if volume.project_parts == volume.parts:
            return []
        return volume.user_dirs(mapping)

    def _ids(self, user: str | None, group: str) -> tuple[int | None, int | None]:
        if not self.chown:
            return None, None
        uid = None if user is None else self.resolver.uid(user)
        return uid, self.resolver.gid(group)

    async def _remove(self, place: Placement) -> None:
        operation = tree.delete_dir if self.delete_on_remove else tree.recycle_dir
        await self._fs(operation, place)

    async def _fs(self, operation: Callable[..., list[str]], *args: Any) -> None:
        await self._in_worker(lambda made: made.extend(operation(*args)))

    async def _in_worker(self, work: Callable[[list[str]], _T]) -> _T:
        """``work(made)`` on a worker thread, one at a time; it adds each change it makes to
        ``made`` as it goes, and every change is recorded, also when it fails part-way."""
        made: list[str] = []
        async with self._lock:
            try:
                return await asyncio.to_thread(work, made)
            finally:
                for change in made:
                    self._record(change)

    def _record(self, change: str) -> None:
        log.info("%s: %s", self.agent.name, change)
        if self._audit is not None:
            self._audit(change)


def _target(volume: VolumeSpec, mapping: UserMapping | ProjectMapping) -> tuple[str, str, bool]:
    """``(path, owner, is_group)`` for a quota engine."""
    path = str(volume.quota_dir(mapping))
    if isinstance(mapping, UserMapping):
        return path, mapping.local_user, False
    return path, mapping.local_group, True


def _who(mapping: UserMapping | ProjectMapping) -> str:
    if isinstance(mapping, UserMapping):
        return f"user {mapping.local_user}"
    return f"project {mapping.project}"


def _refusing(handler: Handler) -> Handler:
    """Turn the errors of this role into a refusal whose message the caller sees.

    Every name in the instruction is checked first (:func:`check_instruction`), so a name
    that is no portable Unix name is refused before any directory or quota is touched.
    """

    async def run(envelope: Envelope) -> object:
        check_instruction(envelope.job.instruction)
        try:
            return await handler(envelope)
        except (LayoutError, UnknownName, QuotaError, tree.FilesystemError) as exc:
            raise JobRefused(str(exc)) from exc
        except GrammarError as exc:
            raise JobRefused(f"bad result from a callback: {exc}") from exc

    return run


# --- building from config ------------------------------------------------------------------


def build_engines(
    layout: Layout, data_dir: str | Path | None = None, resolver: IdResolver | None = None
) -> dict[str, QuotaEngine]:
    """Instantiate every ``[quota_engines.<name>]`` table.

    ``ledger``: ``database`` (default ``<data_dir>/quotas.sqlite``), ``max_entries``.
    ``fake`` (OpenPortal's): a ledger at ``<quota_dir>/quotas.sqlite``.
    ``linux``: ``filesystem`` (required), ``setquota``, ``repquota``, ``timeout`` seconds.
    ``lustre``: OpenPortal's keys (:mod:`.lustre`); names resolve through ``resolver``
    (NSS when none is given).  A ``lfs_command`` that is not found is refused here.
    """
    return {
        name: _engine_from_spec(spec, data_dir, layout, resolver)
        for name, spec in layout.quota_engines.items()
    }


def _engine_from_spec(
    spec: EngineSpec, data_dir: str | Path | None, layout: Layout, resolver: IdResolver | None
) -> QuotaEngine:
    where = f"[quota_engines.{spec.name}]"
    options = spec.options
    if spec.type in ("ledger", "fake"):
        if "database" in options:
            database = Path(str(options["database"]))
        elif "quota_dir" in options:
            database = Path(str(options["quota_dir"])) / "quotas.sqlite"
        elif data_dir is not None:
            database = Path(data_dir) / "quotas.sqlite"
        else:
            raise LayoutError(f"{where}: set database, or give the agent a data directory")
        max_entries = options.get("max_entries", 200_000)
        if not isinstance(max_entries, int) or max_entries < 1:
            raise LayoutError(f"{where}: max_entries must be a positive integer")
        return LedgerQuotaEngine(database, max_entries=max_entries)
    if spec.type == "linux":
        filesystem = options.get("filesystem")
        if not isinstance(filesystem, str) or not filesystem.strip():
            raise LayoutError(f"{where}: the linux engine needs filesystem = <device or mount>")
        timeout = options.get("timeout", options.get("command_timeout_secs", 30))
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise LayoutError(f"{where}: timeout must be a positive number of seconds")
        return LinuxQuotaEngine(
            filesystem,
            setquota=_command_option(options, "setquota", where),
            repquota=_command_option(options, "repquota", where),
            timeout=float(timeout),
        )
    if spec.type == "lustre":
        return lustre_engine_from_spec(spec, layout, resolver)
    raise LayoutError(f"{where}: quota engine type {spec.type!r} is not supported here")


def _command_option(options: Mapping[str, Any], key: str, where: str) -> str:
    value = options.get(key, key)
    if not isinstance(value, str) or not value.strip():
        raise LayoutError(f"{where}: {key} must be a non-empty command")
    return value


def serve_filesystem(
    agent: Agent,
    resolver: IdResolver,
    *,
    data_dir: str | Path | None = None,
    layout: Layout | None = None,
    **options: Any,
) -> FilesystemRole:
    """Build the layout (from ``agent.config`` unless given) and engines; register handlers."""
    layout = layout if layout is not None else parse_layout(agent.config.other)
    engines = build_engines(layout, data_dir, resolver)
    return FilesystemRole(agent, layout, resolver, engines, **options)


def default_volumes(root: str | Path) -> Layout:
    """The embedded sandbox layout under ``root`` (its two roots are created if missing).

    User volume ``home`` at ``<root>/home`` (the home volume) and project volume
    ``projects`` at ``<root>/projects``, both with the default subpaths and modes and a
    ledger quota engine recording to ``<root>/quotas.sqlite``.
    """
    base = Path(root).absolute()
    for name in ("home", "projects"):
        (base / name).mkdir(parents=True, exist_ok=True)
    return parse_layout(
        {
            "quota_engines": {
                "ledger": {"type": "ledger", "database": str(base / "quotas.sqlite")}
            },
            "user_volumes": {
                "home": {"roots": [str(base / "home")], "is_home": True, "quota_engine": "ledger"}
            },
            "project_volumes": {
                "projects": {"roots": [str(base / "projects")], "quota_engine": "ledger"}
            },
        }
    )
