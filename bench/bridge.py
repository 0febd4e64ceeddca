"""Bridge API throughput: signed ``/run`` + ``/status`` pairs, against a bare endpoint.

Usage: ``python bench/bridge.py [--seconds 5] [--concurrency 32,128] [--command "..."]``

One process serves, in the same event loop on the same uvicorn stack:

* the bridge API of a running demo network (every request signed and verified, ``/run``
  puts a real ``submit`` job to the portal, ``/status`` reads the bridge's board);
* a bare Starlette app with ``/run`` and ``/status`` routes that return a canned Job;
* the floor: the bare app's routes doing the least the bridge must do for a signed
  ``/status`` (rate limit, signature check, body JSON, job id, board look-up, the job's JSON
  rendered once per version), with the bridge's own functions.

A separate load process (so that load generation does not compete with the servers for the
GIL) sends signed pairs with a fixed concurrency and reports pairs/s and the median pair
latency; the ratios to bare are printed at the end (goal: >= 0.85 for /status).  Last, the
same steps timed one by one in this process, without HTTP, and the bridge's whole pipeline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from broadgauge.bridge.app import BridgeApi, _json_body, _uuid
from broadgauge.bridge.auth import SignedRequest, Verifier
from broadgauge.bridge.limits import RateLimiter
from broadgauge.client._protocol import Request as Call
from broadgauge.demo import Network, start_network

CANNED = json.dumps(
    {
        "id": "7c9e6679-7425-40de-944b-e07fc1f90ae7",
        "created": 1717400000,
        "changed": 1717400000,
        "expires": 1717400300,
        "version": 2,
        "command": "bridge.portal submit portal.provider.platform.instance get_users p.portal",
        "state": "Pending",
        "result": None,
        "result_type": None,
        "forwarded_for": None,
    },
    separators=(",", ":"),
)


def bare_app() -> Starlette:
    """The baseline: the same routes, no signature, no network, a canned reply."""

    async def run(request: Request) -> Response:
        await request.body()
        return Response(CANNED, media_type="application/json")

    return Starlette(
        routes=[Route("/run", run, methods=["POST"]), Route("/status", run, methods=["POST"])]
    )


def floor_app(api: BridgeApi, *, lean: bool) -> Starlette:
    """The least the bridge must do, on the bare app's routes: count the request against the
    rate limit, check its signature (a verifier of its own), read the body's JSON and the job
    id, look the job up on the bridge's board and answer its JSON (rendered once per version).
    ``/run`` also starts a real job (the status-only load makes one per connection).

    ``lean``: the routes' endpoints are ASGI apps, as the bridge's are (Starlette then builds
    no Request and adds no exception wrapper); otherwise functions of a Request, as the bare
    app's are.
    """
    verifier = Verifier(api.runtime.settings.key)
    limiter = RateLimiter(10**9, 10.0)

    def verified(scope: Scope, function: str, body: bytes) -> Any:
        """The body's JSON, once the request is counted and its signature checked."""
        now = time.time()
        headers = dict(scope["headers"])
        if not limiter.allow(scope["client"][0], now):
            raise RuntimeError("rate limited")
        verifier.verify(
            SignedRequest(
                "post",
                function,
                headers[b"authorization"].decode("latin-1"),
                headers[b"date"].decode("latin-1"),
                headers[b"x-nonce"].decode("latin-1"),
                body,
            ),
            now,
        )
        return _json_body(body)

    async def reply(scope: Scope, function: str, body: bytes) -> Response:
        value = verified(scope, function, body)
        if function == "run":
            job = await api.runtime.run(value["command"])
        else:
            job = api.runtime.status(_uuid(value["job"]))
        return Response(api._job_json(job), media_type="application/json")

    class Endpoint:
        """An ASGI app (not a function: Starlette then calls it as one)."""

        def __init__(self, function: str) -> None:
            self.function = function

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            body = await api._read_body(receive, None)  # as the bridge reads it
            response = await reply(scope, self.function, body)
            await response(scope, receive, send)

    def endpoint(function: str) -> Callable[..., Awaitable[object]]:
        async def handler(request: Request) -> Response:
            return await reply(request.scope, function, await request.body())

        return Endpoint(function) if lean else handler

    return Starlette(
        routes=[
            Route("/run", endpoint("run"), methods=["POST"]),
            Route("/status", endpoint("status"), methods=["POST"]),
        ]
    )


async def serve_app(app: Starlette) -> tuple[uvicorn.Server, asyncio.Task[None], int]:
    """Serve ``app`` on a loopback port as the bridge's server does; the port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.listen(1024)
    sock.setblocking(False)
    config = uvicorn.Config(
        app, log_level="warning", lifespan="off", access_log=False, proxy_headers=False
    )
    server = uvicorn.Server(config)
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    return server, task, sock.getsockname()[1]


# --- the load process ----------------------------------------------------------------------


class Connection:
    """A minimal keep-alive HTTP/1.1 client: one write per request, TCP_NODELAY.

    httpx writes headers and body separately, which with Nagle and delayed ACKs costs ~40 ms
    per request on loopback and would measure the kernel instead of the servers.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            sock = self.writer.get_extra_info("socket")
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        assert self.reader is not None
        lines = [f"POST {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        lines.append(f"Content-Length: {len(body)}")
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)


async def load(url: str, key: bytes, command: str, seconds: float, concurrency: int) -> None:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    latencies: list[float] = []
    errors = 0
    deadline = time.monotonic() + seconds

    status_only = command.startswith("status-only ")
    if status_only:
        # One job, then pairs of /status: the HTTP and signature layers without new jobs.
        command = command.removeprefix("status-only ")

    async def one() -> None:
        nonlocal errors
        connection = Connection(host, port)
        job_id = None
        while time.monotonic() < deadline:
            started = time.perf_counter()
            function, payload = ("run", {"command": command})
            if status_only and job_id is not None:
                function, payload = ("status", {"job": job_id})
            call = Call.post(function, payload)
            status, body = await connection.post(
                f"/{function}?openportal-version=0.1", call.body, call.headers(key, time.time())
            )
            if status != 200:
                errors += 1
                continue
            job_id = job_id if status_only and job_id else json.loads(body)["id"]
            call = Call.post("status", {"job": job_id})
            status, body = await connection.post(
                "/status?openportal-version=0.1", call.body, call.headers(key, time.time())
            )
            if status != 200:
                errors += 1
                continue
            latencies.append(time.perf_counter() - started)

    started = time.monotonic()
    await asyncio.gather(*(one() for _ in range(concurrency)))
    elapsed = time.monotonic() - started
    print(
        json.dumps(
            {
                "pairs_per_s": len(latencies) / elapsed,
                "p50_ms": statistics.median(latencies) * 1000 if latencies else None,
                "pairs": len(latencies),
                "errors": errors,
            }
        )
    )


async def measure(
    url: str, key: bytes, command: str, seconds: float, concurrency: int
) -> dict[str, float]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--load",
        url,
        key.hex(),
        command,
        str(seconds),
        str(concurrency),
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    out, _ = await process.communicate()
    result: dict[str, float] = json.loads(out)
    return result


async def report(  # noqa: PLR0917 - a local helper of main()
    name: str, url: str, key: bytes, command: str, args: argparse.Namespace, concurrency: int
) -> tuple[float, float]:
    """Warm up, measure, print one line; the pairs/s and the server's CPU seconds per pair."""
    await measure(url, key, command, 1.0, concurrency)
    cpu = time.process_time()
    r = await measure(url, key, command, args.seconds, concurrency)
    # Server-side CPU per pair (for /run this includes the eight agents carrying each job).
    per_pair = (time.process_time() - cpu) / max(r["pairs"], 1)
    print(
        f"  {name:<34} {r['pairs_per_s']:7.0f} pairs/s  p50 {r['p50_ms']:7.2f} ms"
        f"  server CPU {per_pair * 1e3:5.2f} ms/pair"
        f"  ({r['pairs']:.0f} pairs, {r['errors']:.0f} errors)"
    )
    return r["pairs_per_s"], per_pair


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as root:
        network = await start_network(Path(root))
        servers = []
        try:
            await network.bridge.start()
            # All load comes from one address; the default limit (10,000 per 10 s per
            # client) would cap the bridge at 1,000 requests/s.  The limiter still runs.
            api = network.bridge.api
            api.limiter.limit = 10**9
            bare, bare_task, bare_port = await serve_app(bare_app())
            servers.append((bare, bare_task))
            floors = {}
            for lean in (False, True):
                server, task, port = await serve_app(floor_app(api, lean=lean))
                servers.append((server, task))
                floors["ASGI app" if lean else "Starlette handler"] = f"http://127.0.0.1:{port}/"
            bridge_url = network.bridge.url
            key = network.bridge.settings.key
            bare_url = f"http://127.0.0.1:{bare_port}/"
            status_only = "status-only " + args.command
            print(f"command: {args.command}\n{args.seconds:g} s per target\n")
            for concurrency in args.concurrency:
                print(f"concurrency {concurrency}:")
                bare_rate, bare_cpu = await report(
                    "bare", bare_url, key, args.command, args, concurrency
                )
                # The same signed requests, /status only, while the network is idle: what
                # the HTTP, rate-limit and signature layers cost on their own; and the least
                # of that work on the bare app (the floor).
                floor_rates = {}
                for how, url in floors.items():
                    floor_rates[how], _ = await report(
                        f"floor ({how}), /status only", url, key, status_only, args, concurrency
                    )
                status_rate, _ = await report(
                    "bridge, signed /status pairs only", bridge_url, key, status_only, args,
                    concurrency,
                )  # fmt: skip
                bridge_rate, _ = await report(
                    "bridge, /run + /status", bridge_url, key, args.command, args, concurrency
                )
                await drained(network)
                for label, rate in (
                    *((f"floor ({how})/bare, /status only", r) for how, r in floor_rates.items()),
                    ("bridge/bare, /status only", status_rate),
                    ("bridge/bare, /run + /status", bridge_rate),
                ):
                    ratio = rate / bare_rate
                    verdict = "meets" if ratio >= 0.85 else "misses"
                    print(f"  ratio {label}: {ratio:.2f} ({verdict} the 0.85 goal)")
                await steps(api, key, args.command, bare_cpu)
                print()
        finally:
            for server, task in servers:
                server.should_exit = True
                await task
            await network.stop()


async def drained(network: Network, timeout: float = 300.0) -> None:
    """Wait until no agent holds an unfinished job: the jobs of a ``/run`` load, which the
    network may take longer to finish than the bridge took to accept, must not run on into
    the next measurement (they share this process).  Says how long that took."""
    started = time.monotonic()

    def unfinished() -> int:
        return sum(
            not job.is_finished
            for agent in network.agents.values()
            for _, board in agent.boards_by_peer()
            for job in board.jobs()
        )

    while (left := unfinished()) and time.monotonic() - started < timeout:
        await asyncio.sleep(0.2)
    waited = time.monotonic() - started
    state = f"{left} jobs still unfinished" if left else "every job finished"
    print(f"  after the /run load: {state} {waited:.1f} s later")


# --- the floor: what the bridge must do for each request -------------------------------------


async def steps(api: BridgeApi, key: bytes, command: str, bare_cpu: float) -> None:
    """Time the bridge's own work on a signed ``/status`` without HTTP, and what the best
    ratio to the bare endpoint would be if that were all it added."""
    job = await api.runtime.run(command)
    call = Call.post("status", {"job": str(job.id)})
    body = call.body
    count = 20000
    now = time.time()
    signed = [call.headers(key, now) for _ in range(count)]  # a fresh nonce each
    scopes = [
        {
            "type": "http",
            "client": ("127.0.0.1", 40000),
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]
            + [(b"content-length", str(len(body)).encode())],
        }
        for headers in signed
    ]

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": body, "more_body": False}

    started = time.process_time()
    for scope in scopes:
        response = await api.answer("post", "status", api.status, scope, receive)  # type: ignore[arg-type]
        assert response.status_code == 200, response.body
    pipeline = (time.process_time() - started) / count
    verifier = Verifier(key)
    requests = iter(  # a fresh nonce each: a nonce seen twice is refused
        [
            SignedRequest("post", "status", h["Authorization"], h["Date"], h["X-Nonce"], body)
            for h in (call.headers(key, now) for _ in range(count))
        ]
    )
    verify = per_call(lambda: verifier.verify(next(requests), now), count)
    steps = {
        "signature check": verify,
        "rate limit": per_call(lambda: api.limiter.allow("127.0.0.1", now), count),
        "body JSON": per_call(lambda: _json_body(body), count),
        "job id": per_call(lambda: _uuid(str(job.id)), count),
        "board look-up": per_call(lambda: api.runtime.status(job.id), count),
    }
    response_cost = per_call(lambda: Response(CANNED, media_type="application/json"), count)
    own = pipeline - response_cost  # the bare endpoint builds a Response too
    least = sum(steps.values())
    parts = ", ".join(f"{name} {cost * 1e6:.1f}" for name, cost in steps.items())
    print(f"  the bridge's own work per /status, without HTTP: {own * 1e6:5.1f} µs")
    print(f"  of which the least it must do: {least * 1e6:4.1f} µs ({parts})")
    print(
        f"  bare server CPU {bare_cpu * 1e6:4.0f} µs/pair; the ratio if a pair's 2 requests added"
        f" only: all of that work {bare_cpu / (bare_cpu + 2 * own):.2f};"
        f" the least {bare_cpu / (bare_cpu + 2 * least):.2f};"
        f" the signature check {bare_cpu / (bare_cpu + 2 * verify):.2f}"
    )


def per_call(step: Callable[[], object], count: int) -> float:
    """CPU seconds per call of ``step``, over ``count`` calls."""
    started = time.process_time()
    for _ in range(count):
        step()
    return (time.process_time() - started) / count


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--load":
        url, key_hex, command, seconds, concurrency = sys.argv[2:7]
        asyncio.run(load(url, bytes.fromhex(key_hex), command, float(seconds), int(concurrency)))
    else:
        parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
        parser.add_argument("--seconds", type=float, default=5.0)
        parser.add_argument(
            "--concurrency",
            type=lambda text: [int(n) for n in text.split(",")],
            default=[32, 128],
            help="comma-separated connection counts (default 32,128)",
        )
        parser.add_argument(
            "--command",
            default="portal.provider.platform.instance get_users physics.portal",
            help="the instruction each /run starts",
        )
        asyncio.run(main(parser.parse_args()))
