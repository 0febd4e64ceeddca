"""The console's OIDC login over real HTTP, against the real provider the suite starts.

The demo network's bridge serves the console; a network planner that requires tokens from
the provider (tests/backends/oidc.py, ``oidc-provider-mock`` on loopback) is seated beside
the bridge the way ``assemble`` seats one, so the console takes its token validator.  A
client plays the browser: the console's ``/auth/oidc`` sends it to the provider's authorize
endpoint, whose form takes a ``sub``; the provider sends it back to the console's callback
with a code and the state; the console's small page then moves it on to the console.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

import httpx
import pytest

from broadgauge.agents.assemble import seat_planner
from broadgauge.bridge.console.settings import ConsoleSettings
from broadgauge.demo import Network, start_network, with_console_user
from broadgauge.jobs.agent_type import AgentType
from broadgauge.planner.network import parse_network_config
from broadgauge.planner.server import NetworkPlannerServer
from broadgauge.runtime.config import AgentConfig
from tests.backends.oidc import OidcProvider, oidc_provider

from .conftest import HASH, USER, Served

__all__ = ["oidc_provider"]  # the real provider's fixture, used below

# authlib (inside the provider) warns about its own deprecated APIs; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

AUDIENCE = "console-oidc-test"
OPERATOR = "3f2a9c4e-operator"
STRANGER = "77aa01bb-stranger"
LOG = "broadgauge.bridge.console"
#: A hang guard only, not a timing threshold.
GUARD = 30.0


def with_oidc_subjects(*subjects: str) -> Any:
    """A demo ``configure`` giving the bridge's console ``subjects`` (and the local ``ops``)."""

    def change(name: str, config: AgentConfig) -> AgentConfig:
        if config.agent is not AgentType.BRIDGE:
            return config
        settings = ConsoleSettings.of(config)
        return replace(settings, oidc_subjects=tuple(subjects)).store(config)

    return with_console_user(USER, HASH, change)


@pytest.fixture
async def with_oidc(tmp_path: Path, oidc_provider: OidcProvider) -> AsyncIterator[Served]:
    """The demo network, its bridge serving the console, with a network planner beside it
    that requires tokens from the provider; only :data:`OPERATOR` is a console subject."""
    network: Network = await start_network(tmp_path, configure=with_oidc_subjects(OPERATOR))
    try:
        config = parse_network_config(
            {
                "service": {"name": "network planner with sign-in"},
                "auth": {
                    "mode": "required",
                    "issuer": oidc_provider.issuer,
                    "audience": AUDIENCE,
                    "client_secret": "secret",
                },
                "network": {"port": 0, "refresh": 0, "missing_account_ttl": 0},
            }
        )
        role = network.roles["bridge"]
        demo_planner = role.planner
        # As `assemble` does for a bridge whose `planner-config` names this planner.
        seat_planner(role, NetworkPlannerServer(network.agents["bridge"], config))
        if isinstance(demo_planner, NetworkPlannerServer):
            await demo_planner.stop()  # never started; replaced (its store is closed here)
        await network.bridge.start()
        assert network.bridge.console.oidc is not None
        yield Served(network, network.bridge.url)
    finally:
        await network.stop()


@pytest.fixture
async def browser() -> AsyncIterator[httpx.AsyncClient]:
    """A client that keeps cookies and follows no redirect by itself."""
    async with httpx.AsyncClient(timeout=GUARD) as http:
        yield http


def _on_loopback(url: str) -> str:
    assert urlparse(url).hostname == "127.0.0.1", url
    return url


async def to_provider(browser: httpx.AsyncClient, served: Served, nxt: str = "") -> str:
    """Start the console's OIDC login; the provider's authorize URL it redirects to."""
    start = await browser.get(
        f"{served.base}console/auth/oidc", params={"next": nxt} if nxt else {}
    )
    assert start.status_code == 303, start.text
    assert "bg_console_oidc" in browser.cookies
    return _on_loopback(start.headers["location"])


async def authorize(browser: httpx.AsyncClient, authorize_url: str, sub: str) -> str:
    """Complete the provider's authorize step for ``sub``; the console callback URL it
    redirects to (with the code and state)."""
    form = await browser.get(authorize_url)
    assert form.status_code == 200, form.text
    assert 'name="sub"' in form.text
    # The form posts back to the same URL (its query carries the request's parameters).
    done = await browser.post(authorize_url, data={"sub": sub})
    assert done.status_code == 302, done.text
    return _on_loopback(done.headers["location"])


async def callback_for(
    browser: httpx.AsyncClient, served: Served, sub: str, nxt: str = ""
) -> tuple[str, dict[str, str]]:
    """Run the flow up to the provider's redirect back; the callback URL and its query."""
    callback = await authorize(browser, await to_provider(browser, served, nxt), sub)
    assert callback.startswith(f"{served.base}console/auth/callback?"), callback
    query = {k: v[0] for k, v in parse_qs(urlparse(callback).query).items()}
    assert query.get("code") and query.get("state"), callback
    return callback, query


def moved_on_to(page: httpx.Response) -> str:
    """Where the console's "logged in" page sends the browser."""
    found = re.search(r'http-equiv="refresh" content="0; url=([^"]+)"', page.text)
    assert found, page.text[:500]
    return found.group(1)


def with_oidc_issuer(served: Served) -> str:
    """The issuer of the validator the console took from the planner beside the bridge."""
    oidc = served.network.bridge.console.oidc
    assert oidc is not None
    return str(oidc.settings.issuer).rstrip("/")


async def test_a_listed_subject_logs_in_and_reads_the_console(
    with_oidc: Served, browser: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, LOG)
    login = await browser.get(f"{with_oidc.base}console/login")
    assert login.status_code == 200
    assert "/console/auth/oidc?next=" in login.text  # the login page offers the provider
    start = await browser.get(f"{with_oidc.base}console/auth/oidc")
    assert start.status_code == 303
    authorize_url = _on_loopback(start.headers["location"])
    assert authorize_url.startswith(f"{with_oidc_issuer(with_oidc)}/oauth2/authorize?")
    params = {k: v[0] for k, v in parse_qs(urlparse(authorize_url).query).items()}
    assert params["response_type"] == "code"
    assert params["client_id"] == AUDIENCE
    assert params["redirect_uri"] == f"{with_oidc.base}console/auth/callback"
    state_cookie = next(c for c in browser.cookies.jar if c.name == "bg_console_oidc")
    assert state_cookie.path == "/console/auth"
    assert state_cookie.value.strip('"').split(" ")[0] == params["state"]

    callback = await authorize(browser, authorize_url, OPERATOR)
    back = await browser.get(callback)
    assert back.status_code == 200, back.text
    assert "bg_console" in browser.cookies
    header = next(h for h in back.headers.get_list("set-cookie") if h.startswith("bg_console="))
    flags = {part.strip().lower() for part in header.split(";")}
    assert {"httponly", "samesite=strict", "path=/console"} <= flags
    target = moved_on_to(back)
    assert target == "/console/"

    page = await browser.get(f"{with_oidc.base}{target.lstrip('/')}")
    assert page.status_code == 200, page.text[:300]
    for name in with_oidc.network.agents:
        assert f'data-agent="{name}"' in page.text
    data = await browser.get(f"{with_oidc.base}console/api/network")
    assert data.status_code == 200
    assert {a["name"] for a in data.json()["agents"]} == set(with_oidc.network.agents)
    assert f"{OPERATOR} logged in (oidc) from 127.0.0.1" in caplog.text
    assert len(with_oidc.network.bridge.console.sessions) == 1


async def test_next_survives_the_round_trip(with_oidc: Served, browser: httpx.AsyncClient) -> None:
    callback, _ = await callback_for(browser, with_oidc, OPERATOR, nxt="/console/audit")
    back = await browser.get(callback)
    assert back.status_code == 200
    assert moved_on_to(back) == "/console/audit"
    page = await browser.get(f"{with_oidc.base}console/audit")
    assert page.status_code == 200


async def test_an_unlisted_subject_is_refused_and_logged(
    with_oidc: Served, browser: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, LOG)
    callback, _ = await callback_for(browser, with_oidc, STRANGER)
    refused = await browser.get(callback)
    assert refused.status_code == 403
    assert "not a console operator" in refused.text
    assert "bg_console" not in browser.cookies
    assert "bg_console_oidc" not in browser.cookies  # the state was spent on the provider
    assert f"refused OIDC login for '{STRANGER}' from 127.0.0.1: not an operator" in caplog.text
    assert "logged in" not in caplog.text
    assert len(with_oidc.network.bridge.console.sessions) == 0
    page = await browser.get(f"{with_oidc.base}console/")
    assert page.status_code == 303
    assert page.headers["location"].startswith("/console/login")
    assert (await browser.get(f"{with_oidc.base}console/api/network")).status_code == 401


@pytest.mark.parametrize("how", ["wrong state", "no state", "no state cookie", "no code"])
async def test_a_callback_without_the_right_state_is_refused(
    how: str, with_oidc: Served, browser: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, LOG)
    callback, query = await callback_for(browser, with_oidc, OPERATOR)
    url = f"{with_oidc.base}console/auth/callback"
    params = dict(query)
    if how == "wrong state":
        params["state"] = params["state"][:-1] + ("a" if params["state"][-1] != "a" else "b")
    elif how == "no state":
        del params["state"]
    elif how == "no state cookie":
        browser.cookies.delete("bg_console_oidc")
    else:
        del params["code"]
    refused = await browser.get(url, params=params)
    assert refused.status_code == 400, refused.text
    assert "No login in progress" in refused.text
    assert "bg_console" not in browser.cookies
    assert "refused OIDC callback from 127.0.0.1: no login in progress" in caplog.text
    assert len(with_oidc.network.bridge.console.sessions) == 0
    assert (await browser.get(f"{with_oidc.base}console/")).status_code == 303
    if how != "no state cookie":
        # The refusal came before the code was redeemed: the real callback still works.
        back = await browser.get(callback)
        assert back.status_code == 200, back.text
        assert (await browser.get(f"{with_oidc.base}console/")).status_code == 200


async def test_a_state_from_another_browser_is_refused(
    with_oidc: Served, browser: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    """A code and state made for one browser, brought to the console by another (login CSRF)."""
    caplog.set_level(logging.INFO, LOG)
    callback, _ = await callback_for(browser, with_oidc, OPERATOR)
    async with httpx.AsyncClient(timeout=GUARD) as victim:
        await to_provider(victim, with_oidc)  # the victim has a login of its own under way
        refused = await victim.get(callback)
        assert refused.status_code == 400
        assert "bg_console" not in victim.cookies
    assert "refused OIDC callback from 127.0.0.1: no login in progress" in caplog.text
    assert len(with_oidc.network.bridge.console.sessions) == 0


async def test_a_reused_code_is_refused(
    with_oidc: Served, browser: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, LOG)
    callback, _ = await callback_for(browser, with_oidc, OPERATOR)
    state_cookie = browser.cookies["bg_console_oidc"]
    first = await browser.get(callback)
    assert first.status_code == 200
    assert "bg_console_oidc" not in browser.cookies  # the state is spent with the login
    assert len(with_oidc.network.bridge.console.sessions) == 1

    # Replayed by a browser that still holds the state cookie: the provider refuses the code.
    async with httpx.AsyncClient(timeout=GUARD) as replay:
        replay.cookies.set(
            "bg_console_oidc", state_cookie, domain="127.0.0.1", path="/console/auth"
        )
        again = await replay.get(callback)
        assert again.status_code == 401, again.text
        assert "bg_console" not in replay.cookies
    assert "refused OIDC login from 127.0.0.1: the provider refused the code" in caplog.text
    assert len(with_oidc.network.bridge.console.sessions) == 1
    # The same browser replaying it (its state cookie gone) is refused before the provider.
    assert (await browser.get(callback)).status_code == 400


async def test_without_oidc_the_route_is_not_offered(
    served: Served, client: httpx.AsyncClient
) -> None:
    assert served.network.bridge.console.oidc is None
    login = await client.get("/console/login")
    assert login.status_code == 200
    assert "/auth/oidc" not in login.text
    start = await client.get("/console/auth/oidc")
    assert start.status_code == 404
    assert "location" not in start.headers
    assert "bg_console_oidc" not in client.cookies
    callback = await client.get("/console/auth/callback", params={"code": "x", "state": "y"})
    assert callback.status_code == 404
    assert "bg_console" not in client.cookies


async def test_an_id_token_for_another_login_is_refused_by_its_nonce(
    with_oidc: Served, browser: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    """The state matches, but the provider issued the ID token for another nonce (a token
    injected from someone else's login): refused, and the state is spent."""
    caplog.set_level(logging.INFO, LOG)
    authorize_url = await to_provider(browser, with_oidc)
    url = urlparse(authorize_url)
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    assert query["nonce"] and query["nonce"] in browser.cookies["bg_console_oidc"]
    query["nonce"] = "a-nonce-this-browser-never-had"
    callback = await authorize(browser, url._replace(query=urlencode(query)).geturl(), OPERATOR)
    refused = await browser.get(callback)
    assert refused.status_code == 401, refused.text
    assert "bg_console" not in browser.cookies
    assert "bg_console_oidc" not in browser.cookies
    assert "refused OIDC login from 127.0.0.1: ID token nonce does not match" in caplog.text
    assert len(with_oidc.network.bridge.console.sessions) == 0


async def test_the_callback_address_is_the_public_url_behind_a_proxy(
    with_oidc: Served, browser: httpx.AsyncClient
) -> None:
    """Behind a TLS-terminating proxy the request says http://127.0.0.1:port; the provider
    must send the browser to the address the browser knows, and the state cookie is Secure."""
    console = with_oidc.network.bridge.console
    console.settings = replace(console.settings, public_url="https://ops.example.org")
    start = await browser.get(f"{with_oidc.base}console/auth/oidc")
    assert start.status_code == 303
    query = parse_qs(urlparse(start.headers["location"]).query)
    assert query["redirect_uri"] == ["https://ops.example.org/console/auth/callback"]
    cookie = start.headers["set-cookie"]
    assert "bg_console_oidc=" in cookie and "Secure" in cookie and "HttpOnly" in cookie
