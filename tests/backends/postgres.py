"""A real PostgreSQL server for tests: a private cluster started (and stopped) by the suite.

Use it as a pytest plugin or import the session-scoped ``postgres`` fixture into a
conftest.  It runs ``initdb`` into a fresh temporary directory, writes a ``pg_hba.conf``
that trusts only the loopback (and the Unix socket, which lives in that private
directory), starts the server with ``pg_ctl`` listening on ``127.0.0.1`` at a free port
and on a socket in the directory, and yields a :class:`Postgres`.  At teardown ``pg_ctl
stop`` stops it; if that fails, the postmaster whose PID we started is killed.

PostgreSQL refuses to run as root, so when the tests run as root ``initdb`` and
``pg_ctl`` run as the ``postgres`` system user (``runuser``), in a directory it owns under
``/tmp`` (the tests' own temporary directories are not readable by it).

When the server programs (``/usr/lib/postgresql/<version>/bin``) or psycopg are missing
the fixture skips with the reason, and fails on CI (``CI=true``), where they are part of
the image.  Install with ``apt-get install -y --no-install-recommends postgresql`` and
``pip install 'psycopg[binary]'``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.backends.oidc import skip_or_fail
from tests.cli.processes import free_port

USER = "broadgauge"
PROGRAMS = ("initdb", "pg_ctl", "postgres")
SYSTEM_USER = "postgres"


@dataclass(frozen=True)
class Postgres:
    """How to reach the running server (as the superuser ``user``, trusted on loopback)."""

    host: str
    port: int
    user: str
    database: str
    socket_dir: Path
    pid: int

    @property
    def url(self) -> str:
        """``postgresql://user@127.0.0.1:port/database``."""
        return self.url_for(self.database)

    def url_for(self, database: str) -> str:
        """The URL of another database on this server."""
        return f"postgresql://{self.user}@{self.host}:{self.port}/{database}"

    def create_database(self) -> str:
        """Create an empty database with a random name; its URL."""
        import psycopg

        name = f"t_{secrets.token_hex(6)}"
        # CREATE DATABASE cannot run inside a transaction: autocommit.
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url_for(name)


def _bin_dir() -> Path | None:
    """The newest installed server's bin directory that has every program we run."""
    found = []
    for candidate in Path("/usr/lib/postgresql").glob("*/bin"):
        if all((candidate / program).exists() for program in PROGRAMS):
            version = candidate.parent.name
            found.append((int(version) if version.isdigit() else 0, candidate))
    return max(found)[1] if found else None


def missing() -> str | None:
    """Why the server cannot run here, or None."""
    if _bin_dir() is None:
        return "PostgreSQL server programs not found (apt-get install postgresql)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SYSTEM_USER)
        except KeyError:
            return f"running as root and there is no {SYSTEM_USER!r} user to run PostgreSQL as"
        if shutil.which("runuser") is None:
            return "running as root and runuser (util-linux) is missing"
    if importlib.util.find_spec("psycopg") is None:
        return "psycopg is not installed (pip install 'psycopg[binary]')"
    return None


def _as_server_user(command: list[str]) -> list[str]:
    # PostgreSQL will not run as root; as anyone else, run it as ourselves.
    if os.geteuid() == 0:
        return ["runuser", "-u", SYSTEM_USER, "--", *command]
    return command


def _run(command: list[str], cwd: Path) -> None:
    result = subprocess.run(
        _as_server_user(command),
        cwd=cwd,  # the server user may not be able to enter ours
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"{command[0]} failed ({result.returncode}): {result.stderr.strip()}")


def _postmaster_pid(data: Path) -> int | None:
    try:
        return int((data / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


def start_postgres(directory: Path) -> Postgres:
    """Make a cluster under ``directory`` (which the server user owns) and start it."""
    bin_dir = _bin_dir()
    assert bin_dir is not None
    data = directory / "data"
    _run(
        [
            str(bin_dir / "initdb"),
            f"--pgdata={data}",
            f"--username={USER}",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",  # a throwaway cluster: no need to wait for the disk
        ],
        directory,
    )
    # Only the private socket and the loopback are trusted; nothing else may connect.
    (data / "pg_hba.conf").write_text(
        "local all all trust\nhost all all 127.0.0.1/32 trust\n", encoding="utf-8"
    )
    log = directory / "server.log"
    for _attempt in range(3):  # the port may be taken between probing and binding
        port = free_port()
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={port}"
            f" -c unix_socket_directories={directory}"
            # Throwaway data: durability is PostgreSQL's, not what these tests check.
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        try:
            _run(
                [
                    str(bin_dir / "pg_ctl"),
                    "-D",
                    str(data),
                    "-l",
                    str(log),
                    "-o",
                    options,
                    "-w",
                    "-t",
                    "60",
                    "start",
                ],
                directory,
            )
        except RuntimeError:
            _pg_ctl_stop(directory)  # in case it did start after all; no-op otherwise
            continue
        pid = _postmaster_pid(data)
        assert pid is not None, "pg_ctl started the server but left no postmaster.pid"
        return Postgres("127.0.0.1", port, USER, "postgres", directory, pid)
    raise RuntimeError(f"PostgreSQL would not start; see {log}")


def _pg_ctl_stop(directory: Path) -> bool:
    bin_dir = _bin_dir()
    if bin_dir is None:
        return False
    data = directory / "data"
    try:
        _run([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], directory)
    except (RuntimeError, subprocess.TimeoutExpired):
        return False
    return True


def _is_our_server(pid: int, data: Path) -> bool:
    """Whether ``pid`` is still the postmaster of ``data`` (not a reused PID)."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return str(data).encode() in command


def stop_postgres(directory: Path, pid: int) -> None:
    """Stop the server of ``directory`` with pg_ctl; failing that, kill ``pid`` (ours)."""
    if _pg_ctl_stop(directory) or not _is_our_server(pid, directory / "data"):
        return
    # SIGQUIT is PostgreSQL's immediate shutdown: the postmaster takes its children too.
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGQUIT)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A running PostgreSQL, shared by the session: superuser ``broadgauge``, trusted."""
    reason = missing()
    if reason is not None:
        skip_or_fail(reason)
    # Under /tmp (world-searchable) so that the server user can reach the directory.
    directory = Path(tempfile.mkdtemp(prefix="bg-pg-", dir="/tmp" if os.geteuid() == 0 else None))
    if os.geteuid() == 0:
        account = pwd.getpwnam(SYSTEM_USER)
        os.chown(directory, account.pw_uid, account.pw_gid)
    try:
        server = start_postgres(directory)
        try:
            yield server
        finally:
            stop_postgres(directory, server.pid)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
