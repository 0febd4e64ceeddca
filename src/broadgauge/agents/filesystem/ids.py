"""Turning Unix user and group names into the numbers ``chown`` needs.

* :class:`NssResolver` asks the system (``pwd``/``grp``, so ``/etc/passwd``, LDAP via SSSD,
  FreeIPA ... whatever NSS is configured with).
* :class:`DirectoryResolver` reads the embedded local account directory's SQLite file
  (written by :mod:`broadgauge.agents.accounts.local`) read-only, for the sandbox where the
  accounts never reach ``/etc/passwd``.
* :class:`StaticResolver` maps fixed names, for tests and fixed layouts.

A name that cannot be resolved raises :class:`UnknownName`, whose message names it; so does
a name that breaks the naming rule (:func:`broadgauge.agents.naming.check_name`), which is
never looked up (``getpwnam`` cannot even take a NUL).
"""

from __future__ import annotations

import grp
import os
import pwd
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from broadgauge.agents.naming import check_name

ROOT_NAMES = frozenset({"root"})


class UnknownName(LookupError):
    """A user or group name has no number."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown name"


def _found(number: int | None, kind: str, name: str, where: str = "") -> int:
    """``number`` if the look-up found one; else 0 for ``root``, else :class:`UnknownName`."""
    if number is not None:
        return number
    if name in ROOT_NAMES:
        return 0
    raise UnknownName(f"Could not find a {kind} called {name}{where}")


class IdResolver(Protocol):
    """Resolves Unix names to numeric ids."""

    def uid(self, name: str) -> int:
        """The uid of user ``name``; :class:`UnknownName` if there is none."""
        ...

    def gid(self, name: str) -> int:
        """The gid of group ``name``; :class:`UnknownName` if there is none."""
        ...


class NssResolver:
    """Names through the system's name service (``getpwnam``/``getgrnam``)."""

    def uid(self, name: str) -> int:
        """The uid of user ``name``."""
        check_name(name, "user name", error=UnknownName)
        try:
            return pwd.getpwnam(name).pw_uid
        except KeyError:
            raise UnknownName(f"Could not find a user called {name}") from None

    def gid(self, name: str) -> int:
        """The gid of group ``name``."""
        check_name(name, "group name", error=UnknownName)
        try:
            return grp.getgrnam(name).gr_gid
        except KeyError:
            raise UnknownName(f"Could not find a group called {name}") from None


class StaticResolver:
    """Names from fixed tables (``root`` is always 0)."""

    def __init__(self, users: Mapping[str, int], groups: Mapping[str, int]) -> None:
        self.users = dict(users)
        self.groups = dict(groups)

    def uid(self, name: str) -> int:
        """The uid of user ``name``."""
        return _found(self.users.get(name), "user", name)

    def gid(self, name: str) -> int:
        """The gid of group ``name``."""
        return _found(self.groups.get(name), "group", name)


class DirectoryResolver:
    """Names from the local account directory's SQLite file, opened read-only.

    The file is opened for each look-up (``mode=ro``), so the resolver sees accounts the
    account agent has just created, never writes, and never holds a lock between calls.
    ``root`` resolves to 0 even though the directory does not list it.
    """

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout: float = 10.0) -> None:
        self.path = Path(path)
        self.busy_timeout = busy_timeout

    def uid(self, name: str) -> int:
        """The uid of user ``name``."""
        check_name(name, "user name", error=UnknownName)
        return _found(self._lookup(_USER_QUERY, name), "user", name, f" in {self.path}")

    def gid(self, name: str) -> int:
        """The gid of group ``name``."""
        check_name(name, "group name", error=UnknownName)
        return _found(self._lookup(_GROUP_QUERY, name), "group", name, f" in {self.path}")

    def _lookup(self, query: str, name: str) -> int | None:
        if not self.path.exists():
            raise UnknownName(f"the account directory {self.path} does not exist")
        try:
            connection = sqlite3.connect(
                f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=self.busy_timeout
            )
        except sqlite3.Error as exc:
            raise UnknownName(f"cannot open the account directory {self.path}: {exc}") from exc
        try:
            row = connection.execute(query, (name,)).fetchone()
        except sqlite3.Error as exc:
            raise UnknownName(f"cannot read the account directory {self.path}: {exc}") from exc
        finally:
            connection.close()
        return None if row is None else int(row[0])


# The tables of broadgauge.agents.accounts.local (schema version 1): users(name, uid, ...)
# and groups(name, gid, ...).  A disabled user keeps its row and uid, so it still resolves
# (its directories are being recycled, and must keep their owner).
_USER_QUERY = "SELECT uid FROM users WHERE name = ?"
_GROUP_QUERY = "SELECT gid FROM groups WHERE name = ?"
