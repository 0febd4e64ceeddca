"""A real JupyterHub for tests, started as real-backends.md §3 describes.

JupyterHub 6 with the dummy authenticator and the pure-Python ``configurable-http-proxy``
(PyPI, so no node is needed), all on loopback ports chosen at start: the public proxy, the
proxy's API and the hub.  The session fixture ``jupyterhub`` yields the public URL (ending
in ``/``), which is what a planner answers as ``serviceinfo.endpoint``; ``GET
<url>hub/api`` answers ``{"version": ...}`` through the proxy.  At teardown the hub is
stopped by its PID (it stops the proxy and the servers it started); a proxy left behind is
stopped by the PID in its pid file.

For the notebook agent's engine it also has:

* a service ``broadgauge`` whose API token (random per session, :attr:`JupyterHub.token`)
  holds a role that manages users, groups and servers, as a site would configure it;
* real single-user servers: ``SimpleLocalProcessSpawner`` (hub users need no Unix account;
  every server runs as the test's own user, so it is for tests only) starting this venv's
  ``jupyterhub-singleuser`` on loopback, with homes under the fixture's temporary folder;
* the hub-side refusal of blocked users that ``docs/operators/notebooks.md`` asks sites to
  install: a ``pre_spawn_hook`` that fails the spawn of a member of ``broadgauge-blocked``
  (and, for tests of spawn failures, of a member of ``broadgauge-test-spawn-fails``).

Missing programs skip the fixture with the reason, or fail it on CI (``CI=true``).
Install: ``pip install jupyterhub configurable-http-proxy jupyter_server``.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

import httpx
import pytest

from tests.backends.oidc import skip_or_fail
from tests.cli.processes import free_port

_BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class JupyterHub:
    """The running hub: its public URL, process and the ``broadgauge`` service's API token."""

    url: str
    pid: int
    token: str


def _program(name: str) -> str | None:
    local = _BIN / name
    return str(local) if local.exists() else shutil.which(name)


def _config(
    directory: Path, *, proxy: str, singleuser: str, token: str, public: int, api: int, hub: int
) -> str:
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

# The notebook agent's service account, with exactly the scopes docs/operators/notebooks.md
# gives it (so the tests check that they are enough): users, groups and servers, and
# access:servers to check that a server it started answers.
c.JupyterHub.services = [{{"name": "broadgauge", "api_token": {token!r}}}]
c.JupyterHub.load_roles = [
    {{
        "name": "broadgauge",
        "services": ["broadgauge"],
        "scopes": [
            "admin:users",
            "admin:groups",
            "admin:servers",
            "list:users",
            "read:users",
            "access:servers",
        ],
    }}
]

# Real single-user servers without Unix accounts: test-only, every server runs as us.
c.JupyterHub.spawner_class = "simple"
c.SimpleLocalProcessSpawner.home_dir_template = "{directory}/home/{{username}}"
c.Spawner.notebook_dir = "{directory}/home/{{username}}"
c.Spawner.cmd = [{singleuser!r}]
# allow_root: containers and CI often run tests as root, where jupyter_server refuses to
# start without it.
c.Spawner.args = ["--ServerApp.open_browser=False", "--ServerApp.allow_root=True"]
c.Spawner.ip = "127.0.0.1"
# A loaded two-core machine can take a while to import jupyter_server.
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 120


def refuse_blocked_users(spawner):
    '''Fail the spawn of a member of broadgauge-blocked (docs/operators/notebooks.md).

    The agent refuses to start a blocked user's server itself; this hook is the hub's own
    refusal, so a user who starts a server from the hub's web page or API is refused too.
    '''
    groups = {{group.name for group in spawner.user.groups}}
    if "broadgauge-blocked" in groups:
        raise RuntimeError(f"{{spawner.user.name}} is blocked from starting notebook servers")
    # Test-only: a spawn failure the agent does not foresee (it knows nothing of this group),
    # so the tests can check that it reports the hub's reason.
    if "broadgauge-test-spawn-fails" in groups:
        raise RuntimeError(f"test hook refuses to spawn {{spawner.user.name}}")


c.Spawner.pre_spawn_hook = refuse_blocked_users
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


class HubUnavailable(Exception):
    """A program the hub needs is not installed (the message says which)."""


@contextmanager
def running_hub(directory: Path) -> Iterator[JupyterHub]:
    """Start a JupyterHub with its files under ``directory``; stop it on leaving.

    Raises :class:`HubUnavailable` if a program is missing and :class:`RuntimeError` (with
    the end of the hub's log) if it does not start.  Used by the fixture and by
    ``bench/notebooks.py``.
    """
    hub_program = _program("jupyterhub")
    proxy = _program("configurable-http-proxy")
    # jupyterhub installs jupyterhub-singleuser, but it needs jupyter_server to run.
    singleuser = _program("jupyterhub-singleuser") if find_spec("jupyter_server") else None
    if hub_program is None or proxy is None or singleuser is None:
        raise HubUnavailable(
            "jupyterhub / configurable-http-proxy / jupyter_server are not installed "
            "(pip install jupyterhub configurable-http-proxy jupyter_server)"
        )
    public, api, hub = free_port(), free_port(), free_port()
    token = secrets.token_hex(32)
    config = directory / "jupyterhub_config.py"
    # The file holds the service token: readable by us alone.
    config.touch(mode=0o600)
    config.write_text(
        _config(
            directory,
            proxy=proxy,
            singleuser=singleuser,
            token=token,
            public=public,
            api=api,
            hub=hub,
        )
    )
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
            raise RuntimeError(
                "JupyterHub did not start: "
                + (directory / "jupyterhub.log").read_text(errors="replace")[-2000:]
            )
        yield JupyterHub(url=url, pid=process.pid, token=token)
    finally:
        # The hub is our child: wait() reaps it (polling its PID would see the zombie).
        # On SIGTERM it stops the single-user servers still running, which takes a moment.
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        log.close()
        pid_file = directory / "proxy.pid"
        if pid_file.exists():
            text = pid_file.read_text().strip()
            if text.isdigit():
                _stop(int(text))


@pytest.fixture(scope="session")
def jupyterhub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterHub]:
    """A running JupyterHub behind the Python proxy, for the whole session."""
    directory = tmp_path_factory.mktemp("jupyterhub")
    try:
        with running_hub(directory) as hub:
            yield hub
    except HubUnavailable as exc:
        skip_or_fail(str(exc))
    except RuntimeError as exc:
        pytest.fail(str(exc))
