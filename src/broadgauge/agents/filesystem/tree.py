"""Directory operations that cannot be led outside a volume root.

Every operation opens the configured root and then walks down one component at a time with
``O_NOFOLLOW | O_DIRECTORY`` relative to the previous directory's descriptor, and acts on
the last component through its parent's descriptor (``mkdir``/``rename``/``fchown`` ...).
So a symlink planted anywhere below a root (``<root>/proj/alice.proj -> /etc``) is refused,
never followed, and a ``..`` cannot appear (the layout refuses it in names and subpaths).
The root itself may be a symlink: it comes from the operator's config, not from a user.

These functions block; the agent runs them in a worker thread, one at a time.  Each
returns a list of the changes it made, in words, for the audit log (empty: nothing to do).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import time
from collections.abc import Callable
from pathlib import PurePosixPath

from broadgauge.agents.filesystem.layout import Placement

RECYCLE = ".recycle"
RECYCLE_MODE = 0o700
INTERMEDIATE_MODE = 0o755
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_NOFOLLOW = _DIR_FLAGS | os.O_NOFOLLOW


class FilesystemError(Exception):
    """A directory operation was refused or failed; the message says which path and why."""


def ensure_dir(place: Placement, uid: int | None, gid: int | None, mode: int) -> list[str]:
    """Make ``place`` a directory owned ``uid:gid`` (``None``: leave) with exactly ``mode``.

    A missing directory is restored from ``<parent>/.recycle/<name>`` if it is there,
    otherwise created; missing intermediate directories are created ``0755``.  An existing
    directory has its owner and mode corrected.  The mode is applied with ``fchmod`` after
    ``fchown``, so neither the umask nor a chown clearing set-id bits can change it.
    """
    changes: list[str] = []
    parent = _open_parent(place, create=True, changes=changes)
    assert parent is not None
    name = place.parts[-1]
    path = place.path
    try:
        try:
            fd = _open_child(parent, name, path)
        except FileNotFoundError:
            if _restore(parent, name, path):
                changes.append(f"restored {path} from {RECYCLE}")
            else:
                _mkdir(parent, name, path)
                changes.append(f"created {path}")
            fd = _open_child(parent, name, path)
        try:
            changes.extend(_fix(fd, path, uid, gid, mode))
        finally:
            os.close(fd)
    finally:
        os.close(parent)
    return changes


def recycle_dir(place: Placement) -> list[str]:
    """Move ``place`` to ``<parent>/.recycle/<name>`` (nothing to do if it is absent).

    An older recycled copy of the same name is kept, renamed with a timestamp suffix.
    """

    def recycle(parent: int, name: str, path: PurePosixPath) -> list[str]:
        with contextlib.suppress(FileExistsError):
            os.mkdir(RECYCLE, RECYCLE_MODE, dir_fd=parent)
        bin_fd = _open_child(parent, RECYCLE, path.parent / RECYCLE)
        try:
            os.fchmod(bin_fd, RECYCLE_MODE)
            if _exists(bin_fd, name):
                stamp = time.strftime("%Y%m%dT%H%M%S")
                os.rename(name, f"{name}.{stamp}", src_dir_fd=bin_fd, dst_dir_fd=bin_fd)
            os.rename(name, name, src_dir_fd=parent, dst_dir_fd=bin_fd)
            # The recycled copy's age is when it was removed (for a later clean-up job).
            os.utime(name, dir_fd=bin_fd, follow_symlinks=False)
        finally:
            os.close(bin_fd)
        return [f"recycled {path} to {path.parent / RECYCLE / name}"]

    return _on_dir(place, "cannot recycle", recycle)


def delete_dir(place: Placement) -> list[str]:
    """Delete the tree at ``place`` (nothing to do if it is absent); never follows links."""

    def delete(parent: int, name: str, path: PurePosixPath) -> list[str]:
        # rmtree with dir_fd walks by descriptor and refuses symlinks at every level.
        shutil.rmtree(name, dir_fd=parent)
        return [f"deleted {path}"]

    return _on_dir(place, "cannot delete", delete)


def _on_dir(
    place: Placement, what: str, act: Callable[[int, str, PurePosixPath], list[str]]
) -> list[str]:
    """``act(parent, name, path)`` on the directory at ``place``, through its parent's
    descriptor; nothing (``[]``) when it is absent; an OSError becomes ``what`` failed."""
    parent = _open_parent(place, create=False, changes=[])
    if parent is None:
        return []
    name = place.parts[-1]
    path = place.path
    try:
        if not _is_dir_here(parent, name, path):
            return []
        return act(parent, name, path)
    except OSError as exc:
        raise _error(what, path, exc) from exc
    finally:
        os.close(parent)


def ensure_link(target: PurePosixPath, link: PurePosixPath) -> list[str]:
    """Make ``link`` a symlink to ``target``; an existing different entry is left alone."""
    try:
        current = os.readlink(link)
    except FileNotFoundError:
        try:
            os.symlink(target, link)
        except OSError as exc:
            raise _error("cannot create link", link, exc) from exc
        return [f"linked {link} -> {target}"]
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            raise FilesystemError(f"{link} exists and is not a symlink; not replacing it") from None
        raise _error("cannot read link", link, exc) from exc
    if current != str(target):
        raise FilesystemError(f"{link} already links to {current}, not {target}; not replacing it")
    return []


def remove_link(target: PurePosixPath, link: PurePosixPath) -> list[str]:
    """Remove ``link`` if it is a symlink to ``target``."""
    try:
        current = os.readlink(link)
    except OSError:
        return []  # absent, or not a symlink: not ours to remove
    if current != str(target):
        return []
    try:
        os.unlink(link)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise _error("cannot remove link", link, exc) from exc
    return [f"unlinked {link}"]


# --- walking ---------------------------------------------------------------------------


def _open_parent(place: Placement, *, create: bool, changes: list[str]) -> int | None:
    """A descriptor of the directory that holds ``place``'s last component.

    ``None`` when a component is missing and ``create`` is false.
    """
    try:
        fd = os.open(place.root, _DIR_FLAGS)
    except FileNotFoundError:
        raise FilesystemError(f"volume root {place.root} does not exist") from None
    except OSError as exc:
        raise _error("cannot open volume root", place.root, exc) from exc
    here = place.root
    try:
        for name in place.parts[:-1]:
            here = here / name
            try:
                child = _open_child(fd, name, here)
            except FileNotFoundError:
                if not create:
                    os.close(fd)
                    return None
                _mkdir(fd, name, here)
                child = _open_child(fd, name, here)
                os.fchmod(child, INTERMEDIATE_MODE)
                changes.append(f"created {here}")
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_child(parent: int, name: str, path: PurePosixPath) -> int:
    """Open directory ``name`` under ``parent`` without following a symlink."""
    try:
        return os.open(name, _NOFOLLOW, dir_fd=parent)
    except FileNotFoundError:
        raise
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise FilesystemError(
                f"{path} is a symlink or not a directory; refusing to use it"
            ) from None
        raise _error("cannot open", path, exc) from exc


def _mkdir(parent: int, name: str, path: PurePosixPath) -> None:
    try:
        os.mkdir(name, 0o700, dir_fd=parent)  # tight until _fix sets the real mode
    except FileExistsError:
        pass  # made by someone else meanwhile; opened (and checked) next
    except OSError as exc:
        raise _error("cannot create", path, exc) from exc


def _fix(fd: int, path: PurePosixPath, uid: int | None, gid: int | None, mode: int) -> list[str]:
    changes: list[str] = []
    try:
        info = os.fstat(fd)
        want_uid = info.st_uid if uid is None else uid
        want_gid = info.st_gid if gid is None else gid
        if (info.st_uid, info.st_gid) != (want_uid, want_gid):
            os.fchown(fd, want_uid, want_gid)
            changes.append(f"set owner of {path} to {want_uid}:{want_gid}")
        if stat.S_IMODE(os.fstat(fd).st_mode) != mode:
            os.fchmod(fd, mode)
            changes.append(f"set mode of {path} to {mode:04o}")
    except OSError as exc:
        raise _error("cannot set owner or mode of", path, exc) from exc
    return changes


def _restore(parent: int, name: str, path: PurePosixPath) -> bool:
    """Move ``<parent>/.recycle/<name>`` back to ``<parent>/<name>``, if it is there."""
    try:
        bin_fd = os.open(RECYCLE, _NOFOLLOW, dir_fd=parent)
    except OSError:
        return False  # no usable recycle bin (absent, or not a real directory)
    try:
        info = os.stat(name, dir_fd=bin_fd, follow_symlinks=False)
        if not stat.S_ISDIR(info.st_mode):
            return False
        os.rename(name, name, src_dir_fd=bin_fd, dst_dir_fd=parent)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise _error("cannot restore", path, exc) from exc
    finally:
        os.close(bin_fd)
    return True


def _is_dir_here(parent: int, name: str, path: PurePosixPath) -> bool:
    """Whether ``name`` is a real directory; refuses a symlink or file in its place."""
    try:
        info = os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return False
    if not stat.S_ISDIR(info.st_mode):
        raise FilesystemError(f"{path} is a symlink or not a directory; refusing to remove it")
    return True


def _exists(parent: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def _error(what: str, path: PurePosixPath, exc: OSError) -> FilesystemError:
    return FilesystemError(f"{what} {path}: {exc.strerror or exc}")
