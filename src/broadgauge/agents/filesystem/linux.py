"""The Linux quota engine: ``setquota`` and ``repquota`` on a quota-enabled filesystem.

Works on any filesystem with the quotactl interface (ext4, xfs ...) mounted with
``usrquota``/``grpquota`` and with quotas switched on (``quotaon``).  Quotas are per owner
per filesystem, so the ``path`` a caller passes is not used: a group's usage is everything
the group owns on that filesystem, not only what lies under the project directory.

* set:   ``setquota -u|-g NAME SOFT HARD ISOFT IHARD FS`` with block limits in KiB (soft =
  hard, rounded up to whole KiB); ``0`` means "no limit", so ``unlimited`` is ``0 0``.
  Inode limits are ``0 0`` unless the engine is given ``inode_limit``.
* get:   ``repquota -u|-g -p -O csv FS``, parsed by its header (``BlockUsed`` and
  ``BlockHardLimit``, in KiB); a name missing from the report has no quota and no usage.
  The plain whitespace table (what OpenPortal parses) is accepted as well, so a wrapper
  that ignores ``-O csv`` still works.
* clear: ``setquota -u|-g NAME 0 0 0 0 FS``.

Owners are checked by :func:`~.quota.check_owner` before any command runs (a leading ``-``
would be an option, an all-digit name a numeric id).  Commands may carry a prefix
(``"docker exec nfs setquota"``, split like a shell would); they run through
:func:`asyncio.create_subprocess_exec` (never a shell) with a timeout after which the process
is killed.

Testing: enabling real quotas needs root, a filesystem mounted with quota options and
``quotaon``, which a test machine rarely has; the tests therefore put fake ``setquota`` /
``repquota`` scripts on disk that record their arguments and print canned reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import logging
import shlex
from collections.abc import Sequence

from broadgauge.agents.filesystem.quota import QuotaError, check_owner
from broadgauge.grammar import Quota, QuotaLimit, StorageSize

log = logging.getLogger("broadgauge.agents.filesystem")

KIB = 1024


class LinuxQuotaEngine:
    """Sets and reads per-user and per-group block quotas on one filesystem."""

    def __init__(
        self,
        filesystem: str,
        setquota: str | Sequence[str] = "setquota",
        repquota: str | Sequence[str] = "repquota",
        timeout: float = 30,
        *,
        inode_limit: int = 0,
    ) -> None:
        if not filesystem.strip():
            raise QuotaError("the Linux quota engine needs a filesystem (device or mount point)")
        self.filesystem = filesystem
        self.setquota = _command(setquota, "setquota")
        self.repquota = _command(repquota, "repquota")
        self.timeout = timeout
        self.inode_limit = inode_limit

    # --- the QuotaEngine protocol ------------------------------------------------------

    async def set_quota(self, path: str, owner: str, is_group: bool, limit: QuotaLimit) -> Quota:
        """Apply ``limit`` with ``setquota`` and read it back."""
        check_owner(owner, is_group)
        kib = limit_to_kib(limit)
        inodes = str(self.inode_limit)
        await self._run(
            self.setquota,
            [_flag(is_group), owner, str(kib), str(kib), inodes, inodes, self.filesystem],
        )
        return await self.get_quota(path, owner, is_group)

    async def get_quota(self, path: str, owner: str, is_group: bool) -> Quota:
        """Read the owner's row of ``repquota``."""
        check_owner(owner, is_group)
        output = await self._run(
            self.repquota, [_flag(is_group), "-p", "-O", "csv", self.filesystem]
        )
        return parse_repquota(output, owner)

    async def clear_quota(self, path: str, owner: str, is_group: bool) -> None:
        """Remove every limit of the owner (``setquota ... 0 0 0 0``)."""
        check_owner(owner, is_group)
        await self._run(
            self.setquota, [_flag(is_group), owner, "0", "0", "0", "0", self.filesystem]
        )

    # --- running commands ----------------------------------------------------------------

    async def _run(self, command: Sequence[str], args: Sequence[str]) -> str:
        argv = [*command, *args]
        shown = shlex.join(argv)
        log.info("quota: %s", shown)
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            raise QuotaError(f"cannot run {shown}: {exc}") from exc
        try:
            async with asyncio.timeout(self.timeout):
                stdout, stderr = await process.communicate()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            raise QuotaError(f"{shown} did not finish within {self.timeout:g} s") from None
        if process.returncode != 0:
            message = stderr.decode(errors="replace").strip()
            raise QuotaError(f"{shown} failed (exit {process.returncode}): {message}")
        return stdout.decode(errors="replace")


def limit_to_kib(limit: QuotaLimit) -> int:
    """The block limit for ``setquota``: KiB rounded up; ``0`` for unlimited.

    A limit of 0 bytes is refused: ``setquota`` would read its 0 as "no limit".
    """
    if limit.size is None:
        return 0
    if limit.size.bytes == 0:
        raise QuotaError("a limit of 0 B cannot be set with setquota (0 means no limit)")
    return -(-limit.size.bytes // KIB)


def parse_repquota(output: str, owner: str) -> Quota:
    """The quota of ``owner`` in ``repquota`` output (CSV with a header, or the table)."""
    rows = list(csv.reader(io.StringIO(output)))
    header = next((r for r in rows if len(r) > 5 and "BlockUsed" in r), None)
    if header is not None:
        used_at = header.index("BlockUsed")
        hard_at = header.index("BlockHardLimit") if "BlockHardLimit" in header else used_at + 2
        for row in rows:
            if row is header or len(row) <= max(used_at, hard_at) or row[0].strip() != owner:
                continue
            return _quota(row[used_at], row[hard_at], owner)
        return Quota(QuotaLimit.UNLIMITED, StorageSize(0))
    # The plain table: NAME FLAGS USED SOFT HARD [GRACE] FILES ...  (sizes in KiB).
    for line in output.splitlines():
        tokens = line.split()
        if len(tokens) >= 5 and tokens[0] == owner:
            return _quota(tokens[2], tokens[4], owner)
    return Quota(QuotaLimit.UNLIMITED, StorageSize(0))


def _quota(used: str, hard: str, owner: str) -> Quota:
    try:
        used_kib = int(used.strip())
        hard_kib = int(hard.strip())
    except ValueError:
        raise QuotaError(
            f"repquota gave an unreadable row for {owner}: {used!r} {hard!r}"
        ) from None
    limit = QuotaLimit.UNLIMITED if hard_kib == 0 else QuotaLimit(StorageSize(hard_kib * KIB))
    return Quota(limit, StorageSize(used_kib * KIB))


def _flag(is_group: bool) -> str:
    return "-g" if is_group else "-u"


def _command(value: str | Sequence[str], what: str) -> list[str]:
    parts = shlex.split(value) if isinstance(value, str) else list(value)
    if not parts:
        raise QuotaError(f"the {what} command is empty")
    return parts
