"""Accounts in an LDAP directory (RFC 2307 ``posixAccount``/``posixGroup``), through ldap3.

OpenPortal 0.32.2 has no LDAP agent; this backend applies the FreeIPA agent's naming and
rules (notes §5.4) to a plain directory (OpenLDAP, 389-ds):

* **Users** ``uid=<username>.<project>,<people_ou>,<base_dn>``: ``inetOrgPerson`` +
  ``posixAccount`` + ``shadowAccount``; ``givenName`` = username, ``sn`` = project,
  ``gidNumber`` = the project group's gid.  **The identity** ``username.project.portal``
  is stored in ``cn``, where FreeIPA keeps it: one rule recovers it from either directory,
  ``cn`` is mandatory for ``posixAccount`` anyway and equality-indexed almost everywhere.
* **Groups** ``cn=<group>,<groups_ou>,<base_dn>``: ``posixGroup`` with ``memberUid``; a
  project group's ``description`` is ``<project identifier> | OpenPortal project`` (the
  FreeIPA convention; the identifier is read back from the part before ``|``).
* **Managed** = ``memberUid`` of ``openportal``; other accounts, and ``protected`` names,
  are never changed.  ``add_user`` writes that marker *before* the entry, so an
  interrupted add leaves a dangling ``memberUid``, not an unmanaged (forever protected)
  account.
* **Disabled** (removed) and **blocked** accounts carry ``shadowExpire: 1``: the standard
  RFC 2307 expiry that pam_unix (via nslcd) and SSSD (``ldap_account_expire_policy =
  shadow``) enforce, needing no overlay (``pwdAccountLockedTime`` needs ppolicy) and
  losing nothing (as replacing ``loginShell`` would).  *Blocked* also means ``memberUid``
  of ``openportal.blocked``, which :meth:`LdapDirectory.is_blocked_user` reads and which
  tells a block from a removal; removal keeps both markers, so a block survives a
  remove/re-add.
* **Allocation** never scans: ``cn=uidNext,<base_dn>`` / ``cn=gidNext,<base_dn>``
  (``applicationProcess`` + ``extensibleObject``, invisible to NSS) hold the next number,
  taken by one modify that deletes the old value and adds the new.  A modify is atomic,
  so a concurrent writer makes it fail with ``noSuchAttribute``; we re-read and retry.
  An indexed equality search skips numbers used by entries made outside Broadgauge.  The
  entries are created on first use at the start of the range; numbers are never reused.

ldap3 is synchronous: each operation runs in a worker thread (:func:`asyncio.to_thread`)
on a pooled connection it owns meanwhile, ``pool_size`` at most; every request is bounded
by ``timeout`` (the sessions and their pool are :mod:`._ldap_session`).  Operations on one
user are serialised in-process by a per-user lock (given up after 5 s, as OpenPortal does);
all are idempotent, so one that met a dropped connection is retried once on a fresh one.
"""

from __future__ import annotations

import functools
import logging
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

import ldap3  # type: ignore[import-untyped, unused-ignore]
from ldap3.utils.dn import escape_rdn  # type: ignore[import-untyped, unused-ignore]

from broadgauge.agents import naming
from broadgauge.agents.accounts._common import (
    DEFAULT_SHELL,
    Directory,
    NameLocks,
    UserLocks,
    check_homedir,
    check_owner,
    check_ranges,
    described_project,
    identity_in,
    portal_projects,
    project_description,
)
from broadgauge.agents.accounts._ldap_session import (
    ALREADY_EXISTS,
    NO_SUCH_ATTRIBUTE,
    SUCCESS,
    VALUE_EXISTS,
    Op,
    Session,
    SessionPool,
    esc,
)
from broadgauge.agents.accounts.backend import AccountError, AuditHook
from broadgauge.grammar import (
    PortalIdentifier,
    ProjectIdentifier,
    ProjectMapping,
    UserIdentifier,
    UserMapping,
)

__all__ = ["LdapDirectory"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

USER_CLASSES = ["inetOrgPerson", "posixAccount", "shadowAccount"]
USER_ATTRIBUTES = ["uid", "cn", "uidNumber", "gidNumber", "homeDirectory", "shadowExpire"]
COUNTER_CLASSES = ["applicationProcess", "extensibleObject"]
MARKER_DESCRIPTIONS = {
    naming.MANAGED_GROUP: "Users managed by OpenPortal",
    naming.BLOCKED_GROUP: "Users blocked",
}
CHUNK = 100  # uids per OR-filter when resolving a group's members


@dataclass(frozen=True, slots=True)
class _User:
    dn: str
    name: str
    uid: int
    cns: tuple[str, ...]
    home: str
    expired: bool
    groups: Mapping[str, str]  # group name -> DN, from memberUid


@dataclass(frozen=True, slots=True)
class _Group:
    dn: str
    gid: int
    members: tuple[str, ...]


class LdapDirectory(Directory):
    """Users and groups in an LDAP directory, following the account backend rules."""

    _label = "ldap"
    _log = logger

    def __init__(
        self,
        url: str,
        bind_dn: str,
        password: str,
        base_dn: str,
        *,
        people_ou: str = "ou=people",
        groups_ou: str = "ou=groups",
        uid_range: tuple[int, int] = (20000, 29999),
        gid_range: tuple[int, int] = (20000, 29999),
        protected: frozenset[str] = frozenset(),
        audit: AuditHook | None = None,
        timeout: float = 10.0,
        pool_size: int = 4,
    ) -> None:
        super().__init__(protected=protected, audit=audit)
        self._ranges = check_ranges(uid_range, gid_range)
        self._base = base_dn
        self._people = f"{people_ou},{base_dn}"
        self._groups = f"{groups_ou},{base_dn}"
        self._pool = SessionPool(url, bind_dn, password, timeout=timeout, size=pool_size)
        # Group creation is check-then-add; serialise it in-process, per group, so
        # concurrent adds into one new project do not each burn a gid (other processes are
        # handled by entryAlreadyExists).
        self._group_locks = NameLocks()
        self._users = UserLocks()

    async def _run(self, op: Op[T]) -> T:
        async with self._pool.slots:
            return await self._in_thread(functools.partial(self._pool.execute, op))

    # -- reads (inside a session) ---------------------------------------------------------

    def _find_user(self, s: Session, name: str) -> _User | None:
        query = f"(&(objectClass=posixAccount)(uid={esc(name)}))"
        found = s.search(self._base, query, USER_ATTRIBUTES)
        if not found:
            return None
        if len(found) > 1:
            raise AccountError(f"{len(found)} LDAP entries have uid {name}")
        entry = found[0]
        groups = {
            group.first("cn") or "": group.dn
            for group in s.search(
                self._base, f"(&(objectClass=posixGroup)(memberUid={esc(name)}))", ["cn"]
            )
        }
        expire = entry.first("shadowExpire")
        today = int(time.time() // 86400)
        return _User(
            dn=entry.dn,
            name=entry.first("uid") or name,
            uid=int(entry.first("uidNumber") or -1),
            cns=tuple(entry.values("cn")),
            home=entry.first("homeDirectory") or "",
            # pam_unix's rule: expired when 0 <= shadowExpire <= today.
            expired=expire is not None and 0 <= int(expire) <= today,
            groups=groups,
        )

    def _find_group(self, s: Session, name: str) -> _Group | None:
        query = f"(&(objectClass=posixGroup)(cn={esc(name)}))"
        found = s.search(self._base, query, ["gidNumber", "memberUid"])
        if not found:
            return None
        entry = found[0]
        return _Group(
            entry.dn, int(entry.first("gidNumber") or -1), tuple(entry.values("memberUid"))
        )

    def _is_protected(self, user: _User | None, name: str) -> bool:
        return name in self._protected or (
            user is not None and naming.MANAGED_GROUP not in user.groups
        )

    @staticmethod
    def _check_identity(user: _User, identity: UserIdentifier) -> None:
        check_owner(user.name, user.cns, identity)

    # -- writes (inside a session) --------------------------------------------------------

    def _allocate(self, s: Session, kind: str) -> int:
        low, high = self._ranges[kind]
        attribute = f"{kind}Number"
        dn = f"cn={kind}Next,{self._base}"
        for _ in range(1000):
            counter = s.read(dn, [attribute])
            if counter is None:
                code = s.add(dn, COUNTER_CLASSES, {"cn": f"{kind}Next", attribute: str(low)})
                s.must(code, "create the counter", dn, ALREADY_EXISTS)
                continue
            current = counter.first(attribute)
            if current is None:
                raise AccountError(f"the counter {dn} has no {attribute}")
            candidate = max(int(current), low)
            if candidate > high:
                raise AccountError(f"no free {kind} left in the range {low}-{high}")
            swap = [(ldap3.MODIFY_DELETE, [current]), (ldap3.MODIFY_ADD, [str(candidate + 1)])]
            code = s.modify(dn, {attribute: swap})
            if code == NO_SUCH_ATTRIBUTE:  # another writer took `current` first
                time.sleep(random.uniform(0, 0.01))  # jitter, so the retries spread out
                continue
            s.must(code, "advance the counter", dn)
            cls = "posixAccount" if kind == "uid" else "posixGroup"
            query = f"(&(objectClass={cls})({attribute}={candidate}))"
            if not s.search(self._base, query, ["1.1"]):
                return candidate
            # taken by an entry made outside Broadgauge: loop on to the next number
        raise AccountError(f"could not allocate a {kind}: the counter {dn} kept moving")

    def _ensure_group(self, s: Session, name: str, description: str, notes: list[str]) -> _Group:
        # Nearly always the group exists: look for it holding no lock.  A lock held across
        # this search would make every add_user, of every project, wait for one search the
        # server is slow to answer (up to twice the timeout when it never does).
        group = self._find_group(s, name)
        if group is not None:
            return group
        with self._group_locks.hold(name):
            group = self._find_group(s, name)
            if group is not None:
                return group
            gid = self._allocate(s, "gid")
            dn = f"cn={escape_rdn(name)},{self._groups}"
            attributes = {"cn": name, "gidNumber": str(gid), "description": description}
            code = s.add(dn, ["posixGroup"], attributes)
            if code == ALREADY_EXISTS:  # another process created it; our gid is a gap
                group = self._find_group(s, name)
                if group is None:
                    raise AccountError(f"group {name} exists at {dn} but is not a posixGroup")
                return group
            s.must(code, "add group", dn)
            notes.append(f"created group {name} (gid {gid})")
            return _Group(dn, gid, ())

    def _marker(self, s: Session, name: str, notes: list[str]) -> str:
        return self._ensure_group(s, name, MARKER_DESCRIPTIONS[name], notes).dn

    @staticmethod
    def _member(
        s: Session, group: str, dn: str, name: str, notes: list[str], *, join: bool
    ) -> None:
        # Adding a present value / deleting an absent one is "already done", not an error.
        change, done = (
            (ldap3.MODIFY_ADD, VALUE_EXISTS) if join else (ldap3.MODIFY_DELETE, NO_SUCH_ATTRIBUTE)
        )
        code = s.modify(dn, {"memberUid": [(change, [name])]})
        s.must(code, "change the members of", dn, done)
        if code == SUCCESS:
            notes.append(f"{name} {'joined' if join else 'left'} group {group}")

    @staticmethod
    def _expire(s: Session, user: _User, expired: bool, notes: list[str]) -> None:
        if user.expired == expired:
            return
        value = ["1"] if expired else []  # REPLACE with no values deletes the attribute
        s.must(
            s.modify(user.dn, {"shadowExpire": [(ldap3.MODIFY_REPLACE, value)]}), "modify", user.dn
        )
        notes.append(f"{'disabled' if expired else 'enabled'} {user.name} (uid {user.uid})")

    def _disable(self, s: Session, user: _User, notes: list[str]) -> None:
        for group, dn in sorted(user.groups.items()):
            if group not in (naming.MANAGED_GROUP, naming.BLOCKED_GROUP):
                self._member(s, group, dn, user.name, notes, join=False)
        self._expire(s, user, True, notes)

    def _add_user(self, s: Session, identity: UserIdentifier, notes: list[str]) -> None:
        mapping = naming.user_mapping(identity)
        name = mapping.local_user
        user = self._find_user(s, name)
        if self._is_protected(user, name):
            return
        if user is not None:
            self._check_identity(user, identity)
            if naming.BLOCKED_GROUP in user.groups:
                return  # blocked: only unblock_user may change it
        description = project_description(identity.project_identifier)
        group = self._ensure_group(s, mapping.local_group, description, notes)
        managed = self._marker(s, naming.MANAGED_GROUP, notes)
        if user is None:
            uid = self._allocate(s, "uid")
            # the marker goes first (see the module docstring)
            self._member(s, naming.MANAGED_GROUP, managed, name, notes, join=True)
            dn = f"uid={escape_rdn(name)},{self._people}"
            attributes = {
                "uid": name,
                "cn": str(identity),
                "givenName": identity.username,
                "sn": identity.project,
                "uidNumber": str(uid),
                "gidNumber": str(group.gid),
                "homeDirectory": f"/home/{name}",
                "loginShell": DEFAULT_SHELL,
            }
            code = s.add(dn, USER_CLASSES, attributes)
            if code not in (SUCCESS, ALREADY_EXISTS):  # nothing made: take the marker back
                self._member(s, naming.MANAGED_GROUP, managed, name, notes, join=False)
                s.must(code, "add user", dn)
            if code == SUCCESS:
                notes.append(f"created user {name} (uid {uid}) for {identity}")
            # re-read: the entry's DN and groups (or, on entryAlreadyExists, a racer's entry)
            user = self._find_user(s, name)
            if user is None or self._is_protected(user, name):
                return
            self._check_identity(user, identity)
        self._expire(s, user, False, notes)
        for group_name, dn in ((naming.MANAGED_GROUP, managed), (mapping.local_group, group.dn)):
            if group_name not in user.groups:
                self._member(s, group_name, dn, name, notes, join=True)

    def _require(self, s: Session, identity: UserIdentifier) -> _User:
        name = naming.user_name(identity)
        user = self._find_user(s, name)
        if user is None:
            raise AccountError(f"user {name} does not exist")
        if not self._is_protected(user, name):
            self._check_identity(user, identity)
        return user

    # -- projects -------------------------------------------------------------------------

    async def add_project(self, project: ProjectIdentifier) -> ProjectMapping:
        """Create the project's group (idempotent)."""
        mapping = naming.project_mapping(project)
        description = project_description(project)
        await self._run(lambda s, n: self._ensure_group(s, mapping.local_group, description, n))
        return mapping

    async def remove_project(self, project: ProjectIdentifier) -> ProjectMapping:
        """Disable every managed, unprotected member; keep the group and its gid."""
        mapping = naming.project_mapping(project)
        group = await self._run(lambda s, n: self._find_group(s, mapping.local_group))
        if group is None:
            raise AccountError(f"project group {mapping.local_group} does not exist")
        for member in await self.get_users(project):  # members whose identity is in it
            async with self._users.hold(member.local_user):
                op = functools.partial(self._remove, name=member.local_user, identity=None)
                await self._run(op)
        return mapping

    def _remove(
        self, s: Session, notes: list[str], *, name: str, identity: UserIdentifier | None
    ) -> None:
        """Disable a managed, unprotected account: ``identity``'s, or any member's."""
        user = self._find_user(s, name)
        if user is None or self._is_protected(user, name):
            return
        if identity is not None:
            self._check_identity(user, identity)
        self._disable(s, user, notes)

    async def get_projects(self, portal: PortalIdentifier) -> list[ProjectMapping]:
        """Every project group of ``portal`` (read back from the group descriptions)."""
        query = f"(&(objectClass=posixGroup)(description=*.{esc(naming.portal_name(portal))} |*))"
        entries = await self._run(lambda s, n: s.search(self._base, query, ["cn", "description"]))
        groups = ((e.first("cn"), described_project(e.first("description"))) for e in entries)
        return portal_projects(groups, portal)  # which checks the portal case-sensitively

    async def is_existing_project(self, project: ProjectIdentifier) -> bool:
        """Whether the project's group exists."""
        group = naming.project_group(project)
        return await self._run(lambda s, n: self._find_group(s, group) is not None)

    # -- users ----------------------------------------------------------------------------

    async def add_user(self, user: UserIdentifier) -> UserMapping:
        """Create, or re-enable, the user in its project group (idempotent)."""
        async with self._users.hold(naming.user_name(user)):
            await self._run(lambda s, n: self._add_user(s, user, n))
        return naming.user_mapping(user)

    async def remove_user(self, user: UserIdentifier) -> UserMapping:
        """Expire the account and drop its group memberships; keep the entry and uid."""
        async with self._users.hold(naming.user_name(user)):
            await self._run(
                functools.partial(self._remove, name=naming.user_name(user), identity=user)
            )
        return naming.user_mapping(user)

    async def get_users(self, project: ProjectIdentifier) -> list[UserMapping]:
        """Members of the project's group whose identity (``cn``) belongs to the project."""
        name = naming.project_group(project)

        def op(s: Session, notes: list[str]) -> list[UserMapping]:
            group = self._find_group(s, name)
            if group is None:
                return []
            found = []
            members = sorted(group.members)
            for start in range(0, len(members), CHUNK):
                uids = "".join(f"(uid={esc(m)})" for m in members[start : start + CHUNK])
                query = f"(&(objectClass=posixAccount)(|{uids}))"
                for entry in s.search(self._base, query, ["uid", "cn"]):
                    identity = identity_in(entry.values("cn"))
                    if identity is not None and identity.project_identifier == project:
                        found.append(naming.user_mapping(identity))
            return sorted(found, key=lambda m: m.local_user)

        return await self._run(op)

    async def is_existing_user(self, user: UserIdentifier) -> bool:
        """Whether the account exists and has not been removed."""
        mapping = naming.user_mapping(user)
        found = await self._run(lambda s, n: self._find_user(s, mapping.local_user))
        if found is None:
            return False
        return naming.MANAGED_GROUP not in found.groups or mapping.local_group in found.groups

    async def is_protected_user(self, user: UserIdentifier) -> bool:
        """Whether the account is unmanaged or named in the protected list."""
        name = naming.user_name(user)
        if name in self._protected:
            return True
        return await self._run(lambda s, n: self._is_protected(self._find_user(s, name), name))

    async def block_user(self, user: UserIdentifier) -> UserMapping:
        """Add the account to ``openportal.blocked`` and expire it."""

        def op(s: Session, notes: list[str]) -> None:
            found = self._require(s, user)
            if self._is_protected(found, found.name):
                return
            blocked = self._marker(s, naming.BLOCKED_GROUP, notes)
            self._member(s, naming.BLOCKED_GROUP, blocked, found.name, notes, join=True)
            self._expire(s, found, True, notes)

        await self._guarded(user, op)
        return naming.user_mapping(user)

    async def unblock_user(self, user: UserIdentifier) -> UserMapping:
        """Leave ``openportal.blocked``; un-expire unless the user was also removed."""
        mapping = naming.user_mapping(user)

        def op(s: Session, notes: list[str]) -> None:
            found = self._require(s, user)
            if self._is_protected(found, found.name):
                return
            if naming.BLOCKED_GROUP in found.groups:
                self._member(
                    s,
                    naming.BLOCKED_GROUP,
                    found.groups[naming.BLOCKED_GROUP],
                    found.name,
                    notes,
                    join=False,
                )
            if mapping.local_group in found.groups:  # a removed user stays disabled
                self._expire(s, found, False, notes)

        await self._guarded(user, op)
        return mapping

    async def _guarded(self, user: UserIdentifier, op: Op[None]) -> None:
        name = naming.user_name(user)
        if name in self._protected:
            return
        async with self._users.hold(name):
            await self._run(op)

    async def is_blocked_user(self, user: UserIdentifier) -> bool:
        """Whether the account is a member of ``openportal.blocked``."""
        name = naming.user_name(user)  # a refused name never reaches a pooled session
        found = await self._run(lambda s, n: self._find_user(s, name))
        return found is not None and naming.BLOCKED_GROUP in found.groups

    async def update_homedir(self, user: UserIdentifier, homedir: str) -> str:
        """Set ``homeDirectory`` (a protected account keeps, and returns, its own)."""
        check_homedir(homedir)

        def op(s: Session, notes: list[str]) -> str:
            found = self._require(s, user)
            if self._is_protected(found, found.name) or found.home == homedir:
                return found.home
            change = {"homeDirectory": [(ldap3.MODIFY_REPLACE, [homedir])]}
            s.must(s.modify(found.dn, change), "modify", found.dn)
            notes.append(f"set the home directory of {found.name} to {homedir}")
            return homedir

        async with self._users.hold(naming.user_name(user)):
            return await self._run(op)

    async def close(self) -> None:
        """Unbind every pooled connection."""
        await self._pool.close()
