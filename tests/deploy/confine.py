"""Run Python code in a child process confined the way a systemd unit confines an agent.

There is no systemd as PID 1 on a test machine, so a unit cannot be started. What matters for
the agents' work can still be reproduced with the same kernel mechanisms systemd uses:

* ``User=`` with ``AmbientCapabilities=``: the child drops from root to another uid and gid,
  keeping exactly the named capabilities (permitted, effective, inheritable and ambient, so
  that programs it runs keep them too, as under systemd);
* ``NoNewPrivileges=yes``: ``prctl(PR_SET_NO_NEW_PRIVS)``;
* ``MemoryDenyWriteExecute=yes``: ``prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN)`` (Linux 6.3),
  which refuses memory both writable and executable and making memory executable, the rule
  systemd enforces (newer systemd with this very prctl, systemd 252 with a seccomp filter).

The seccomp system-call filter and the mount namespace (``ProtectSystem=`` and the rest) are
not reproduced here.

The interpreter may live where the dropped uid cannot read (a pyenv under ``/root``), so the
child imports what it needs, and runs a warm-up (``WARM_UP``), while still root: modules are
not imported again after the drop.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from tests.deploy.systemd_units import REPO

#: Capability numbers (linux/capability.h), for the names the units use.
CAPABILITIES: Mapping[str, int] = {
    "CAP_CHOWN": 0,
    "CAP_DAC_OVERRIDE": 1,
    "CAP_DAC_READ_SEARCH": 2,
    "CAP_FOWNER": 3,
    "CAP_FSETID": 4,
    "CAP_SYS_ADMIN": 21,
}

#: A uid and gid no account on the machine has: the service account in these tests.
SERVICE_UID = 61234
SERVICE_GID = 61234

_CHILD = r"""
import ctypes, json, os, sys

libc = ctypes.CDLL(None, use_errno=True)
PR_SET_KEEPCAPS, PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE = 8, 38, 47, 2
PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1


def check(result, what):
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


class Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class Data(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint32) for n in ("effective", "permitted", "inheritable")]


def drop(uid, gid, capabilities):
    check(libc.prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0), "keep capabilities")
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    mask = sum(1 << number for number in capabilities)
    data = (Data * 2)()
    for index, part in enumerate((mask & 0xFFFFFFFF, mask >> 32)):
        data[index].effective = data[index].permitted = data[index].inheritable = part
    check(libc.capset(ctypes.byref(Header(0x20080522, 0)), data), "capset")
    for number in capabilities:
        check(libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, number, 0, 0), "ambient")
    check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no new privileges")


settings = json.loads(sys.argv[1])
namespace = {"__name__": "__confined__", "ARGS": settings["args"]}
exec(compile(settings["prepare"], "<prepare>", "exec"), namespace)
namespace["WARM_UP"]()
if settings["uid"] is not None:
    drop(settings["uid"], settings["gid"], settings["capabilities"])
if settings["deny_write_execute"]:
    check(libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0), "PR_SET_MDWE")
result = namespace["RUN"]()
print("RESULT " + json.dumps(result))
"""


def run_confined(
    program: str,
    args: Mapping[str, Any],
    *,
    uid: int | None = SERVICE_UID,
    gid: int = SERVICE_GID,
    capabilities: Iterable[str] = (),
    deny_write_execute: bool = False,
    timeout: float = 120,
) -> Any:
    """Run ``program`` confined; the JSON value its ``RUN()`` returned.

    ``program`` defines ``WARM_UP()`` (run as root, before the drop) and ``RUN()`` (run
    confined); it sees ``args`` as ``ARGS``. ``uid=None`` keeps root (for the memory rule
    alone). A child that fails raises :class:`AssertionError` with its output.
    """
    settings = {
        "prepare": program,
        "args": dict(args),
        "uid": uid,
        "gid": gid,
        "capabilities": sorted(CAPABILITIES[name] for name in capabilities),
        "deny_write_execute": deny_write_execute,
    }
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(settings)],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
        timeout=timeout,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise AssertionError(
            f"confined child exited {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    return json.loads(lines[-1].removeprefix("RESULT "))


def tree(root: Path) -> dict[str, list[int]]:
    """Every entry under ``root``: ``[uid, gid, mode]`` by relative path."""
    found: dict[str, list[int]] = {}
    for here, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(here) / name
            info = path.lstat()
            found[str(path.relative_to(root))] = [info.st_uid, info.st_gid, info.st_mode & 0o7777]
    return found
