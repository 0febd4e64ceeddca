"""A real Slurm accounting stack for integration tests (real-backends.md §2).

munged + a private MariaDB + slurmdbd + slurmctld + slurmd, all on loopback inside a private
network namespace ``bgtest<pid>`` whose only interface is ``lo`` (with ``127.0.0.2/8`` added,
because glibc's ``AI_ADDRCONFIG`` ignores ``127.0.0.1`` and slurmdbd then cannot start).
slurmdbd always binds ``0.0.0.0``; the namespace keeps it off the host's network, and the
ports (3307, 6817-6819) cannot collide with anything outside it.

Everything runs through ``nsenter --net=/run/netns/<ns>``, which switches only the network
namespace (``ip netns exec`` remounts ``/sys`` and slurmd then finds no cgroup filesystem).
The daemons run in the foreground (``-D``) as our children, so we know every PID we started
and stop exactly those.  munged is shared through its Unix socket: it is started only when
none answers, and stopped at the end only if we started it.

**slurmrestd** (when installed, with Debian's ``slurm-wlm-jwt-plugin``): slurm.conf and
slurmdbd.conf get ``AuthAltTypes=auth/jwt`` and ``AuthAltParameters=jwt_key=<etc>/jwt_hs256.key``
(32 random bytes, mode 0600, owned by SlurmUser, here root).  Without the plugin slurmdbd would
refuse that setting, so without it nothing changes.  slurmrestd 22.05 refuses to run as root
("slurmrestd should not be run as the root user"), so it is started as root inside the
namespace and told to drop to ``nobody:nogroup`` with ``-u``/``-g``; it binds its Unix socket
after dropping them, so the socket lives in a directory owned by nobody
(``<root>/rest/slurmrestd.socket``).  A Unix socket is reached from any network namespace,
so the tests talk to it directly.  It needs ``SLURM_JWT=daemon`` in its environment: without
it, slurmrestd hands the caller's token to auth/munge, which rejects it ("Rejecting thread
config token for user ...").  The full command line is::

    SLURM_JWT=daemon SLURM_CONF=<etc>/slurm.conf nsenter --net=/run/netns/<ns> \
        slurmrestd -u nobody -g nogroup -a rest_auth/jwt \
        -s openapi/v0.0.38,openapi/dbv0.0.38 unix:<root>/rest/slurmrestd.socket

22.05 offers ``openapi/v0.0.36``..``v0.0.38`` and ``openapi/dbv0.0.36``..``dbv0.0.38``.  The REST
user is ``slurm`` (Debian's packages create it), made a Slurm ``Administrator`` with
``sacctmgr add user slurm account=root adminlevel=Administrator``: slurmdbd lets only
administrators (and SlurmUser) change accounts, and a token for root works too but no site
should hand one out.  Tokens come from ``scontrol token username=slurm lifespan=N``
(:attr:`SlurmStack.token_command`).  The stack's :attr:`SlurmStack.rest_missing` says why
slurmrestd is not there.

Use the session fixture :func:`slurm_stack`, or run ``python -m tests.backends.slurm`` to keep
a stack up for manual exploration (it prints the environment to use, Ctrl-C stops it).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

CLUSTER = "bgcluster"
NODE_MEM_MB = 1000

#: The Slurm user the tests call slurmrestd as (an Administrator in slurmdbd).
REST_USER = "slurm"
#: The OpenAPI plugins slurmrestd loads.
REST_PLUGINS = "openapi/v0.0.38,openapi/dbv0.0.38"

_BINARIES = (
    "munged",
    "munge",
    "unmunge",
    "mariadbd",
    "mariadb-install-db",
    "mariadb-admin",
    "mariadb",
    "slurmdbd",
    "slurmctld",
    "slurmd",
    "sacctmgr",
    "sacct",
    "sbatch",
    "scancel",
    "scontrol",
    "sinfo",
    "ip",
    "nsenter",
)


# Daemons live in sbin, which a non-login PATH may lack.
_SEARCH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])


def _path(name: str) -> str:
    """Where ``name`` is installed (the bare name if nowhere: the spawn then fails clearly)."""
    return shutil.which(name, path=_SEARCH) or name


class StackError(RuntimeError):
    """The stack could not be started (the message carries the relevant log tail)."""


@dataclass
class SlurmStack:
    """A running stack: how to reach it, and what to stop afterwards."""

    root: Path
    namespace: str
    cluster: str = CLUSTER
    cpus: int = 1
    mem_mb: int = NODE_MEM_MB
    setup_seconds: float = 0.0
    _processes: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    _munged: subprocess.Popen[bytes] | None = None
    _netns_created: bool = False
    rest_missing: list[str] = field(default_factory=list)

    @property
    def conf(self) -> Path:
        """The slurm.conf every daemon and client reads."""
        return self.root / "etc" / "slurm.conf"

    @property
    def rest_socket(self) -> Path:
        """slurmrestd's Unix socket (it exists only when :attr:`rest_missing` is empty)."""
        return self.root / "rest" / "slurmrestd.socket"

    @property
    def rest_server(self) -> str:
        """The ``slurm-server`` value that reaches slurmrestd."""
        return f"unix:{self.rest_socket}"

    @property
    def token_command(self) -> str:
        """The ``token-command`` for this stack (``scontrol token`` in the namespace)."""
        return shlex.join(
            ["env", f"SLURM_CONF={self.conf}", *self.command_prefix, _path("scontrol"), "token"]
        )

    @property
    def jwt_key(self) -> Path:
        """The HS256 key of auth/jwt (``AuthAltParameters=jwt_key=...``)."""
        return self.root / "etc" / "jwt_hs256.key"

    @property
    def env(self) -> dict[str, str]:
        """Extra environment for Slurm clients (slurmdbd.conf sits next to slurm.conf)."""
        return {"SLURM_CONF": str(self.conf)}

    @property
    def command_prefix(self) -> list[str]:
        """Prefix that runs a command inside the stack's network namespace."""
        return ["nsenter", f"--net=/run/netns/{self.namespace}"]

    def run(
        self, *args: str, check: bool = True, timeout: float = 30.0
    ) -> subprocess.CompletedProcess[str]:
        """Run a client command (``sacctmgr``, ``sbatch`` ...) against the stack."""
        result = subprocess.run(
            [*self.command_prefix, *args],
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.root,
        )
        if check and result.returncode != 0:
            raise StackError(
                f"{' '.join(args)} failed (rc={result.returncode}): "
                f"{result.stdout.strip()} {result.stderr.strip()}"
            )
        return result

    def submit(self, account: str, script: str, *options: str) -> str:
        """``sbatch --wrap script`` charged to ``account``; the job's id."""
        out = self.run("sbatch", "--parsable", "-A", account, "-o", "/dev/null", *options,
                       "--wrap", script).stdout  # fmt: skip
        return out.strip().split(";")[0]

    # ---- start -------------------------------------------------------------------------

    def start(self) -> None:
        """Bring every daemon up and wait until a node is idle (about 3 s)."""
        began = time.monotonic()
        for sub in ("etc", "run", "log", "mysql", "mysqlrun", "state", "spool"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        _check(["ip", "netns", "add", self.namespace])
        self._netns_created = True
        _check(["ip", "-n", self.namespace, "link", "set", "lo", "up"])
        _check(["ip", "-n", self.namespace, "addr", "add", "127.0.0.2/8", "dev", "lo"])
        self._start_munged()
        self._start_mariadb()
        self._write_configs()
        self._spawn("slurmdbd", [_path("slurmdbd"), "-D"])
        self._wait("slurmdbd", lambda: self._ok("sacctmgr", "-n", "-P", "show", "cluster"))
        self._spawn("slurmctld", [_path("slurmctld"), "-D"])
        self._wait("slurmctld", lambda: "UP" in self._out("scontrol", "ping"))
        self._spawn("slurmd", [_path("slurmd"), "-D", "-N", "localhost"])
        self._wait("slurmd", lambda: self._out("sinfo", "-h", "-o", "%T").startswith("idle"))
        if not self.rest_missing:
            self._start_slurmrestd()
        self.setup_seconds = time.monotonic() - began

    def _start_slurmrestd(self) -> None:
        self.run(
            "sacctmgr", "-i", "add", "user", REST_USER, "account=root",
            "adminlevel=Administrator",
        )  # fmt: skip
        rest = self.rest_socket.parent
        rest.mkdir()
        shutil.chown(rest, "nobody", "nogroup")
        self._spawn(
            "slurmrestd",
            [
                _path("slurmrestd"), "-u", "nobody", "-g", "nogroup", "-a", "rest_auth/jwt",
                "-s", REST_PLUGINS, f"unix:{self.rest_socket}",
            ],
            extra_env={"SLURM_JWT": "daemon"},
        )  # fmt: skip
        self._wait("slurmrestd", self.rest_socket.exists)

    def _start_munged(self) -> None:
        if _munge_works():
            return
        key = Path("/etc/munge/munge.key")
        if not key.exists() or key.stat().st_size == 0:
            _check(["mungekey", "--create", f"--keyfile={key}"])
        shutil.chown(key, "munge", "munge")
        key.chmod(0o400)
        _check(["install", "-d", "-o", "munge", "-g", "munge", "-m", "0755", "/run/munge"])
        log = (self.root / "log" / "munged.log").open("wb")
        proc = subprocess.Popen(
            [_path("munged"), "--foreground", "--pid-file=/run/munge/munged.pid"],
            user="munge",
            group="munge",
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._munged = proc
        self._wait("munged", _munge_works, timeout=5.0)

    def _start_mariadb(self) -> None:
        data, run = self.root / "mysql", self.root / "mysqlrun"
        # mariadbd runs as mysql: its socket, pid file and log need a directory it owns.
        for path in (data, run):
            shutil.chown(path, "mysql", "mysql")
        with (self.root / "log" / "install-db.log").open("wb") as log:
            subprocess.run(
                [
                    "mariadb-install-db",
                    "--user=mysql",
                    f"--datadir={data}",
                    "--auth-root-authentication-method=socket",
                    "--skip-test-db",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                check=True,
            )
        socket = run / "mysqld.sock"
        self._spawn(
            "mariadbd",
            [
                _path("mariadbd"),
                "--no-defaults",
                "--user=mysql",
                f"--datadir={data}",
                f"--socket={socket}",
                f"--pid-file={run / 'mariadbd.pid'}",
                "--bind-address=127.0.0.1",
                "--port=3307",
                f"--log-error={run / 'mariadb.err'}",
                "--innodb-buffer-pool-size=128M",
                "--innodb-lock-wait-timeout=900",
                "--skip-log-bin",
            ],
        )
        ping = ["mariadb-admin", f"--socket={socket}", "ping"]
        self._wait("mariadbd", lambda: _quiet(ping) == 0, timeout=20.0)
        sql = """
            CREATE DATABASE IF NOT EXISTS slurm_acct_db;
            CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurmdbpass';
            CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurmdbpass';
            GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
            GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
        """
        subprocess.run(
            ["mariadb", f"--socket={socket}", "-uroot"],
            input=sql.encode(),
            check=True,
            capture_output=True,
        )

    def _write_configs(self) -> None:
        d = self.root
        etc = d / "etc"
        jwt = ""
        if not self.rest_missing:
            # The HS256 key slurmctld and slurmdbd sign and check JWTs with (auth/jwt): 32
            # random bytes, readable only by SlurmUser (root here).
            self.jwt_key.write_bytes(os.urandom(32))
            self.jwt_key.chmod(0o600)
            jwt = f"AuthAltTypes=auth/jwt\nAuthAltParameters=jwt_key={self.jwt_key}\n"
        (etc / "slurm.conf").write_text(
            f"""ClusterName={self.cluster}
SlurmctldHost=localhost
SlurmUser=root
AuthType=auth/munge
{jwt}AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
AccountingStorageEnforce=associations,limits,safe
AccountingStorageTRES=gres/gpu
GresTypes=gpu
# GrpTRESMins is only enforced with multifactor priority
PriorityType=priority/multifactor
JobAcctGatherType=jobacct_gather/none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/run/slurmctld.pid
SlurmdPidFile={d}/run/slurmd.pid
SlurmctldLogFile={d}/log/slurmctld.log
SlurmdLogFile={d}/log/slurmd.log
MpiDefault=none
ReturnToService=2
NodeName=localhost CPUs={self.cpus} RealMemory={self.mem_mb} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""
        )
        dbd = etc / "slurmdbd.conf"
        dbd.write_text(
            f"""AuthType=auth/munge
{jwt}DbdHost=localhost
DbdPort=6819
SlurmUser=root
PidFile={d}/run/slurmdbd.pid
LogFile={d}/log/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=3307
StorageUser=slurm
StoragePass=slurmdbpass
StorageLoc=slurm_acct_db
"""
        )
        # slurmdbd refuses a conf holding a password that others can read.
        dbd.chmod(0o600)

    def pid(self, name: str) -> int:
        """The pid of the stack's daemon ``name`` (``slurmdbd``, ``slurmctld`` ...)."""
        for daemon, process in self._processes:
            if daemon == name:
                return process.pid
        raise KeyError(f"no {name} in this stack (it runs {[n for n, _ in self._processes]})")

    def _spawn(self, name: str, argv: list[str], extra_env: dict[str, str] | None = None) -> None:
        log = (self.root / "log" / f"{name}.stdout").open("wb")
        proc = subprocess.Popen(
            [*self.command_prefix, *argv],
            env={**os.environ, **self.env, **(extra_env or {})},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            # Own process group: slurmctld's slurmscriptd child goes down with it.
            start_new_session=True,
        )
        self._processes.append((name, proc))

    def _wait(self, name: str, ready: Callable[[], bool], timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for started, proc in self._processes:
                if proc.poll() is not None:
                    raise StackError(f"{started} exited with {proc.returncode}\n{self._logs()}")
            if ready():
                return
            time.sleep(0.1)
        raise StackError(f"{name} not ready after {timeout} s\n{self._logs()}")

    def _ok(self, *args: str) -> bool:
        try:
            return self.run(*args, check=False, timeout=5.0).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def _out(self, *args: str) -> str:
        try:
            return self.run(*args, check=False, timeout=5.0).stdout.strip()
        except subprocess.TimeoutExpired:
            return ""

    def _logs(self) -> str:
        parts = []
        for path in [*sorted((self.root / "log").glob("*")), self.root / "mysqlrun/mariadb.err"]:
            with contextlib.suppress(OSError):
                tail = path.read_text(errors="replace").splitlines()[-15:]
                parts.append(f"--- {path.name}\n" + "\n".join(tail))
        return "\n".join(parts)

    # ---- stop --------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop every process we started (by PID), delete the namespace and the files."""
        for _, proc in reversed(self._processes):
            _signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 5.0
        for _, proc in reversed(self._processes):
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5.0)
        self._processes.clear()
        if self._munged is not None:
            _signal_group(self._munged.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._munged.wait(timeout=5.0)
            self._munged = None
        if self._netns_created:
            subprocess.run(["ip", "netns", "del", self.namespace], check=False)
            self._netns_created = False
        shutil.rmtree(self.root, ignore_errors=True)


def _check(argv: list[str]) -> None:
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        raise StackError(f"{' '.join(argv)}: {result.stderr.strip()}")


def _quiet(argv: list[str]) -> int:
    return subprocess.run(argv, capture_output=True).returncode


def _munge_works() -> bool:
    """Whether a munged answers on the default socket (encode then decode a credential)."""
    try:
        cred = subprocess.run(["munge", "-n"], capture_output=True, timeout=5)
        if cred.returncode != 0:
            return False
        back = subprocess.run(["unmunge"], input=cred.stdout, capture_output=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return back.returncode == 0


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def missing_rest_requirements() -> list[str]:
    """Why slurmrestd cannot be added to the stack here (empty when it can)."""
    missing = [] if shutil.which("slurmrestd", path=_SEARCH) else ["slurmrestd"]
    plugins = [
        *Path("/usr/lib").glob("*/slurm-wlm/auth_jwt.so"),
        Path("/usr/lib/slurm/auth_jwt.so"),
    ]
    if not any(path.exists() for path in plugins):
        missing.append("the auth/jwt plugin (Debian: slurm-wlm-jwt-plugin)")
    for user in (REST_USER, "nobody"):
        try:
            pwd.getpwnam(user)
        except KeyError:
            missing.append(f"Unix user {user}")
    return missing


def missing_requirements() -> list[str]:
    """Why the stack cannot run here (empty when it can)."""
    missing = [name for name in _BINARIES if shutil.which(name, path=_SEARCH) is None]
    if os.geteuid() != 0:
        missing.append("root (for ip netns, munged and mariadbd)")
    return missing


@contextlib.contextmanager
def running_stack() -> Iterator[SlurmStack]:
    """Start a stack under a fresh directory in /tmp; stop and delete it afterwards."""
    # Not pytest's tmp_path: its parents are 0700 root, and mariadbd (running as mysql)
    # must traverse them to reach its datadir.
    root = Path(tempfile.mkdtemp(prefix=f"bgslurm{os.getpid()}-"))
    root.chmod(0o755)
    stack = SlurmStack(
        root=root,
        namespace=f"bgtest{os.getpid()}",
        cpus=os.cpu_count() or 1,
        rest_missing=missing_rest_requirements(),
    )
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="session")
def slurm_stack() -> Iterator[SlurmStack]:
    """The real stack for this test session (skipped when unavailable, failed in CI)."""
    missing = missing_requirements()
    if missing:
        reason = "Slurm stack unavailable, missing: " + ", ".join(missing)
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    with running_stack() as stack:
        yield stack


@pytest.fixture(scope="session")
def slurm_rest(slurm_stack: SlurmStack) -> SlurmStack:
    """The session stack with slurmrestd (skipped when unavailable, failed in CI)."""
    if slurm_stack.rest_missing:
        reason = "slurmrestd unavailable, missing: " + ", ".join(slurm_stack.rest_missing)
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return slurm_stack


if __name__ == "__main__":
    with running_stack() as running:
        print(f"up in {running.setup_seconds:.1f} s")
        print(f"export SLURM_CONF={running.conf}; N='{' '.join(running.command_prefix)}'")
        if not running.rest_missing:
            print(f"slurmrestd: {running.rest_server}, token: {running.token_command}")
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
