"""Requests the bridge must refuse, each with its status and a JSON message; it keeps serving."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import httpx
import pytest

from broadgauge.bridge import BridgeServer
from broadgauge.bridge.app import RENDERED_JOBS
from broadgauge.bridge.limits import TrustedProxies
from broadgauge.jobs.job import Job

from .signing import call, signed


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as client:
        yield client


async def still_serving(http: httpx.AsyncClient, bridge: BridgeServer) -> None:
    reply = await call(http, bridge.url, bridge.settings.key, "get", "get_portal")
    assert reply.status_code == 200 and reply.json() == "portal"


def message(reply: httpx.Response) -> str:
    assert reply.headers["content-type"].startswith("application/json")
    text = reply.json()["message"]
    assert isinstance(text, str)
    return text


async def test_bad_signature(http: httpx.AsyncClient, bridge: BridgeServer) -> None:
    reply = await call(http, bridge.url, b"\x01" * 32, "get", "health")
    assert reply.status_code == 401 and message(reply) == "API key is invalid!"
    # Signed for another function: the function name is covered.
    headers = signed(bridge.settings.key, "get", "health")
    reply = await http.get(f"{bridge.url}get_portal", headers=headers)
    assert reply.status_code == 401
    await still_serving(http, bridge)


async def test_missing_headers(http: httpx.AsyncClient, bridge: BridgeServer) -> None:
    assert (await http.get(f"{bridge.url}health")).status_code == 401
    headers = signed(bridge.settings.key, "get", "health")
    del headers["Date"]
    assert (await http.get(f"{bridge.url}health", headers=headers)).status_code == 401
    headers = signed(bridge.settings.key, "get", "health")
    headers["Date"] = "not a date"
    assert (await http.get(f"{bridge.url}health", headers=headers)).status_code == 401


@pytest.mark.parametrize("skew", [-6.5, 6.5, -3600])
async def test_stale_or_future_date(
    http: httpx.AsyncClient, bridge: BridgeServer, skew: float
) -> None:
    reply = await call(
        http, bridge.url, bridge.settings.key, "get", "health", now=time.time() + skew
    )
    assert reply.status_code == 401
    assert message(reply) == "Date is outside acceptable time window"
    await still_serving(http, bridge)


async def test_reused_nonce(http: httpx.AsyncClient, bridge: BridgeServer) -> None:
    key = bridge.settings.key
    nonce = "123e4567-e89b-42d3-a456-426614174000"
    first = await call(http, bridge.url, key, "get", "get_portal", nonce=nonce)
    assert first.status_code == 200
    again = await call(http, bridge.url, key, "get", "get_portal", nonce=nonce)
    assert again.status_code == 401
    assert message(again) == "Nonce has already been used (replay attack)"
    await still_serving(http, bridge)


async def test_forged_request_does_not_burn_a_nonce(
    http: httpx.AsyncClient, bridge: BridgeServer
) -> None:
    nonce = "0c3e1a02-5b8e-4c1f-9d7e-1f2a3b4c5d6e"
    forged = await call(http, bridge.url, b"\x02" * 32, "get", "get_portal", nonce=nonce)
    assert forged.status_code == 401
    genuine = await call(http, bridge.url, bridge.settings.key, "get", "get_portal", nonce=nonce)
    assert genuine.status_code == 200


async def test_no_nonce_is_refused_unless_allowed(
    http: httpx.AsyncClient, bridge: BridgeServer
) -> None:
    # OpenPortal accepts it (and cannot then detect a replay); both clients send a nonce.
    reply = await call(http, bridge.url, bridge.settings.key, "get", "get_portal", nonce=None)
    assert reply.status_code == 401 and "Missing X-Nonce" in message(reply)
    bridge.api.verifier.allow_missing_nonce = True
    reply = await call(http, bridge.url, bridge.settings.key, "get", "get_portal", nonce=None)
    assert reply.status_code == 200


async def test_rate_limit(http: httpx.AsyncClient, bridge: BridgeServer) -> None:
    limiter = bridge.api.limiter
    limiter.limit, limiter.period = 5, 60.0
    statuses = [
        (await call(http, bridge.url, bridge.settings.key, "get", "get_portal")).status_code
        for _ in range(8)
    ]
    assert statuses.count(200) == 5 and statuses[-1] == 429
    refused = await call(http, bridge.url, bridge.settings.key, "get", "get_portal")
    assert refused.status_code == 429 and "rate limit" in message(refused)
    # X-Forwarded-For from an untrusted peer does not buy a new bucket.
    headers = signed(bridge.settings.key, "get", "get_portal")
    headers["X-Forwarded-For"] = "203.0.113.9"
    assert (await http.get(f"{bridge.url}get_portal", headers=headers)).status_code == 429
    # From a trusted proxy it names the client, who has a bucket of its own.
    bridge.api.proxies = TrustedProxies(["127.0.0.1/32"])
    headers = signed(bridge.settings.key, "get", "get_portal")
    headers["X-Forwarded-For"] = "203.0.113.9"
    assert (await http.get(f"{bridge.url}get_portal", headers=headers)).status_code == 200
    limiter.limit, limiter.period = 10_000, 10.0
    bridge.api.proxies = TrustedProxies()
    limiter._windows.clear()
    await still_serving(http, bridge)


async def test_oversized_body(http: httpx.AsyncClient, bridge: BridgeServer) -> None:
    bridge.api.max_body = 1000
    body = b'{"command":"' + b"x" * 2000 + b'"}'
    reply = await call(http, bridge.url, bridge.settings.key, "post", "run", body)
    assert reply.status_code == 413 and "exceeds" in message(reply)

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it streams
        for _ in range(4):
            yield b"x" * 400

    headers = signed(bridge.settings.key, "post", "run", b"x" * 1600)
    reply = await http.post(f"{bridge.url}run", content=chunks(), headers=headers)
    assert reply.status_code == 413
    await still_serving(http, bridge)


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("portal.provider add_user not-an-identifier", "not-an-identifier"),
        ("portal.x create_project p.portal", "create_project"),
        ("portal.x submit", "submit"),
        ("portal.provider add_user alice.physics.otherportal", "can only be issued via the portal"),
        ("nonsense", ""),
    ],
)
async def test_unparseable_instruction_is_400(
    http: httpx.AsyncClient, bridge: BridgeServer, command: str, expected: str
) -> None:
    body = ('{"command":"' + command + '"}').encode()
    reply = await call(http, bridge.url, bridge.settings.key, "post", "run", body)
    assert reply.status_code == 400
    assert expected in message(reply)
    await still_serving(http, bridge)


async def test_bad_json_and_unknown_ids(http: httpx.AsyncClient, bridge: BridgeServer) -> None:
    key = bridge.settings.key
    reply = await call(http, bridge.url, key, "post", "run", b"{not json")
    assert reply.status_code == 400
    unknown = b'"00000000-0000-4000-8000-000000000000"'
    for function in ("fetch_job", "fetch_notification"):
        reply = await call(http, bridge.url, key, "post", function, unknown)
        assert reply.status_code == 404, function
    reply = await call(
        http, bridge.url, key, "post", "status", b'{"job":"00000000-0000-4000-8000-000000000000"}'
    )
    assert reply.status_code == 404
    reply = await call(http, bridge.url, key, "post", "fetch_job", b'"not-a-uuid"')
    assert reply.status_code == 400


async def test_unknown_path_and_method_are_json(
    http: httpx.AsyncClient, bridge: BridgeServer
) -> None:
    reply = await http.get(f"{bridge.url}no_such_thing")
    assert reply.status_code == 404 and message(reply)
    reply = await http.get(f"{bridge.url}run")
    assert reply.status_code == 405 and message(reply)
    assert reply.headers["allow"] == "POST"
    root = await http.get(bridge.url)
    assert root.status_code == 200 and root.json() is None
    document = await http.get(f"{bridge.url}openapi.json")
    assert document.status_code == 200 and "/send_result" in document.json()["paths"]
    docs = await http.get(f"{bridge.url}docs")
    assert docs.status_code == 200 and "openapi.json" in docs.text


async def test_unknown_agent_is_404(http: httpx.AsyncClient, bridge: BridgeServer) -> None:
    body = b'{"destination":"nowhere"}'
    reply = await call(http, bridge.url, bridge.settings.key, "post", "diagnostics", body)
    assert reply.status_code == 404 and "nowhere" in message(reply)


async def test_network_failure_is_500(
    http: httpx.AsyncClient, bridge: BridgeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def no_portal() -> object:
        raise RuntimeError("bridge has no connected Portal agent")

    monkeypatch.setattr(bridge.runtime, "portal", no_portal)
    reply = await call(http, bridge.url, bridge.settings.key, "get", "get_portal")
    assert reply.status_code == 500
    assert message(reply) == "Something went wrong: bridge has no connected Portal agent"
    monkeypatch.undo()
    await still_serving(http, bridge)


async def test_status_renderings_are_bounded_and_keep_the_latest_polled(
    bridge: BridgeServer,
) -> None:
    api = bridge.api
    jobs = [
        Job.parse("bridge.portal submit x.y.z add_project p.portal", now=0.0)
        for _ in range(RENDERED_JOBS)
    ]
    for job in jobs:
        assert api._job_json(job) == job.to_json()
    api._job_json(jobs[0])  # polled again: now the latest
    extra = Job.parse("bridge.portal submit x.y.z add_project p.portal", now=0.0)
    api._job_json(extra)
    assert len(api._rendered) == RENDERED_JOBS
    assert jobs[0].id in api._rendered and extra.id in api._rendered
    assert jobs[1].id not in api._rendered  # the least recently polled went
