"""Small readers of what the soak checks: the real back ends (slapd over LDAP,
``sacctmgr``, the sandbox's directories and quota ledger), the agents' audit logs and their
stores.  Each returns plain data for :mod:`.invariants`."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Mapping
from contextlib import closing
from pathlib import Path
from subprocess import CompletedProcess

from broadgauge.runtime.store import DB_FILENAME

from .invariants import (
    AuditEntry,
    LdapSnapshot,
    LdapUser,
    SandboxSnapshot,
    SlurmSnapshot,
    StoreFigures,
)
from .mix import Names

#: Runs a Slurm client command in the stack's namespace (:meth:`SlurmStack.run`).
SlurmRunner = Callable[..., CompletedProcess[str]]


def read_audit(path: Path) -> list[AuditEntry]:
    """Every readable entry of an audit log (a torn line is skipped: :func:`verify` says so)."""
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


def read_store(data_dir: Path) -> StoreFigures:
    """Sizes of the board store (with its WAL) and audit log, and the store's row counts."""
    db = data_dir / DB_FILENAME
    board_bytes = sum(p.stat().st_size for p in data_dir.glob(f"{DB_FILENAME}*") if p.is_file())
    audit = data_dir / "audit.jsonl"
    counts = {"jobs": 0, "outbox": 0, "executions": 0}
    if db.exists():
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
            for table in counts:
                counts[table] = conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
    return StoreFigures(board_bytes, audit.stat().st_size if audit.exists() else 0, **counts)


def read_ldap(url: str, admin_dn: str, password: str, base: str) -> LdapSnapshot:
    """Users, groups and counters under ``base`` (paged: slapd caps a plain search at 500)."""
    from ldap3 import Connection, Server  # type: ignore[import-untyped, unused-ignore]

    snapshot = LdapSnapshot()
    conn = Connection(Server(url), admin_dn, password, auto_bind=True)
    try:

        def search(query: str, attributes: list[str]) -> Iterable[Mapping[str, object]]:
            for entry in conn.extend.standard.paged_search(
                base, query, attributes=attributes, paged_size=500, generator=True
            ):
                if entry.get("type") == "searchResEntry":
                    yield entry["attributes"]

        for attrs in search(
            "(objectClass=posixAccount)", ["uid", "uidNumber", "shadowExpire", "homeDirectory"]
        ):
            name = _one(attrs["uid"])
            snapshot.users[name] = LdapUser(
                int(_one(attrs["uidNumber"])),
                bool(attrs.get("shadowExpire")),
                _one(attrs.get("homeDirectory", "")),
            )
        for attrs in search("(objectClass=posixGroup)", ["cn", "gidNumber", "memberUid"]):
            members = attrs.get("memberUid") or []
            assert isinstance(members, list)
            snapshot.groups[_one(attrs["cn"])] = (
                int(_one(attrs["gidNumber"])),
                frozenset(str(m) for m in members),
            )
        for kind in ("uid", "gid"):
            for attrs in search(f"(cn={kind}Next)", [f"{kind}Number"]):
                snapshot.counters[kind] = int(_one(attrs[f"{kind}Number"]))
    finally:
        conn.unbind()
    return snapshot


def _one(value: object) -> str:
    """The single value of an LDAP attribute (ldap3 gives lists for multi-valued ones)."""
    if isinstance(value, list):
        return str(value[0]) if value else ""
    return str(value)


def read_slurm(run: SlurmRunner, cluster: str, names: Names) -> SlurmSnapshot:
    """The run's accounts, associations and account limits from ``sacctmgr -nP``; ``run``
    is :meth:`tests.backends.slurm.SlurmStack.run` (a command runner in its namespace)."""
    prefix = f"portal.c{names.tag}p"
    snapshot = SlurmSnapshot()
    output = run(
        "sacctmgr", "-nP", "show", "assoc", f"cluster={cluster}",
        "format=Account,User,Partition,GrpTRESMins",
    ).stdout  # fmt: skip
    for line in output.splitlines():
        fields = line.split("|")
        if len(fields) < 4 or not fields[0].startswith(prefix):
            continue
        account, user, partition, limit = fields[:4]
        snapshot.accounts.add(account)
        if user:
            snapshot.associations.add((account, user))
        elif not partition:
            snapshot.limits[account] = limit
    return snapshot


def read_sandbox(root: Path) -> SandboxSnapshot:
    """Home and project directories under the sandbox, and its quota ledger's limits."""
    snapshot = SandboxSnapshot()
    home, projects = root / "home", root / "projects"
    for project in _dirs(home):
        snapshot.homes.update((project.name, user.name) for user in _dirs(project))
    snapshot.projects.update(p.name for p in _dirs(projects))
    ledger = root / "quotas.sqlite"
    if ledger.exists():
        with closing(sqlite3.connect(f"file:{ledger}?mode=ro", uri=True)) as conn:
            for owner, kind, limit in conn.execute("SELECT owner, kind, limit_bytes FROM quotas"):
                snapshot.quotas[(owner, kind)] = limit
    return snapshot


def _dirs(path: Path) -> list[Path]:
    """The directories in ``path`` except the recycle bin."""
    if not path.is_dir():
        return []
    return [p for p in path.iterdir() if p.is_dir() and p.name != ".recycle"]
