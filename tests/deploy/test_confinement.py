"""The privileges the units give the agents are the ones their work needs, under the kernel's
own checks (tests/deploy/confine.py drops a child process to another uid with exactly the
unit's capabilities, as systemd does):

* the filesystem agent, as the service account with its unit's four capabilities, leaves
  exactly the directories, owners and modes a root run leaves, and without any one of them
  it cannot (CAP_FSETID's absence is silent: the setgid bit is lost);
* the account agent's default back end works with no capability at all;
* the demo network runs under the memory rule of ``MemoryDenyWriteExecute=yes``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.backends.oidc import skip_or_fail
from tests.deploy.confine import SERVICE_GID, SERVICE_UID, run_confined, tree
from tests.deploy.systemd_units import UNITS, service
from tests.filesystem.conftest import GID, UID

FILESYSTEM_CAPABILITIES = service(UNITS / "broadgauge-filesystem.service")["AmbientCapabilities"][
    0
].split()

#: The filesystem agent's handlers over a home and a project volume, as the instance calls
#: them for a new project and user, a removal and a re-add. Volume roots are made by root,
#: as /home and /projects are on a host. WARM_UP runs it all as root (the reference result).
FILESYSTEM_PROGRAM = r"""
import asyncio
from pathlib import Path

from broadgauge.agents.filesystem.agent import FilesystemRole
from broadgauge.agents.filesystem.layout import parse_layout
from broadgauge.jobs import AgentType
from tests.filesystem.conftest import PROJECT, RESOLVER, USER, envelope
from tests.jobs.agent_helpers import make_agent

STEPS = [
    f"add_local_project {PROJECT}",
    f"add_local_user {USER}",
    f"remove_local_user {USER}",
    f"add_local_user {USER}",
]


def role(base):
    for name in ("home", "projects"):
        (base / name).mkdir(parents=True)
    layout = parse_layout({
        "user_volumes": {"home": {"roots": [str(base / "home")], "is_home": True}},
        "project_volumes": {"projects": {"roots": [str(base / "projects")]}},
    })
    agent = make_agent("filesystem", AgentType.FILESYSTEM)
    return FilesystemRole(agent, layout, RESOLVER, {}, chown=True)


async def steps(filesystem):
    errors = []
    for step in STEPS:
        try:
            await filesystem.dispatch(envelope(step))
        except Exception as exc:
            errors.append(f"{step.split()[0]}: {exc}")
    return errors


def WARM_UP():
    global CONFINED
    errors = asyncio.run(steps(role(Path(ARGS["as_root"]))))
    assert not errors, errors
    CONFINED = role(Path(ARGS["confined"]))


def RUN():
    return asyncio.run(steps(CONFINED))
"""

#: The account agent's default back end (a SQLite directory in its data directory, which
#: belongs to the service account): add, block, remove and re-add a user.
ACCOUNT_PROGRAM = r"""
import asyncio
import os
from pathlib import Path

from broadgauge.agents.accounts.local import LocalDirectory
from broadgauge.grammar import UserIdentifier

USER = UserIdentifier.parse("alice.proj.portal")


async def scenario(path):
    directory = LocalDirectory(path)
    try:
        await directory.add_user(USER)
        await directory.block_user(USER)
        await directory.remove_user(USER)
        mapping = await directory.add_user(USER)
        return {"mapping": str(mapping), "blocked": await directory.is_blocked_user(USER)}
    finally:
        await directory.close()


def WARM_UP():
    asyncio.run(scenario(Path(ARGS["warm_up"]) / "directory.sqlite3"))
    data = Path(ARGS["data"])
    data.mkdir(mode=0o700)
    os.chown(data, ARGS["uid"], ARGS["gid"])


def RUN():
    return asyncio.run(scenario(Path(ARGS["data"]) / "directory.sqlite3"))
"""

#: The demo network (every role, PyNaCl's crypto, argon2, SQLite, HTTP) with memory that is
#: both writable and executable refused.
MEMORY_PROGRAM = r"""
import contextlib
import io
import mmap

from broadgauge.cli import main


def WARM_UP():
    pass


def RUN():
    try:
        mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        refused = False
    except PermissionError:
        refused = True
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        status = main(["demo"])
    return {"refused": refused, "status": status, "printed": printed.getvalue()}
"""


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A folder the service uid can walk into (pytest's own are private to root)."""
    if os.geteuid() != 0:
        skip_or_fail("dropping to another uid with capabilities needs root")
    base = Path(tempfile.mkdtemp(prefix="broadgauge-confine-"))
    try:
        base.chmod(0o755)
        yield base
    finally:
        shutil.rmtree(base)


Tree = dict[str, list[int]]


def filesystem_run(scratch: Path, capabilities: list[str]) -> tuple[list[str], Tree, Tree]:
    """The confined run's errors, its tree, and the tree of the same steps run as root."""
    as_root, confined = scratch / "as-root", scratch / "confined"
    errors = run_confined(
        FILESYSTEM_PROGRAM,
        {"as_root": str(as_root), "confined": str(confined)},
        capabilities=capabilities,
    )
    return errors, tree(confined), tree(as_root)


def test_the_filesystem_unit_capabilities_do_what_root_does(scratch: Path) -> None:
    errors, confined, as_root = filesystem_run(scratch, FILESYSTEM_CAPABILITIES)

    assert errors == []
    # The recycle bin is the one directory with no owner of its own: it is the agent's.
    recycle = "home/proj/.recycle"
    assert as_root.pop(recycle) == [0, 0, 0o700]
    assert confined.pop(recycle) == [SERVICE_UID, SERVICE_GID, 0o700]
    assert confined == as_root
    assert confined["projects/proj"] == [0, GID, 0o2770]
    assert confined["home/proj/alice.proj"] == [UID, GID, 0o755]


@pytest.mark.parametrize("missing", FILESYSTEM_CAPABILITIES)
def test_each_filesystem_capability_is_needed(scratch: Path, missing: str) -> None:
    kept = [name for name in FILESYSTEM_CAPABILITIES if name != missing]

    errors, confined, as_root = filesystem_run(scratch, kept)

    if missing == "CAP_FSETID":
        # chmod succeeds and quietly drops the setgid bit of a group the agent is not in.
        assert errors == []
        assert as_root["projects/proj"] == [0, GID, 0o2770]
        assert confined["projects/proj"] == [0, GID, 0o770]
    else:
        assert errors, f"without {missing} every step succeeded"
        assert any("Permission denied" in e or "not permitted" in e for e in errors), errors
        assert confined != as_root


def test_the_account_agents_default_back_end_needs_no_capability(scratch: Path) -> None:
    (scratch / "warm-up").mkdir()
    data = scratch / "account"

    result = run_confined(
        ACCOUNT_PROGRAM,
        {
            "warm_up": str(scratch / "warm-up"),
            "data": str(data),
            "uid": SERVICE_UID,
            "gid": SERVICE_GID,
        },
        capabilities=[],
    )

    assert result == {"mapping": "alice.proj.portal:alice.proj:portal.proj", "blocked": True}
    made = (data / "directory.sqlite3").stat()
    assert (made.st_uid, made.st_gid) == (SERVICE_UID, SERVICE_GID)


def test_the_demo_network_runs_with_write_execute_memory_refused() -> None:
    release = tuple(int(part) for part in os.uname().release.split(".")[:2] if part.isdigit())
    if release < (6, 3):
        skip_or_fail(f"PR_SET_MDWE needs Linux 6.3 or later; this is {os.uname().release}")

    result = run_confined(MEMORY_PROGRAM, {}, uid=None, deny_write_execute=True)

    assert result["refused"], "the memory rule was not in force: a W+X mapping was allowed"
    assert result["status"] == 0, result["printed"][-3000:]
    assert "Verify every agent's audit log" in result["printed"]
