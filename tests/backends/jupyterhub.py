"""A real JupyterHub for tests, started as real-backends.md §3 describes.

JupyterHub 6 with the dummy authenticator and the pure-Python ``configurable-http-proxy``
(PyPI, so no node is needed), all on loopback ports chosen at start: the public proxy, the
proxy's API and the hub.  The session fixture ``jupyterhub`` yields the public URL (ending
in ``/``), which is what a planner answers as ``serviceinfo.endpoint``; ``GET
<url>hub/api`` answers ``{"version": ...}`` through the proxy.  At teardown the hub is
stopped by its PID (it stops the proxy it started); a proxy left behind is stopped by the
PID in its pid file.

Missing programs skip the fixture with the reason, or fail it on CI (``CI=true``).
Install: ``pip install jupyterhub configurable-http-proxy``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.backends.oidc import skip_or_fail

_BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class JupyterHub:
    """The running hub: its public URL and process."""

    url: str
    pid: int


def _program(name: str) -> str | None:
    local = _BIN / name
    return str(local) if local.exists() else shutil.which(name)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _config(directory: Path, proxy: str, public: int, api: int, hub: int) -> str:
    return f"""
c = get_config()  # noqa
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {public}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {hub}
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{api}"
c.ConfigurableHTTPProxy.command = [{proxy!r}]
c.ConfigurableHTTPProxy.pid_file = "{directory}/proxy.pid"
c.JupyterHub.db_url = "sqlite:///{directory}/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = "{directory}/cookie_secret"
c.JupyterHub.pid_file = "{directory}/jupyterhub.pid"
c.JupyterHub.authenticator_class = "dummy"
c.DummyAuthenticator.password = "testpw"
c.Authenticator.allow_all = True
"""


def _stop(pid: int, timeout: float = 10.0) -> None:
    """Stop a process that is not our child (the proxy the hub started) by its PID."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="session")
def jupyterhub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterHub]:
    """A running JupyterHub behind the Python proxy; yields its public URL."""
    hub_program = _program("jupyterhub")
    proxy = _program("configurable-http-proxy")
    if hub_program is None or proxy is None:
        skip_or_fail(
            "jupyterhub / configurable-http-proxy are not installed "
            "(pip install jupyterhub configurable-http-proxy)"
        )
    assert hub_program is not None and proxy is not None
    directory = tmp_path_factory.mktemp("jupyterhub")
    public, api, hub = _free_port(), _free_port(), _free_port()
    config = directory / "jupyterhub_config.py"
    config.write_text(_config(directory, proxy, public, api, hub))
    log = (directory / "jupyterhub.log").open("wb")
    process = subprocess.Popen(
        [hub_program, "-f", str(config)], cwd=directory, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{public}/"
    deadline = time.monotonic() + 60
    ready = False
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"{url}hub/api/", timeout=1).status_code == 200:
                ready = True
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    try:
        if not ready:
            pytest.fail(
                "JupyterHub did not start: "
                + (directory / "jupyterhub.log").read_text(errors="replace")[-2000:]
            )
        yield JupyterHub(url=url, pid=process.pid)
    finally:
        # The hub is our child: wait() reaps it (polling its PID would see the zombie).
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        log.close()
        pid_file = directory / "proxy.pid"
        if pid_file.exists():
            text = pid_file.read_text().strip()
            if text.isdigit():
                _stop(int(text))
