"""Black-box HTTP tests of one planner service: the seed's examples, explain, OpenAPI, the CLI.

Most tests drive the ASGI app in-process with httpx's ASGITransport; the JupyterHub tests
run the planner on a real socket (uvicorn, and the ``broadgauge planner serve`` command)
and check that the endpoint it answers is a real, serving JupyterHub.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from broadgauge.cli import main
from broadgauge.planner.app import create_app
from broadgauge.planner.config import ServiceConfig, load
from tests.backends.jupyterhub import JupyterHub
from tests.planner.servers import serve
from tests.planner.test_rules import EXAMPLES, SEED

ROOT = Path(__file__).resolve().parents[2]


async def client_for(config: ServiceConfig) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=create_app(config))
    return httpx.AsyncClient(transport=transport, base_url="http://planner.test")


@pytest.fixture
async def services() -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    clients = {name: await client_for(load(EXAMPLES / f"{name}.toml")) for name in SEED}
    yield clients
    for client in clients.values():
        await client.aclose()


@pytest.mark.parametrize(
    ("service", "tasktype"), [(s, t) for s, answers in SEED.items() for t in answers]
)
async def test_seed_examples_by_get_form_and_json(
    services: dict[str, httpx.AsyncClient], service: str, tasktype: str
) -> None:
    client = services[service]
    expected = SEED[service][tasktype]
    by_get = await client.get("/accepts", params={"tasktype": tasktype})
    by_form = await client.post("/accepts", data={"tasktype": tasktype})
    by_json = await client.post("/accepts", json={"tasktype": tasktype})
    for response in (by_get, by_form, by_json):
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        assert response.json() == expected
    if expected["reponseword"] == "YES":
        assert by_get.headers["cache-control"] == "public, max-age=60"
    else:
        assert by_get.headers["cache-control"] == "no-cache"
    assert by_get.headers["vary"] == "Authorization"


async def test_taskinfo_by_query_form_and_nested_json(
    services: dict[str, httpx.AsyncClient],
) -> None:
    binder = services["binderhub"]
    good = {"tasktype": "binder-notebook", "taskinfo.dependencies": "environment.yml"}
    bad = {"tasktype": "binder-notebook", "taskinfo.dependencies": "setup.py"}
    assert (await binder.get("/accepts", params=good)).json()["reponseword"] == "YES"
    assert (await binder.post("/accepts", data=good)).json()["reponseword"] == "YES"
    assert (await binder.get("/accepts", params=bad)).json() == {"reponseword": "NO"}
    nested = {"tasktype": "binder-notebook", "taskinfo": {"dependencies": "setup.py"}}
    assert (await binder.post("/accepts", json=nested)).json() == {"reponseword": "NO"}


async def test_multipart_form_bodies_are_read_like_urlencoded_ones(
    services: dict[str, httpx.AsyncClient],
) -> None:
    binder = services["binderhub"]
    boundary = "bgboundary"
    fields = {"tasktype": "binder-notebook", "taskinfo.dependencies": "environment.yml"}
    body = (
        "".join(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
            for k, v in fields.items()
        )
        + f"--{boundary}--\r\n"
    )
    headers = {"content-type": f"multipart/form-data; boundary={boundary}"}
    response = await binder.post("/accepts", content=body.encode(), headers=headers)
    assert response.status_code == 200
    assert response.json()["servicetype"] == "binder-hub"
    # A file part is refused with a clear 400 (tasks are described by text fields only),
    # and so is a body that is not multipart at all; the service keeps serving.
    with_file = await binder.post("/accepts", data=fields, files={"f": ("a.txt", b"x")})
    assert with_file.status_code == 400
    assert "files" in with_file.json()["reason"].lower()
    garbage = await binder.post("/accepts", content=b"garbage", headers=headers)
    assert garbage.status_code == 400 and garbage.json()["error"] == "bad_request"
    assert (await binder.get("/accepts", params=fields)).json()["reponseword"] == "YES"


async def test_explain_names_the_deciding_rule(services: dict[str, httpx.AsyncClient]) -> None:
    response = await services["esap"].get("/accepts/explain", params={"tasktype": "esap-notebook"})
    body = response.json()
    assert body["answer"]["reponseword"] == "YES"
    assert body["explain"]["decided_by"] == "datalake-notebooks"
    assert body["explain"]["identity"] is None
    assert [s["outcome"] for s in body["explain"]["steps"]] == ["skipped", "decided"]


@pytest.mark.parametrize(
    ("method", "kwargs"),
    [
        ("GET", {}),
        ("GET", {"params": {"tasktype": ""}}),
        ("POST", {"json": ["tasktype"]}),
        ("POST", {"content": b"{not json", "headers": {"content-type": "application/json"}}),
        ("POST", {"json": {"tasktype": "t", "taskinfo": "x"}}),
        ("POST", {"data": {"taskinfo.a": "b"}}),
        # A lone surrogate is not text, wherever it hides (the attack suite's class).
        (
            "POST",
            {"content": b'{"tasktype":"\\ud800"}', "headers": {"content-type": "application/json"}},
        ),
        (
            "POST",
            {
                "content": b'{"tasktype":"t","taskinfo":{"a":"x\\udc00"}}',
                "headers": {"content-type": "application/json"},
            },
        ),
    ],
)
async def test_malformed_requests_get_400_json(
    services: dict[str, httpx.AsyncClient], method: str, kwargs: dict[str, object]
) -> None:
    response = await services["jupyterhub"].request(method, "/accepts", **kwargs)  # type: ignore[arg-type]
    assert response.status_code == 400
    assert response.json()["error"] == "bad_request"


async def test_openapi_document_uses_the_seeds_spellings(
    services: dict[str, httpx.AsyncClient],
) -> None:
    doc = (await services["jupyterhub"].get("/openapi.json")).json()
    assert set(doc["paths"]) == {"/accepts", "/accepts/explain"}
    assert set(doc["paths"]["/accepts"]) == {"get", "post"}
    text = str(doc)
    assert "reponseword" in text and "reponseinfo" in text and "responseword" not in text


async def test_planner_on_a_real_socket_answers_a_real_jupyterhub(jupyterhub: JupyterHub) -> None:
    base = load(EXAMPLES / "jupyterhub.toml")
    rule = base.ruleset.rules[0]
    answer = dataclasses.replace(rule.answer, serviceinfo={"endpoint": jupyterhub.url})
    ruleset = dataclasses.replace(base.ruleset, rules=(dataclasses.replace(rule, answer=answer),))
    with serve(create_app(dataclasses.replace(base, ruleset=ruleset))) as url:
        async with httpx.AsyncClient() as http:
            got = (await http.get(f"{url}accepts", params={"tasktype": "jupyter-notebook"})).json()
            assert got["reponseword"] == "YES" and got["servicetype"] == "jupyter-hub"
            hub = await http.get(f"{got['serviceinfo']['endpoint']}hub/api")
            assert hub.status_code == 200
            assert hub.json()["version"]
            no = await http.get(f"{url}accepts", params={"tasktype": "binder-notebook"})
            assert no.json() == {"reponseword": "NO"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_cli_serve_with_the_sample_config_pointed_at_jupyterhub(
    jupyterhub: JupyterHub, tmp_path: Path
) -> None:
    text = (EXAMPLES / "jupyterhub.toml").read_text()
    config = tmp_path / "jupyterhub.toml"
    config.write_text(text.replace("http://jupyter.example.org/", jupyterhub.url))
    port = _free_port()
    command = [sys.executable, "-m", "broadgauge", "planner", "serve", "--config", str(config)]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    process = subprocess.Popen(
        command, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT / "src")}
    )
    try:
        url = f"http://127.0.0.1:{port}/accepts"
        deadline = time.monotonic() + 20
        while True:
            try:
                got = httpx.get(url, params={"tasktype": "jupyter-notebook"})
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and process.poll() is None
                time.sleep(0.1)
        assert got.json()["serviceinfo"]["endpoint"] == jupyterhub.url
        assert "version" in httpx.get(f"{jupyterhub.url}hub/api").json()
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_cli_check_explains_and_sets_the_exit_status(capsys: pytest.CaptureFixture[str]) -> None:
    config = str(EXAMPLES / "binderhub.toml")
    assert main(["planner", "check", "--config", config, "binder-notebook"]) == 0
    assert '"decided_by": "binder-notebooks"' in capsys.readouterr().out
    assert main(["planner", "check", "--config", config, "binder-notebook", "dependencies=x"]) == 3
    assert '"decided_by": null' in capsys.readouterr().out
    assert main(["planner", "check", "--config", config, "t", "novalue"]) == 2


def test_cli_check_takes_the_account_status_for_rules_that_require_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "site.toml"
    config.write_text(
        '[[rules]]\nname = "members"\ntasktypes = ["jupyter-notebook"]\n'
        'servicetype = "jupyter-hub"\nserviceinfo = { endpoint = "https://hub.test/" }\n'
        "requires_account = true\n"
    )
    base = ["planner", "check", "--config", str(config), "jupyter-notebook"]
    claims = ["--claims", '{"sub": "alice"}']
    assert main([*base, *claims, "--account", "yes"]) == 0
    capsys.readouterr()
    assert main([*base, *claims, "--account", "no"]) == 3
    assert '"account_missing": true' in capsys.readouterr().out
    # Unknown, as for a standalone service: the rule is skipped, not guessed.
    assert main([*base, *claims]) == 3
    assert "account status is not known here" in capsys.readouterr().out


def test_cli_reports_a_bad_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[rules]]\nname = "r"\ntasktypes = ["t"]\n')
    assert main(["planner", "check", "--config", str(bad), "t"]) == 1
    assert "needs a 'servicetype'" in capsys.readouterr().err


def test_cli_ask_reports_an_unreachable_planner_and_bad_taskinfo(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again when the block ends: nobody listens
    url = f"http://127.0.0.1:{port}/"
    assert main(["planner", "ask", url, "jupyter-notebook"]) == 1
    assert f"cannot ask http://127.0.0.1:{port}/accepts" in capsys.readouterr().err
    assert main(["planner", "ask", url, "jupyter-notebook", "novalue"]) == 2
