"""Accounts in FreeIPA, through its JSON-RPC API (notes §5.4), with httpx.

The transport is OpenPortal's ``freeipa`` agent's: a password login that sets the
``ipa_session`` cookie, then JSON-RPC calls, round-robin over the servers given, with
fail-over and a new login when the session expires (:mod:`._freeipa_rpc`).

Naming and rules (``freeipa/src/freeipa.rs``):

* user ``uid`` = ``<username>.<project>``; ``givenname`` = username, ``sn`` = project,
  **``cn`` = the full identity** (how it is recovered), ``userclass`` = ``openportal``;
* project group ``<portal>.<project>`` (reserved portals: the bare project) with the
  description ``<project identifier> | OpenPortal project``;
* a user is managed iff it is in group ``openportal``; unmanaged users and names in
  ``protected`` are never changed;
* ``add_user`` re-enables a removed user, leaves a blocked one untouched, and otherwise
  makes sure of the groups ``openportal``, the project group and ``instance_group`` (e.g.
  ``op_cluster_default``), creating them as needed;
* ``remove_user`` never deletes: it leaves ``instance_group``; if the user is still in
  another instance's ``op_*`` group it stops there; otherwise it leaves every group but
  ``openportal``, ``openportal.blocked`` and FreeIPA's default ``ipausers``, and calls
  ``user_disable`` (the uid is kept for a later re-add);
* ``block_user`` = join ``openportal.blocked`` + ``user_disable``; ``unblock_user``
  reverses both (re-enabling only while the user is still in its project group).

Two deliberate differences from the Rust agent:
``user_add`` passes ``noprivate`` and ``gidnumber`` = the project group's gid, so the
user's primary group is the one in its :class:`UserMapping` (files it creates belong to
the project, and no per-user private group is left behind by accounts that are never
deleted); and ``remove_user`` keeps ``openportal.blocked``, so a block survives a
remove/re-add.  The marker groups are created ``nonposix`` (they hold no files).

Known window (as in the Rust agent): FreeIPA can only list a member that exists, so
``openportal`` is joined straight after ``user_add``; an add interrupted between the two
leaves an account that counts as unmanaged, hence protected, until an admin adds it to
``openportal``.  (The LDAP backend avoids this by writing the marker first.)
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from broadgauge.agents import naming
from broadgauge.agents.accounts._common import (
    DEFAULT_SHELL,
    Directory,
    UserLocks,
    check_homedir,
    check_owner,
    described_project,
    identity_in,
    portal_projects,
    project_description,
)
from broadgauge.agents.accounts._freeipa_rpc import (
    ALREADY_ACTIVE,
    ALREADY_INACTIVE,
    DUPLICATE_ENTRY,
    EMPTY_MODLIST,
    NOT_FOUND,
    FreeIpaError,
    IpaClient,
    first,
    flag,
    strings,
)
from broadgauge.agents.accounts.backend import AccountError, AuditHook
from broadgauge.grammar import (
    PortalIdentifier,
    ProjectIdentifier,
    ProjectMapping,
    UserIdentifier,
    UserMapping,
)

__all__ = ["FreeIpaDirectory", "FreeIpaError"]

logger = logging.getLogger(__name__)

DEFAULT_GROUP = "ipausers"  # FreeIPA puts every user in it; not ours to take away
INSTANCE_PREFIX = "op_"
MARKERS = {
    naming.MANAGED_GROUP: "Users managed by OpenPortal",
    naming.BLOCKED_GROUP: "Users blocked by OpenPortal",
}


@dataclass(frozen=True, slots=True)
class _IpaUser:
    name: str
    cns: tuple[str, ...]
    home: str
    disabled: bool
    groups: frozenset[str]  # lower-cased: FreeIPA normalises group names to lower case

    @property
    def managed(self) -> bool:
        return naming.MANAGED_GROUP in self.groups

    def check(self, identity: UserIdentifier) -> None:
        check_owner(self.name, self.cns, identity)


class FreeIpaDirectory(Directory):
    """Users and groups in FreeIPA, following the account backend rules."""

    _label = "freeipa"
    _log = logger

    def __init__(
        self,
        servers: list[str],
        user: str,
        password: str,
        *,
        verify_tls: bool = True,
        protected: frozenset[str] = frozenset(),
        audit: AuditHook | None = None,
        timeout: float = 20.0,
        instance_group: str | None = None,
    ) -> None:
        super().__init__(protected=protected, audit=audit)
        self._rpc = IpaClient(servers, user, password, verify_tls=verify_tls, timeout=timeout)
        self._instance = instance_group.lower() if instance_group else None
        self._users = UserLocks()

    # -- reads and writes -----------------------------------------------------------------

    async def _show_user(self, name: str) -> _IpaUser | None:
        try:
            result = await self._rpc.call("user_show", [name], all=True)
        except FreeIpaError as exc:
            if exc.code == NOT_FOUND:
                return None
            raise
        entry = result.get("result") or {}
        return _IpaUser(
            name=first(entry, "uid") or name,
            cns=tuple(strings(entry, "cn")),
            home=first(entry, "homedirectory") or "",
            disabled=flag(entry.get("nsaccountlock", False)),
            groups=frozenset(g.lower() for g in strings(entry, "memberof_group")),
        )

    async def _show_group(self, name: str) -> dict[str, Any] | None:
        try:
            result = await self._rpc.call("group_show", [name])
        except FreeIpaError as exc:
            if exc.code == NOT_FOUND:
                return None
            raise
        entry = result.get("result")
        return entry if isinstance(entry, dict) else {}

    async def _ensure_group(self, name: str, description: str, *, posix: bool = True) -> int | None:
        """Make sure the group exists; its gid (None for a non-POSIX group)."""
        entry = await self._show_group(name)
        if entry is None:
            extra = {} if posix else {"nonposix": True}
            try:
                result = await self._rpc.call("group_add", [name], description=description, **extra)
                entry = result.get("result") or {}
                self._note(f"created group {name} (gid {first(entry, 'gidnumber')})")
            except FreeIpaError as exc:
                if exc.code != DUPLICATE_ENTRY:  # a concurrent add won the race: fine
                    raise
                entry = await self._show_group(name) or {}
        gid = first(entry, "gidnumber")
        return int(gid) if gid else None

    def _description(self, group: str) -> str:
        if group in MARKERS:
            return MARKERS[group]
        return f"Users of OpenPortal instance {group}"

    async def _join(self, group: str, name: str) -> None:
        for _ in range(3):  # the group may have to be created first, maybe by a racer
            try:
                result = await self._rpc.call("group_add_member", [group], user=[name])
            except FreeIpaError as exc:
                if exc.code != NOT_FOUND:
                    raise
                await self._ensure_group(
                    group, self._description(group), posix=group not in MARKERS
                )
                continue
            for member, message in result.get("failed", {}).get("member", {}).get("user", []):
                if "already a member" not in str(message):
                    raise AccountError(f"could not add {member} to group {group}: {message}")
            if result.get("completed"):
                self._note(f"added {name} to group {group}")
            return
        raise AccountError(f"could not add {name} to group {group}")

    async def _leave(self, group: str, name: str) -> None:
        result = await self._rpc.call("group_remove_member", [group], user=[name])
        for member, message in result.get("failed", {}).get("member", {}).get("user", []):
            if "not a member" not in str(message):
                raise AccountError(f"could not remove {member} from group {group}: {message}")
        if result.get("completed"):
            self._note(f"removed {name} from group {group}")

    async def _set_enabled(self, user: _IpaUser, enabled: bool) -> None:
        if user.disabled != enabled:
            return  # already as wanted
        method, already = (
            ("user_enable", ALREADY_ACTIVE) if enabled else ("user_disable", ALREADY_INACTIVE)
        )
        if await self._rpc.tolerate((already,), method, user.name):
            self._note(f"{'enabled' if enabled else 'disabled'} {user.name} (uid kept)")

    async def _require(self, identity: UserIdentifier) -> _IpaUser:
        found = await self._show_user(naming.user_name(identity))
        if found is None:
            raise AccountError(f"user {naming.user_name(identity)} does not exist")
        if found.managed:
            found.check(identity)
        return found

    # -- projects -------------------------------------------------------------------------

    async def add_project(self, project: ProjectIdentifier) -> ProjectMapping:
        """Create the project's group (idempotent)."""
        mapping = naming.project_mapping(project)
        await self._ensure_group(mapping.local_group, project_description(project))
        return mapping

    async def remove_project(self, project: ProjectIdentifier) -> ProjectMapping:
        """Remove (disable) every managed, unprotected member; keep the group and its gid."""
        mapping = naming.project_mapping(project)
        if await self._show_group(mapping.local_group) is None:
            raise AccountError(f"project group {mapping.local_group} does not exist")
        for member in await self.get_users(project):
            await self.remove_user(member.user)
        return mapping

    async def get_projects(self, portal: PortalIdentifier) -> list[ProjectMapping]:
        """Every project group of ``portal`` (read back from the group descriptions)."""
        result = await self._rpc.call("group_find", [naming.portal_name(portal)], sizelimit=0)
        entries = result.get("result") or []
        groups = ((first(e, "cn"), described_project(first(e, "description"))) for e in entries)
        return portal_projects(groups, portal)

    async def is_existing_project(self, project: ProjectIdentifier) -> bool:
        """Whether the project's group exists."""
        return await self._show_group(naming.project_group(project)) is not None

    # -- users ----------------------------------------------------------------------------

    async def add_user(self, user: UserIdentifier) -> UserMapping:
        """Create, or re-enable, the user in its groups (idempotent)."""
        mapping = naming.user_mapping(user)
        name = mapping.local_user
        if name in self._protected:
            return mapping
        async with self._users.hold(name):
            for _ in range(3):  # a concurrent user_add elsewhere sends us round again
                found = await self._show_user(name)
                if found is not None and not found.managed:
                    return mapping
                if found is not None:
                    found.check(user)
                    if naming.BLOCKED_GROUP in found.groups:
                        return mapping  # blocked: only unblock_user may change it
                description = project_description(user.project_identifier)
                gid = await self._ensure_group(mapping.local_group, description)
                if found is None:
                    primary = {} if gid is None else {"noprivate": True, "gidnumber": gid}
                    try:
                        result = await self._rpc.call(
                            "user_add",
                            [name],
                            givenname=user.username,
                            sn=user.project,
                            cn=str(user),
                            userclass="openportal",
                            homedirectory=f"/home/{name}",
                            loginshell=DEFAULT_SHELL,
                            **primary,
                        )
                    except FreeIpaError as exc:
                        if exc.code == DUPLICATE_ENTRY:
                            continue
                        raise
                    uid = first(result.get("result") or {}, "uidnumber")
                    self._note(f"created user {name} (uid {uid}) for {user}")
                    have: frozenset[str] = frozenset()
                else:
                    await self._set_enabled(found, True)
                    have = found.groups
                # openportal first: until then the new account would count as unmanaged.
                wanted = [naming.MANAGED_GROUP, mapping.local_group.lower()]
                for group in wanted + ([self._instance] if self._instance else []):
                    if group not in have:
                        await self._join(group, name)
                return mapping
        raise AccountError(f"could not add user {name}: it keeps changing under us")

    async def remove_user(self, user: UserIdentifier) -> UserMapping:
        """Leave this instance; when no instance is left, leave the groups and disable."""
        mapping = naming.user_mapping(user)
        if mapping.local_user in self._protected:
            return mapping
        async with self._users.hold(mapping.local_user):
            found = await self._show_user(mapping.local_user)
            if found is None or not found.managed:
                return mapping
            found.check(user)
            groups = set(found.groups)
            if self._instance is not None and self._instance in groups:
                await self._leave(self._instance, found.name)
                groups.discard(self._instance)
            if any(group.startswith(INSTANCE_PREFIX) for group in groups):
                return mapping  # still used by another instance
            for group in sorted(
                groups - {naming.MANAGED_GROUP, naming.BLOCKED_GROUP, DEFAULT_GROUP}
            ):
                await self._leave(group, found.name)
            await self._set_enabled(found, False)
        return mapping

    async def get_users(self, project: ProjectIdentifier) -> list[UserMapping]:
        """Members of the project's group whose identity (``cn``) belongs to the project."""
        try:
            result = await self._rpc.call(
                "user_find", in_group=naming.project_group(project), all=True, sizelimit=0
            )
        except FreeIpaError as exc:
            if exc.code == NOT_FOUND:
                return []
            raise
        found = []
        for entry in result.get("result") or []:
            identity = identity_in(strings(entry, "cn"))
            if identity is not None and identity.project_identifier == project:
                found.append(naming.user_mapping(identity))
        return sorted(found, key=lambda m: m.local_user)

    async def is_existing_user(self, user: UserIdentifier) -> bool:
        """Whether the account exists and has not been removed."""
        mapping = naming.user_mapping(user)
        found = await self._show_user(mapping.local_user)
        if found is None:
            return False
        return not found.managed or mapping.local_group.lower() in found.groups

    async def is_protected_user(self, user: UserIdentifier) -> bool:
        """Whether the account is unmanaged or named in the protected list."""
        name = naming.user_name(user)
        if name in self._protected:
            return True
        found = await self._show_user(name)
        return found is not None and not found.managed

    async def block_user(self, user: UserIdentifier) -> UserMapping:
        """Join ``openportal.blocked`` and ``user_disable``."""

        async def block(found: _IpaUser) -> None:
            await self._join(naming.BLOCKED_GROUP, found.name)
            await self._set_enabled(found, False)

        return await self._change_managed(user, block)

    async def unblock_user(self, user: UserIdentifier) -> UserMapping:
        """Leave ``openportal.blocked``; ``user_enable`` unless the user was also removed."""

        async def unblock(found: _IpaUser) -> None:
            if naming.BLOCKED_GROUP in found.groups:
                await self._leave(naming.BLOCKED_GROUP, found.name)
            if naming.user_mapping(user).local_group.lower() in found.groups:
                await self._set_enabled(found, True)

        return await self._change_managed(user, unblock)

    async def _change_managed(
        self, user: UserIdentifier, change: Callable[[_IpaUser], Awaitable[None]]
    ) -> UserMapping:
        """Apply ``change`` to the user's existing account, holding its lock, unless the
        account is protected (named in the list, or unmanaged)."""
        mapping = naming.user_mapping(user)
        if mapping.local_user in self._protected:
            return mapping
        async with self._users.hold(mapping.local_user):
            found = await self._require(user)
            if found.managed:
                await change(found)
        return mapping

    async def is_blocked_user(self, user: UserIdentifier) -> bool:
        """Whether the account is in ``openportal.blocked``."""
        found = await self._show_user(naming.user_name(user))
        return found is not None and naming.BLOCKED_GROUP in found.groups

    async def update_homedir(self, user: UserIdentifier, homedir: str) -> str:
        """Set ``homedirectory`` (a protected account keeps, and returns, its own)."""
        check_homedir(homedir)
        name = naming.user_name(user)
        async with self._users.hold(name):
            found = await self._require(user)
            if name in self._protected or not found.managed or found.home == homedir:
                return found.home
            if await self._rpc.tolerate((EMPTY_MODLIST,), "user_mod", name, homedirectory=homedir):
                self._note(f"set the home directory of {name} to {homedir}")
        return homedir

    async def close(self) -> None:
        """Close the HTTP clients."""
        await self._rpc.close()
