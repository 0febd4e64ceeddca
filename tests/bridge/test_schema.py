"""schemathesis against the bridge's own OpenAPI document, with signed requests.

The network runs in a background thread (its own event loop) so that schemathesis'
synchronous, hypothesis-driven test body can call it with httpx.  Every operation is
exercised; the number of examples per operation is kept small so the suite stays quick.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import positive_data_acceptance

from broadgauge.bridge.openapi import ENDPOINTS, openapi_document
from broadgauge.demo import start_network

from .signing import signed

schema = schemathesis.openapi.from_dict(openapi_document())


class Running:
    """A demo network with its bridge API, served from a thread."""

    def __init__(self) -> None:
        self.ready = threading.Event()
        self.loop = asyncio.new_event_loop()
        self.url = ""
        self.key = b""
        self._stop: asyncio.Event | None = None
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self.main(),))

    async def main(self) -> None:
        self._stop = asyncio.Event()
        with tempfile.TemporaryDirectory() as root:
            network = await start_network(Path(root))
            try:
                await network.bridge.start()
                self.url, self.key = network.bridge.url, network.bridge.settings.key
                self.ready.set()
                await self._stop.wait()
            finally:
                await network.stop()

    def stop(self) -> None:
        assert self._stop is not None
        self.loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(30)


@pytest.fixture(scope="module")
def running() -> Iterator[Running]:
    server = Running()
    server.thread.start()
    assert server.ready.wait(30)
    try:
        yield server
    finally:
        server.stop()


def test_every_route_is_described() -> None:
    paths = openapi_document()["paths"]
    assert set(paths) == {"/"} | {f"/{function}" for _, function, *_ in ENDPOINTS}


@schema.parametrize()
@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_api_conforms(case: Any, running: Running) -> None:
    kwargs = case.as_transport_kwargs(base_url=running.url.rstrip("/"))
    method = kwargs["method"].lower()
    body = b""
    if "json" in kwargs:
        body = json.dumps(kwargs["json"], separators=(",", ":")).encode()
    function = case.path.strip("/")
    headers = {"Content-Type": "application/json"} if body else {}
    if case.meta is not None and case.meta.is_negative_at(ParameterLocation.HEADER):
        # A deliberately wrong Authorization (missing or junk): send it as generated,
        # with a valid Date and nonce, so only the signature is at fault.
        headers.update({k: v for k, v in signed(running.key, method, function, body).items()})
        headers.pop("Authorization", None)
        headers.update({k: str(v) for k, v in (case.headers or {}).items()})
    elif function:
        headers = signed(running.key, method, function, body)
    with httpx.Client(timeout=30) as http:
        response = http.request(
            method.upper(), kwargs["url"], content=body or None, headers=headers
        )
    # Every check runs except one: "schema-valid data is accepted".  The instruction grammar
    # and destination syntax cannot be written as JSON Schema, so a schema-valid string such
    # as {"command": ""} is still an unparseable instruction, which must be a 400.
    case.validate_response(response, headers=headers, excluded_checks=[positive_data_acceptance])
