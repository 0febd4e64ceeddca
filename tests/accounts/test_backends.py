"""One behavioural suite for every account backend, plus checks of each one's raw storage.

Each test runs against the embedded SQLite directory, the LDAP backend on a real slapd
(tests/backends/slapd.py) and the FreeIPA backend on the JSON-RPC stand-in
(tests/backends/freeipa_standin.py).  Assertions read the directory's own records (SQL
rows, LDAP entries, the stand-in's store) through a small per-backend *harness*, so they
check what was stored, not only what the backend says about itself.
"""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pytest

from broadgauge.agents.accounts.backend import AccountBackend, AccountError
from broadgauge.agents.accounts.freeipa import FreeIpaDirectory
from broadgauge.agents.accounts.local import LocalDirectory
from broadgauge.agents.naming import BLOCKED_GROUP, MANAGED_GROUP, UnportableName
from broadgauge.grammar import (
    PortalIdentifier,
    ProjectIdentifier,
    ProjectMapping,
    UserIdentifier,
    UserMapping,
)
from tests.backends.freeipa_standin import FreeIpaStandIn

if TYPE_CHECKING:
    from broadgauge.agents.accounts.ldap import LdapDirectory  # needs ldap3: imported late
    from tests.backends.slapd import Slapd  # registered in tests/conftest.py


PROJ = ProjectIdentifier("proj", "portal")
ALICE = UserIdentifier("alice", "proj", "portal")
BOB = UserIdentifier("bob", "proj", "portal")
KINDS = ["local", "ldap", "freeipa"]


@dataclass(frozen=True)
class RawUser:
    """What the directory itself stores for an account."""

    uid: int
    gid: int
    home: str
    login_allowed: bool
    groups: frozenset[str]
    identity: str | None


@dataclass(frozen=True)
class RawGroup:
    gid: int | None
    members: frozenset[str]


class Harness:
    """Builds backends on one store and reads that store directly."""

    kind = ""
    allocates = True  # the backend hands out uid/gid from its configured ranges

    def __init__(self) -> None:
        self.made: list[AccountBackend] = []

    def make(self, **options: Any) -> AccountBackend:
        backend = self._make(**options)
        self.made.append(backend)
        return backend

    def _make(self, **options: Any) -> AccountBackend:
        raise NotImplementedError

    def raw_user(self, name: str) -> RawUser | None:
        raise NotImplementedError

    def raw_group(self, name: str) -> RawGroup | None:
        raise NotImplementedError

    def seed_unmanaged(self, name: str, uid: int) -> None:
        """An account made outside Broadgauge (not in ``openportal``)."""
        raise NotImplementedError

    def cleanup(self) -> None:
        pass


class LocalHarness(Harness):
    kind = "local"

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path

    def _make(self, **options: Any) -> AccountBackend:
        return LocalDirectory(self.path, **options)

    def _query(self, sql: str, *args: object) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.path) as db:
            return db.execute(sql, args).fetchall()

    def raw_user(self, name: str) -> RawUser | None:
        rows = self._query(
            "SELECT uid, gid, home, enabled, locked, identity FROM users WHERE name = ?", name
        )
        if not rows:
            return None
        uid, gid, home, enabled, locked, identity = rows[0]
        groups = self._query("SELECT group_name FROM members WHERE user_name = ?", name)
        allowed = bool(enabled) and not locked
        return RawUser(uid, gid, home, allowed, frozenset(g for (g,) in groups), identity)

    def raw_group(self, name: str) -> RawGroup | None:
        rows = self._query("SELECT gid FROM groups WHERE name = ?", name)
        if not rows:
            return None
        members = self._query("SELECT user_name FROM members WHERE group_name = ?", name)
        return RawGroup(rows[0][0], frozenset(m for (m,) in members))

    def seed_unmanaged(self, name: str, uid: int) -> None:
        self.make()  # creates the schema
        with sqlite3.connect(self.path) as db:
            db.execute(
                "INSERT INTO users (name, uid, gid, identity, home, shell) VALUES (?,?,?,?,?,?)",
                (name, uid, uid, None, f"/home/{name}", "/bin/sh"),
            )


class LdapHarness(Harness):
    kind = "ldap"

    def __init__(self, slapd: Slapd) -> None:
        from ldap3 import Connection, Server  # type: ignore[import-untyped, unused-ignore]

        super().__init__()
        self.slapd = slapd
        # A fresh subtree per test: isolation without restarting slapd.
        self.base = f"ou=t{uuid.uuid4().hex[:12]},{slapd.suffix}"
        self.conn = Connection(Server(slapd.url), slapd.admin_dn, slapd.password, auto_bind=True)
        self.conn.add(self.base, ["organizationalUnit"], {"ou": self.base[3:].split(",")[0]})
        for ou in ("people", "groups"):
            self.conn.add(f"ou={ou},{self.base}", ["organizationalUnit"], {"ou": ou})

    def _make(self, **options: Any) -> AccountBackend:
        from broadgauge.agents.accounts.ldap import LdapDirectory

        s = self.slapd
        return LdapDirectory(s.url, s.admin_dn, s.password, self.base, timeout=5.0, **options)

    def entries(self, query: str, attributes: list[str] | None = None) -> list[dict[str, Any]]:
        self.conn.search(self.base, query, attributes=attributes or ["*"])
        return [dict(r["attributes"], dn=r["dn"]) for r in self.conn.response]

    def raw_user(self, name: str) -> RawUser | None:
        from ldap3.utils.conv import escape_filter_chars  # type: ignore[import-untyped, unused-ignore]

        found = self.entries(f"(&(objectClass=posixAccount)(uid={escape_filter_chars(name)}))")
        if not found:
            return None
        e = found[0]
        member = f"(memberUid={escape_filter_chars(name)})"
        groups = self.entries(f"(&(objectClass=posixGroup){member})", ["cn"])
        return RawUser(
            uid=int(e["uidNumber"]),
            gid=int(e["gidNumber"]),
            home=e["homeDirectory"],
            login_allowed=not e.get("shadowExpire"),
            groups=frozenset(g["cn"][0] for g in groups),
            identity=e["cn"][0],
        )

    def raw_group(self, name: str) -> RawGroup | None:
        found = self.entries(f"(&(objectClass=posixGroup)(cn={name}))")
        if not found:
            return None
        return RawGroup(int(found[0]["gidNumber"]), frozenset(found[0].get("memberUid", [])))

    def seed_unmanaged(self, name: str, uid: int) -> None:
        attributes = {"uid": name, "cn": "Pre Existing", "sn": "Existing", "uidNumber": uid}
        attributes.update(gidNumber=uid, homeDirectory=f"/home/{name}")
        classes = ["inetOrgPerson", "posixAccount", "shadowAccount"]
        assert self.conn.add(f"uid={name},ou=people,{self.base}", classes, attributes)

    def cleanup(self) -> None:
        self.conn.unbind()


class FreeIpaHarness(Harness):
    kind = "freeipa"
    allocates = False  # FreeIPA's DNA plugin allocates ids, not the client

    def __init__(self) -> None:
        super().__init__()
        self.standin = FreeIpaStandIn()
        self.url = self.standin.start()

    def _make(self, **options: Any) -> AccountBackend:
        options = {k: v for k, v in options.items() if k not in ("uid_range", "gid_range")}
        return FreeIpaDirectory([self.url], "admin", self.standin.password, **options)

    def raw_user(self, name: str) -> RawUser | None:
        user = self.standin.users.get(name)
        if user is None:
            return None
        groups = frozenset(self.standin._groups_of(name))
        return RawUser(
            user["uidnumber"],
            user["gidnumber"],
            user["homedirectory"],
            not user["nsaccountlock"],
            groups,
            user["cn"],
        )

    def raw_group(self, name: str) -> RawGroup | None:
        group = self.standin.groups.get(name)
        if group is None:
            return None
        return RawGroup(group["gidnumber"], frozenset(group["members"]))

    def seed_unmanaged(self, name: str, uid: int) -> None:
        self.standin.seed_user(name, uid)

    def cleanup(self) -> None:
        self.standin.stop()


def _harness(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Harness:
    if kind == "local":
        return LocalHarness(tmp_path / "accounts.sqlite")
    if kind == "ldap":
        return LdapHarness(request.getfixturevalue("slapd"))
    return FreeIpaHarness()


@pytest.fixture(params=KINDS)
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    h = _harness(request.param, request, tmp_path)
    yield h
    h.cleanup()


@pytest.fixture
async def backend(harness: Harness) -> AsyncIterator[AccountBackend]:
    """A default backend; closes every backend the harness made."""
    yield harness.make()
    for made in harness.made:
        await made.close()


#: Back ends that allocate uid/gid numbers themselves (FreeIPA's DNA plugin does it for it).
ALLOCATING = [kind for kind in KINDS if kind != "freeipa"]


# -- projects -----------------------------------------------------------------------------


async def test_add_project_is_idempotent(harness: Harness, backend: AccountBackend) -> None:
    assert not await backend.is_existing_project(PROJ)
    first = await backend.add_project(PROJ)
    group = harness.raw_group("portal.proj")
    assert first == ProjectMapping(PROJ, "portal.proj")
    assert group is not None
    assert await backend.add_project(PROJ) == first
    assert harness.raw_group("portal.proj") == group
    assert await backend.is_existing_project(PROJ)


async def test_reserved_portal_projects_use_the_bare_name(
    harness: Harness, backend: AccountBackend
) -> None:
    mapping = await backend.add_project(ProjectIdentifier("tools", "system"))
    assert mapping.local_group == "tools"
    assert harness.raw_group("tools") is not None


async def test_get_projects_lists_one_portal(backend: AccountBackend) -> None:
    for project in ("b", "a"):
        await backend.add_project(ProjectIdentifier(project, "portal"))
    await backend.add_project(ProjectIdentifier("c", "other"))
    await backend.add_user(ALICE)  # also creates the marker group, which is no project
    assert await backend.get_projects(PortalIdentifier("portal")) == [
        ProjectMapping(ProjectIdentifier("a", "portal"), "portal.a"),
        ProjectMapping(ProjectIdentifier("b", "portal"), "portal.b"),
        ProjectMapping(PROJ, "portal.proj"),
    ]
    other = await backend.get_projects(PortalIdentifier("other"))
    assert [m.local_group for m in other] == ["other.c"]
    assert await backend.get_projects(PortalIdentifier("nobody")) == []


async def test_remove_project_disables_members_and_keeps_the_gid(
    harness: Harness, backend: AccountBackend
) -> None:
    await backend.add_user(ALICE)
    await backend.add_user(BOB)
    gid = harness.raw_group("portal.proj")
    assert await backend.remove_project(PROJ) == ProjectMapping(PROJ, "portal.proj")
    assert await backend.get_users(PROJ) == []
    for user in ("alice.proj", "bob.proj"):
        raw = harness.raw_user(user)
        assert raw is not None and not raw.login_allowed and "portal.proj" not in raw.groups
    group = harness.raw_group("portal.proj")
    assert group is not None and gid is not None and group.gid == gid.gid
    assert await backend.is_existing_project(PROJ)
    assert await backend.remove_project(PROJ) == ProjectMapping(PROJ, "portal.proj")
    with pytest.raises(AccountError):
        await backend.remove_project(ProjectIdentifier("missing", "portal"))


# -- users --------------------------------------------------------------------------------


async def test_add_user_names_and_is_idempotent(harness: Harness, backend: AccountBackend) -> None:
    mapping = await backend.add_user(ALICE)
    assert mapping == UserMapping(ALICE, "alice.proj", "portal.proj")
    raw = harness.raw_user("alice.proj")
    group = harness.raw_group("portal.proj")
    assert raw is not None and group is not None
    assert raw.identity == "alice.proj.portal"
    assert raw.gid == group.gid  # primary group = the project group
    assert raw.home == "/home/alice.proj" and raw.login_allowed
    assert {MANAGED_GROUP, "portal.proj"} <= raw.groups
    assert await backend.add_user(ALICE) == mapping
    assert harness.raw_user("alice.proj") == raw
    assert harness.raw_group("portal.proj") == group


async def test_get_users_and_mappings(backend: AccountBackend) -> None:
    assert await backend.get_users(PROJ) == []
    await backend.add_user(BOB)
    await backend.add_user(ALICE)
    await backend.add_user(UserIdentifier("carol", "other", "portal"))
    assert await backend.get_users(PROJ) == [
        UserMapping(ALICE, "alice.proj", "portal.proj"),
        UserMapping(BOB, "bob.proj", "portal.proj"),
    ]
    nobody = UserIdentifier("nobody", "proj", "system")
    assert await backend.get_user_mapping(nobody) == UserMapping(nobody, "nobody.proj", "proj")
    assert await backend.get_project_mapping(PROJ) == ProjectMapping(PROJ, "portal.proj")


async def test_remove_user_keeps_the_uid_and_a_readd_restores_it(
    harness: Harness, backend: AccountBackend
) -> None:
    await backend.add_user(ALICE)
    before = harness.raw_user("alice.proj")
    assert before is not None and await backend.is_existing_user(ALICE)
    await backend.remove_user(ALICE)
    removed = harness.raw_user("alice.proj")
    assert removed is not None and removed.uid == before.uid
    assert not removed.login_allowed
    assert MANAGED_GROUP in removed.groups and "portal.proj" not in removed.groups
    assert not await backend.is_existing_user(ALICE)
    assert await backend.get_users(PROJ) == []
    assert await backend.remove_user(ALICE) == UserMapping(ALICE, "alice.proj", "portal.proj")
    assert harness.raw_user("alice.proj") == removed
    await backend.add_user(ALICE)
    assert harness.raw_user("alice.proj") == before
    assert await backend.is_existing_user(ALICE)


async def test_remove_of_an_unknown_user_succeeds(
    harness: Harness, backend: AccountBackend
) -> None:
    assert await backend.remove_user(ALICE) == UserMapping(ALICE, "alice.proj", "portal.proj")
    assert harness.raw_user("alice.proj") is None


async def test_block_and_unblock(harness: Harness, backend: AccountBackend) -> None:
    await backend.add_user(ALICE)
    assert not await backend.is_blocked_user(ALICE)
    await backend.block_user(ALICE)
    await backend.block_user(ALICE)
    blocked = harness.raw_user("alice.proj")
    assert blocked is not None and not blocked.login_allowed
    assert {BLOCKED_GROUP, "portal.proj"} <= blocked.groups  # memberships are kept
    assert await backend.is_blocked_user(ALICE)
    assert await backend.get_users(PROJ) == [UserMapping(ALICE, "alice.proj", "portal.proj")]
    await backend.add_user(ALICE)  # a blocked user is left alone
    assert harness.raw_user("alice.proj") == blocked
    await backend.unblock_user(ALICE)
    await backend.unblock_user(ALICE)
    raw = harness.raw_user("alice.proj")
    assert raw is not None and raw.login_allowed and BLOCKED_GROUP not in raw.groups
    assert not await backend.is_blocked_user(ALICE)
    with pytest.raises(AccountError):
        await backend.block_user(BOB)


async def test_a_block_survives_remove_and_readd(harness: Harness, backend: AccountBackend) -> None:
    await backend.add_user(ALICE)
    await backend.block_user(ALICE)
    await backend.remove_user(ALICE)
    assert await backend.is_blocked_user(ALICE)
    await backend.add_user(ALICE)
    raw = harness.raw_user("alice.proj")
    assert raw is not None and not raw.login_allowed and "portal.proj" not in raw.groups
    await backend.unblock_user(ALICE)  # still removed: stays disabled
    raw = harness.raw_user("alice.proj")
    assert raw is not None and not raw.login_allowed
    await backend.add_user(ALICE)
    raw = harness.raw_user("alice.proj")
    assert raw is not None and raw.login_allowed and "portal.proj" in raw.groups


async def test_update_homedir(harness: Harness, backend: AccountBackend) -> None:
    await backend.add_user(ALICE)
    assert await backend.update_homedir(ALICE, "/data/home/alice.proj") == "/data/home/alice.proj"
    assert await backend.update_homedir(ALICE, "/data/home/alice.proj") == "/data/home/alice.proj"
    raw = harness.raw_user("alice.proj")
    assert raw is not None and raw.home == "/data/home/alice.proj"
    for bad in ("relative/home", "/home/a:b", "/home/a\nb"):
        with pytest.raises(AccountError):
            await backend.update_homedir(ALICE, bad)
    with pytest.raises(AccountError):
        await backend.update_homedir(BOB, "/home/bob.proj")


async def test_an_unmanaged_account_is_protected(harness: Harness, backend: AccountBackend) -> None:
    harness.seed_unmanaged("alice.proj", 5000)
    before = harness.raw_user("alice.proj")
    assert before is not None
    assert await backend.is_protected_user(ALICE)
    assert not await backend.is_protected_user(BOB)
    assert await backend.is_existing_user(ALICE)
    mapping = UserMapping(ALICE, "alice.proj", "portal.proj")
    assert await backend.add_user(ALICE) == mapping
    assert await backend.remove_user(ALICE) == mapping
    assert await backend.block_user(ALICE) == mapping
    assert await backend.unblock_user(ALICE) == mapping
    assert await backend.update_homedir(ALICE, "/elsewhere") == "/home/alice.proj"
    assert not await backend.is_blocked_user(ALICE)
    assert harness.raw_user("alice.proj") == before


async def test_protected_names_are_never_changed(harness: Harness, backend: AccountBackend) -> None:
    await backend.add_user(BOB)
    bob = harness.raw_user("bob.proj")
    guarded = harness.make(protected=frozenset({"alice.proj", "bob.proj"}))
    assert await guarded.is_protected_user(ALICE) and await guarded.is_protected_user(BOB)
    assert await guarded.add_user(ALICE) == UserMapping(ALICE, "alice.proj", "portal.proj")
    assert harness.raw_user("alice.proj") is None
    await guarded.remove_user(BOB)
    await guarded.block_user(BOB)
    await guarded.block_user(ALICE)
    assert harness.raw_user("bob.proj") == bob
    await guarded.remove_project(PROJ)
    assert harness.raw_user("bob.proj") == bob
    assert await guarded.get_users(PROJ) == [UserMapping(BOB, "bob.proj", "portal.proj")]


async def test_an_identity_cannot_take_over_another_portals_account(
    harness: Harness, backend: AccountBackend
) -> None:
    await backend.add_user(ALICE)
    before = harness.raw_user("alice.proj")
    intruder = UserIdentifier("alice", "proj", "other")  # same Unix name alice.proj
    for call in (backend.add_user, backend.remove_user, backend.block_user):
        with pytest.raises(AccountError, match=r"alice\.proj\.portal"):
            await call(intruder)
    assert harness.raw_user("alice.proj") == before


async def test_names_with_ldap_special_characters_are_refused_untouched(
    harness: Harness, backend: AccountBackend
) -> None:
    # LDAP would store them safely (filters and DNs are escaped), but sacctmgr, setquota and
    # chown read these characters as syntax, so the naming rule refuses them everywhere.
    odd = UserIdentifier("o'neil,x*y(z)\\w+=", "pr(oj)", "po*rt")
    calls = (backend.add_user, backend.remove_user, backend.block_user, backend.is_existing_user)
    for call in calls:
        with pytest.raises(UnportableName, match=r"user name .* is not a portable POSIX name"):
            await call(odd)
    with pytest.raises(UnportableName, match=r"portal name 'po\*rt'"):
        await backend.get_projects(PortalIdentifier("po*rt"))
    assert harness.raw_user("o'neil,x*y(z)\\w+=.pr(oj)") is None
    assert await backend.get_projects(PortalIdentifier("portal")) == []


# -- allocation ---------------------------------------------------------------------------


async def test_uids_are_never_reused(harness: Harness, backend: AccountBackend) -> None:
    users = [UserIdentifier(f"u{i}", "proj", "portal") for i in range(3)]
    for user in users:
        await backend.add_user(user)
    await backend.remove_user(users[-1])
    await backend.add_user(UserIdentifier("late", "proj", "portal"))
    uids = [harness.raw_user(n) for n in ("u0.proj", "u1.proj", "u2.proj", "late.proj")]
    numbers = [u.uid for u in uids if u is not None]
    assert len(set(numbers)) == 4 and numbers == sorted(numbers)


@pytest.mark.parametrize("harness", ALLOCATING, indirect=True)
async def test_allocation_stays_in_range(harness: Harness, backend: AccountBackend) -> None:
    small = harness.make(uid_range=(30000, 30002), gid_range=(40000, 40003))
    users = [UserIdentifier(f"u{i}", "proj", "portal") for i in range(3)]
    for user in users:
        await small.add_user(user)
    raws = [harness.raw_user(f"u{i}.proj") for i in range(3)]
    assert sorted(r.uid for r in raws if r) == [30000, 30001, 30002]
    await small.remove_user(users[0])  # a removed user still holds its uid
    with pytest.raises(AccountError, match="30000-30002"):
        await small.add_user(UserIdentifier("extra", "proj", "portal"))
    assert harness.raw_user("extra.proj") is None
    # gids: portal.proj and openportal took 40000-40001
    await small.add_project(ProjectIdentifier("p2", "portal"))
    await small.add_project(ProjectIdentifier("p3", "portal"))
    with pytest.raises(AccountError, match="40000-40003"):
        await small.add_project(ProjectIdentifier("p4", "portal"))
    gids = [harness.raw_group(g) for g in ("portal.proj", MANAGED_GROUP, "portal.p2", "portal.p3")]
    assert sorted(g.gid for g in gids if g and g.gid) == [40000, 40001, 40002, 40003]


@pytest.mark.parametrize("harness", ALLOCATING, indirect=True)
async def test_allocation_skips_numbers_in_use_and_survives_restarts(
    harness: Harness, backend: AccountBackend
) -> None:
    harness.seed_unmanaged("old.account", 31000)
    first = harness.make(uid_range=(31000, 31999))
    await first.add_user(ALICE)
    await first.close()
    await harness.make(uid_range=(31000, 31999)).add_user(BOB)
    raws = [harness.raw_user(n) for n in ("alice.proj", "bob.proj")]
    assert [r.uid for r in raws if r] == [31001, 31002]


async def test_twenty_concurrent_adds_get_twenty_uids(
    harness: Harness, backend: AccountBackend
) -> None:
    users = [UserIdentifier(f"user{i:02}", "proj", "portal") for i in range(20)]
    mappings = await asyncio.gather(*(backend.add_user(u) for u in users))
    assert [m.local_user for m in mappings] == [f"user{i:02}.proj" for i in range(20)]
    raws = [harness.raw_user(m.local_user) for m in mappings]
    uids = {r.uid for r in raws if r is not None}
    assert len(uids) == 20
    if harness.allocates:
        assert uids <= set(range(20000, 30000))
    assert len(await backend.get_users(PROJ)) == 20
    group = harness.raw_group("portal.proj")
    assert group is not None and len(group.members) == 20


async def test_concurrent_adds_of_one_user_make_one_account(
    harness: Harness, backend: AccountBackend
) -> None:
    await asyncio.gather(*(backend.add_user(ALICE) for _ in range(5)))
    await backend.add_user(BOB)
    alice, bob = harness.raw_user("alice.proj"), harness.raw_user("bob.proj")
    assert alice is not None and bob is not None and bob.uid == alice.uid + 1


async def test_audit_tells_each_change_once(harness: Harness) -> None:
    told: list[str] = []
    audited = harness.make(audit=told.append)
    await audited.add_user(ALICE)
    assert any("alice.proj" in line and "created" in line for line in told)
    count = len(told)
    await audited.add_user(ALICE)
    assert len(told) == count  # nothing changed, nothing told
    await audited.block_user(ALICE)
    assert len(told) > count
    await audited.close()


# -- LDAP: the raw entries ----------------------------------------------------------------


@pytest.fixture
def ldap(request: pytest.FixtureRequest) -> Iterator[LdapHarness]:
    h = LdapHarness(request.getfixturevalue("slapd"))
    yield h
    h.cleanup()


async def test_ldap_entries_are_rfc2307_with_the_identity_in_cn(ldap: LdapHarness) -> None:
    directory = ldap.make()
    await directory.add_user(ALICE)
    [user] = ldap.entries("(uid=alice.proj)")
    assert user["dn"] == f"uid=alice.proj,ou=people,{ldap.base}"
    assert {"inetOrgPerson", "posixAccount", "shadowAccount"} <= set(user["objectClass"])
    assert (user["cn"], user["givenName"], user["sn"]) == (
        ["alice.proj.portal"],
        ["alice"],
        ["proj"],
    )
    assert (user["homeDirectory"], user["loginShell"]) == ("/home/alice.proj", "/bin/bash")
    assert "shadowExpire" not in user
    [group] = ldap.entries("(cn=portal.proj)")
    assert group["dn"] == f"cn=portal.proj,ou=groups,{ldap.base}"
    assert group["objectClass"] == ["posixGroup"] and group["memberUid"] == ["alice.proj"]
    assert group["description"] == ["proj.portal | OpenPortal project"]
    assert user["gidNumber"] == group["gidNumber"] == 20000
    [marker] = ldap.entries(f"(cn={MANAGED_GROUP})")
    assert marker["memberUid"] == ["alice.proj"]
    [uids] = ldap.entries("(cn=uidNext)")
    assert uids["dn"] == f"cn=uidNext,{ldap.base}"
    assert set(uids["objectClass"]) == {"applicationProcess", "extensibleObject"}
    assert uids["uidNumber"] == user["uidNumber"] + 1
    [gids] = ldap.entries("(cn=gidNext)")
    assert gids["gidNumber"] == 20002  # portal.proj and openportal

    await directory.block_user(ALICE)
    [user] = ldap.entries("(uid=alice.proj)")
    [blocked] = ldap.entries(f"(cn={BLOCKED_GROUP})")
    assert user["shadowExpire"] == 1 and blocked["memberUid"] == ["alice.proj"]
    await directory.unblock_user(ALICE)
    [user] = ldap.entries("(uid=alice.proj)")
    [blocked] = ldap.entries(f"(cn={BLOCKED_GROUP})")
    assert "shadowExpire" not in user and not blocked.get("memberUid")
    await directory.remove_user(ALICE)
    [user] = ldap.entries("(uid=alice.proj)")
    [group] = ldap.entries("(cn=portal.proj)")
    assert user["shadowExpire"] == 1 and not group.get("memberUid")
    await directory.close()


async def test_ldap_counter_is_atomic_across_directories(ldap: LdapHarness) -> None:
    # Two directories have separate pools and locks, like two agents: only the counter's
    # delete-old/add-new modify keeps their allocations apart.
    first, second = ldap.make(), ldap.make()
    await first.add_user(ALICE)
    users = [UserIdentifier(f"n{i:02}", "proj", "portal") for i in range(20)]
    await asyncio.gather(*((first, second)[i % 2].add_user(u) for i, u in enumerate(users)))
    uids = sorted(r.uid for u in users if (r := ldap.raw_user(f"{u.username}.proj")))
    assert uids == list(range(20001, 20021))  # none lost, none shared
    [counter] = ldap.entries("(cn=uidNext)")
    assert counter["uidNumber"] == 20021
    await first.close()
    await second.close()


async def test_ldap_recovers_from_a_dropped_connection(ldap: LdapHarness) -> None:
    directory = cast("LdapDirectory", ldap.make())
    await directory.add_user(ALICE)
    for session in directory._pool.idle:  # the server (or a firewall) dropped them
        session.conn.socket.close()
    assert await directory.is_existing_user(ALICE)
    await directory.close()


async def test_ldap_bad_credentials_fail_without_revealing_the_password(ldap: LdapHarness) -> None:
    from broadgauge.agents.accounts.ldap import LdapDirectory

    s = ldap.slapd
    directory = LdapDirectory(s.url, s.admin_dn, "not-the-password-42", ldap.base)
    with pytest.raises(AccountError, match="invalidCredentials") as failure:
        await directory.add_project(PROJ)
    assert "not-the-password-42" not in str(failure.value)
    await directory.close()


async def test_ldap_unreachable_server_fails_within_the_timeout() -> None:
    import socket
    import time

    from broadgauge.agents.accounts.ldap import LdapDirectory

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    directory = LdapDirectory(f"ldap://127.0.0.1:{port}", "cn=a", "pw", "dc=x", timeout=1.0)
    started = time.monotonic()
    with pytest.raises(AccountError, match="unreachable"):
        await directory.is_existing_user(ALICE)
    assert time.monotonic() - started < 5
    await directory.close()


# -- FreeIPA: what the server was asked -------------------------------------------------

IPA_METHODS = {
    "user_add", "user_find", "user_show", "user_mod", "user_enable", "user_disable",
    "group_add", "group_find", "group_show", "group_add_member", "group_remove_member",
}  # fmt: skip


@pytest.fixture
def ipa() -> Iterator[FreeIpaHarness]:
    h = FreeIpaHarness()
    yield h
    h.cleanup()


async def test_freeipa_requests_follow_openportal(ipa: FreeIpaHarness) -> None:
    directory = ipa.make()
    await directory.add_user(ALICE)
    await directory.update_homedir(ALICE, "/data/alice.proj")
    await directory.block_user(ALICE)
    await directory.unblock_user(ALICE)
    await directory.remove_user(ALICE)
    await directory.get_users(PROJ)
    await directory.get_projects(PortalIdentifier("portal"))
    calls = ipa.standin.calls
    assert {c["method"] for c in calls} <= IPA_METHODS
    assert all(c["options"]["version"] == "2.251" for c in calls)
    [add] = [c for c in calls if c["method"] == "user_add"]
    assert add["args"] == ["alice.proj"]
    group_gid = ipa.standin.groups["portal.proj"]["gidnumber"]
    assert {k: v for k, v in add["options"].items() if k != "version"} == {
        "givenname": "alice",
        "sn": "proj",
        "cn": "alice.proj.portal",
        "userclass": "openportal",
        "homedirectory": "/home/alice.proj",
        "loginshell": "/bin/bash",
        "noprivate": True,
        "gidnumber": group_gid,
    }
    joins = [c["args"][0] for c in calls if c["method"] == "group_add_member"]
    assert list(dict.fromkeys(joins)) == [MANAGED_GROUP, "portal.proj", BLOCKED_GROUP]
    created = {c["args"][0]: c["options"] for c in calls if c["method"] == "group_add"}
    assert created["portal.proj"]["description"] == "proj.portal | OpenPortal project"
    assert created[MANAGED_GROUP]["nonposix"] is True  # a marker group holds no files
    assert [
        c["method"] for c in calls if c["method"].startswith("user_") and "able" in c["method"]
    ] == [
        "user_disable",  # block
        "user_enable",  # unblock
        "user_disable",  # remove
    ]
    assert ipa.standin.groups[MANAGED_GROUP]["gidnumber"] is None  # markers are nonposix
    assert ipa.standin.logins == 1 and ipa.standin.unauthorised == 0
    await directory.close()


async def test_freeipa_retries_a_dropped_read_once_but_never_a_write(
    ipa: FreeIpaHarness,
) -> None:
    directory = ipa.make()
    await directory.add_user(ALICE)
    ipa.standin.drop_next.add("user_show")
    assert await directory.is_existing_user(ALICE)  # the read is asked again, and answered
    assert "user_show" not in ipa.standin.drop_next
    ipa.standin.drop_next.add("user_mod")
    with pytest.raises(AccountError, match="no server could be reached"):
        await directory.update_homedir(ALICE, "/data/alice.proj")
    # The write was not repeated behind the caller's back: it reached the server once.
    assert [c["method"] for c in ipa.standin.calls].count("user_mod") == 0
    await directory.update_homedir(ALICE, "/data/alice.proj")  # and works when asked again
    await directory.close()


async def test_freeipa_logs_in_again_once_after_a_401(ipa: FreeIpaHarness) -> None:
    directory = ipa.make()
    await directory.add_user(ALICE)
    assert ipa.standin.logins == 1
    ipa.standin.expire_sessions()
    assert all(await asyncio.gather(*(directory.is_existing_user(ALICE) for _ in range(5))))
    assert ipa.standin.unauthorised >= 1
    assert ipa.standin.logins == 2  # one login, however many calls saw the 401
    await directory.close()


async def test_freeipa_refused_login_does_not_reveal_the_password(ipa: FreeIpaHarness) -> None:
    directory = FreeIpaDirectory([ipa.url], "admin", "wrong-secret-42")
    with pytest.raises(AccountError, match="invalid-password") as failure:
        await directory.is_existing_user(ALICE)
    assert "wrong-secret-42" not in str(failure.value)
    assert ipa.standin.calls == []
    await directory.close()


async def test_freeipa_fails_over_to_the_next_server(ipa: FreeIpaHarness) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}"
    directory = FreeIpaDirectory([dead, ipa.url], "admin", ipa.standin.password, timeout=2.0)
    for project in ("a", "b", "c"):
        await directory.add_project(ProjectIdentifier(project, "portal"))
    assert {"portal.a", "portal.b", "portal.c"} <= set(ipa.standin.groups)
    await directory.close()


async def test_freeipa_remove_user_keeps_users_of_other_instances(ipa: FreeIpaHarness) -> None:
    one = ipa.make(instance_group="op_one_default")
    two = ipa.make(instance_group="op_two_default")
    await one.add_user(ALICE)
    await two.add_user(ALICE)
    raw = ipa.raw_user("alice.proj")
    assert raw is not None and {"op_one_default", "op_two_default"} <= raw.groups
    await one.remove_user(ALICE)
    raw = ipa.raw_user("alice.proj")
    assert raw is not None and raw.login_allowed and "op_one_default" not in raw.groups
    assert {"op_two_default", "portal.proj"} <= raw.groups
    assert await two.is_existing_user(ALICE)
    await two.remove_user(ALICE)
    raw = ipa.raw_user("alice.proj")
    assert raw is not None and not raw.login_allowed
    assert raw.groups == {MANAGED_GROUP, "ipausers"}
    await one.close()
    await two.close()


async def test_the_standin_answers_in_freeipa_shapes(ipa: FreeIpaHarness) -> None:
    import httpx

    referer = {"Referer": f"{ipa.url}/ipa"}
    async with httpx.AsyncClient(base_url=ipa.url) as client:
        call = {"method": "user_show", "params": [["nobody"], {"version": "2.251"}], "id": 7}
        assert (
            await client.post("/ipa/session/json", json=call, headers=referer)
        ).status_code == 401
        form = {"user": "admin", "password": ipa.standin.password}
        assert (await client.post("/ipa/session/login_password", data=form)).status_code == 400
        login = await client.post("/ipa/session/login_password", data=form, headers=referer)
        assert login.status_code == 200 and "ipa_session" in client.cookies
        body = (await client.post("/ipa/session/json", json=call, headers=referer)).json()
    assert body["result"] is None and body["id"] == 7
    assert body["error"] == {
        "code": 4001,
        "message": "nobody: user not found",
        "name": "NotFound",
        "data": {},
    }
