"""A disk that fills up under an agent: the job is refused, never reported done, and nothing
is lost once there is room again.

The real thing first: one agent of a running site (:class:`.site.Site`, real processes) keeps
its data directory - boards store, its write-ahead log, audit log - on a small tmpfs of its
own.  The tmpfs is filled to the last page, ``add_user`` is sent through the bridge, and:

* the bridge's job ends in an error that says which agent could not record it (the store or
  the audit log, whichever needed a new page first), and no back end made the user;
* the agent logged the failure with the file's path and ``ENOSPC``;
* it is the same process afterwards (it did not crash), and once the filler is deleted the
  same ``add_user`` and later ones complete: every user once in the directory and the
  ledger, every audit chain intact (no half-written entry), no job left unfinished.

Mounting needs root; without it those tests skip (and fail under ``CI=true``).  The
injected variants below run anywhere, in one process: the audit log's ``write`` fails with
``ENOSPC`` after writing part of an entry (when a job arrives, and when it ends), and the
store meets a real ``SQLITE_FULL`` (SQLite's ``max_page_count``).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from broadgauge.jobs import AgentType, Status
from broadgauge.runtime import audit as audit_module
from broadgauge.runtime.agent import Agent, JobFailed
from broadgauge.runtime.audit import verify
from broadgauge.runtime.handling import UNAUDITED, UNAUDITED_END, UNRECORDED_END
from broadgauge.runtime.store import DB_FILENAME
from tests.backends.oidc import skip_or_fail
from tests.jobs.agent_helpers import USER, Network, Recorder, eventually, finished, peer

from .site import AGENTS, Site

TMPFS_SIZE = "16m"
ATTEMPT_TIMEOUT = 20.0


# --- a small tmpfs ------------------------------------------------------------------------


def mount_tmpfs(where: Path) -> None:
    """Mount a tmpfs of :data:`TMPFS_SIZE` on ``where`` (skip_or_fail if that is not allowed)."""
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        skip_or_fail("mounting a tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE},mode=0700", "tmpfs", str(where)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        skip_or_fail(f"cannot mount a tmpfs on {where}: {done.stderr.strip()}")


def unmount(where: Path) -> None:
    """Unmount ``where``; lazily if something still holds it (it is gone either way)."""
    done = subprocess.run(["umount", str(where)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        subprocess.run(["umount", "-l", str(where)], check=True)


def fill(where: Path) -> Path:
    """Write zeros to a file under ``where`` until the filesystem has no page left."""
    filler = where / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    chunk = b"\0" * 65536
    try:
        while True:
            try:
                os.write(fd, chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                if len(chunk) == 1:
                    break
                chunk = chunk[: len(chunk) // 2]
    finally:
        os.close(fd)
    return filler


@pytest.fixture
def tmpfs() -> Iterator[Callable[[Path], None]]:
    """``tmpfs(where)`` mounts a small tmpfs on ``where``; each is unmounted at the end."""
    mounted: list[Path] = []

    def mount(where: Path) -> None:
        mount_tmpfs(where)
        mounted.append(where)

    yield mount
    for where in mounted:
        unmount(where)


@pytest.mark.slow
@pytest.mark.parametrize("victim", ["instance", "account"])
async def test_a_full_disk_refuses_the_job_and_after_freeing_space_nothing_is_lost(
    tmp_path: Path, tmpfs: Callable[[Path], None], victim: str
) -> None:
    site = Site(tmp_path)
    site.configure()
    where = site.data_dir(victim)
    tmpfs(where)
    try:
        await site.start_all()
        before = await site.submit("add_user before.full.portal", ATTEMPT_TIMEOUT)
        assert before.is_finished and not before.is_error, before
        process = site.current(victim)

        filler = fill(where)
        with pytest.raises(JobFailed) as refused:
            await site.submit("add_user during.full.portal", ATTEMPT_TIMEOUT)

        # Not acknowledged: an error that says why, and no back end made the user.
        message = refused.value.job.error_message or ""
        assert f"{victim} could not record the job" in message or (
            f"{victim} {UNAUDITED}" in message
        ), message
        assert "during.full" not in directory_users(site)
        assert "during.full" not in ledger_users(site)
        # Logged with the file and the errno.
        full_lines = [line for line in process.output.splitlines() if "ENOSPC" in line]
        files = (str(where / DB_FILENAME), str(where / "audit.jsonl"))
        assert any(name in line for line in full_lines for name in files), process.output
        print(f"[{victim}] refused: {message}", *full_lines, sep="\n  ")

        filler.unlink()
        during = await site.submit("add_user during.full.portal", ATTEMPT_TIMEOUT)
        after = [await site.submit(f"add_user a{i}.full.portal", ATTEMPT_TIMEOUT) for i in range(3)]
        for done in (during, *after):
            assert done.state is Status.COMPLETE, done
        assert site.current(victim) is process and process.process.poll() is None

        statuses = await site.stop()
        assert all(status == 0 for status in statuses.values()), statuses
    except BaseException:
        site.kill_leftovers()
        print(site.logs())
        raise
    finally:
        site.kill_leftovers()  # before the tmpfs is unmounted

    users = ["before.full", "during.full", "a0.full", "a1.full", "a2.full"]
    assert directory_users(site) == sorted(users)
    assert ledger_users(site) == sorted(users)
    for agent in [*AGENTS, "bridge"]:
        result = verify(site.data_dir(agent) / "audit.jsonl")
        assert result.ok, f"{agent}: line {result.first_bad_line}: {result.reason}"
    assert site.unfinished() == "no unfinished jobs"


def directory_users(site: Site) -> list[str]:
    """The users in the account agent's local directory."""
    with closing(sqlite3.connect(site.directory)) as db:
        return sorted(name for (name,) in db.execute("SELECT name FROM users"))


def ledger_users(site: Site) -> list[str]:
    """The users the scheduler ledger associated with an account."""
    with closing(sqlite3.connect(site.ledger)) as db:
        return sorted(user for (user,) in db.execute("SELECT user FROM associations"))


# --- injected: the audit log's write fails, no root needed ---------------------------------


class FullAuditLog:
    """Makes one agent's audit ``write`` fail with ENOSPC, after writing part of the entry
    (as a disk that fills mid-write does), for the entries ``matches`` picks."""

    def __init__(self, agent: Agent, matches: Callable[[dict[str, Any]], bool]) -> None:
        assert agent.audit_log is not None
        self.log = agent.audit_log
        self.matches = matches
        self.active = True
        self.refused = 0
        self._real = os.write

    def write(self, fd: int, data: bytes) -> int:
        if fd == self.log._fd and self.active and self.matches(json.loads(data)):
            if self.refused % 2 == 0:
                self.refused += 1
                return self._real(fd, data[: len(data) // 2])  # half of it fits
            self.refused += 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self._real(fd, data)


@pytest.fixture
def full_audit(monkeypatch: pytest.MonkeyPatch) -> Callable[..., FullAuditLog]:
    def install(agent: Agent, matches: Callable[[dict[str, Any]], bool]) -> FullAuditLog:
        fault = FullAuditLog(agent, matches)
        monkeypatch.setattr(audit_module.os, "write", fault.write)
        return fault

    return install


def is_instruction(entry: dict[str, Any]) -> bool:
    return entry.get("instruction") == f"add_user {USER}"


async def test_an_audit_log_that_cannot_take_the_job_refuses_it_and_loses_nothing(
    tmp_path: Path, full_audit: Callable[..., FullAuditLog], caplog: pytest.LogCaptureFixture
) -> None:
    async with Network() as net:
        portal = await net.start("portal", AgentType.PORTAL)
        recorder = Recorder()
        instance = await net.start_instance(recorder, data_dir=tmp_path / "instance")
        fault = full_audit(instance, is_instruction)

        with pytest.raises(JobFailed) as refused:
            await finished(portal.run("portal.instance", f"add_user {USER}", timeout=5))

        assert refused.value.job.error_message == f"instance {UNAUDITED}"
        assert recorder.calls == []  # never run
        assert fault.refused >= 2  # a half-written entry, then the error
        path = tmp_path / "instance" / "audit.jsonl"
        assert f"[Errno 28] No space left on device (ENOSPC): '{path}'" in caplog.text
        assert verify(path).ok  # the half-written entry was taken back

        fault.active = False
        job = await finished(portal.run("portal.instance", f"add_user {USER}", timeout=5))
        assert job.state is Status.COMPLETE
        assert len(recorder.calls) == 1
        result = verify(path)
        assert result.ok
        actions = [e["action"] for e in map(json.loads, path.read_text().splitlines())]
        assert actions[-3:] == ["received", "started", "finished"]


async def test_a_job_whose_end_cannot_be_audited_is_an_error_not_done(
    tmp_path: Path, full_audit: Callable[..., FullAuditLog]
) -> None:
    async with Network() as net:
        portal = await net.start("portal", AgentType.PORTAL)
        recorder = Recorder()
        instance = await net.start_instance(recorder, data_dir=tmp_path / "instance")
        fault = full_audit(instance, lambda e: is_instruction(e) and e.get("action") == "finished")

        with pytest.raises(JobFailed) as failed:
            await finished(portal.run("portal.instance", f"add_user {USER}", timeout=5))

        assert failed.value.job.error_message == f"instance {UNAUDITED_END}"
        assert len(recorder.calls) == 1  # it ran: the error says its effect may stand
        assert instance.store is not None
        marker = instance.store.execution(failed.value.job.id)
        assert marker is not None and marker.result is not None and marker.result.is_error
        assert verify(tmp_path / "instance" / "audit.jsonl").ok

        fault.active = False  # room again: sent again, it completes (handlers are idempotent)
        job = await finished(portal.run("portal.instance", f"add_user {USER}", timeout=5))
        assert job.state is Status.COMPLETE
        assert verify(tmp_path / "instance" / "audit.jsonl").ok


# --- a real SQLITE_FULL from the store, no root needed -------------------------------------


async def test_a_store_sqlite_finds_full_is_reported_as_enospc_and_the_job_not_done(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Whichever write of a job meets the full store (its Put, its start or end marker, its
    result), the job is never reported done without the board holding it, and the error
    names the file; with room again the same job completes."""
    async with Network() as net:
        portal = await net.start("portal", AgentType.PORTAL)
        recorder = Recorder()
        instance = await net.start_instance(recorder, data_dir=tmp_path / "instance")
        assert instance.store is not None
        db = instance.store._conn()
        # SQLite's own limit, so the error is SQLite's real SQLITE_FULL.
        db.execute(f"PRAGMA max_page_count={db.execute('PRAGMA page_count').fetchone()[0]}")
        with caplog.at_level(logging.WARNING):
            for number in range(60):  # until a job needs a page the store may not take
                user = f"u{number}.p.portal"
                try:
                    await finished(portal.run("portal.instance", f"add_user {user}", timeout=4))
                except JobFailed as exc:
                    reason = exc.job.error_message
                    break
            else:
                raise AssertionError("the store never filled up")
        # Refused before it ran, or ran but its result could not be stored: an error either
        # way, never "done", and never left to wait for its expiry.
        assert reason in ("instance could not record the job", f"instance {UNRECORDED_END}")
        path = tmp_path / "instance" / DB_FILENAME
        full = "[Errno 28] No space left on device (ENOSPC; SQLite: database or disk is full)"
        assert f"{full}: '{path}'" in caplog.text

        db.execute("PRAGMA max_page_count=1073741823")
        # Once the store takes writes again the instance's copy of the job is settled too,
        # so the job sent again is run, not made a duplicate of a job nobody runs.
        board = instance.board(peer("portal"))
        await eventually(lambda: not any(j.is_pending for j in board.jobs()), timeout=5)
        job = await finished(portal.run("portal.instance", f"add_user {user}", timeout=4))
        assert job.state is Status.COMPLETE
        assert instance.store.integrity_ok()
