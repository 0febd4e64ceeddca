"""The doctor's probes: each looks at one thing on this machine or the network, read-only.

They return plain data (:class:`Bind`, :class:`HttpAnswer`, ...) that the pure judges in
:mod:`broadgauge.doctor.judge` turn into findings, so what a probe *means* is tested without a
network.  No probe writes a file, sends a key, or holds anything after it returns:

* a port is tested by binding it for an instant (and closing at once);
* an agent's lock is tested with a shared, non-blocking ``flock`` of an existing lock file;
* a peer is asked with a WebSocket upgrade that carries no salts, so no key is ever sent and
  no connection of the running peer is replaced (see ``docs/operators/doctor.md``);
* LDAP gets a bind and an unbind; Slurm gets ``sacctmgr -n list cluster``.
"""

from __future__ import annotations

import base64
import email.utils
import errno
import fcntl
import os
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import ldap3  # type: ignore[import-untyped, unused-ignore]
from ldap3.core.exceptions import LDAPException  # type: ignore[import-untyped, unused-ignore]

#: The most of a response head the probe reads; an agent's answers are a few hundred bytes.
MAX_HEAD = 16384


# --- ports and locks -------------------------------------------------------------------


@dataclass(frozen=True)
class Bind:
    """What binding ``ip:port`` for an instant said: ``free``, ``in-use``, ``not-local``,
    ``denied`` or ``error`` (with the OS's words in ``detail``)."""

    state: str
    detail: str = ""


def try_bind(ip: str, port: int) -> Bind:
    """Bind ``ip:port`` as a listener would (``SO_REUSEADDR``), then close at once."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # asyncio's servers set it too, so a TIME_WAIT left by a stopped agent is not "in use".
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((ip, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return Bind("in-use", exc.strerror or "")
            if exc.errno == errno.EADDRNOTAVAIL:
                return Bind("not-local", exc.strerror or "")
            if exc.errno == errno.EACCES:
                return Bind("denied", exc.strerror or "")
            return Bind("error", str(exc))
    return Bind("free")


def lock_held(lock_file: Path) -> bool | None:
    """Whether a running agent holds ``lock_file`` (``None``: there is no lock file).

    ``broadgauge <role> run`` holds an exclusive ``flock`` on it while it runs; asking for a
    shared lock without waiting tells whether it is held, and changes nothing.
    """
    try:
        fd = os.open(lock_file, os.O_RDONLY)
    except FileNotFoundError:
        return None
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing releases the shared lock, if we got it
    return False


@dataclass(frozen=True)
class Holder:
    """The process that listens on a port, as far as ``/proc`` lets this user see."""

    pid: int
    command: str
    cwd: str | None = None  #: its working directory, to read a relative ``-c`` path


def port_holder(port: int, proc: Path = Path("/proc")) -> Holder | None:
    """The process listening on TCP ``port`` (Linux ``/proc``; ``None`` if not visible)."""
    inodes: set[str] = set()
    for table in ("net/tcp", "net/tcp6"):
        try:
            lines = (proc / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            # local_address is HEX_IP:HEX_PORT; state 0A is LISTEN.
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].split(":")[1], 16) == port:
                inodes.add(fields[9])
    if not inodes:
        return None
    targets = {f"socket:[{inode}]" for inode in inodes}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                if os.readlink(fd) in targets:
                    raw = (entry / "cmdline").read_bytes()
                    command = " ".join(part.decode(errors="replace") for part in raw.split(b"\0"))
                    return Holder(int(entry.name), command.strip(), _cwd(entry))
        except OSError:
            continue  # another user's process, or one that just ended
    return None


def _cwd(process: Path) -> str | None:
    try:
        return os.readlink(process / "cwd")
    except OSError:
        return None


# --- the HTTP upgrade probe --------------------------------------------------------------


@dataclass(frozen=True)
class HttpAnswer:
    """What a peer said to a WebSocket upgrade that carried no salts.

    ``connected`` is False when no TCP connection could be made (``error`` says why);
    ``status`` is None when the connection was made but no HTTP answer came.  ``date`` is
    the ``Date`` header as a POSIX time, and ``received`` the local time it arrived.
    """

    connected: bool
    error: str = ""
    status: int | None = None
    reason: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    date: float | None = None
    received: float = 0.0


def split_ws_url(url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, path) of a ``ws://`` or ``wss://`` URL."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(f"{url!r} is not a ws:// or wss:// URL")
    port = parts.port or (443 if scheme == "wss" else 80)
    return scheme, parts.hostname, port, parts.path or "/"


def upgrade_probe(url: str, timeout: float) -> HttpAnswer:
    """Ask the server at ``url`` for a WebSocket upgrade without salts; read its answer.

    A paddington server refuses such an upgrade before any key is tried: 400 when the
    caller's address is allowed (the salts are missing), 403 when it is not.  Either way
    the answer carries the server's ``Date``.
    """
    try:
        scheme, host, port, path = split_ws_url(url)
    except ValueError as exc:
        return HttpAnswer(False, str(exc))
    try:
        raw = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        return HttpAnswer(False, _os_words(exc))
    try:
        sock: socket.socket = raw
        if scheme == "wss":
            sock = ssl.create_default_context().wrap_socket(raw, server_hostname=host)
        sock.settimeout(timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        authority = f"[{host}]" if ":" in host else host
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {authority}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            "User-Agent: broadgauge-doctor\r\n\r\n"
        )
        sock.sendall(request.encode())
        head = _read_head(sock)
        received = time.time()
    except (OSError, ssl.SSLError) as exc:
        return HttpAnswer(True, _os_words(exc))
    finally:
        raw.close()
    return parse_head(head, received)


def _read_head(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data and len(data) < MAX_HEAD:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def parse_head(head: bytes, received: float) -> HttpAnswer:
    """Read the status line and headers of an HTTP response head."""
    text = head.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    lines = text.split("\r\n")
    status_line = lines[0].split(" ", 2) if lines and lines[0] else []
    if (
        len(status_line) < 2
        or not status_line[0].startswith("HTTP/")
        or not status_line[1].isdigit()
    ):
        return HttpAnswer(True, "no HTTP answer", received=received)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return HttpAnswer(
        True,
        status=int(status_line[1]),
        reason=status_line[2] if len(status_line) > 2 else "",
        headers=headers,
        date=parse_http_date(headers.get("date")),
        received=received,
    )


def parse_http_date(value: str | None) -> float | None:
    """An HTTP ``Date`` header as a POSIX time (``None`` if absent or unreadable)."""
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None


def _os_words(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | socket.timeout):
        return "no answer (timed out)"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


# --- back ends ---------------------------------------------------------------------------


def ldap_bind(url: str, bind_dn: str, password: str, timeout: float) -> str | None:
    """Bind to ``url`` as ``bind_dn`` and unbind; the error in words, or None if it worked."""
    try:
        server = ldap3.Server(url, connect_timeout=timeout, get_info=ldap3.NONE)
        conn = ldap3.Connection(
            server,
            user=bind_dn,
            password=password,
            receive_timeout=max(1, int(timeout + 0.999)),
            raise_exceptions=False,
        )
        if not conn.bind():
            result = conn.result or {}
            return f"bind refused: {result.get('description', 'unknown error')}"
        conn.unbind()
    except LDAPException as exc:
        return str(exc)
    return None


@dataclass(frozen=True)
class CommandRun:
    """The outcome of running a command: ``found`` False if it does not exist."""

    found: bool
    code: int | None = None
    output: str = ""


def run_command(argv: Sequence[str], env: Mapping[str, str] | None, timeout: float) -> CommandRun:
    """Run ``argv`` (no shell, no stdin) and return its exit code and first words of output."""
    if not argv or shutil.which(argv[0]) is None:
        return CommandRun(False)
    try:
        done = subprocess.run(
            list(argv),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            env={**os.environ, **(env or {})},
            check=False,
        )
    except subprocess.TimeoutExpired:
        return CommandRun(True, None, f"no answer in {timeout:g} s")
    except OSError as exc:
        return CommandRun(True, None, str(exc))
    words = " ".join((done.stdout + b" " + done.stderr).decode(errors="replace").split())
    return CommandRun(True, done.returncode, words[:300])


def http_answers(url: str, timeout: float, *, verify: bool = True) -> tuple[int | None, str]:
    """GET ``url`` (``unix:/path`` for a Unix socket): (status, "") or (None, the error)."""
    try:
        if url.startswith("unix:"):
            transport = httpx.HTTPTransport(uds=url.removeprefix("unix:"))
            with httpx.Client(transport=transport, timeout=timeout) as client:
                response = client.get("http://localhost/")
        else:
            with httpx.Client(timeout=timeout, verify=verify) as client:
                response = client.get(url)
    except httpx.HTTPError as exc:
        return None, str(exc) or type(exc).__name__
    return response.status_code, ""


# --- paths -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PathState:
    """A path as this user sees it: whether it exists, is a directory, can be written, and
    (if missing) the nearest existing folder above it and whether that can be written."""

    path: Path
    exists: bool
    is_dir: bool
    writable: bool
    mode: int | None = None
    ancestor: Path | None = None
    ancestor_writable: bool = False


def path_state(path: Path) -> PathState:
    """Look at ``path`` without changing anything."""
    try:
        info = path.stat()
    except FileNotFoundError:
        ancestor = path.parent
        while not ancestor.exists() and ancestor != ancestor.parent:
            ancestor = ancestor.parent
        return PathState(
            path, False, False, False, None, ancestor, os.access(ancestor, os.W_OK | os.X_OK)
        )
    except OSError:
        return PathState(path, True, False, False)
    is_dir = path.is_dir()
    writable = os.access(path, os.W_OK | (os.X_OK if is_dir else 0))
    return PathState(path, True, is_dir, writable, info.st_mode & 0o7777)


def file_mode(path: Path) -> int:
    """The permission bits of ``path``."""
    return path.stat().st_mode & 0o7777
