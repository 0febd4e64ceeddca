"""The console over real HTTP on the demo network's bridge: login, refusals, every page."""

from __future__ import annotations

import logging

import httpx
import pytest

from broadgauge.bridge.console.auth import CookieProblem
from broadgauge.runtime.agent import JobFailed

from .conftest import PASSWORD, USER, Served, csrf_of, log_in

PAGES = ["/console/", "/console/jobs", "/console/boards", "/console/audit", "/console/planner"]
DATA = [
    "/console/api/network",
    "/console/api/jobs",
    "/console/api/boards",
    "/console/api/audit",
    "/console/api/planner",
]


async def test_without_a_session_pages_redirect_and_data_is_refused(
    client: httpx.AsyncClient, served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    job = "00000000-0000-4000-8000-000000000000"
    for path in [*PAGES, f"/console/jobs/{job}"]:
        response = await client.get(path)
        assert response.status_code == 303, path
        assert response.headers["location"].startswith("/console/login?next=")
    for path in [*DATA, f"/console/api/jobs/{job}", "/console/?partial=1"]:
        response = await client.get(path)
        assert response.status_code == 401, path
        assert "agent" not in response.text


async def test_login_sets_a_strict_httponly_cookie_and_pages_answer(
    operator: httpx.AsyncClient,
) -> None:
    cookie = next(c for c in operator.cookies.jar if c.name == "bg_console")
    assert cookie.path == "/console"
    assert not cookie.secure  # plain http on loopback
    page = await operator.get("/console/")
    assert page.status_code == 200
    assert "script-src 'nonce-" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-store"
    for path in PAGES:
        response = await operator.get(path)
        assert response.status_code == 200, (path, response.text[:300])
        assert "<main" in response.text and "http://" not in response.text.split("<main")[0]
    for path in DATA:
        response = await operator.get(path)
        assert response.status_code == 200, path
        response.json()


async def test_the_set_cookie_header_flags(client: httpx.AsyncClient) -> None:
    response = await log_in(client)
    header = next(h for h in response.headers.get_list("set-cookie") if h.startswith("bg_console="))
    flags = {part.strip().lower() for part in header.split(";")}
    assert {"httponly", "samesite=strict", "path=/console"} <= flags


async def test_the_network_page_lists_every_agent(
    operator: httpx.AsyncClient, served: Served
) -> None:
    agents = (await operator.get("/console/api/network")).json()["agents"]
    assert {a["name"] for a in agents} == set(served.network.agents)
    assert all(a["status"] == "up" for a in agents)
    instance = next(a for a in agents if a["name"] == "instance")
    assert instance["role"] and instance["version"].startswith("templemeads")
    assert {link["peer"] for link in instance["links"]} == {
        "platform",
        "account",
        "filesystem",
        "scheduler",
    }
    assert instance["errors_hour"] == 0
    html = (await operator.get("/console/")).text
    for name in served.network.agents:
        assert f'data-agent="{name}"' in html


async def test_a_job_and_its_trace_hop_by_hop(operator: httpx.AsyncClient, served: Served) -> None:
    await served.network.submit("add_project physics.portal")
    await served.network.submit("add_user alice.physics.portal")
    await served.network.bridge.console.gatherer.refresh()
    jobs = (await operator.get("/console/api/jobs")).json()
    add_user = next(j for j in jobs if j["instruction"] == "add_user alice.physics.portal")
    assert add_user["state"] == "complete"
    assert add_user["destination"] == "portal.provider.platform.instance"
    assert add_user["hops"][:5] == ["bridge", "portal", "provider", "platform", "instance"]
    trace = (await operator.get(f"/console/api/jobs/{add_user['id']}")).json()
    agents = {event["agent"] for event in trace["events"]}
    assert {"bridge", "portal", "instance", "account", "filesystem", "scheduler"} <= agents
    assert trace["jobs"][0]["result"]  # the wrapper's result, from the bridge's board
    page = await operator.get(f"/console/jobs/{add_user['id']}")
    assert page.status_code == 200 and "Trace, hop by hop" in page.text
    missing = await operator.get("/console/jobs/00000000-0000-4000-8000-000000000000")
    assert missing.status_code == 404
    assert (await operator.get("/console/api/jobs/not-a-uuid")).status_code == 404


async def test_a_failed_job_is_shown_as_an_error(
    operator: httpx.AsyncClient, served: Served
) -> None:
    with pytest.raises(JobFailed):
        await served.network.submit("remove_project nosuch.portal")
    await served.network.bridge.console.gatherer.refresh()
    jobs = (await operator.get("/console/api/jobs")).json()
    failed = next(j for j in jobs if j["instruction"] == "remove_project nosuch.portal")
    assert failed["state"] == "error"


async def test_boards_audit_and_planner(operator: httpx.AsyncClient, served: Served) -> None:
    await served.network.submit("add_project physics.portal")
    boards = (await operator.get("/console/api/boards")).json()
    portal = next(b for b in boards if b["peer"].startswith("portal@"))
    assert portal["connected"] and any(
        j["instruction"].startswith("submit ") for j in portal["jobs"]
    )
    audit = (await operator.get("/console/api/audit")).json()
    assert audit["verified"]["ok"] and audit["entries"]
    remote = (await operator.get("/console/api/audit?agent=instance")).json()
    assert remote["recent_trace"] is not None
    # The planner page: the published rules, and the answers of the planner beside the bridge.
    from broadgauge.planner.answers import Task

    await served.network.planner.planner.answer(Task("jupyter-notebook"), None)
    planner = (await operator.get("/console/api/planner")).json()
    assert any(
        p["destination"] == "portal.provider.notebooks.jupyter" for p in planner["published"]
    )
    assert planner["answers"] and planner["answers"][0]["tasktype"] == "jupyter-notebook"


async def test_wrong_passwords_are_refused_then_rate_limited(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "broadgauge.bridge.console")
    for _ in range(5):
        response = await log_in(client, password="wrong")
        assert response.status_code == 401
    limited = await log_in(client)  # even the right password waits now
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) > 0
    assert "rate limited" in caplog.text and "failed login for 'ops'" in caplog.text


async def test_login_without_the_csrf_token_is_refused(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    await client.get("/console/login")
    response = await client.post("/console/login", data={"user": USER, "password": PASSWORD})
    assert response.status_code == 403
    form = await client.get("/console/login")
    client.cookies.delete("bg_console_login")  # a token from another browser's form
    response = await client.post(
        "/console/login", data={"user": USER, "password": PASSWORD, "csrf": csrf_of(form.text)}
    )
    assert response.status_code == 403
    assert "CSRF" in caplog.text


@pytest.mark.parametrize("how", ["forged", "tampered", "expired"])
async def test_bad_cookies_are_refused_and_logged(
    how: str, operator: httpx.AsyncClient, served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "broadgauge.bridge.console")
    cookie = operator.cookies["bg_console"]
    console = served.network.bridge.console
    if how == "forged":
        cookie = "x" * 43 + "." + "0" * 32
    elif how == "tampered":
        cookie = cookie[:-1] + ("a" if cookie[-1] != "a" else "b")
    else:
        console.sessions.idle = 0.0
    operator.cookies.clear()
    operator.cookies.set("bg_console", cookie, domain="127.0.0.1", path="/console")
    page = await operator.get("/console/jobs")
    assert page.status_code == 303 and page.headers["location"].startswith("/console/login")
    data = await operator.get("/console/api/network")
    assert data.status_code == 401
    expected = CookieProblem.EXPIRED if how == "expired" else CookieProblem.FORGED
    assert f"refused GET /console/jobs from 127.0.0.1: {expected.value}" in caplog.text


async def test_logout_needs_the_sessions_csrf_token_and_ends_it(
    operator: httpx.AsyncClient,
) -> None:
    page = await operator.get("/console/")
    refused = await operator.post("/console/logout", data={"csrf": "wrong"})
    assert refused.status_code == 403
    assert (await operator.get("/console/")).status_code == 200
    cookie = operator.cookies["bg_console"]
    done = await operator.post("/console/logout", data={"csrf": csrf_of(page.text)})
    assert done.status_code == 303 and done.headers["location"] == "/console/login"
    operator.cookies.set("bg_console", cookie, domain="127.0.0.1", path="/console")
    assert (await operator.get("/console/")).status_code == 303  # the old cookie is dead


async def test_no_write_methods(operator: httpx.AsyncClient) -> None:
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        for path in ["/console/", "/console/jobs", "/console/api/network", "/console/nosuch"]:
            response = await operator.request(method, path)
            assert response.status_code == 405, (method, path)
    assert (await operator.request("PUT", "/console/login")).status_code == 405


async def test_next_after_login_stays_on_the_console(client: httpx.AsyncClient) -> None:
    form = await client.get("/console/login?next=https://evil.example/")
    assert "evil" not in form.text
    response = await client.post(
        "/console/login",
        data={
            "user": USER,
            "password": PASSWORD,
            "csrf": csrf_of(form.text),
            "next": "//evil.example/",
        },
    )
    assert response.headers["location"] == "/console/"


async def test_the_bridge_api_is_untouched(client: httpx.AsyncClient) -> None:
    assert (await client.get("/")).text == "null"
    assert (await client.get("/openapi.json")).status_code == 200


async def _stop(served: Served, name: str) -> None:
    """Stop one agent as if it had died."""
    network = served.network
    await network.roles[name].stop()
    await network.agents[name].stop()


async def test_a_stopped_agent_is_down_and_those_below_it_unreachable(
    operator: httpx.AsyncClient, served: Served
) -> None:
    await operator.get("/console/api/network")  # the console has seen everyone
    await _stop(served, "platform")
    await served.network.bridge.console.gatherer.refresh()
    agents = {a["name"]: a for a in (await operator.get("/console/api/network")).json()["agents"]}
    assert agents["platform"]["status"] == "down"
    for name in ("instance", "account", "filesystem", "scheduler"):
        assert agents[name]["status"] == "unreachable", name
    provider = agents["provider"]
    assert {"peer": "platform", "up": False} in provider["links"]
    html = (await operator.get("/console/")).text
    assert 'data-agent="platform" data-status="down"' in html
