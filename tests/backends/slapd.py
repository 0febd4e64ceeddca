"""A real OpenLDAP server (slapd) for tests, started the way real-backends.md §1 describes.

Use it as a pytest plugin (``pytest_plugins = ["tests.backends.slapd"]``) and request the
session-scoped ``slapd`` fixture.  It writes a ``slapd.conf`` (schemas core, cosine,
inetorgperson and nis; ``back_mdb`` loaded as a module, because Debian builds backends as
modules) into a temporary directory, starts ``slapd -f … -h ldap://127.0.0.1:<port>/``
on a free loopback port, loads ``dc=example,dc=org`` with ``ou=people`` and
``ou=groups``, yields a :class:`Slapd`, and at teardown stops that slapd by its PID
(slapd runs in the foreground with ``-d 0``, as a child of the test process).

When slapd is not installed the fixture fails on CI (``CI=true``: the packages are part
of the CI image, so their absence is a real error) and skips elsewhere, with the reason.
Install with ``apt-get install -y --no-install-recommends slapd ldap-utils``.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SUFFIX = "dc=example,dc=org"
ADMIN_DN = f"cn=admin,{SUFFIX}"
SCHEMA_DIR = Path("/etc/ldap/schema")
MODULE_DIR = Path("/usr/lib/ldap")
SCHEMAS = ("core", "cosine", "inetorgperson", "nis")


@dataclass(frozen=True)
class Slapd:
    """How to reach the running server."""

    url: str
    suffix: str
    admin_dn: str
    password: str
    pid: int
    directory: Path
    process: subprocess.Popen[bytes] = field(repr=False, compare=False)
    #: An ``ldapi://`` URL (a socket file, reachable from every network namespace); set
    #: only when slapd was started behind a ``wrapper`` such as ``ip netns exec NS``.
    socket_url: str = ""


def _tool(name: str) -> str | None:
    # slapd and slappasswd live in /usr/sbin, which is not on every user's PATH.
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")


def _missing() -> str | None:
    for tool in ("slapd", "slappasswd", "slaptest"):
        if _tool(tool) is None:
            return f"{tool} is not installed (apt-get install slapd ldap-utils)"
    for schema in SCHEMAS:
        if not (SCHEMA_DIR / f"{schema}.schema").exists():
            return f"{SCHEMA_DIR / schema}.schema is missing"
    try:
        import ldap3  # type: ignore[import-untyped, unused-ignore]  # noqa: F401
    except ImportError:
        return "the ldap3 Python package is not installed"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _config(directory: Path, password_hash: str) -> str:
    includes = "\n".join(f"include {SCHEMA_DIR / s}.schema" for s in SCHEMAS)
    return f"""{includes}
pidfile  {directory}/run/slapd.pid
argsfile {directory}/run/slapd.args
modulepath {MODULE_DIR}
moduleload back_mdb
database mdb
maxsize 104857600
suffix "{SUFFIX}"
rootdn "{ADMIN_DN}"
rootpw {password_hash}
directory {directory}/data
index objectClass eq
index uid,cn,memberUid eq
index uidNumber,gidNumber eq
"""


def _wait_ready(url: str, process: subprocess.Popen[bytes], deadline: float) -> bool:
    """True once slapd answers on ``url``; False if it exited (e.g. the port was taken)."""
    from ldap3 import Connection, Server  # type: ignore[import-untyped, unused-ignore]

    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            Connection(Server(url, connect_timeout=0.5), auto_bind=True).unbind()
            return True
        except Exception:  # not listening yet
            time.sleep(0.05)
    return False


def start_slapd(directory: Path, wrapper: Sequence[str] = ()) -> Slapd:
    """Start slapd under ``directory`` and load the base entries.

    With a ``wrapper`` (``ip netns exec NS``), slapd runs behind it, so its
    ``ldap://127.0.0.1`` URL is that namespace's loopback; it then also listens on a socket
    file (:attr:`Slapd.socket_url`), which this process uses to check it and load it.
    """
    from ldap3 import Connection, Server  # type: ignore[import-untyped, unused-ignore]

    for sub in ("data", "run"):
        (directory / sub).mkdir(parents=True, exist_ok=True)
    password = secrets.token_hex(12)
    hashed = subprocess.run(
        [str(_tool("slappasswd")), "-s", password], check=True, capture_output=True, text=True
    ).stdout.strip()
    conf = directory / "slapd.conf"
    conf.write_text(_config(directory, hashed))
    subprocess.run([str(_tool("slaptest")), "-f", str(conf), "-u"], check=True, capture_output=True)
    log = directory / "slapd.log"
    socket_url = ""
    if wrapper:
        socket_url = "ldapi://" + urllib.parse.quote(str(directory / "run" / "ldapi"), safe="")
    for _attempt in range(3):  # the port may be taken between probing and binding
        # ldap3 rejects a trailing slash after the port; slapd's -h accepts either form.
        url = f"ldap://127.0.0.1:{_free_port()}"
        # "-d 0" keeps slapd in the foreground as our child: we know its PID without
        # trusting a pid file, and waiting for it at teardown leaves no zombie behind.
        with log.open("ab") as errors:
            listen = f"{url}/ {socket_url}".strip()
            process = subprocess.Popen(
                [*wrapper, str(_tool("slapd")), "-f", str(conf), "-h", listen, "-d", "0"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=errors,
            )
        if _wait_ready(socket_url or url, process, time.monotonic() + 10):
            break
        _stop(process)
    else:
        raise RuntimeError(f"slapd would not start; see {log}")
    info = Slapd(url, SUFFIX, ADMIN_DN, password, process.pid, directory, process, socket_url)
    conn = Connection(Server(socket_url or url), ADMIN_DN, password, auto_bind=True)
    conn.add(SUFFIX, ["dcObject", "organization"], {"o": "Example", "dc": "example"})
    for ou in ("people", "groups"):
        conn.add(f"ou={ou},{SUFFIX}", ["organizationalUnit"], {"ou": ou})
    conn.unbind()
    return info


def _stop(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    if process.poll() is not None:
        return
    os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()


def stop_slapd(info: Slapd, timeout: float = 10.0) -> None:
    """Stop the slapd we started, by its PID (SIGTERM, then SIGKILL after ``timeout``)."""
    _stop(info.process, timeout)


@pytest.fixture(scope="session")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    """A running slapd with ``dc=example,dc=org``, ``ou=people`` and ``ou=groups``."""
    reason = _missing()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"slapd is required on CI: {reason}")
        pytest.skip(reason)
    info = start_slapd(tmp_path_factory.mktemp("slapd"))
    try:
        yield info
    finally:
        stop_slapd(info)
