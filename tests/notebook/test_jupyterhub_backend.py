"""The JupyterHub engine against a real hub (``tests/backends/jupyterhub.py``).

What the backend says is checked against what the hub itself answers, read directly with
httpx and the service token.  The hub spawns real single-user servers, and its
``pre_spawn_hook`` refuses members of the blocked group, as a site's would.  Error cases use a
closed loopback port and a small local HTTP server that answers what each test sets.  All
traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import secrets
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote

import httpx
import pytest

from broadgauge.agents.notebook import jupyterhub as jupyterhub_module
from broadgauge.agents.notebook.backend import BLOCKED_GROUP, NotebookError
from broadgauge.agents.notebook.jupyterhub import JupyterHubBackend
from tests.backends.jupyterhub import JupyterHub


def unique(kind: str) -> str:
    """A name no other test (or earlier run against the same hub) uses."""
    return f"{kind}{secrets.token_hex(4)}"


@dataclass
class Audit:
    """What the backend recorded through its ``audit`` hook."""

    entries: list[tuple[str, str]] = field(default_factory=list)

    def __call__(self, operation: str, outcome: str) -> None:
        self.entries.append((operation, outcome))


@pytest.fixture
def audit() -> Audit:
    return Audit()


@pytest.fixture
async def backend(jupyterhub: JupyterHub, audit: Audit) -> AsyncIterator[JupyterHubBackend]:
    backend = JupyterHubBackend(jupyterhub.url, jupyterhub.token, spawn_timeout=120, audit=audit)
    yield backend
    await backend.close()


@pytest.fixture
async def api(jupyterhub: JupyterHub) -> AsyncIterator[httpx.AsyncClient]:
    """The hub's REST API, read directly (not through the backend)."""
    async with httpx.AsyncClient(
        base_url=f"{jupyterhub.url}hub/api/",
        headers={"Authorization": f"token {jupyterhub.token}"},
        timeout=30,
    ) as client:
        yield client


# ---- users and groups ------------------------------------------------------------------


async def test_groups_are_created_listed_and_removed_idempotently(
    backend: JupyterHubBackend, api: httpx.AsyncClient, audit: Audit
) -> None:
    group = unique("g")
    await backend.add_group(group)
    await backend.add_group(group)
    assert group in await backend.groups()
    assert await backend.group_members(group) == []
    assert (await api.get(f"groups/{group}")).json()["users"] == []

    await backend.remove_group(group)
    await backend.remove_group(group)
    assert group not in await backend.groups()
    assert await backend.group_members(group) is None
    assert (await api.get(f"groups/{group}")).status_code == 404
    # Only the real changes are audited: the second add and remove changed nothing.
    assert audit.entries == [
        (f"jupyterhub add group {group}", "ok"),
        (f"jupyterhub remove group {group}", "ok"),
    ]


async def test_add_user_makes_a_hub_user_in_the_group(
    backend: JupyterHubBackend, api: httpx.AsyncClient, audit: Audit
) -> None:
    group, other, user = unique("g"), unique("g"), unique("u") + ".proj"
    await backend.add_group(group)
    await backend.add_group(other)
    await backend.add_user(user, group)
    await backend.add_user(user, group)
    await backend.add_user(user, other)

    assert sorted((await api.get(f"groups/{group}")).json()["users"]) == [user]
    assert sorted((await api.get(f"users/{user}")).json()["groups"]) == sorted([group, other])
    assert await backend.group_members(group) == [user]
    assert await backend.user_exists(user)
    assert not await backend.user_exists(unique("nobody"))
    assert audit.entries == [
        (f"jupyterhub add group {group}", "ok"),
        (f"jupyterhub add group {other}", "ok"),
        (f"jupyterhub add user {user}", "ok"),
        (f"jupyterhub add user {user} to group {group}", "ok"),
        (f"jupyterhub add user {user} to group {other}", "ok"),
    ]

    # Removing a group keeps its users.
    await backend.remove_group(other)
    assert (await api.get(f"users/{user}")).json()["groups"] == [group]
    await backend.remove_user(user)
    await backend.remove_user(user)
    assert (await api.get(f"users/{user}")).status_code == 404
    assert await backend.group_members(group) == []
    await backend.remove_group(group)


async def test_add_user_to_a_missing_group_is_refused_and_makes_no_user(
    backend: JupyterHubBackend, api: httpx.AsyncClient, audit: Audit
) -> None:
    group, user = unique("g"), unique("u")
    with pytest.raises(NotebookError, match=f"group {group}: no such group"):
        await backend.add_user(user, group)
    assert (await api.get(f"users/{user}")).status_code == 404
    assert audit.entries == []


async def test_blocking_an_unknown_user_is_refused_and_unblocking_one_does_nothing(
    backend: JupyterHubBackend,
) -> None:
    user = unique("u")
    with pytest.raises(NotebookError, match="no such user"):
        await backend.set_blocked(user, True)
    await backend.set_blocked(user, False)
    assert not await backend.is_blocked(user)
    with pytest.raises(NotebookError, match="no such user"):
        await backend.start_server(user)


# ---- servers ---------------------------------------------------------------------------


async def test_server_starts_answers_is_listed_and_stops(
    jupyterhub: JupyterHub,
    backend: JupyterHubBackend,
    api: httpx.AsyncClient,
    audit: Audit,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    group, user = unique("g"), unique("u")
    await backend.add_group(group)
    await backend.add_user(user, group)
    before = dt.datetime.now(dt.UTC)

    server = await backend.start_server(user)
    assert server.ready
    assert server.user == user
    assert server.url == f"{jupyterhub.url}user/{user}/"
    assert server.groups == (group,)
    assert server.started.tzinfo == dt.UTC
    assert before - dt.timedelta(minutes=1) <= server.started <= dt.datetime.now(dt.UTC)
    async with httpx.AsyncClient(
        headers={"Authorization": f"token {jupyterhub.token}"}, timeout=30
    ) as client:
        status = await client.get(f"{server.url}api/status")
    assert status.status_code == 200
    assert "kernels" in status.json()

    # Already running: returned as it is, and nothing new is audited.
    assert (await backend.start_server(user)).started == server.started
    assert audit.entries.count((f"jupyterhub start the server of {user}", "ok")) == 1

    listed = {s.user: s for s in await backend.servers()}
    assert listed[user].started == server.started
    assert listed[user].ready
    assert listed[user].url == server.url

    await backend.stop_server(user)
    await backend.stop_server(user)
    assert (await api.get(f"users/{user}")).json()["servers"] == {}
    assert user not in {s.user for s in await backend.servers()}
    assert audit.entries.count((f"jupyterhub stop the server of {user}", "ok")) == 1

    await backend.remove_user(user)
    await backend.remove_group(group)
    assert jupyterhub.token not in caplog.text


async def test_block_stops_the_server_and_both_agent_and_hub_refuse_a_start(
    backend: JupyterHubBackend, api: httpx.AsyncClient, audit: Audit
) -> None:
    group, user = unique("g"), unique("u")
    await backend.add_group(group)
    await backend.add_user(user, group)
    await backend.start_server(user)

    await backend.set_blocked(user, True)
    await backend.set_blocked(user, True)
    assert await backend.is_blocked(user)
    model = (await api.get(f"users/{user}")).json()
    assert BLOCKED_GROUP in model["groups"]
    assert model["servers"] == {}
    assert (f"jupyterhub block user {user}", "ok") in audit.entries
    assert (f"jupyterhub stop the server of {user}", "ok") in audit.entries

    # The backend refuses without asking the hub: the hub saw no new spawn...
    with pytest.raises(NotebookError, match="user is blocked"):
        await backend.start_server(user)
    before = await api.get(f"users/{user}/server/progress")
    assert before.status_code in (400, 404)  # "not starting" / no server at all
    assert "failed" not in before.text
    # ... and the hub refuses on its own (the pre_spawn_hook), with its reason.
    refused = await api.post(f"users/{user}/server")
    assert refused.status_code >= 400
    assert (await api.get(f"users/{user}")).json()["servers"] == {}
    progress = (await api.get(f"users/{user}/server/progress")).text
    assert '"failed": true' in progress
    assert "is blocked from starting notebook servers" in progress

    await backend.set_blocked(user, False)
    await backend.set_blocked(user, False)
    assert not await backend.is_blocked(user)
    assert BLOCKED_GROUP not in (await api.get(f"users/{user}")).json()["groups"]
    assert audit.entries.count((f"jupyterhub unblock user {user}", "ok")) == 1
    assert (await backend.start_server(user)).ready

    # Removing a user with a running server stops it first.
    await backend.remove_user(user)
    assert (await api.get(f"users/{user}")).status_code == 404
    assert user not in {s.user for s in await backend.servers()}
    await backend.remove_group(group)


async def test_a_spawn_the_hub_fails_is_reported_with_the_hubs_reason(
    backend: JupyterHubBackend, api: httpx.AsyncClient, audit: Audit
) -> None:
    # The fixture's pre_spawn_hook fails members of this group: the backend cannot foresee
    # it, so it learns of the failure from the hub (the server is gone) and reports why.
    group, user = "broadgauge-test-spawn-fails", unique("u")
    await backend.add_group(group)
    await backend.add_user(user, group)
    with pytest.raises(NotebookError, match=f"test hook refuses to spawn {user}"):
        await backend.start_server(user)
    assert (await api.get(f"users/{user}")).json()["servers"] == {}
    assert (f"jupyterhub start the server of {user}", "ok") not in audit.entries
    await backend.remove_user(user)


async def test_collections_are_read_page_by_page(
    backend: JupyterHubBackend, api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = sorted(unique("page") for _ in range(5))
    for name in names:
        await backend.add_group(name)
    everything = sorted(group["name"] for group in (await api.get("groups")).json())
    monkeypatch.setattr(jupyterhub_module, "_PAGE", 2)
    assert await backend.groups() == everything
    assert set(names) <= set(everything)
    for name in names:
        await backend.remove_group(name)


# ---- failures --------------------------------------------------------------------------


async def test_a_refused_token_is_reported_without_the_token(
    jupyterhub: JupyterHub, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token = "wrong" + secrets.token_hex(16)
    backend = JupyterHubBackend(jupyterhub.url, token)
    try:
        with pytest.raises(NotebookError, match="refused the API token") as caught:
            await backend.groups()
        with pytest.raises(NotebookError, match="refused the API token"):
            await backend.add_group(unique("g"))
    finally:
        await backend.close()
    assert token not in str(caught.value)
    assert token not in repr(caught.value)
    assert token not in repr(backend)
    assert caught.value.__cause__ is None
    assert token not in caplog.text


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_a_hub_that_is_down_is_reported() -> None:
    url = f"http://127.0.0.1:{closed_port()}/"
    backend = JupyterHubBackend(url, "t" + secrets.token_hex(16), timeout=5)
    try:
        with pytest.raises(NotebookError, match=f"JupyterHub at {url} cannot be reached"):
            await backend.servers()
        with pytest.raises(NotebookError, match="cannot be reached"):
            await backend.remove_user("someone")
    finally:
        await backend.close()


class FakeHub(ThreadingHTTPServer):
    """A loopback HTTP server that answers every request as set, and records the paths."""

    status = 200
    content_type = "application/json"
    body = b""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _FakeHandler)
        self.paths: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"

    def answer(self, status: int, body: object, content_type: str = "application/json") -> None:
        self.status, self.content_type = status, content_type
        self.body = body if isinstance(body, bytes) else json.dumps(body).encode()


class _FakeHandler(BaseHTTPRequestHandler):
    server: FakeHub

    def _answer(self) -> None:
        self.server.paths.append(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.send_response(self.server.status)
        self.send_header("Content-Type", self.server.content_type)
        self.send_header("Content-Length", str(len(self.server.body)))
        self.end_headers()
        self.wfile.write(self.server.body)

    do_GET = do_POST = do_DELETE = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def fake_hub() -> Iterator[FakeHub]:
    server = FakeHub()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
async def fake_backend(fake_hub: FakeHub) -> AsyncIterator[JupyterHubBackend]:
    backend = JupyterHubBackend(fake_hub.url, "t" + secrets.token_hex(16), timeout=10)
    yield backend
    await backend.close()


async def test_malformed_answers_are_reported(
    fake_hub: FakeHub, fake_backend: JupyterHubBackend
) -> None:
    fake_hub.answer(200, b"<html>not JSON</html>", "text/html")
    with pytest.raises(NotebookError, match="answered malformed JSON for list groups"):
        await fake_backend.groups()
    with pytest.raises(NotebookError, match="answered malformed JSON for read group g"):
        await fake_backend.group_members("g")
    fake_hub.answer(200, {"items": "nope", "_pagination": {}})
    with pytest.raises(NotebookError, match="answered malformed JSON for list active servers"):
        await fake_backend.servers()
    fake_hub.answer(200, {"name": "u", "groups": "broadgauge-blocked"})
    with pytest.raises(NotebookError, match="answered malformed JSON"):
        await fake_backend.is_blocked("u")
    fake_hub.answer(200, {"name": "u", "groups": [], "servers": {"": {"ready": True}}})
    with pytest.raises(NotebookError, match="answered malformed JSON"):
        await fake_backend.start_server("u")


async def test_a_404_that_is_not_the_hubs_is_not_taken_for_gone(
    fake_hub: FakeHub, fake_backend: JupyterHubBackend
) -> None:
    # A wrong URL (no hub there) must not make every removal succeed silently.
    fake_hub.answer(404, b"<html>Not Found</html>", "text/html")
    with pytest.raises(NotebookError, match="HTTP 404"):
        await fake_backend.remove_group("g")
    with pytest.raises(NotebookError, match="HTTP 404"):
        await fake_backend.group_members("g")
    fake_hub.answer(404, {"status": 404, "message": "Not Found"})
    await fake_backend.remove_group("g")
    assert await fake_backend.group_members("g") is None


async def test_names_are_quoted_into_one_path_segment(
    fake_hub: FakeHub, fake_backend: JupyterHubBackend
) -> None:
    fake_hub.answer(404, {"status": 404, "message": "Not Found"})
    assert await fake_backend.group_members("a b?c=1#d%2F..") is None
    assert not await fake_backend.user_exists("x&y;z")
    assert fake_hub.paths == [
        "/hub/api/groups/a%20b%3Fc%3D1%23d%252F..",
        "/hub/api/users/x%26y%3Bz",
    ]
    for name in ["..", ".", "", "x/../y", "../users", "a/b"]:
        with pytest.raises(NotebookError, match="is not a name the JupyterHub API can address"):
            await fake_backend.remove_group(name)
        with pytest.raises(NotebookError, match="is not a name the JupyterHub API can address"):
            await fake_backend.add_user(name, "g")
    assert len(fake_hub.paths) == 2


async def test_hostile_names_reach_only_their_own_resource_on_a_real_hub(
    backend: JupyterHubBackend, api: httpx.AsyncClient
) -> None:
    group = unique("g") + "%2F..%2Fusers?x=1#"
    user = unique("u") + "?admin=true&x"
    await backend.add_group(group)
    await backend.add_user(user, group)
    assert group in await backend.groups()
    assert await backend.group_members(group) == [user]
    model = (await api.get(f"users/{quote(user, safe='')}")).json()
    assert model["name"] == user
    assert model["admin"] is False
    with pytest.raises(NotebookError, match="can address"):
        await backend.add_group("..")
    await backend.remove_user(user)
    await backend.remove_group(group)
    assert group not in await backend.groups()
    assert not await backend.user_exists(user)
