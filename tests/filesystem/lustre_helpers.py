"""A Lustre layout over real directories, driven through the stand-in ``lfs``.

Lustre cannot run here: ``tests/backends/lfs_standin.py`` answers as ``lfs`` would and keeps
what was set in JSON files under :attr:`Lfs.state`, which these helpers read back.
"""

from __future__ import annotations

import json
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from broadgauge.agents.filesystem.agent import build_engines
from broadgauge.agents.filesystem.layout import Layout, parse_layout
from broadgauge.agents.filesystem.lustre import LustreQuotaEngine

from .conftest import GID, OTHER_UID, RESOLVER, UID

STANDIN = Path(__file__).resolve().parents[1] / "backends" / "lfs_standin.py"
#: The strategies of the layout: alice (uid 23456) gets project id 45601 on ``home``.
ALICE_HOME_ID = int(f"{UID - 23000}01")
PROJECT_ID = GID


@dataclass
class Lfs:
    """The stand-in's state directory and the mount point it serves."""

    state: Path
    mount: Path

    def read(self, name: str, default: Any = None) -> Any:
        path = self.state / name
        return json.loads(path.read_text()) if path.exists() else default

    def write(self, name: str, value: Any) -> None:
        (self.state / name).write_text(json.dumps(value))

    def calls(self) -> list[list[str]]:
        """Every command line the stand-in received, in order."""
        path = self.state / "calls.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def limits(self, kind: str, ident: int) -> dict[str, Any] | None:
        """What ``lfs setquota`` recorded for ``usr``/``grp``/``prj`` ``ident``."""
        quotas = self.read("state.json", {}).get("quotas", {})
        found: dict[str, Any] | None = quotas.get(str(self.mount), {}).get(kind, {}).get(str(ident))
        return found

    def project_of(self, path: Path) -> tuple[int, bool] | None:
        """The project id and inherit flag recorded for ``path``."""
        entry = self.read("state.json", {}).get("projects", {}).get(str(path))
        return None if entry is None else (entry["projid"], entry["inherit"])

    def use(self, user: str, kbytes: int, kind: str = "prj", ident: int = ALICE_HOME_ID) -> None:
        """Make the stand-in report ``kbytes`` used (it measures nothing itself)."""
        usage = {str(self.mount): {kind: {str(ident): {"kbytes": kbytes, "files": 3}}}}
        self.write("usage.json", usage)


def standin_command(lfs: Lfs) -> str:
    """``lfs_command`` for the stand-in, with its state directory in its environment."""
    return shlex.join(["env", f"LFS_STANDIN_STATE={lfs.state}", sys.executable, str(STANDIN)])


def make_lfs(root: Path) -> Lfs:
    """A state directory (with the test's names) and a mount point holding every root."""
    state, mount = root / "lfs-state", root / "lustre"
    state.mkdir(parents=True)
    for name in ("home", "scratch1", "scratch2", "projects", "groups"):
        (mount / name).mkdir(parents=True)
    lfs = Lfs(state, mount)
    users = {"alice.proj": UID, "bob.proj": OTHER_UID}
    lfs.write("names.json", {"users": users, "groups": {"portal.proj": GID}})
    return lfs


def lustre_tables(lfs: Lfs, **engine: Any) -> dict[str, Any]:
    """Every kind of volume on one Lustre engine.

    ``home``: project quotas, id ``{UID-23000}01``; ``scratch`` (two roots): user quotas by
    name; ``projects``: project quotas, id ``{GID}``; ``groups``: group quotas by name.
    """
    mount = str(lfs.mount)
    strategies = {"home": "{UID-23000}01", "scratch": "user", "projects": "{GID}"}
    table: dict[str, Any] = {
        "type": "lustre",
        "lfs_command": standin_command(lfs),
        "command_timeout_secs": 20,
        "id_strategies": strategies,
        "groups": {"format": "group"},  # OpenPortal's flattened form, and its {format=} form
    }

    def volume(*roots: str, **extra: Any) -> dict[str, Any]:
        paths = [str(lfs.mount / r) for r in roots]
        return {"roots": paths, "quota_engine": "q", "mount_point": mount, **extra}

    return {
        "quota_engines": {"q": {**table, **engine}},
        "user_volumes": {
            "home": volume("home", is_home=True, default_inode_limit=5000),
            "scratch": volume("scratch1", "scratch2"),
        },
        "project_volumes": {"projects": volume("projects"), "groups": volume("groups")},
    }


def lustre_engine(lfs: Lfs, **engine: Any) -> tuple[LustreQuotaEngine, Layout]:
    """The engine of :func:`lustre_tables`, built as the agent builds it."""
    layout = parse_layout(lustre_tables(lfs, **engine))
    built = build_engines(layout, resolver=RESOLVER)["q"]
    assert isinstance(built, LustreQuotaEngine)
    return built, layout
