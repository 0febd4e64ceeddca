"""Restarting on a durable file that a crash, a power loss or a bad disk left damaged.

Each file an agent reads at start is damaged the way a torn write or a bad disk damages it,
and the agent is started on it as an operator starts it (``broadgauge <role> run``, a real
process configured by :class:`.site.Site`).  It never crashes with a traceback.  Either it
recovers and logs what it dropped, or it refuses to start, naming the file, what is wrong
and what to do (``docs/operators/storage.md`` lists the behaviour for each file):

* the boards store (``boards.sqlite3``): cut to half, cut at a page boundary, cut to zero,
  a page overwritten with random bytes, the header overwritten: refused, and the file left
  exactly as it was (evidence).  The recovery the message gives (move the file aside) starts
  the agent again, and the site serves as before.  One stored job whose text is damaged is
  skipped and logged, the others load;
* its write-ahead log, left by a SIGKILLed writer and then torn (cut in half, random bytes
  in the middle, its header overwritten), and a stray ``-shm`` or ``-journal`` of random
  bytes: SQLite keeps the committed prefix, and what it dropped is logged;
* the audit log: a torn last line (half a JSON line, or the NUL bytes some filesystems
  leave after a power loss) is cut off, kept in ``audit.jsonl.torn``, logged and recorded in
  the chain; an entry altered, removed or cut short in the middle stops the agent;
* the account agent's local directory, the scheduler ledger and the filesystem agent's quota
  ledger: refused, untouched.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest

from broadgauge.grammar import ProjectMapping, UserIdentifier, UserMapping
from broadgauge.jobs.job import Job
from broadgauge.runtime.audit import GENESIS, AuditLog, verify
from broadgauge.runtime.durable import DamagedFileError
from broadgauge.runtime.store import DB_FILENAME, BoardStore
from tests.cli.processes import Broadgauge, free_port, run_broadgauge

from .site import PATH, Site

pytestmark = pytest.mark.slow

PAGE = 4096
#: When the tests' jobs were made (long expired: a started agent leaves them to its cleaner).
NOW = 1_717_400_000.0
#: The instance's neighbour above it: its jobs come in on this board.
BOARD = "platform@default"
#: Enough jobs for a store of a few dozen pages.
JOBS = 200


def job(number: int, now: float) -> Job:
    """The ``number``-th job of a test, with an id the test can predict."""
    command = f"{PATH} add_user u{number:03d}.torn.portal"
    return Job.parse(command, now=now, job_id=uuid.UUID(int=number + 1)).pending(now=now)


def fill_boards(data_dir: Path, count: int = JOBS) -> list[Job]:
    """A closed boards store holding ``count`` jobs, execution markers and queued commands."""
    jobs = [job(i, NOW) for i in range(count)]
    with closing(BoardStore(data_dir)) as store:
        store.save_all(BOARD, jobs)
        for queued in jobs[: count // 4]:
            store.mark_started(queued.id, NOW)
            store.enqueue(BOARD, queued.to_json())
    return jobs


# --- damage --------------------------------------------------------------------------------


def cut_to_half(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def cut_at_a_page_boundary(path: Path) -> None:
    pages = path.stat().st_size // PAGE
    assert pages >= 4, f"{path} has only {pages} pages"
    os.truncate(path, PAGE * (pages // 2))


def cut_to_nothing(path: Path) -> None:
    os.truncate(path, 0)


def random_bytes_over_a_middle_page(path: Path) -> None:
    pages = path.stat().st_size // PAGE
    with path.open("r+b") as handle:
        handle.seek(PAGE * (pages // 2))
        handle.write(random.Random(14).randbytes(512))


def random_bytes_over_the_header(path: Path) -> None:
    with path.open("r+b") as handle:
        handle.write(random.Random(14).randbytes(100))


DAMAGE = [
    cut_to_half,
    cut_at_a_page_boundary,
    cut_to_nothing,
    random_bytes_over_a_middle_page,
    random_bytes_over_the_header,
]


# --- running one agent ---------------------------------------------------------------------


@pytest.fixture
def site(tmp_path: Path) -> Site:
    """A site's places (configs, data directories, back-end files); nothing configured yet."""
    return Site(tmp_path)


#: The back end each leaf agent tested alone uses, set as Site.configure sets it.
def _extras(site: Site) -> dict[str, dict[str, str]]:
    return {
        "account": {"account-backend": "local", "directory": str(site.directory)},
        "scheduler": {"scheduler-backend": "ledger", "ledger": str(site.ledger)},
    }


def alone(site: Site, name: str) -> Site:
    """Configure agent ``name`` of ``site`` with the CLI, with no neighbours: enough to start
    it on its files (much quicker than configuring the whole site)."""
    site.directory.parent.mkdir(parents=True, exist_ok=True)
    site.cli(name, "init", "-c", str(site.config(name)), "-p", str(free_port()))
    for key, value in _extras(site).get(name, {}).items():
        site.cli(name, "extra", "-c", str(site.config(name)), "-k", key, "-v", value)
    return site


def refused(site: Site, name: str) -> str:
    """Run agent ``name``; it must exit with status 1 at once.  Its stderr."""
    done = run_broadgauge(
        name, "run", "-c", str(site.config(name)), "--data-dir", str(site.data_dir(name)),
        env=site.env, timeout=60,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 1, f"{name} exited with {done.returncode}:\n{output}"
    assert "Traceback" not in output, output
    return done.stderr


def started(site: Site, name: str) -> str:
    """Start agent ``name`` alone; once it listens, stop it (SIGTERM).  Its output."""
    process = Broadgauge(
        name, "run", "-c", str(site.config(name)), "--data-dir", str(site.data_dir(name)),
        env=site.env, cwd=site.root,
    )  # fmt: skip
    try:
        process.wait_for(f"{name} ({name.capitalize()}) listening on", timeout=30)
        assert process.terminate() == 0, process.output
    finally:
        process.kill()
    assert "Traceback" not in process.output, process.output
    return process.output


# --- the boards store ----------------------------------------------------------------------


@pytest.mark.parametrize("damage", DAMAGE, ids=lambda f: f.__name__)
def test_a_damaged_boards_store_stops_the_agent_and_says_how_to_recover(
    site: Site, damage: Callable[[Path], None]
) -> None:
    alone(site, "instance")
    fill_boards(site.data_dir("instance"))
    path = site.data_dir("instance") / DB_FILENAME
    damage(path)
    before = path.read_bytes()

    stderr = refused(site, "instance")

    assert f"broadgauge: {path}: the boards store is damaged" in stderr
    assert "so the agent will not start on it. To recover: stop the agent" in stderr
    assert "move boards.sqlite3 and its -wal and -shm files aside and start the agent" in stderr
    assert path.read_bytes() == before  # left as evidence, not "repaired"


def move_aside(store: Path) -> None:
    """The second recovery of the message: the store and its -wal and -shm files, aside."""
    for suffix in ("", "-wal", "-shm"):
        moved = Path(f"{store}{suffix}")
        if moved.exists():
            moved.rename(moved.with_name(moved.name + ".damaged"))


async def test_after_moving_a_damaged_store_aside_the_site_serves_again(site: Site) -> None:
    """The recovery the message gives, end to end: what was done before is still done."""
    site.configure()
    try:
        await site.start_all()
        first = await site.submit("add_user before.torn.portal", timeout=20)
        assert first.is_finished and not first.is_error, first
        # Stopped cleanly, so the whole store is in the file (no WAL); then the disk fails.
        assert await asyncio.to_thread(site.current("instance").terminate) == 0
        store = site.data_dir("instance") / DB_FILENAME
        cut_to_half(store)
        assert "the boards store is damaged" in await asyncio.to_thread(refused, site, "instance")
        move_aside(store)
        await site.start("instance")
        await site.wait_linked(["instance"])
        again = await site.submit("add_user before.torn.portal", timeout=20)
        after = await site.submit("add_user after.torn.portal", timeout=20)
        assert again.result == first.result  # the same user, not a second one
        assert after.is_finished and not after.is_error, after
        statuses = await site.stop()
        assert all(status == 0 for status in statuses.values()), statuses
    except BaseException:
        site.kill_leftovers()
        print(site.logs())
        raise
    finally:
        site.kill_leftovers()


def test_one_damaged_job_in_an_intact_store_is_skipped_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    jobs = fill_boards(tmp_path)
    victim = jobs[-1]  # not in the outbox: its only copy is its row
    store = tmp_path / DB_FILENAME
    text = store.read_bytes()
    needle = f'"id":"{victim.id}"'.encode()
    assert text.count(needle) == 1
    # A bad sector inside the row's text: SQLite's checks cannot see it, the decoder does.
    store.write_bytes(text.replace(needle, needle.replace(b'"id"', b'"i#"')))

    with caplog.at_level(logging.WARNING), closing(BoardStore(tmp_path)) as reopened:
        loaded = reopened.load_all()[BOARD]

    assert [held.id for held in loaded] == [held.id for held in jobs if held is not victim]
    assert f"skipping stored job {victim.id} on board {BOARD}" in caplog.text


# --- the write-ahead log, -shm and -journal files -----------------------------------------

_WRITER = """
import os, signal, sys, uuid
from broadgauge.jobs.job import Job
from broadgauge.runtime.store import BoardStore
data_dir, count, now, path, board = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), \
    sys.argv[4], sys.argv[5]
store = BoardStore(data_dir)
for number in range(count):
    job = Job.parse(f"{path} add_user u{number:03d}.torn.portal", now=now,
                    job_id=uuid.UUID(int=number + 1)).pending(now=now)
    store.save(board, job)  # one transaction each
os.kill(os.getpid(), signal.SIGKILL)  # no close, no checkpoint: the WAL stays behind
"""


def killed_writer(data_dir: Path, count: int) -> list[Job]:
    """A process saves ``count`` jobs, one transaction each, and is SIGKILLed: its WAL stays."""
    now = 1_717_400_000.0
    done = subprocess.run(
        [sys.executable, "-c", _WRITER, str(data_dir), str(count), str(now), PATH, BOARD],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == -signal.SIGKILL, done.stderr
    wal = data_dir / f"{DB_FILENAME}-wal"
    assert wal.stat().st_size > 100 * PAGE, "the writer left too small a WAL to tear"
    return [job(i, now) for i in range(count)]


def reopen(data_dir: Path, caplog: pytest.LogCaptureFixture) -> list[Job]:
    """Open the store as the agent does at start; the jobs it holds (and it is intact)."""
    caplog.clear()
    with caplog.at_level(logging.INFO, "broadgauge.storage"), closing(BoardStore(data_dir)) as s:
        assert s.integrity_ok()
        return s.load_all().get(BOARD, [])


def tear_wal_in_half(wal: Path) -> None:
    os.truncate(wal, wal.stat().st_size // 2)


def random_bytes_in_the_wal(wal: Path) -> None:
    with wal.open("r+b") as handle:
        handle.seek(wal.stat().st_size // 2)
        handle.write(random.Random(14).randbytes(200))


@pytest.mark.parametrize(
    "tear", [tear_wal_in_half, random_bytes_in_the_wal], ids=lambda f: f.__name__
)
def test_a_torn_wal_keeps_the_committed_prefix_and_says_what_it_dropped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, tear: Callable[[Path], None]
) -> None:
    written = killed_writer(tmp_path, 60)
    wal = tmp_path / f"{DB_FILENAME}-wal"
    tear(wal)

    kept = reopen(tmp_path, caplog)

    # A power loss may drop the last commits, never one from the middle.
    assert 0 < len(kept) < len(written)
    assert kept == written[: len(kept)]
    assert f"had a write-ahead log {wal} whose end was torn or damaged" in caplog.text
    assert "SQLite dropped " in caplog.text
    # The next start finds nothing more to drop.
    assert reopen(tmp_path, caplog) == kept
    assert "torn or damaged" not in caplog.text


def test_a_wal_with_a_torn_header_is_ignored_whole_and_said_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    killed_writer(tmp_path, 60)
    wal = tmp_path / f"{DB_FILENAME}-wal"
    with wal.open("r+b") as handle:
        handle.seek(8)
        handle.write(random.Random(14).randbytes(24))

    kept = reopen(tmp_path, caplog)

    # Nothing was checkpointed yet, so every job was only in the log.
    assert kept == []
    assert f"had a write-ahead log {wal}" in caplog.text
    assert "whose header is torn or damaged; SQLite ignored all of it" in caplog.text


def test_an_intact_wal_left_by_a_sigkill_is_replayed_whole(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    written = killed_writer(tmp_path, 60)
    assert reopen(tmp_path, caplog) == written
    assert "SQLite replayed its" in caplog.text
    assert "torn" not in caplog.text


@pytest.mark.parametrize("leftover", ["-shm", "-journal"])
def test_a_stray_shm_or_journal_of_random_bytes_changes_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, leftover: str
) -> None:
    written = killed_writer(tmp_path, 60)
    Path(f"{tmp_path / DB_FILENAME}{leftover}").write_bytes(random.Random(14).randbytes(3 * PAGE))
    assert reopen(tmp_path, caplog) == written


def test_the_instance_starts_on_a_torn_wal_and_logs_it(site: Site) -> None:
    alone(site, "instance")
    data = site.data_dir("instance")
    written = killed_writer(data, 60)
    tear_wal_in_half(data / f"{DB_FILENAME}-wal")

    output = started(site, "instance")

    assert "whose end was torn or damaged" in output
    with closing(BoardStore(data)) as store:
        kept = store.load_all()[BOARD]
    assert kept == written[: len(kept)]


# --- the audit log -------------------------------------------------------------------------


def write_audit(path: Path, entries: int = 10) -> list[bytes]:
    """An intact audit log of ``entries`` entries; its lines."""
    log = AuditLog(path, "instance")
    for number in range(entries):
        log.append(time=float(number), job=f"j{number}", action="finished", outcome="ok")
    log.close()
    return path.read_bytes().splitlines(keepends=True)


def half_an_entry(path: Path) -> bytes:
    """The first half of the entry that would come next (a write cut short)."""
    entry = json.loads(path.read_bytes().splitlines()[-1])
    following = {**entry, "seq": entry["seq"] + 1, "prev": entry["hash"], "job": "torn"}
    line = json.dumps(following, separators=(",", ":")).encode()
    return line[: len(line) // 2]


@pytest.mark.parametrize("tail", ["half a line", "NUL bytes"])
def test_a_torn_last_audit_line_is_cut_off_kept_and_recorded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, tail: str
) -> None:
    path = tmp_path / "audit.jsonl"
    lines = write_audit(path)
    torn = half_an_entry(path) if tail == "half a line" else b"\0" * 300
    with path.open("ab") as handle:
        handle.write(torn)
    assert not verify(path).ok  # as found after the power loss

    with caplog.at_level(logging.WARNING, "broadgauge.storage"):
        log = AuditLog(path, "instance")
    entry = log.append(time=99.0, job="next", action="finished", outcome="ok")
    log.close()

    assert f"the audit log ended in a torn line of {len(torn)} bytes" in caplog.text
    assert (tmp_path / "audit.jsonl.torn").read_bytes() == torn + b"\n"
    now = path.read_bytes().splitlines(keepends=True)
    assert now[: len(lines)] == lines  # every intact entry kept, byte for byte
    recovered = json.loads(now[len(lines)])
    assert recovered["action"] == "recovered"
    assert recovered["outcome"] == f"cut off a torn last line of {len(torn)} bytes, kept in " \
        "audit.jsonl.torn"  # fmt: skip
    assert entry["seq"] == len(lines) + 2
    result = verify(path)
    assert result.ok and result.entries == len(lines) + 2


def test_the_instance_starts_on_a_torn_audit_log(site: Site) -> None:
    alone(site, "instance")
    path = site.data_dir("instance") / "audit.jsonl"
    write_audit(path)
    torn = half_an_entry(path)
    with path.open("ab") as handle:
        handle.write(torn)

    output = started(site, "instance")

    assert f"{path}: the audit log ended in a torn line of {len(torn)} bytes" in output
    assert verify(path).ok


def alter_an_entry(lines: list[bytes]) -> None:
    entry = json.loads(lines[3])
    entry["outcome"] = "forged"
    lines[3] = json.dumps(entry, separators=(",", ":")).encode() + b"\n"


def remove_an_entry(lines: list[bytes]) -> None:
    del lines[3]


def cut_an_entry_short(lines: list[bytes]) -> None:
    lines[3] = lines[3][: len(lines[3]) // 2] + b"\n"


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (alter_an_entry, "content does not match its hash (altered)"),
        (remove_an_entry, "does not follow the previous entry"),
        (cut_an_entry_short, "not valid JSON"),
    ],
    ids=["altered", "removed", "cut-short"],
)
def test_an_audit_log_broken_in_the_middle_stops_the_agent(
    site: Site, damage: Callable[[list[bytes]], None], reason: str
) -> None:
    alone(site, "instance")
    path = site.data_dir("instance") / "audit.jsonl"
    lines = write_audit(path)
    damage(lines)
    path.write_bytes(b"".join(lines))
    before = path.read_bytes()

    with pytest.raises(DamagedFileError) as in_process:
        AuditLog(path, "instance")
    stderr = refused(site, "instance")

    expected = f"{path}: the audit log is damaged (its hash chain breaks at line 4: {reason})"
    assert expected in str(in_process.value)
    assert f"broadgauge: {expected}, so the agent will not start on it." in stderr
    assert "To recover: keep the file as evidence" in stderr
    assert "mv audit.jsonl audit.jsonl.broken" in stderr
    assert path.read_bytes() == before
    assert not (path.parent / "audit.jsonl.torn").exists()

    # The way out the message gives: a new chain, from the start.
    path.rename(path.with_name("audit.jsonl.broken"))
    started(site, "instance")
    fresh = path.read_bytes().splitlines()
    assert verify(path).ok
    assert not fresh or json.loads(fresh[0])["prev"] == GENESIS


# --- the back ends' files: the account directory and the scheduler ledger -------------------


async def fill_directory(path: Path) -> None:
    from broadgauge.agents.accounts.local import LocalDirectory

    directory = LocalDirectory(path)
    for number in range(60):
        await directory.add_user(UserIdentifier.parse(f"u{number:02d}.torn.portal"))
    await directory.close()


async def fill_ledger(path: Path) -> None:
    from broadgauge.agents.scheduler.ledger import LedgerScheduler

    ledger = LedgerScheduler(path)
    project = ProjectMapping.parse("torn.portal:portal.torn")
    await ledger.add_project(project)
    for number in range(60):
        name = f"u{number:02d}.torn.portal"
        await ledger.add_user(UserMapping.parse(f"{name}:u{number:02d}.torn:portal.torn"))
    await ledger.close()


@pytest.mark.parametrize("damage", DAMAGE, ids=lambda f: f.__name__)
async def test_a_damaged_account_directory_is_refused_untouched(
    tmp_path: Path, damage: Callable[[Path], None]
) -> None:
    from broadgauge.agents.accounts.local import LocalDirectory

    path = tmp_path / "directory.sqlite3"
    await fill_directory(path)
    damage(path)
    before = path.read_bytes()

    with pytest.raises(DamagedFileError) as refusal:
        LocalDirectory(path)

    assert str(refusal.value).startswith(f"{path}: the local account directory is damaged (")
    assert path.read_bytes() == before


async def test_the_account_agent_does_not_start_on_a_damaged_directory(site: Site) -> None:
    alone(site, "account")
    await fill_directory(site.directory)
    random_bytes_over_a_middle_page(site.directory)
    before = site.directory.read_bytes()

    stderr = refused(site, "account")

    assert f"broadgauge: {site.directory}: the local account directory is damaged" in stderr
    assert "restore the directory from a backup" in stderr
    assert "Do not start with an empty directory: it would hand out uids already in use" in stderr
    assert site.directory.read_bytes() == before


async def test_a_damaged_scheduler_ledger_stops_the_scheduler_agent(site: Site) -> None:
    alone(site, "scheduler")
    await fill_ledger(site.ledger)
    cut_to_half(site.ledger)

    stderr = refused(site, "scheduler")

    assert f"broadgauge: {site.ledger}: the scheduler ledger is damaged" in stderr
    assert "Starting with an empty file forgets everything the back end recorded" in stderr


async def test_a_damaged_quota_ledger_is_refused_untouched(tmp_path: Path) -> None:
    from broadgauge.agents.filesystem.ledger import LedgerQuotaEngine
    from broadgauge.grammar import QuotaLimit

    path = tmp_path / "quotas.sqlite3"
    engine = LedgerQuotaEngine(path)
    for number in range(200):
        await engine.set_quota(f"/home/u{number}", f"u{number}", False, QuotaLimit.parse("1 GB"))
    engine.close()
    cut_at_a_page_boundary(path)
    before = path.read_bytes()

    with pytest.raises(DamagedFileError) as refusal:
        LedgerQuotaEngine(path)

    assert str(refusal.value).startswith(f"{path}: the quota ledger is damaged (")
    assert "restore it from a backup" in str(refusal.value)
    assert path.read_bytes() == before
