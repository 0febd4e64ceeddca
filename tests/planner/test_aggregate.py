"""The aggregator against real loopback services: some answer, some are slow, fail or lie.

A "fleet" app plays many planner services at once, one per URL prefix ``/s/<i>/``, and is
served by five real uvicorn servers; the aggregator itself runs on a real socket too.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from broadgauge.planner.aggregate import (
    Aggregator,
    create_aggregator_app,
    parse_aggregator,
    positive_ttl,
)
from broadgauge.planner.answers import Task
from broadgauge.planner.rules import RuleError
from tests.planner.servers import serve

SRC = Path(__file__).resolve().parents[2] / "src"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def yes(i: int, **extra: Any) -> dict[str, Any]:
    return {
        "reponseword": "YES",
        "servicetype": "jupyter-hub",
        "serviceinfo": {"endpoint": f"http://svc{i}.example/", **extra},
    }


class Fleet:
    """Many services behind one app; ``modes[i]`` says how service ``i`` behaves."""

    def __init__(self, modes: list[str]) -> None:
        self.modes = modes
        self.hits: Counter[int] = Counter()
        self.app = Starlette(routes=[Route("/s/{i:int}/accepts", self.accepts)])

    async def accepts(self, request: Request) -> Response:
        i = int(request.path_params["i"])
        self.hits[i] += 1
        mode = self.modes[i]
        if request.query_params.get("tasktype") != "jupyter-notebook":
            return JSONResponse({"reponseword": "NO"})
        if mode == "yes":
            return JSONResponse(yes(i), headers={"Cache-Control": "public, max-age=60"})
        if mode == "yes-nostore":
            return JSONResponse(yes(i), headers={"Cache-Control": "no-store"})
        if mode == "token":
            seen = request.headers.get("authorization")
            return JSONResponse(yes(i, token=seen))
        if mode == "no":
            return JSONResponse({"reponseword": "NO"})
        if mode == "slow":
            await asyncio.sleep(1.5)  # beyond every timeout and deadline used here
            return JSONResponse(yes(i))
        if mode == "error":
            return PlainTextResponse("boom", status_code=500)
        if mode == "garbage":
            return PlainTextResponse("<html>not json</html>")
        if mode == "badjson":
            return JSONResponse({"reponseword": "MAYBE"})
        raise AssertionError(mode)


@pytest.fixture
def fleet_urls() -> Iterator[tuple[Fleet, list[str]]]:
    modes = (
        ["yes"] * 18
        + ["yes-nostore"] * 2
        + ["no"] * 15
        + ["slow"] * 5
        + ["error"] * 4
        + ["garbage"] * 3
        + ["badjson"] * 2
    )
    fleet = Fleet(modes)
    with ExitStack() as stack:
        bases = [stack.enter_context(serve(fleet.app)) for _ in range(5)]
        urls = [f"{bases[i % 5]}s/{i}/" for i in range(len(modes))]
        yield fleet, urls


def _config(urls: list[str], **table: Any) -> dict[str, Any]:
    return {
        "aggregator": {"timeout": 0.5, "deadline": 2.0, **table},
        "services": [{"name": f"svc{i}", "url": u} for i, u in enumerate(urls)],
    }


async def test_fifty_services_answer_within_the_deadline_with_failures_listed(
    fleet_urls: tuple[Fleet, list[str]],
) -> None:
    _, urls = fleet_urls
    closed = "http://127.0.0.1:9/"  # nothing listens on the discard port
    config = parse_aggregator(_config([*urls, closed]))
    assert len(config.services) == 50
    with serve(create_aggregator_app(config)) as aggregator:
        started = time.monotonic()
        async with httpx.AsyncClient(timeout=10) as http:
            response = await http.get(
                f"{aggregator}accepts", params={"tasktype": "jupyter-notebook"}
            )
        elapsed = time.monotonic() - started
    assert response.status_code == 200
    body = response.json()
    assert elapsed < 2.0, elapsed
    assert body["reponseword"] == "YES"
    assert body["servicetype"] == "jupyter-hub"
    assert body["serviceinfo"] == {"endpoint": "http://svc0.example/"}
    assert [a["service"] for a in body["answers"]] == [f"svc{i}" for i in range(20)]
    assert all(a["url"].endswith(f"/s/{a['service'][3:]}/accepts") for a in body["answers"])
    statuses = Counter(f["status"] for f in body["failures"])
    assert statuses == {"timeout": 5, "http-500": 4, "invalid": 5, "error": 1}
    failed = {f["service"]: f for f in body["failures"]}
    assert failed["svc49"]["status"] == "error"  # the closed port
    assert failed["svc35"]["detail"] == "no answer within 0.5s"
    assert failed["svc40"]["detail"] == "boom"
    assert body["asked"] == 50 and body["noes"] == 15


async def test_overall_deadline_cuts_slow_services_off(fleet_urls: tuple[Fleet, list[str]]) -> None:
    _, urls = fleet_urls
    config = parse_aggregator(_config(urls, timeout=10.0, deadline=0.6))
    aggregator = Aggregator(config)
    started = time.monotonic()
    outcomes = await aggregator.ask(Task("jupyter-notebook"))
    elapsed = time.monotonic() - started
    await aggregator.aclose()
    assert elapsed < 1.2, elapsed
    assert [o.status for o in outcomes if o.status == "deadline"] == ["deadline"] * 5
    assert sum(o.status == "yes" for o in outcomes) == 20


async def test_token_is_forwarded_only_where_configured() -> None:
    fleet = Fleet(["token"] * 4)
    with serve(fleet.app) as base:
        raw = {
            "services": [
                {"name": f"svc{i}", "url": f"{base}s/{i}/accepts", "forward_token": i % 2 == 0}
                for i in range(4)
            ]
        }
        with serve(create_aggregator_app(parse_aggregator(raw))) as aggregator:
            async with httpx.AsyncClient() as http:
                body = (
                    await http.get(
                        f"{aggregator}accepts",
                        params={"tasktype": "jupyter-notebook"},
                        headers={"Authorization": "Bearer secret-token"},
                    )
                ).json()
    seen = {a["service"]: a["serviceinfo"]["token"] for a in body["answers"]}
    assert seen == {
        "svc0": "Bearer secret-token",
        "svc1": None,
        "svc2": "Bearer secret-token",
        "svc3": None,
    }


async def test_caching_positive_by_cache_control_negative_briefly_failures_never() -> None:
    fleet = Fleet(["yes", "yes-nostore", "no", "error"])
    now = [1000.0]
    with serve(fleet.app) as base:
        config = parse_aggregator(
            {
                "aggregator": {"negative_ttl": 5},
                "services": [{"name": f"svc{i}", "url": f"{base}s/{i}/"} for i in range(4)],
            }
        )
        aggregator = Aggregator(config, clock=lambda: now[0])
        task = Task("jupyter-notebook")
        first = await aggregator.ask(task)
        assert [o.cached for o in first] == [False] * 4
        second = await aggregator.ask(task)
        assert [o.cached for o in second] == [True, False, True, False]
        assert dict(fleet.hits) == {0: 1, 1: 2, 2: 1, 3: 2}
        now[0] += 6  # the NO expires; the YES (max-age=60) does not
        await aggregator.ask(task)
        assert dict(fleet.hits) == {0: 1, 1: 3, 2: 2, 3: 3}
        now[0] += 60
        await aggregator.ask(task)
        assert fleet.hits[0] == 2
        await aggregator.ask(Task("jupyter-notebook", {"x": "1"}))  # another task: not cached
        assert fleet.hits[0] == 3
        await aggregator.aclose()


async def test_all_no_gives_a_plain_no_with_empty_answers() -> None:
    fleet = Fleet(["no"] * 3)
    with serve(fleet.app) as base:
        raw = {"services": [{"url": f"{base}s/{i}/"} for i in range(3)]}
        app = create_aggregator_app(parse_aggregator(raw))
        with serve(app) as aggregator:
            async with httpx.AsyncClient(base_url=aggregator) as http:
                body = (await http.post("accepts", json={"tasktype": "jupyter-notebook"})).json()
                bad = await http.get("accepts")
                doc = (await http.get("openapi.json")).json()
    assert body == {"reponseword": "NO", "answers": [], "failures": [], "asked": 3, "noes": 3}
    assert bad.status_code == 400
    assert set(doc["paths"]) == {"/accepts"}


@pytest.mark.parametrize(
    ("header", "ttl"),
    [
        (None, 0),
        ("max-age=30", 30),
        ("public, max-age=60", 60),
        ('private, max-age="12"', 12),
        ("s-maxage=5", 0),
        ("no-store, max-age=60", 0),
        ("no-cache", 0),
        ("max-age=abc", 0),
    ],
)
def test_positive_ttl_from_cache_control(header: str | None, ttl: float) -> None:
    assert positive_ttl(header) == ttl


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"services": [{"name": "a"}]}, "url"),
        ({"services": [{"url": "http://a/", "forward_token": "yes"}]}, "forward_token"),
        ({"services": [{"url": "http://a/"}, {"url": "http://a/"}]}, "unique"),
        ({"aggregator": {"deadline": 0}}, "positive"),
        ({"services": {"url": "x"}}, "array"),
    ],
)
def test_bad_aggregator_configs(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(RuleError, match=message):
        parse_aggregator(raw)


def test_service_urls_may_be_base_or_accepts_urls() -> None:
    config = parse_aggregator(
        {"services": [{"name": "a", "url": "http://a/"}, {"name": "b", "url": "http://b/accepts"}]}
    )
    assert [s.url for s in config.services] == ["http://a/accepts", "http://b/accepts"]


def test_cli_aggregate_serves_the_contract(tmp_path: Path) -> None:
    """``broadgauge planner aggregate`` in its own process, over two sample services."""
    fleet = Fleet(["yes", "no"])
    with serve(fleet.app) as base:
        config = tmp_path / "aggregator.toml"
        config.write_text(
            "[aggregator]\ndeadline = 3.0\n"
            f'[[services]]\nname = "a"\nurl = "{base}s/0/"\n'
            f'[[services]]\nname = "b"\nurl = "{base}s/1/accepts"\n'
        )
        port = _free_port()
        command = [sys.executable, "-m", "broadgauge", "planner", "aggregate"]
        command += ["--config", str(config), "--port", str(port)]
        process = subprocess.Popen(command, env={**os.environ, "PYTHONPATH": str(SRC)})
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    got = httpx.get(
                        f"http://127.0.0.1:{port}/accepts", params={"tasktype": "jupyter-notebook"}
                    )
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline and process.poll() is None
                    time.sleep(0.1)
        finally:
            process.terminate()
            process.wait(timeout=10)
    body = got.json()
    assert body["reponseword"] == "YES"
    assert [a["service"] for a in body["answers"]] == ["a"]
    assert (body["asked"], body["noes"], body["failures"]) == (2, 1, [])


async def test_whole_answer_is_kept_only_while_every_part_is_cached() -> None:
    import json

    fleet = Fleet(["yes", "no"])
    now = [1000.0]
    with serve(fleet.app) as base:
        raw = {
            "aggregator": {"negative_ttl": 5},
            "services": [{"name": f"svc{i}", "url": f"{base}s/{i}/"} for i in range(2)],
        }
        aggregator = Aggregator(parse_aggregator(raw), clock=lambda: now[0])
        task = Task("jupyter-notebook")
        first = json.loads(await aggregator.answer(task))
        second = json.loads(await aggregator.answer(task))
        assert [a["cached"] for a in first["answers"]] == [False]
        assert [a["cached"] for a in second["answers"]] == [True]
        assert {k: v for k, v in first.items() if k != "answers"} == {
            k: v for k, v in second.items() if k != "answers"
        }
        assert dict(fleet.hits) == {0: 1, 1: 1}
        now[0] += 6  # the NO (5 s) expired, so the whole answer is rebuilt
        await aggregator.answer(task)
        assert dict(fleet.hits) == {0: 1, 1: 2}
        await aggregator.aclose()
    failing = Fleet(["yes", "error"])
    with serve(failing.app) as base:
        raw = {"services": [{"name": f"svc{i}", "url": f"{base}s/{i}/"} for i in range(2)]}
        aggregator = Aggregator(parse_aggregator(raw))
        await aggregator.answer(task)
        await aggregator.answer(task)
        await aggregator.aclose()
    assert dict(failing.hits) == {0: 1, 1: 2}  # a failure is asked again every time
