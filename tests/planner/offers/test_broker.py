"""Offers, acceptance and sessions over HTTP, on the demo network with the embedded hub.

A network planner with sign-in (tokens from the real OIDC provider the suite starts) runs
beside the demo's bridge; the demo's notebook instance publishes a capacity of 8 cores and
32 GiB.  Each test drives the broker as a researcher's client would: ``POST /requests``,
``GET /offersets``, ``POST /sessions`` to accept or cancel, ``GET /sessions`` to follow it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from broadgauge.agents.notebook.embedded import EmbeddedHub
from broadgauge.demo import NOTEBOOKS, Network
from broadgauge.planner.network import parse_network_config
from broadgauge.planner.server import NetworkPlannerServer
from tests.agents.network import demo_network
from tests.backends.oidc import OidcProvider

__all__ = ["demo_network"]

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

AUDIENCE = "broker-test"
GUARD = 60.0
NOTEBOOK = {
    "kind": "https://www.purl.org/ivoa.net/Calycopis-openapi/schema/v1.0/kinds/executable/jupyter-notebook.yaml"
}
ACCEPT = {"kind": "uri:enum-value-update", "path": "phase", "value": "ACCEPTED"}
CANCEL = {"kind": "uri:enum-value-update", "path": "phase", "value": "CANCELLED"}


@pytest.fixture
async def broker(
    demo_network: Network, oidc_provider: OidcProvider
) -> AsyncIterator[NetworkPlannerServer]:
    config = parse_network_config(
        {
            "service": {"name": "broker test"},
            "auth": {"mode": "anonymous", "issuer": oidc_provider.issuer, "audience": AUDIENCE},
            "network": {"port": 0, "refresh": 0, "missing_account_ttl": 0},
        }
    )
    server = NetworkPlannerServer(demo_network.agents["bridge"], config)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=GUARD) as client:
        yield client


async def signed(provider: OidcProvider, sub: str, *users: str) -> dict[str, str]:
    issued = await asyncio.to_thread(
        provider.token, sub, AUDIENCE, {"openportal_users": list(users)}
    )
    return {"Authorization": f"Bearer {issued}"}


async def request_offers(
    http: httpx.AsyncClient, server: NetworkPlannerServer, body: object, headers: dict[str, str]
) -> dict[str, Any]:
    posted = await http.post(f"{server.url}requests", json=body, headers=headers)
    assert posted.status_code == 303, posted.text
    assert posted.headers["location"].startswith(f"{server.url}offersets/")
    fetched = await http.get(posted.headers["location"], headers=headers)
    assert fetched.status_code == 200
    return dict(fetched.json())


def hub(network: Network) -> EmbeddedHub:
    notebooks = network.roles["jupyter"].notebooks
    assert notebooks is not None and isinstance(notebooks.hub, EmbeddedHub)
    return notebooks.hub


def audit_lines(network: Network) -> list[dict[str, Any]]:
    text = (network.root / "bridge" / "audit.jsonl").read_text()
    return [e for e in map(json.loads, text.splitlines()) if e["action"] == "session"]


async def test_a_newcomer_accepts_a_notebook_offer_and_gets_a_running_notebook(
    demo_network: Network,
    broker: NetworkPlannerServer,
    oidc_provider: OidcProvider,
    http: httpx.AsyncClient,
) -> None:
    carol = await signed(oidc_provider, "carol", "carol.physics.portal")
    body = {"executable": NOTEBOOK, "compute": {"cores": {"min": 2}, "memory": {"min": 4}}}
    offerset = await request_offers(http, broker, body, carol)
    assert offerset["result"] == "YES"
    offers = offerset["offers"]
    assert offers and {o["site"] for o in offers} == {NOTEBOOKS}
    assert all(o["phase"] == "OFFERED" and o["compute"]["cores"]["min"] == 2 for o in offers)
    assert not await hub(demo_network).user_exists("carol.physics")  # nothing provisioned yet

    chosen = offers[0]["meta"]["url"]
    accepted = await http.post(chosen, json=ACCEPT, headers=carol)
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["phase"] == "ACCEPTED"
    assert broker.broker is not None
    await broker.broker.wait_idle()

    session = (await http.get(chosen, headers=carol)).json()
    assert session["phase"] == "AVAILABLE", session
    [connector] = session["connectors"]
    assert connector["location"] == "https://jupyter.instance.example/user/carol.physics/"
    assert await hub(demo_network).user_exists("carol.physics")
    assert [s.user for s in await hub(demo_network).servers()] == ["carol.physics"]
    for sibling in offers[1:]:
        assert (await http.get(sibling["meta"]["url"], headers=carol)).json()["phase"] == "REJECTED"

    cancelled = await http.post(chosen, json=CANCEL, headers=carol)
    assert cancelled.status_code == 200
    assert cancelled.json()["phase"] == "COMPLETED"
    assert await hub(demo_network).servers() == []
    assert await hub(demo_network).user_exists("carol.physics")  # accounts outlive sessions
    messages = " ".join(m["message"] for m in cancelled.json()["meta"]["messages"])
    assert "provisioned carol.physics.portal" in messages and "is kept" in messages
    # Each transition is in the bridge's audit log, with who asked.
    trail = [(e["peer"], e["operation"]) for e in audit_lines(demo_network)]
    session_id = chosen.rsplit("/", 1)[-1]
    assert ("carol", f"session {session_id} OFFERED -> ACCEPTED") in trail
    assert ("carol", f"session {session_id} AVAILABLE -> RELEASING") in trail
    assert any(op == f"session {session_id} PREPARING -> AVAILABLE" for _, op in trail)


async def test_offers_are_reservations_and_never_overbook(
    broker: NetworkPlannerServer, oidc_provider: OidcProvider, http: httpx.AsyncClient
) -> None:
    # All 8 cores for two hours: one start fits the default 5-minute window.
    body = {"executable": NOTEBOOK, "compute": {"cores": {"min": 8}, "memory": {"min": 1}}}
    first = await request_offers(
        http, broker, body, await signed(oidc_provider, "dan", "dan.physics.portal")
    )
    assert first["result"] == "YES" and len(first["offers"]) == 1
    erin = await signed(oidc_provider, "erin", "erin.physics.portal")
    second = await request_offers(http, broker, body, erin)
    assert second["result"] == "NO"
    reasons = " ".join(m["message"] for m in second["meta"]["messages"])
    assert "no free capacity" in reasons
    # Once the first offer lapses, its capacity is free again.
    assert broker.broker is not None
    clock = broker.broker.clock
    broker.broker.clock = lambda: clock() + 301
    lapsed = await http.get(first["offers"][0]["meta"]["url"], headers=erin)
    assert lapsed.status_code == 404  # not erin's: indistinguishable from no such session
    third = await request_offers(http, broker, body, erin)
    assert third["result"] == "YES"


async def test_expired_offers_cannot_be_accepted(
    broker: NetworkPlannerServer, oidc_provider: OidcProvider, http: httpx.AsyncClient
) -> None:
    fred = await signed(oidc_provider, "fred", "fred.physics.portal")
    offerset = await request_offers(http, broker, {"executable": NOTEBOOK}, fred)
    url = offerset["offers"][0]["meta"]["url"]
    assert broker.broker is not None
    clock = broker.broker.clock
    broker.broker.clock = lambda: clock() + 301
    assert (await http.get(url, headers=fred)).json()["phase"] == "EXPIRED"
    refused = await http.post(url, json=ACCEPT, headers=fred)
    assert refused.status_code == 409
    assert "EXPIRED" in refused.json()["reason"]


async def test_concurrent_accepts_of_siblings_have_one_winner(
    broker: NetworkPlannerServer, oidc_provider: OidcProvider, http: httpx.AsyncClient
) -> None:
    gus = await signed(oidc_provider, "gus", "gus.physics.portal")
    body = {
        "executable": NOTEBOOK,
        "schedule": {"requested": {"duration": "PT1H"}},
    }
    # A window of 3 hours from now gives several starts, one hour apart.
    from datetime import UTC, datetime, timedelta

    start = datetime.now(UTC) + timedelta(minutes=1)
    body["schedule"]["requested"]["start"] = f"{start:%Y-%m-%dT%H:%M:%SZ}/PT3H"  # type: ignore[index]
    offerset = await request_offers(http, broker, body, gus)
    urls = [o["meta"]["url"] for o in offerset["offers"]]
    assert len(urls) >= 3
    answers = await asyncio.gather(*(http.post(u, json=ACCEPT, headers=gus) for u in urls))
    assert sorted(a.status_code for a in answers) == [200] + [409] * (len(urls) - 1)
    assert broker.broker is not None
    await broker.broker.wait_idle()
    phases = [(await http.get(u, headers=gus)).json()["phase"] for u in urls]
    assert sorted(phases) == ["AVAILABLE"] + ["REJECTED"] * (len(urls) - 1)


async def test_only_the_requester_sees_or_changes_their_records(
    broker: NetworkPlannerServer, oidc_provider: OidcProvider, http: httpx.AsyncClient
) -> None:
    hal = await signed(oidc_provider, "hal", "hal.physics.portal")
    ivy = await signed(oidc_provider, "ivy", "ivy.physics.portal")
    posted = await http.post(f"{broker.url}requests", json={"executable": NOTEBOOK}, headers=hal)
    offerset_url = posted.headers["location"]
    session_url = (await http.get(offerset_url, headers=hal)).json()["offers"][0]["meta"]["url"]
    for url in (offerset_url, session_url):
        assert (await http.get(url, headers=ivy)).status_code == 404
    assert (await http.post(session_url, json=ACCEPT, headers=ivy)).status_code == 404
    assert (await http.get(f"{broker.url}sessions/no-such-uuid", headers=hal)).status_code == 404
    # Anonymous callers may ask (this planner allows it) but not accept.
    anonymous = await http.post(
        f"{broker.url}requests",
        json={"executable": NOTEBOOK},
        headers={"Prefer": "return=representation"},
    )
    assert anonymous.status_code == 200
    assert anonymous.json()["result"] == "NO"  # the hub's rule needs an account
    assert (await http.post(session_url, json=ACCEPT)).status_code == 404
    direct = await http.post(f"{broker.url}direct", json={"executable": NOTEBOOK})
    assert direct.status_code == 401


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"executable": {"kind": "pdp-11"}}, 400, "unknown executable kind"),
        (
            {"executable": NOTEBOOK, "compute": {"cores": {"min": 4, "max": 2}}},
            400,
            "compute.cores",
        ),
        ([1, 2], 400, "object"),
    ],
)
async def test_malformed_requests_get_a_clear_400(
    broker: NetworkPlannerServer,
    oidc_provider: OidcProvider,
    http: httpx.AsyncClient,
    *,
    body: object,
    status: int,
    fragment: str,
) -> None:
    jan = await signed(oidc_provider, "jan", "jan.physics.portal")
    answer = await http.post(f"{broker.url}requests", json=body, headers=jan)
    assert answer.status_code == status
    assert fragment in answer.text


async def test_bad_bodies_and_updates_change_nothing(
    broker: NetworkPlannerServer, oidc_provider: OidcProvider, http: httpx.AsyncClient
) -> None:
    kim = await signed(oidc_provider, "kim", "kim.physics.portal")
    not_json = await http.post(
        f"{broker.url}requests", content=b"{", headers={**kim, "Content-Type": "application/json"}
    )
    assert not_json.status_code == 400
    form = await http.post(f"{broker.url}requests", data={"a": "b"}, headers=kim)
    assert form.status_code == 415
    huge = await http.post(
        f"{broker.url}requests",
        content=b" " * 70_000,
        headers={**kim, "Content-Type": "application/json"},
    )
    assert huge.status_code == 413
    # Minima above every site: NO, with a message that says so.
    big = await request_offers(
        http, broker, {"executable": NOTEBOOK, "compute": {"cores": {"min": 64}}}, kim
    )
    assert big["result"] == "NO"
    assert "above its capacity" in " ".join(m["message"] for m in big["meta"]["messages"])
    offerset = await request_offers(http, broker, {"executable": NOTEBOOK}, kim)
    url = offerset["offers"][0]["meta"]["url"]
    for update in ({"kind": "uri:enum-value-update", "path": "phase", "value": "RUNNING"}, {}):
        assert (await http.post(url, json=update, headers=kim)).status_code == 400
    assert (await http.get(url, headers=kim)).json()["phase"] == "OFFERED"
    assert (await http.post(url, json=CANCEL, headers=kim)).json()["phase"] == "CANCELLED"
    again = await http.post(url, json=ACCEPT, headers=kim)
    assert again.status_code == 409  # an illegal transition
    assert (await http.get(url, headers=kim)).json()["phase"] == "CANCELLED"


async def test_direct_accepts_the_first_offer(
    demo_network: Network,
    broker: NetworkPlannerServer,
    oidc_provider: OidcProvider,
    http: httpx.AsyncClient,
) -> None:
    lea = await signed(oidc_provider, "lea", "lea.physics.portal")
    direct = await http.post(f"{broker.url}direct", json={"executable": NOTEBOOK}, headers=lea)
    assert direct.status_code == 303
    assert broker.broker is not None
    await broker.broker.wait_idle()
    session = (await http.get(direct.headers["location"], headers=lea)).json()
    assert session["phase"] == "AVAILABLE"
    assert await hub(demo_network).user_exists("lea.physics")
    nothing = await http.post(
        f"{broker.url}direct",
        json={"executable": NOTEBOOK, "compute": {"cores": {"min": 100}}},
        headers=lea,
    )
    assert nothing.status_code == 400
    assert "above its capacity" in nothing.text


async def test_a_session_no_agent_can_start_fails_with_the_reason(
    demo_network: Network,
    broker: NetworkPlannerServer,
    oidc_provider: OidcProvider,
    http: httpx.AsyncClient,
) -> None:
    # The cluster says it takes containers; nothing in the network can start one.
    demo_network.agents["instance"].planner_rules.publish(
        {
            "site": {"capacity": {"cores": 4, "memory": 8}},
            "rules": [
                {
                    "name": "containers",
                    "tasktypes": ["docker-container"],
                    "servicetype": "docker",
                    "serviceinfo": {"endpoint": "https://cluster.example/"},
                }
            ],
        }
    )
    max_ = await signed(oidc_provider, "max", "max.physics.portal")
    body = {"executable": {"kind": "docker-container", "image": "alpine:3"}}
    offerset = await request_offers(http, broker, body, max_)
    assert offerset["result"] == "YES"
    url = offerset["offers"][0]["meta"]["url"]
    assert (await http.post(url, json=ACCEPT, headers=max_)).status_code == 200
    assert broker.broker is not None
    await broker.broker.wait_idle()
    session = (await http.get(url, headers=max_)).json()
    assert session["phase"] == "FAILED"
    [error] = [m for m in session["meta"]["messages"] if m["level"] == "ERROR"]
    assert "starts only jupyter-notebook sessions" in error["message"]
    # Provisioning happened (the account is the site's), and the capacity is released.
    again = await request_offers(http, broker, {**body, "compute": {"cores": {"min": 4}}}, max_)
    assert again["result"] == "YES"


async def test_the_openapi_document_lists_the_broker(
    broker: NetworkPlannerServer, http: httpx.AsyncClient
) -> None:
    document = (await http.get(f"{broker.url}openapi.json")).json()
    for path in ("/requests", "/direct", "/offersets/{uuid}", "/sessions/{uuid}", "/accepts"):
        assert path in document["paths"], path
    assert set(document["paths"]["/sessions/{uuid}"]) == {"get", "post"}
