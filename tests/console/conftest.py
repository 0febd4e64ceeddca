"""Fixtures: the demo network with an operator account on its bridge's console, serving."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from broadgauge.bridge.console import hash_password
from broadgauge.demo import Network, start_network, with_console_user

USER = "ops"
PASSWORD = "correct horse battery staple"
#: One hash for the session: Argon2 is slow on purpose.
HASH = hash_password(PASSWORD)


@dataclass
class Served:
    """A running demo network whose bridge serves the console at ``base``."""

    network: Network
    base: str

    @property
    def console(self) -> str:
        """The console's root URL."""
        return f"{self.base}console/"


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    """The demo network with ``ops`` as a console operator and the bridge's HTTP up."""
    network = await start_network(tmp_path, configure=with_console_user(USER, HASH))
    try:
        await network.roles["bridge"].start()
        yield Served(network, network.bridge.url)
    finally:
        await network.stop()


def csrf_of(html: str) -> str:
    """The CSRF token in a page's form."""
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html[:500]
    return found.group(1)


async def log_in(
    client: httpx.AsyncClient, user: str = USER, password: str = PASSWORD
) -> httpx.Response:
    """Fetch the login form and post it; the response (303 on success)."""
    form = await client.get("/console/login")
    return await client.post(
        "/console/login",
        data={"user": user, "password": password, "csrf": csrf_of(form.text)},
    )


@pytest.fixture
async def client(served: Served) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the bridge, not logged in."""
    async with httpx.AsyncClient(base_url=served.base, timeout=30) as http:
        yield http


@pytest.fixture
async def operator(client: httpx.AsyncClient) -> httpx.AsyncClient:
    """The client, logged in as the operator."""
    response = await log_in(client)
    assert response.status_code == 303, response.text
    return client
