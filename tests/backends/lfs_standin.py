"""A stand-in for Lustre's ``lfs`` (``project``, ``setquota`` and ``quota`` only).

Lustre cannot run on a test machine (it needs kernel modules, an MGS, MDTs and OSTs), so the
Lustre quota engine is tested against this executable: ``python lfs_standin.py ARGS...``.
It accepts the command lines of the real ``lfs`` for these sub-commands, answers in the real
output formats with the real exit codes, and keeps its state in JSON files under the
directory named by ``LFS_STANDIN_STATE``, so a test can check what was set.

Sources followed (Lustre 2.15 LTS, tag ``v2_15_8`` of ``lustre/lustre-release``):

* manual pages ``lustre/doc/lfs-setquota.1``, ``lfs-quota.1`` and ``lfs-project.1``;
* ``lustre/utils/lfs.c``: ``lfs_setquota`` (options ``b:B:dDg:Ghi:I:p:Pu:U``, its messages
  and checks), ``lfs_quota`` (``-u|-g|-p`` take no argument; the name or id is the first
  operand; ``-q``, ``-v``, ``-h``), ``print_quota_title`` (``Disk quotas for usr alice (uid
  1000):`` and ``"%15s%8s %7s%8s%8s%8s %7s%8s%8s"`` for ``Filesystem kbytes quota limit grace
  files quota limit grace``), ``print_quota`` (a mount point longer than 15 characters on its
  own line; ``" %7s%c %6s %7s %7s"`` with ``*`` after a value over its limit; ``-h`` units
  ``k M G T P``), ``get_print_quota`` (``pid N is using default block quota setting``), the
  command table's usage texts (printed after a ``CMD_HELP`` error, exit 4);
* ``lustre/utils/lfs_project.c``: ``"%5u %c %s"`` for ``lfs project -d``, ``P`` when the
  inherit flag is set, and its ``failed to stat`` message;
* ``lustre/utils/liblustreapi.c`` ``llapi_parse_size`` (limit suffixes, KiB by default for
  blocks) and ``libcfs/libcfs/util/parser.c`` ``Parser_execarg`` (an unknown command lists
  the commands on stdout and exits 1; a command's negative return becomes the exit code).

What it models, and what not: limits, ids, the inherit flag and default-quota use are kept
exactly.  Usage (``kbytes``, ``files``) is whatever the test writes into ``usage.json``
(``{mount: {"usr"|"grp"|"prj": {id: {"kbytes": N, "files": N}}}}``); grace periods are not
tracked (a value over its soft limit shows the default one week, ``1w``).  Names resolve
through ``names.json`` (``{"users": {name: uid}, "groups": {name: gid}}``) and then NSS.  A
"mount point" is any existing directory.  Pools, ``-t`` grace times and ``lfs`` commands
other than these three are refused with ``EOPNOTSUPP`` (exit 95) or as unknown commands.

Test switches (state directory files): every call is appended to ``calls.jsonl``; a call
whose arguments contain a token listed in ``hang.json`` writes its pid to ``hung.pids`` and
sleeps until killed; ``running.json`` counts calls in progress and the most seen at once.
``OPENPORTAL_LUSTRE_DRY_RUN`` set makes every call fail, and ``OPENPORTAL_LUSTRE_ID_ONLY``
makes ``setquota``/``quota`` fail, so a test proves the engine ran none.
"""

from __future__ import annotations

import contextlib
import fcntl
import getopt
import grp
import json
import os
import pwd
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

PROG = "lfs"
CMD_HELP = 4
EOPNOTSUPP = 95
GRACE = "1w"
UINT32_MAX = 2**32 - 1
HELP = {
    "setquota": "Set filesystem quotas.\n"
    "usage: setquota [-t][-D] {-u|-U|-g|-G|-p|-P} {-b|-B|-i|-I LIMIT} [--pool POOL] "
    "FILESYSTEM\n\t setquota {-u|-g|-p} --delete FILESYSTEM",
    "quota": "Display disk usage and limits.\n"
    "usage: quota [-q] [-v] [-h] [-o OBD_UUID|-i MDT_IDX|-I OST_IDX]\n"
    "\t       [{-u|-g|-p} UNAME|UID|GNAME|GID|PROJID]\n"
    "\t       [--pool <OST pool name>] <filesystem>",
    "project": "Change or list project attribute for specified file or directory.\n"
    "usage: project [-d|-r] <file|directory...>\n"
    "       project [-p id] [-s] [-r] <file|directory...>\n"
    "       project -c [-d|-r [-p id] [-0]] <file|directory...>\n"
    "       project -C [-r] [-k] <file|directory...>",
}
TYPES = {"u": "usr", "g": "grp", "p": "prj"}
UNITS = {"k": 10, "m": 20, "g": 30, "t": 40, "p": 50, "e": 60}


class Exit(Exception):
    """Leave with ``code`` after printing ``message`` (and the command's help for 4)."""

    def __init__(self, code: int, message: str = "", command: str = "") -> None:
        super().__init__(message)
        self.code, self.message, self.command = code, message, command


# --- state -------------------------------------------------------------------------------------


def state_dir() -> Path:
    """The directory named by ``LFS_STANDIN_STATE``."""
    where = os.environ.get("LFS_STANDIN_STATE")
    if not where:
        raise Exit(EOPNOTSUPP, "lfs stand-in: LFS_STANDIN_STATE is not set")
    return Path(where)


def read(name: str, default: Any) -> Any:
    """A JSON file of the state directory (``default`` if absent)."""
    path = state_dir() / name
    return json.loads(path.read_text()) if path.exists() else default


def write(name: str, value: Any) -> None:
    """Replace a JSON file of the state directory atomically."""
    path = state_dir() / name
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    temporary.write_text(json.dumps(value, indent=1, sort_keys=True))
    temporary.replace(path)


@contextlib.contextmanager
def locked() -> Iterator[None]:
    """Hold the state lock (stand-ins run concurrently, as ``lfs`` does)."""
    with (state_dir() / "lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


@contextlib.contextmanager
def running() -> Iterator[None]:
    """Count this call in ``running.json`` while it runs."""
    with locked():
        count = read("running.json", {"now": 0, "most": 0})
        count["now"] += 1
        count["most"] = max(count["most"], count["now"])
        write("running.json", count)
    try:
        yield
    finally:
        with locked():
            count = read("running.json", {"now": 1, "most": 1})
            count["now"] -= 1
            write("running.json", count)


# --- parsing ----------------------------------------------------------------------------------


def parse_size(text: str, unit_shift: int, bytes_spec: bool) -> int:
    """``llapi_parse_size``: a number with an optional ``b k M G T P E`` suffix, in bytes."""
    if text.startswith("-") or not text:
        raise ValueError(text)
    digits = text.rstrip("bBkKmMgGtTpPeE")
    suffix = text[len(digits) :].lower()
    number = float(digits) if "." in digits else int(digits, 0)
    if suffix == "":
        shift = unit_shift
    elif suffix == "b":
        shift = 0 if bytes_spec else 9
    elif suffix in UNITS:
        shift = UNITS[suffix]
    else:
        raise ValueError(text)
    return int(number * (1 << shift))


def quota_id(kind: str, text: str) -> int | None:
    """``name2uid``/``name2gid`` (then ``str2quotaid``): the id, or None if invalid."""
    names = read("names.json", {})
    table = {"u": names.get("users", {}), "g": names.get("groups", {})}.get(kind, {})
    if text in table:
        return int(table[text])
    with contextlib.suppress(KeyError):
        if kind == "u":
            return pwd.getpwnam(text).pw_uid
        if kind == "g":
            return grp.getgrnam(text).gr_gid
    if text.isdigit() and int(text) < UINT32_MAX:
        return int(text)
    return None


def options(command: str, args: list[str], short: str, long: list[str]) -> Any:
    """GNU getopt as ``lfs`` uses it; an unknown option is a ``CMD_HELP`` error."""
    try:
        return getopt.gnu_getopt(args, short, long)
    except getopt.GetoptError as exc:
        bad = f"-{exc.opt}" if len(exc.opt) == 1 else f"--{exc.opt}"
        raise Exit(CMD_HELP, f"{PROG} {command}: unrecognized option '{bad}'", command) from None


def check_mount(command: str, mount: str) -> str:
    if not os.path.isdir(mount):
        raise Exit(2, f"{PROG} {command}: cannot open '{mount}': No such file or directory (2)")
    return os.path.abspath(mount)


# --- setquota ---------------------------------------------------------------------------------


def setquota(args: list[str]) -> None:
    """``lfs setquota {-u|-g|-p} ID {-b|-B|-i|-I LIMIT...|-D|--delete} FILESYSTEM``."""
    long = ["block-softlimit=", "block-hardlimit=", "default", "delete", "group=",
            "default-grp", "help", "inode-softlimit=", "inode-hardlimit=", "projid=",
            "default-prj", "user=", "default-usr", "pool=", "times"]  # fmt: skip
    if "-t" in args or "--times" in args:
        raise Exit(EOPNOTSUPP, f"{PROG} setquota: grace times are not modelled by this stand-in")
    parsed, operands = options("setquota", args, "b:B:dDg:Ghi:I:p:Pu:U", long)
    kind, target, limits = "", 0, {}
    use_default = delete = set_default = False
    for option, value in parsed:
        name = option.lstrip("-")
        letter = {"user": "u", "group": "g", "projid": "p", "default-usr": "U",
                  "default-grp": "G", "default-prj": "P", "block-softlimit": "b",
                  "block-hardlimit": "B", "inode-softlimit": "i", "inode-hardlimit": "I",
                  "default": "D", "help": "h"}.get(name, name)  # fmt: skip
        if letter in "ugpUGP":
            if kind:
                raise Exit(CMD_HELP, f"{PROG} setquota: only one of -u, -U, -g, -G, -p or -P "
                           "may be specified", "setquota")  # fmt: skip
            kind = letter.lower()
            if letter.islower():
                found = quota_id(letter, value)
                if found is None:
                    raise Exit(1, f"{PROG} setquota: invalid id '{value}'")
                if found == 0:
                    raise Exit(1, f"{PROG} setquota: can't set quota for root usr/group/project.")
                target = found
            else:
                set_default = True
        elif letter in "bBiI":
            try:
                size = parse_size(value, 10 if letter in "bB" else 0, bytes_spec=True)
            except ValueError:
                raise Exit(CMD_HELP, f"{PROG}: invalid limit '{value}'", "setquota") from None
            limits[letter] = size >> 10 if letter in "bB" else size
        elif letter in "dD":
            use_default = True
        elif name == "delete":
            delete = True
        elif name == "pool":
            raise Exit(EOPNOTSUPP, f"{PROG} setquota: pools are not modelled by this stand-in")
        else:
            raise Exit(CMD_HELP, "", "setquota")
    if not kind:
        raise Exit(CMD_HELP, f"{PROG} setquota: either -u or -g must be specified", "setquota")
    if not use_default and not delete and not limits:
        raise Exit(CMD_HELP, f"{PROG} setquota: at least one limit must be specified", "setquota")
    if (use_default or delete) and limits:
        raise Exit(CMD_HELP, f"{PROG} setquota: limits should not be specified when using "
                   "default quota or deleting quota ID", "setquota")  # fmt: skip
    if len(operands) != 1:
        extra = operands[1] if operands else "(null)"
        raise Exit(CMD_HELP, f"{PROG} setquota: filesystem not specified or unexpected "
                   f"argument '{extra}'", "setquota")  # fmt: skip
    mount = check_mount("setquota", operands[0])
    with locked():
        state = read("state.json", {})
        if set_default:
            entries = state.setdefault("defaults", {}).setdefault(mount, {})
            key = TYPES[kind]
        else:
            entries = (
                state.setdefault("quotas", {}).setdefault(mount, {}).setdefault(TYPES[kind], {})
            )
            key = str(target)
        entry = entries.get(key, {"b": 0, "B": 0, "i": 0, "I": 0})
        if delete:
            entries.pop(key, None)
        elif use_default:
            entries[key] = {"b": 0, "B": 0, "i": 0, "I": 0, "default": True}
        else:
            entry.pop("default", None)
            entries[key] = {**entry, **limits}
        write("state.json", state)


# --- quota ------------------------------------------------------------------------------------


def human(kib: int) -> str:
    """``kbytes2str`` with ``-h``."""
    for shift, unit in ((40, "P"), (30, "T"), (20, "G"), (10, "M")):
        if kib >> shift:
            return f"{kib / (1 << shift):5.4g}{unit}"
    return f"{kib}k"


def row(mount: str, values: dict[str, int], used: dict[str, int], h: bool, target: str) -> str:
    """One ``print_quota`` line (two for a mount point over 15 characters); ``target`` is
    ``general`` (the filesystem), ``mdt`` or ``ost`` (``-v``: no soft limits, and an OST
    has no inode columns)."""
    start = f"{mount}\n{'':15}" if len(mount) > 15 else f"{mount:>15}"
    kib, files = used.get("kbytes", 0), used.get("files", 0)
    bover = (
        1 if values["B"] and kib >= values["B"] else (2 if values["b"] and kib > values["b"] else 0)
    )
    iover = (
        1
        if values["I"] and files >= values["I"]
        else (2 if values["i"] and files > values["i"] else 0)
    )
    show = human if h else str
    general = target == "general"
    soft_b, soft_i = (show(values["b"]), str(values["i"])) if general else ("-", "-")
    blocks = f" {show(kib):>7}{'*' if bover else ' '} {soft_b:>6} {show(values['B']):>7} " \
             f"{GRACE if bover > 1 else '-':>7}"  # fmt: skip
    inodes = f" {files:>7}{'*' if iover else ' '} {soft_i:>6} {values['I']:>7} " \
             f"{GRACE if iover > 1 else '-':>7}"  # fmt: skip
    if target == "ost":
        inodes = " %7s %7s %7s %7s" % ("-", "-", "-", "-")  # noqa: UP031 (lfs.c's format)
    return start + blocks + inodes


def quota(args: list[str]) -> None:
    """``lfs quota [-q] [-v] [-h] {-u|-g|-p} NAME|ID FILESYSTEM``."""
    parsed, operands = options("quota", args, "gGi:I:o:pPqtuUvh", ["pool="])
    flags = {option.lstrip("-") for option, _ in parsed}
    kinds = flags & set("ugpUGP")
    if len(kinds) > 1:
        raise Exit(CMD_HELP, f"{PROG} quota: only one of -u, -g, or -p may be specified", "quota")
    if flags & {"t", "i", "I", "o", "pool", "U", "G", "P"}:
        raise Exit(EOPNOTSUPP, f"{PROG} quota: this form is not modelled by this stand-in")
    if not kinds or len(operands) != 2:
        raise Exit(CMD_HELP, f"{PROG} quota: name and mount point must be specified", "quota")
    kind, name = kinds.pop(), operands[0]
    found = quota_id(kind, name)
    if found is None:
        raise Exit(CMD_HELP, f"{PROG} quota: invalid id '{name}'", "quota")
    mount = check_mount("quota", operands[1])
    state = read("state.json", {})
    entry = state.get("quotas", {}).get(mount, {}).get(TYPES[kind], {}).get(str(found), {})
    default = bool(entry.get("default"))
    zero = {"b": 0, "B": 0, "i": 0, "I": 0}
    values = state.get("defaults", {}).get(mount, {}).get(TYPES[kind], zero) if default else entry
    values = zero if found == 0 else {**zero, **values}
    used = read("usage.json", {}).get(mount, {}).get(TYPES[kind], {}).get(str(found), {})
    h = "h" in flags
    if "q" not in flags:
        print(f"Disk quotas for {TYPES[kind]} {name} ({kind}id {found}):")
        columns = ("used" if h else "kbytes", "quota", "limit", "grace", "files", "quota")
        print("%15s%8s %7s%8s%8s%8s %7s%8s%8s" % ("Filesystem", *columns, "limit", "grace"))  # noqa: UP031
    print(row(mount, values, used, h, "general"))
    if "v" in flags:
        # One MDT and one OST, holding the whole grant: the layout of a one-target system.
        inodes_only = {"kbytes": 0, "files": used.get("files", 0)}
        print(row("lustre-MDT0000", {**values, "B": 0}, inodes_only, h, "mdt"))
        print(
            row("lustre-OST0000", {**values, "I": 0}, {"kbytes": used.get("kbytes", 0)}, h, "ost")
        )
        total = human(values["B"]) if h else str(values["B"])
        print(f"Total allocated inode limit: {values['I']}, total allocated block limit: {total}")
    if default:
        print(f"{kind}id {found} is using default block quota setting")
        print(f"{kind}id {found} is using default file quota setting")


# --- project ----------------------------------------------------------------------------------


def project(args: list[str]) -> None:
    """``lfs project [-d|-r] PATH``, ``-p ID [-s] [-r]``, ``-s``, ``-c``, ``-C [-r|-d] [-k]``."""
    long = ["print0", "check", "clear", "directory", "keep", "proj-inherit=", "recursive",
            "set-inherit", "inherit"]  # fmt: skip
    parsed, paths = options("project", args, "0cCdkp:rs", long)
    flags: set[str] = set()
    projid = None
    for option, value in parsed:
        letter = {"print0": "0", "check": "c", "clear": "C", "directory": "d", "keep": "k",
                  "proj-inherit": "p", "recursive": "r", "set-inherit": "s",
                  "inherit": "s"}.get(option.lstrip("-"), option.lstrip("-"))  # fmt: skip
        if letter in "cCs" and flags & set("cCs"):
            raise Exit(CMD_HELP, f"{PROG}: cannot specify '-c' '-C' '-s' together", "project")
        if letter == "p":
            if not value.isdigit() or int(value) >= UINT32_MAX:
                raise Exit(CMD_HELP, f"invalid project id '{value}'", "project")
            projid = int(value)
        flags.add(letter)
    if "C" in flags and projid is not None:
        raise Exit(CMD_HELP, f"{PROG}: '-p' is useless together with '-C'", "project")
    if "k" in flags and "C" not in flags:
        raise Exit(CMD_HELP, f"{PROG}: '-k' is useless together with '-s'", "project")
    if not paths:
        raise Exit(CMD_HELP, f"{PROG}: missing file or directory target(s)", "project")
    code = 0
    with locked():
        state = read("state.json", {})
        table = state.setdefault("projects", {})
        for path in paths:
            code = code or visit(path, flags, projid, table)
        write("state.json", state)
    if code:
        raise Exit(code)


def visit(path: str, flags: set[str], projid: int | None, table: dict[str, Any]) -> int:
    """``lfs_project_iterate``: the path, then (unless ``-d``) its tree."""
    if not os.path.exists(path):
        print(f"{PROG}: failed to stat '{path}': No such file or directory", file=sys.stderr)
        return 1
    if "C" in flags:
        action, children = "clear", not flags & {"d"}
    elif "s" in flags or projid is not None:
        action, children = "set", "r" in flags and "d" not in flags
    elif "c" in flags:
        action, children = "check", "r" in flags and "d" not in flags
    else:
        action, children = "list", "d" not in flags
    top = os.path.isdir(path)
    if action != "list" or not top or "d" in flags:
        one(path, action, flags, projid, table)
    if not top or not children:
        return 0
    recursive = "r" in flags
    for here, dirs, files in os.walk(path):
        for name in sorted(dirs + files):
            one(os.path.join(here, name), action, flags, projid, table)
        if not recursive:
            break
    return 0


def one(path: str, action: str, flags: set[str], projid: int | None, table: dict[str, Any]) -> None:
    current = table.get(path, {"projid": 0, "inherit": False})
    is_dir = os.path.isdir(path)
    if action == "list":
        print(f"{current['projid']:5d} {'P' if current['inherit'] else '-'} {path}")
    elif action == "check":
        wanted = projid if projid is not None else current["projid"]
        if is_dir and not current["inherit"]:
            print(f"{path} - project inheritance flag is not set")
        if current["projid"] != wanted:
            print(
                f"{path} - project identifier is not set (inode={current['projid']}, tree={wanted})"
            )
    elif action == "set":
        if projid is not None:
            current["projid"] = projid
        if "s" in flags and is_dir:
            current["inherit"] = True
        table[path] = current
    else:
        table[path] = {"projid": current["projid"] if "k" in flags else 0, "inherit": False}


# --- main -------------------------------------------------------------------------------------

COMMANDS = {"setquota": setquota, "quota": quota, "project": project}


def main(argv: list[str]) -> int:
    """Run one ``lfs`` command line; returns the exit code."""
    try:
        state = state_dir()
        with locked(), (state / "calls.jsonl").open("a") as calls:
            calls.write(json.dumps(argv) + "\n")
        dry = os.environ.get("OPENPORTAL_LUSTRE_DRY_RUN", "").lower() in ("1", "true")
        id_only = os.environ.get("OPENPORTAL_LUSTRE_ID_ONLY", "").lower() in ("1", "true")
        if dry or (id_only and argv[:1] != ["project"]):
            raise Exit(EOPNOTSUPP, "lfs stand-in: called although the engine is in dry-run or "
                       "id-only mode")  # fmt: skip
        with running():
            hang = set(read("hang.json", []))
            if hang & set(argv):
                with (state / "hung.pids").open("a") as pids:
                    pids.write(f"{os.getpid()}\n")
                while True:
                    time.sleep(60)
            command = COMMANDS.get(argv[0]) if argv else None
            if command is None:
                print("Try interactive use without arguments or use one of:")
                for name in COMMANDS:
                    print(f'"{name}"')
                print("as argument.")
                return 1
            command(argv[1:])
    except Exit as exc:
        if exc.message:
            print(exc.message, file=sys.stderr)
        if exc.code == CMD_HELP and exc.command:
            print(HELP[exc.command], file=sys.stderr)
        return exc.code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
