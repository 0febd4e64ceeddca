"""The whole story with real parts: a newcomer asks for a notebook session and gets one.

Real OIDC provider (the researcher's token), real JupyterHub (the notebook), real slapd (the
account).  The demo's network, plus an account agent under the notebook instance, which makes
hub users through the site's LDAP (``notebook-accounts = "agent"``), as a hub that
authenticates against the site's accounts does.  The cluster instance publishes a notebook rule
too, so the offers come from two sites.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from ldap3 import Connection, Server

from broadgauge.demo import DEMO_TOPOLOGY, NOTEBOOKS, PATH, Network, start_network, use_jupyterhub
from broadgauge.planner.network import parse_network_config
from broadgauge.planner.server import NetworkPlannerServer
from broadgauge.runtime.config import AgentConfig
from broadgauge.site.topology import parse_topology
from broadgauge.wire import SimpleEncryption
from tests.backends.jupyterhub import JupyterHub
from tests.backends.oidc import OidcProvider
from tests.backends.slapd import Slapd, slapd

__all__ = ["slapd"]

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

AUDIENCE = "story-test"
GUARD = 120.0
NOTEBOOK = {"kind": "jupyter-notebook"}
ACCEPT = {"kind": "uri:enum-value-update", "path": "phase", "value": "ACCEPTED"}
CANCEL = {"kind": "uri:enum-value-update", "path": "phase", "value": "CANCELLED"}
#: The demo's site, with an account agent for the hub.
STORY_TOPOLOGY = parse_topology(
    DEMO_TOPOLOGY
    + """
[[agent]]
name = "hub-account"
role = "account"
host = "loopback"

[[link]]
dials = "hub-account"
listens = "jupyter"
""",
    "the story's topology",
    any_port=True,
)
CLUSTER_RULES = {
    "site": {"capacity": {"cores": 4, "memory": 16}},
    "rules": [
        {
            "name": "notebooks-on-the-cluster",
            "tasktypes": ["jupyter-notebook"],
            "servicetype": "jupyter-hub",
            "serviceinfo": {"endpoint": "https://cluster.example/jupyter/"},
        }
    ],
}


@pytest.fixture
async def story(
    tmp_path: Path, slapd: Slapd, jupyterhub: JupyterHub, oidc_provider: OidcProvider
) -> AsyncIterator[tuple[Network, NetworkPlannerServer, Connection, str]]:
    base = f"ou=story{uuid.uuid4().hex[:10]},{slapd.suffix}"
    ldap = Connection(Server(slapd.url), slapd.admin_dn, slapd.password, auto_bind=True)
    ldap.add(base, ["organizationalUnit"], {"ou": base.split(",", maxsplit=1)[0][3:]})
    for ou in ("people", "groups"):
        ldap.add(f"ou={ou},{base}", ["organizationalUnit"], {"ou": ou})
    hub = use_jupyterhub(jupyterhub.url, jupyterhub.token)

    def configure(name: str, config: AgentConfig) -> AgentConfig:
        if name == "jupyter":
            return hub(name, config).with_extra("notebook-accounts", "agent")
        if name == "hub-account":
            config = replace(config, service=replace(config.service, encryption=SimpleEncryption()))
            for key, value in {
                "account-backend": "ldap",
                "ldap-url": slapd.url,
                "ldap-bind-dn": slapd.admin_dn,
                "ldap-base-dn": base,
            }.items():
                config = config.with_extra(key, value)
            return config.with_secret("ldap-password", slapd.password)
        return config

    network = await start_network(tmp_path, configure=configure, topology=STORY_TOPOLOGY)
    network.agents["instance"].planner_rules.publish(CLUSTER_RULES)
    config = parse_network_config(
        {
            "service": {"name": "the story's broker"},
            "auth": {"mode": "required", "issuer": oidc_provider.issuer, "audience": AUDIENCE},
            "network": {"port": 0, "refresh": 0, "missing_account_ttl": 0},
        }
    )
    server = NetworkPlannerServer(network.agents["bridge"], config)
    await server.start()
    try:
        yield network, server, ldap, base
    finally:
        await server.stop()
        await network.stop()
        ldap.unbind()


async def test_a_newcomer_gets_a_notebook_session_end_to_end(
    story: tuple[Network, NetworkPlannerServer, Connection, str],
    jupyterhub: JupyterHub,
    oidc_provider: OidcProvider,
) -> None:
    _, server, ldap, base = story
    user = f"n{uuid.uuid4().hex[:6]}"
    identity, uid = f"{user}.physics.portal", f"{user}.physics"
    token = await asyncio.to_thread(
        oidc_provider.token, user, AUDIENCE, {"openportal_users": [identity]}
    )
    me = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(timeout=GUARD) as http:
        # 1. A newcomer requests a notebook session; 2. offers come from two sites.
        posted = await http.post(f"{server.url}requests", json={"executable": NOTEBOOK}, headers=me)
        assert posted.status_code == 303, posted.text
        offerset = (await http.get(posted.headers["location"], headers=me)).json()
        assert offerset["result"] == "YES"
        sites = {offer["site"] for offer in offerset["offers"]}
        assert sites == {NOTEBOOKS, PATH}
        ldap.search(base, f"(uid={uid})")
        assert ldap.response == []  # offers provision nothing

        # 3. Accepting the hub's offer rejects its siblings, the other site's among them.
        [chosen] = [o["meta"]["url"] for o in offerset["offers"] if o["site"] == NOTEBOOKS]
        accepted = await http.post(chosen, json=ACCEPT, headers=me)
        assert accepted.status_code == 200 and accepted.json()["phase"] == "ACCEPTED"
        for offer in offerset["offers"]:
            if offer["meta"]["url"] != chosen:
                phase = (await http.get(offer["meta"]["url"], headers=me)).json()["phase"]
                assert phase == "REJECTED"
        assert server.broker is not None
        await server.broker.wait_idle()
        session = (await http.get(chosen, headers=me)).json()
        assert session["phase"] == "AVAILABLE", session["meta"]["messages"]

        # 4. The account is in slapd, made through the network by the site's account agent.
        ldap.search(base, f"(uid={uid})", attributes=["uid"])
        assert [entry["attributes"]["uid"] for entry in ldap.response] == [[uid]]

        # 5. The notebook runs on the hub, and the connector's URL answers.
        [connector] = session["connectors"]
        assert connector["location"] == f"{jupyterhub.url}user/{uid}/"
        hub_auth = {"Authorization": f"token {jupyterhub.token}"}
        status = await http.get(f"{connector['location']}api/status", headers=hub_auth)
        assert status.status_code == 200

        # 6. Cancelling releases it: the server stops, the capacity is free, the account stays.
        cancelled = await http.post(chosen, json=CANCEL, headers=me)
        assert cancelled.json()["phase"] == "COMPLETED"
        model = (await http.get(f"{jupyterhub.url}hub/api/users/{uid}", headers=hub_auth)).json()
        assert model["servers"] == {}
        ldap.search(base, f"(uid={uid})")
        assert len(ldap.response) == 1
        everything = {"executable": NOTEBOOK, "compute": {"cores": {"min": 8}}}
        again = await http.post(
            f"{server.url}requests",
            json=everything,
            headers={**me, "Prefer": "return=representation"},
        )
        assert again.json()["result"] == "YES"
