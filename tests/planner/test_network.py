"""The network planner on a real demo network: black-box over HTTP, on loopback sockets.

The demo's agents run on loopback (:func:`broadgauge.demo.start_network`); its notebook
instance (``jupyter``, the embedded hub) publishes its rules (notebooks for hub users), the
bridge gathers them, and the network planner beside the bridge answers ``/accepts``.
Accounts are checked by asking that instance ``is_existing_user`` through the portal, and
created with the ``add_user`` instruction the planner suggests.  Tokens come from the real
OIDC provider the suite starts (tests/backends/oidc.py).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import jsonschema  # type: ignore[import-untyped]
import pytest

from broadgauge.agents.assemble import assemble
from broadgauge.bridge import BridgeSettings
from broadgauge.cli import main
from broadgauge.cli.run import serve
from broadgauge.demo import NOTEBOOKS, Network, start_network
from broadgauge.jobs.agent_type import AgentType
from broadgauge.planner.network import combine, parse_network_config
from broadgauge.planner.server import NetworkPlannerServer, attach_network_planner
from broadgauge.runtime.agent import Agent
from broadgauge.runtime.config import AgentConfig
from broadgauge.wire import ConfigError, ServiceConfig
from tests.agents.network import demo_network
from tests.backends.oidc import OidcProvider
from tests.cli.processes import free_port

__all__ = ["demo_network"]  # the shared demo-network fixture, used below

# authlib (inside the provider) warns about its own deprecated APIs; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

ROOT = Path(__file__).resolve().parents[2]
JUPYTERHUB_EXAMPLE = ROOT / "examples" / "planner" / "jupyterhub.toml"
AUDIENCE = "network-planner-test"
PLATFORM = "portal.provider.platform"
DEMO_ENDPOINT = "https://jupyter.instance.example/"
NOTEBOOK = {"tasktype": "jupyter-notebook"}
#: A hang guard only: every request here should be answered within a few seconds.
GUARD = 30.0


@pytest.fixture
async def network(demo_network: Network) -> Network:
    """The shared demo network with its (anonymous) network planner serving."""
    await demo_network.planner.start()
    return demo_network


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=GUARD) as client:
        yield client


def auth_config(issuer: str) -> Any:
    return parse_network_config(
        {
            "service": {"name": "network planner with sign-in"},
            "auth": {"mode": "required", "issuer": issuer, "audience": AUDIENCE},
            "network": {"port": 0, "refresh": 0, "missing_account_ttl": 0},
        }
    )


@pytest.fixture
async def signed_in(
    network: Network, oidc_provider: OidcProvider
) -> AsyncIterator[NetworkPlannerServer]:
    """A second network planner beside the bridge that requires a token from the provider."""
    server = NetworkPlannerServer(network.agents["bridge"], auth_config(oidc_provider.issuer))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def token(provider: OidcProvider, sub: str, *users: str) -> dict[str, str]:
    """A bearer header for ``sub``, whose token names ``users`` as their OpenPortal identities."""
    claims = {"openportal_users": list(users)}
    # The provider is synchronous (httpx.Client); keep the agents' loop free meanwhile.
    issued = await asyncio.to_thread(provider.token, sub, AUDIENCE, claims)
    return {"Authorization": f"Bearer {issued}"}


async def accepts(
    http: httpx.AsyncClient,
    base: str,
    params: dict[str, str],
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    async with asyncio.timeout(GUARD):
        return await http.get(f"{base}accepts", params=params, headers=headers)


async def stop_agent(network: Network, name: str) -> None:
    """Stop one agent the way :meth:`Network.stop` does, and forget it."""
    await network.roles[name].stop()
    await network.agents[name].stop()
    await network.roles[name].close()
    del network.agents[name], network.roles[name]


async def provision_users(network: Network, *users: str) -> None:
    await network.submit("add_project physics.portal", path=NOTEBOOKS)
    for user in users:
        await network.submit(f"add_user {user}", path=NOTEBOOKS)


# --- anonymous, on the demo's own planner -----------------------------------------------------


async def test_anonymous_caller_gets_no_from_the_account_holders_site(
    network: Network, http: httpx.AsyncClient
) -> None:
    response = await accepts(http, network.planner.url, NOTEBOOK)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["vary"] == "Authorization"
    body = response.json()
    assert body == {
        "reponseword": "NO",
        "answers": [],
        "provisionable": [],
        "failures": [],
        "asked": 1,
        "noes": 1,
    }
    # POSTed as a form or as JSON, the seed's other ways of asking, the answer is the same.
    async with asyncio.timeout(GUARD):
        by_form = await http.post(f"{network.planner.url}accepts", data=NOTEBOOK)
        by_json = await http.post(f"{network.planner.url}accepts", json=NOTEBOOK)
    assert by_form.json() == body
    assert by_json.json() == body


async def test_explain_names_the_destination_and_the_rule(
    network: Network, http: httpx.AsyncClient
) -> None:
    async with asyncio.timeout(GUARD):
        response = await http.get(f"{network.planner.url}accepts/explain", params=NOTEBOOK)
    assert response.status_code == 200
    explained = response.json()
    assert explained["identity"] is None
    assert explained["answer"]["reponseword"] == "NO"
    [destination] = explained["destinations"]
    assert destination["destination"] == NOTEBOOKS
    assert destination["status"] == "answered"
    assert destination["answer"] == {
        "reponseword": "NO",
        "reponseinfo": {"httpcode": 403, "reason": "Not authorised"},
    }
    assert destination["explain"]["decided_by"] == "notebooks-for-account-holders"
    assert destination["explain"]["account_missing"] is False
    assert [s["outcome"] for s in destination["explain"]["steps"]] == ["identity-denied"]


async def test_unknown_task_type_and_bad_requests(
    network: Network, http: httpx.AsyncClient
) -> None:
    unknown = await accepts(http, network.planner.url, {"tasktype": "zeppelin-notebook"})
    assert unknown.status_code == 200
    assert unknown.json()["reponseword"] == "NO"
    assert "reponseinfo" not in unknown.json()
    assert unknown.json()["asked"] == 1
    assert unknown.json()["noes"] == 1
    missing = await accepts(http, network.planner.url, {})
    assert missing.status_code == 400
    assert missing.json()["error"] == "bad_request"


async def test_openapi_document_is_served(network: Network, http: httpx.AsyncClient) -> None:
    async with asyncio.timeout(GUARD):
        response = await http.get(f"{network.planner.url}openapi.json")
    assert response.status_code == 200
    doc = response.json()
    assert doc["openapi"].startswith("3.")
    assert {"/accepts", "/accepts/explain"} <= set(doc["paths"])
    # The /accepts answers conform to the document's answer schema.
    schema = doc["paths"]["/accepts"]["get"]["responses"]["200"]["content"]["application/json"]
    for params in (NOTEBOOK, {"tasktype": "zeppelin-notebook"}):
        body = (await accepts(http, network.planner.url, params)).json()
        jsonschema.validate(body, schema["schema"])


async def test_explain_conforms_to_the_served_openapi_document(
    network: Network, http: httpx.AsyncClient
) -> None:
    async with asyncio.timeout(GUARD):
        doc = (await http.get(f"{network.planner.url}openapi.json")).json()
        body = (await http.get(f"{network.planner.url}accepts/explain", params=NOTEBOOK)).json()
    explain = doc["paths"]["/accepts/explain"]["get"]["responses"]["200"]
    jsonschema.validate(body, explain["content"]["application/json"]["schema"])


# --- signed in: accounts checked at the instance, provisioned through the portal -----------


@pytest.fixture
async def alice(network: Network, oidc_provider: OidcProvider) -> dict[str, str]:
    """The bearer header of alice, whose token names alice.physics.portal, who has an account
    at the instance."""
    await provision_users(network, "alice.physics.portal")
    return await token(oidc_provider, "alice", "alice.physics.portal")


async def test_account_holder_gets_yes_with_the_destination(
    signed_in: NetworkPlannerServer, alice: dict[str, str], http: httpx.AsyncClient
) -> None:
    response = await accepts(http, signed_in.url, NOTEBOOK, alice)
    async with asyncio.timeout(GUARD):
        explained = await http.get(
            f"{signed_in.url}accepts/explain", params=NOTEBOOK, headers=alice
        )
    assert response.status_code == 200
    body = response.json()
    assert body["reponseword"] == "YES"
    assert body["servicetype"] == "jupyter-hub"
    assert body["serviceinfo"] == {"endpoint": DEMO_ENDPOINT}
    assert body["answers"][0]["destination"] == NOTEBOOKS
    assert body["answers"][0]["serviceinfo"]["endpoint"] == DEMO_ENDPOINT
    assert body["provisionable"] == []
    assert body["failures"] == []
    assert body["asked"] == 1
    assert explained.json()["identity"] == "alice"
    step = explained.json()["destinations"][0]["explain"]["steps"][0]
    assert step == {
        "rule": "notebooks-for-account-holders",
        "outcome": "decided",
        "detail": "answers YES",
    }


async def test_newcomer_is_offered_a_provision_that_works(
    network: Network,
    signed_in: NetworkPlannerServer,
    oidc_provider: OidcProvider,
    http: httpx.AsyncClient,
) -> None:
    await provision_users(network)  # the project exists; carol does not yet
    headers = await token(oidc_provider, "carol", "carol.physics.portal")
    before = (await accepts(http, signed_in.url, NOTEBOOK, headers)).json()
    assert before["reponseword"] == "NO"
    assert before["answers"] == []
    assert before["failures"] == []
    [offer] = before["provisionable"]
    assert offer["destination"] == NOTEBOOKS
    provision = offer["reponseinfo"]["provision"]
    assert provision == {"destination": NOTEBOOKS, "instruction": "add_user carol.physics.portal"}
    assert offer["reponseinfo"]["httpcode"] == 403
    # The top-level answer is the seed's NO, carrying the same provision.
    assert before["reponseinfo"]["provision"] == provision

    # Run the suggested instruction where it says, the way portal software does.
    bridge = network.agents["bridge"]
    job = await bridge.run(
        "bridge.portal", f"submit {provision['destination']} {provision['instruction']}"
    )
    assert job.result_type != "Error", job.result

    after = (await accepts(http, signed_in.url, NOTEBOOK, headers)).json()
    assert after["reponseword"] == "YES"
    assert after["serviceinfo"] == {"endpoint": DEMO_ENDPOINT}
    assert after["answers"][0]["destination"] == NOTEBOOKS
    assert after["provisionable"] == []


async def test_token_naming_another_portal_gets_no_provision(
    signed_in: NetworkPlannerServer,
    alice: dict[str, str],
    oidc_provider: OidcProvider,
    http: httpx.AsyncClient,
) -> None:
    # alice.physics.portal has an account, but this token names another portal's alice.
    elsewhere = await token(oidc_provider, "alice", "alice.physics.elsewhere")
    body = (await accepts(http, signed_in.url, NOTEBOOK, elsewhere)).json()
    assert body["reponseword"] == "NO"
    assert body["provisionable"] == []
    assert body["noes"] == 1


async def test_no_token_when_required_gets_401_bearer(
    signed_in: NetworkPlannerServer, http: httpx.AsyncClient
) -> None:
    for path in ("accepts", "accepts/explain"):
        async with asyncio.timeout(GUARD):
            response = await http.get(f"{signed_in.url}{path}", params=NOTEBOOK)
        assert response.status_code == 401, path
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert response.json()["error"] == "unauthorized"
    forged = await accepts(http, signed_in.url, NOTEBOOK, {"Authorization": "Bearer not-a-jwt"})
    assert forged.status_code == 401
    assert 'error="invalid_token"' in forged.headers["www-authenticate"]


# --- more than one site, and sites that fail -------------------------------------------------


async def test_unparseable_site_is_a_failure_while_the_instance_still_answers(
    network: Network,
    signed_in: NetworkPlannerServer,
    alice: dict[str, str],
    http: httpx.AsyncClient,
) -> None:
    network.agents["platform"].planner_rules.publish({"rules": [{"name": "x"}]})
    body = (await accepts(http, signed_in.url, NOTEBOOK, alice)).json()
    assert body["reponseword"] == "YES"
    assert [a["destination"] for a in body["answers"]] == [NOTEBOOKS]
    [failure] = body["failures"]
    assert failure["destination"] == PLATFORM
    assert failure["status"] == "invalid-rules"
    assert "tasktypes" in failure["detail"]
    assert body["asked"] == 2


async def test_a_second_site_that_takes_everyone(network: Network, http: httpx.AsyncClient) -> None:
    network.agents["platform"].planner_rules.publish(
        {
            "rules": [
                {
                    "name": "open-binder",
                    "tasktypes": ["jupyter-notebook"],
                    "servicetype": "binder-hub",
                    "serviceinfo": {"endpoint": "https://binder.platform.example/"},
                }
            ]
        }
    )
    body = (await accepts(http, network.planner.url, NOTEBOOK)).json()
    assert body["reponseword"] == "YES"
    assert body["servicetype"] == "binder-hub"
    assert body["serviceinfo"] == {"endpoint": "https://binder.platform.example/"}
    assert [a["destination"] for a in body["answers"]] == [PLATFORM]
    assert body["asked"] == 2
    assert body["noes"] == 1  # the instance still wants an account
    # Withdrawn, the platform is no longer asked (the demo planner sweeps every time).
    network.agents["platform"].planner_rules.publish(None)
    again = (await accepts(http, network.planner.url, NOTEBOOK)).json()
    assert again["reponseword"] == "NO"
    assert again["asked"] == 1


async def test_a_stopped_instance_is_listed_as_silent(
    network: Network, http: httpx.AsyncClient
) -> None:
    await stop_agent(network, "jupyter")
    body = (await accepts(http, network.planner.url, NOTEBOOK)).json()
    assert body["reponseword"] == "NO"
    assert body["answers"] == []
    assert body["failures"] == [
        {"destination": NOTEBOOKS, "status": "silent", "detail": "did not answer the sweep"}
    ]
    assert body["asked"] == 1
    assert body["noes"] == 0


# --- configuration through the agents' [extras], as `broadgauge <role> run` reads it ----------


def with_extra(name: str, key: str, value: str) -> Callable[[str, AgentConfig], AgentConfig]:
    def configure(agent: str, config: AgentConfig) -> AgentConfig:
        return config.with_extra(key, value) if agent == name else config

    return configure


async def test_instance_publishes_its_planner_rules_file(
    tmp_path: Path, http: httpx.AsyncClient
) -> None:
    configure = with_extra("jupyter", "planner-rules", str(JUPYTERHUB_EXAMPLE))
    network = await start_network(tmp_path, configure=configure)
    try:
        document = network.agents["jupyter"].planner_rules.document
        assert document is not None
        assert "auth" not in document  # the network planner has its own [auth]
        assert document["service"] == {"name": "example-jupyterhub", "cache_max_age": 60}
        assert [r["name"] for r in document["rules"]] == ["generic-notebooks"]
        await network.planner.start()
        body = (await accepts(http, network.planner.url, NOTEBOOK)).json()
    finally:
        await network.stop()
    assert body["reponseword"] == "YES"
    assert body["serviceinfo"] == {"endpoint": "http://jupyter.example.org/"}
    assert [a["destination"] for a in body["answers"]] == [NOTEBOOKS]


def leaf_config(tmp_path: Path, kind: AgentType, **extras: str) -> AgentConfig:
    return AgentConfig(kind, ServiceConfig.create(kind.value.lower(), port=0), extras)


async def test_a_leaf_agent_cannot_publish_planner_rules(tmp_path: Path) -> None:
    config = leaf_config(tmp_path, AgentType.ACCOUNT, **{"planner-rules": str(JUPYTERHUB_EXAMPLE)})
    agent = Agent(config, data_dir=tmp_path / "account")
    try:
        with pytest.raises(ConfigError, match="cannot publish planner rules"):
            assemble(agent, tmp_path / "account")
        assert agent.planner_rules.document is None
    finally:
        await agent.stop()
    # `broadgauge account run` refuses it before starting.
    async with asyncio.timeout(GUARD):
        with pytest.raises(ConfigError, match="cannot publish planner rules"):
            await serve(config, tmp_path / "account-run", stop=asyncio.Event())


async def test_run_refuses_an_instance_whose_planner_rules_do_not_parse(tmp_path: Path) -> None:
    rules = tmp_path / "bad.toml"
    rules.write_text('[[rules]]\nname = "x"\n', encoding="utf-8")
    config = leaf_config(tmp_path, AgentType.INSTANCE, **{"planner-rules": str(rules)})
    async with asyncio.timeout(GUARD):
        with pytest.raises(ConfigError, match=r"planner-rules: .*tasktypes"):
            await serve(config, tmp_path / "instance", stop=asyncio.Event())
    missing = leaf_config(tmp_path, AgentType.INSTANCE, **{"planner-rules": str(tmp_path / "no")})
    async with asyncio.timeout(GUARD):
        with pytest.raises(ConfigError, match="planner-rules"):
            await serve(missing, tmp_path / "instance2", stop=asyncio.Event())


async def test_bridge_run_serves_the_network_planner_from_its_config(
    tmp_path: Path, http: httpx.AsyncClient
) -> None:
    port = free_port()
    planner_toml = tmp_path / "network-planner.toml"
    planner_toml.write_text(
        f'[service]\nname = "run planner"\n\n[network]\nhost = "127.0.0.1"\nport = {port}\n',
        encoding="utf-8",
    )
    base = AgentConfig(AgentType.BRIDGE, ServiceConfig.create("bridge", port=0))
    config = (
        BridgeSettings.generate(port=0).store(base).with_extra("planner-config", str(planner_toml))
    )
    stop = asyncio.Event()
    running = asyncio.ensure_future(serve(config, tmp_path / "bridge", stop=stop))
    try:
        body = await until_answered(http, f"http://127.0.0.1:{port}/", running)
    finally:
        stop.set()
        async with asyncio.timeout(GUARD):
            status = await running
    assert status == 0
    # A bridge with no portal below it has nothing to offer, and says so: the answer of no
    # destinations at all (its exact form is pinned in test_rules_account.py).
    assert body == combine([], ())


async def until_answered(
    http: httpx.AsyncClient, base: str, running: Awaitable[Any]
) -> dict[str, Any]:
    """Poll ``base`` until the planner answers (a hang guard, not a timing assertion)."""
    async with asyncio.timeout(GUARD):
        while True:
            assert not getattr(running, "done", lambda: False)(), running
            try:
                response = await http.get(f"{base}accepts", params=NOTEBOOK)
            except httpx.ConnectError:
                await asyncio.sleep(0.05)
                continue
            result: dict[str, Any] = response.json()
            return result


async def test_attach_network_planner_reads_planner_config(tmp_path: Path) -> None:
    bridge = AgentConfig(AgentType.BRIDGE, ServiceConfig.create("bridge", port=0))
    agent = Agent(bridge)
    with pytest.raises(ConfigError, match="set \\[extras\\] planner-config"):
        attach_network_planner(agent)

    good = tmp_path / "good.toml"
    good.write_text('[service]\nname = "n"\n[network]\nport = 0\nrefresh = 1\n', "utf-8")
    server = attach_network_planner(Agent(bridge.with_extra("planner-config", str(good))))
    assert server.config.service.name == "n"
    assert server.config.network.refresh == 1.0

    for name, text in (
        ("rules.toml", '[[rules]]\nname = "x"\ntasktypes = ["t"]\nanswer = "NO"\n'),
        ("typo.toml", "[network]\nrefesh = 1\n"),
        ("broken.toml", "[network\n"),
    ):
        path = tmp_path / name
        path.write_text(text, "utf-8")
        with pytest.raises(ConfigError, match=f"planner-config .*{name}"):
            attach_network_planner(Agent(bridge.with_extra("planner-config", str(path))))


# --- the researcher's command: broadgauge planner ask ------------------------------------------


async def test_planner_ask_shows_the_answer_and_where_to_provision(
    network: Network,
    signed_in: NetworkPlannerServer,
    oidc_provider: OidcProvider,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await provision_users(network, "alice.physics.portal")
    monkeypatch.setenv("COLUMNS", "200")
    ask = ["planner", "ask", signed_in.url, "jupyter-notebook"]
    # The command blocks on HTTP; run it off the loop the agents and the planner run on.
    bearer = (await token(oidc_provider, "alice", "alice.physics.portal"))["Authorization"]
    monkeypatch.setenv("BROADGAUGE_TOKEN", bearer.removeprefix("Bearer "))
    assert await asyncio.to_thread(main, ask) == 0
    out = capsys.readouterr().out
    assert f"YES: jupyter-notebook can run on jupyter-hub at {DEMO_ENDPOINT}" in out
    assert NOTEBOOKS in out
    bearer = (await token(oidc_provider, "carol", "carol.physics.portal"))["Authorization"]
    monkeypatch.setenv("BROADGAUGE_TOKEN", bearer.removeprefix("Bearer "))
    assert await asyncio.to_thread(main, [*ask, "--json"]) == 3
    body = json.loads(capsys.readouterr().out)
    assert body["provisionable"][0]["reponseinfo"]["provision"]["instruction"] == (
        "add_user carol.physics.portal"
    )
    assert await asyncio.to_thread(main, ask) == 3
    assert "add_user carol.physics.portal" in capsys.readouterr().out
    # Without a token this planner refuses: a clear error, exit 1.
    monkeypatch.delenv("BROADGAUGE_TOKEN")
    assert await asyncio.to_thread(main, ask) == 1
    assert "answered HTTP 401" in capsys.readouterr().err
