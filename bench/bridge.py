"""Bridge API throughput: signed ``/run`` + ``/status`` pairs, against a bare endpoint.

Usage: ``python bench/bridge.py [--seconds 5] [--concurrency 32,128] [--command "..."]``

One process serves, in the same event loop on the same uvicorn stack:

* the bridge API of a running demo network (every request signed and verified, ``/run``
  puts a real ``submit`` job to the portal, ``/status`` reads the bridge's board);
* a bare Starlette app with ``/run`` and ``/status`` routes that return a canned Job.

A separate load process (so that load generation does not compete with the servers for the
GIL) sends signed pairs with a fixed concurrency and reports pairs/s and the median pair
latency; the ratio bridge / bare is printed at the end (goal: >= 0.85 for /status).
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
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from broadgauge.client._protocol import Request as Call
from broadgauge.demo import start_network

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


async def serve_bare() -> tuple[uvicorn.Server, asyncio.Task[None], int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.listen(1024)
    sock.setblocking(False)
    config = uvicorn.Config(
        bare_app(), log_level="warning", lifespan="off", access_log=False, proxy_headers=False
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
) -> float:
    """Warm up, measure, print one line; the pairs/s."""
    await measure(url, key, command, 1.0, concurrency)
    cpu = time.process_time()
    r = await measure(url, key, command, args.seconds, concurrency)
    # Server-side CPU per pair (for /run this includes the eight agents carrying each job).
    per_pair = (time.process_time() - cpu) / max(r["pairs"], 1) * 1000
    print(
        f"  {name:<34} {r['pairs_per_s']:7.0f} pairs/s  p50 {r['p50_ms']:7.2f} ms"
        f"  server CPU {per_pair:5.2f} ms/pair  ({r['pairs']:.0f} pairs, {r['errors']:.0f} errors)"
    )
    return r["pairs_per_s"]


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as root:
        network = await start_network(Path(root))
        bare, bare_task, bare_port = await serve_bare()
        try:
            await network.bridge.start()
            # All load comes from one address; the default limit (10,000 per 10 s per
            # client) would cap the bridge at 1,000 requests/s.  The limiter still runs.
            network.bridge.api.limiter.limit = 10**9
            bridge_url = network.bridge.url
            key = network.bridge.settings.key
            bare_url = f"http://127.0.0.1:{bare_port}/"
            print(f"command: {args.command}\n{args.seconds:g} s per target\n")
            for concurrency in args.concurrency:
                print(f"concurrency {concurrency}:")
                bare_rate = await report("bare", bare_url, key, args.command, args, concurrency)
                # The same signed requests, /status only, while the network is idle: what
                # the HTTP, rate-limit and signature layers cost on their own.
                status_only = await report(
                    "bridge, signed /status pairs only",
                    bridge_url,
                    key,
                    "status-only " + args.command,
                    args,
                    concurrency,
                )
                bridge_rate = await report(
                    "bridge, /run + /status", bridge_url, key, args.command, args, concurrency
                )
                for label, rate in (("/status only", status_only), ("/run + /status", bridge_rate)):
                    ratio = rate / bare_rate
                    verdict = "meets" if ratio >= 0.85 else "misses"
                    print(f"  ratio bridge/bare, {label}: {ratio:.2f} ({verdict} the 0.85 goal)")
                print()
        finally:
            bare.should_exit = True
            await bare_task
            await network.stop()


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
