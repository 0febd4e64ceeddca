"""Execution Planner benchmark: prints numbers, asserts nothing.

    python bench/planner.py [--seconds 2] [--repeat 5] [--concurrency 32] [--sizes 100 1000]

1. ``/accepts`` requests/s for one service (``examples/planner/esap.toml``, the rule engine
   deciding ``esap-notebook``) beside a bare endpoint returning a constant JSON, both on the
   same stack (Starlette on one uvicorn process), driven by a minimal keep-alive HTTP/1.1
   client (so the load generator costs less than the server); the ratio is the planner's
   own cost.
2. Aggregator latency p50/p99 over N loopback services beside one service's latency.  The
   services are real planner apps: two uvicorn processes ("fleets") each serve every
   service under its own path ``/s/<i>/accepts``.  The aggregator runs as
   ``broadgauge planner aggregate`` in its own process and is asked sequentially with httpx;
   one service is asked the same way.  Rows: cold (services send ``no-cache``, so every
   request fans out to all N) and warm (services send ``max-age=60``, so the aggregator
   answers from its cache).
3. Network planner over the demo network (in this process, the notebook instance publishing
   a rule that needs an account): latency of one answer through the planner's Python API,
   (a) sweeping the hierarchy every time, (b) with the sweep cached, (c) cached sweep plus
   an ``is_existing_user`` job to the instance (account facts not cached).  Everything runs
   on one event loop, as the agents share this process.
4. The broker over the demo network: ``POST /requests`` per second over HTTP (concurrent
   clients, each request making one offer, against a site publishing room for a million
   cores), with the booking store in SQLite and in a real PostgreSQL (started as the tests
   start it; skipped with the reason when it cannot run here); and the time from accepting an
   offer to the session being AVAILABLE (a new researcher each time: the account is
   provisioned through the network and a notebook started on the embedded hub), p50.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import pwd
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
ESAP = ROOT / "examples" / "planner" / "esap.toml"
PY = sys.executable
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src")}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_up(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server for {url} exited with {process.returncode}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.05)
    raise SystemExit(f"{url} did not come up")


def fleet_server(port: int, config: Path) -> None:
    """Child mode: one process serving many planner services under /s/<i>/ (and /bare)."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    from broadgauge.planner.app import Planner
    from broadgauge.planner.config import load

    planner = Planner(load(config))
    constant = {"reponseword": "YES", "servicetype": "x", "serviceinfo": {"endpoint": "e"}}

    async def bare(request: Request) -> Response:
        return JSONResponse(constant)

    app = Starlette(
        routes=[
            Route("/accepts", planner.accepts, methods=["GET", "POST"]),
            Route("/s/{i:int}/accepts", planner.accepts, methods=["GET"]),
            Route("/bare", bare),
        ]
    )
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def stub_server(port: int) -> None:
    """Child mode: a canned YES for every request, on raw asyncio (keep-alive, no framework).

    Services this cheap leave the aggregator's own cost to be measured: with real planner
    apps, 1,000 answers cost the two fleet processes more CPU than the machine has.
    """
    body = b'{"reponseword":"YES","servicetype":"x","serviceinfo":{"endpoint":"e"}}'
    reply = (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncache-control: no-cache\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(reply)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(serve, "127.0.0.1", port, backlog=4096)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def start_stub() -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    process = subprocess.Popen([PY, __file__, "--stub-server", str(port)], env=ENV)
    url = f"http://127.0.0.1:{port}/"
    wait_up(f"{url}bare", process)
    return url, process


def start_fleet(config: Path) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    command = [PY, __file__, "--fleet-server", str(port), str(config)]
    process = subprocess.Popen(command, env=ENV)
    url = f"http://127.0.0.1:{port}/"
    wait_up(f"{url}bare", process)
    return url, process


async def hammer(port: int, path: str, seconds: float, concurrency: int) -> float:
    """Requests/s with ``concurrency`` keep-alive connections, each one request at a time."""
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    count = 0
    stop = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal count
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while time.monotonic() < stop:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            count += 1
        writer.close()

    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return count / (time.monotonic() - started)


def latencies(url: str, params: dict[str, str], n: int) -> list[float]:
    out = []
    with httpx.Client(timeout=30) as http:
        for _ in range(5):
            http.get(url, params=params)  # warm-up (connections, caches)
        for _ in range(n):
            started = time.perf_counter()
            response = http.get(url, params=params)
            out.append(time.perf_counter() - started)
            assert response.status_code == 200, response.text
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def throughput(seconds: float, concurrency: int, repeat: int) -> None:
    url, process = start_fleet(ESAP)
    port = int(url.rsplit(":", 1)[1].strip("/"))
    try:
        targets = (
            ("bare endpoint", "/bare"),
            ("/accepts (rules)", "/accepts?tasktype=esap-notebook"),
            ("/accepts (no rule)", "/accepts?tasktype=unknown-task"),
        )
        for _, path in targets:
            asyncio.run(hammer(port, path, 0.5, concurrency))  # warm-up
        # Interleaved rounds, median per target: this shared 2-CPU machine drifts by 20-50%.
        rates: dict[str, list[float]] = {name: [] for name, _ in targets}
        for _ in range(repeat):
            for name, path in targets:
                rates[name].append(asyncio.run(hammer(port, path, seconds, concurrency)))
        rows = [(name, statistics.median(values)) for name, values in rates.items()]
    finally:
        process.terminate()
        process.wait()
    bare = rows[0][1]
    print(
        f"\n1. one service, one uvicorn process, {concurrency} keep-alive connections, "
        f"median of {repeat} interleaved {seconds}s runs"
    )
    print(f"   {'endpoint':<22}{'req/s':>10}{'vs bare':>10}")
    for name, rate in rows:
        print(f"   {name:<22}{rate:>10.0f}{rate / bare:>10.2f}")


def run_aggregator(tmp: Path, bases: list[str], cache: str, samples: int) -> tuple[float, float]:
    """p50 and p99 (ms) of ``broadgauge planner aggregate`` over services at ``bases``."""
    params = {"tasktype": "esap-notebook"}
    size = len(bases)
    agg = tmp / f"agg-{cache}-{size}-{bases[0].split(':')[-1].strip('/')}.toml"
    lines = [
        "[aggregator]",
        "timeout = 10.0",
        "deadline = 20.0",
        f"negative_ttl = {0 if cache == 'cold' else 10}",
        "max_concurrency = 200",
    ]
    for i, base in enumerate(bases):
        lines += ["[[services]]", f'name = "s{i}"', f'url = "{base}s/{i}/"']
    agg.write_text("\n".join(lines) + "\n")
    port = free_port()
    command = [PY, "-m", "broadgauge", "planner", "aggregate", "--config"]
    command += [str(agg), "--port", str(port)]
    process = subprocess.Popen(command, env=ENV)
    try:
        wait_up(f"http://127.0.0.1:{port}/openapi.json", process)
        got = latencies(f"http://127.0.0.1:{port}/accepts", params, samples)
        body = httpx.get(f"http://127.0.0.1:{port}/accepts", params=params).json()
        assert len(body["answers"]) == size and not body["failures"], body
    finally:
        process.terminate()
        process.wait()
    return pct(got, 0.5), pct(got, 0.99)


def aggregator_latency(sizes: list[int], samples: dict[int, int]) -> None:
    print("\n2. aggregator latency (sequential requests, httpx client, ms)")
    print(f"   {'target':<34}{'p50':>9}{'p99':>9}{'x one':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        for cache in ("cold", "warm"):
            max_age = 0 if cache == "cold" else 60
            config = Path(tmp) / f"service-{cache}.toml"
            text = ESAP.read_text().replace('name = "example-escape-binderhub"', "")
            config.write_text(text.replace("[service]", f"[service]\ncache_max_age = {max_age}", 1))
            fleets = [start_fleet(config) for _ in range(2)]
            try:
                params = {"tasktype": "esap-notebook"}
                one = latencies(f"{fleets[0][0]}s/0/accepts", params, 300)
                one_p50 = pct(one, 0.5)
                print(
                    f"   {'one service (' + cache + ')':<34}{one_p50:>9.2f}{pct(one, 0.99):>9.2f}"
                )
                for size in sizes:
                    bases = [fleets[i % 2][0] for i in range(size)]
                    p50, p99 = run_aggregator(Path(tmp), bases, cache, samples[size])
                    label = f"aggregator, {size} services ({cache})"
                    print(f"   {label:<34}{p50:>9.2f}{p99:>9.2f}{p50 / one_p50:>8.1f}")
            finally:
                for _, process in fleets:
                    process.terminate()
                    process.wait()
        # The same fan-out over services that cost (almost) nothing: the aggregator's share.
        stub, process = start_stub()
        try:
            one = latencies(f"{stub}s/0/accepts", {"tasktype": "esap-notebook"}, 300)
            one_p50 = pct(one, 0.5)
            print(f"   {'one stub service (cold)':<34}{one_p50:>9.2f}{pct(one, 0.99):>9.2f}")
            for size in sizes:
                p50, p99 = run_aggregator(Path(tmp), [stub] * size, "cold", samples[size])
                label = f"aggregator, {size} stubs (cold)"
                print(f"   {label:<34}{p50:>9.2f}{p99:>9.2f}{p50 / one_p50:>8.1f}")
        finally:
            process.terminate()
            process.wait()


def network_latency(samples: int) -> None:
    from broadgauge.demo import NOTEBOOKS, start_network
    from broadgauge.planner.answers import Task
    from broadgauge.planner.rules import Identity

    async def run() -> list[tuple[str, list[float]]]:
        with tempfile.TemporaryDirectory() as tmp:
            network = await start_network(Path(tmp))
            try:
                await network.submit("add_project physics.portal", path=NOTEBOOKS)
                await network.submit("add_user alice.physics.portal", path=NOTEBOOKS)
                planner = network.planner.planner
                alice = Identity("alice", {"openportal_users": ["alice.physics.portal"]})
                task = Task("jupyter-notebook")
                rows = []
                for label, refresh, account_ttl, who in (
                    ("sweep every time, anonymous", 0.0, 60.0, None),
                    ("cached sweep, anonymous", 3600.0, 60.0, None),
                    ("cached sweep + account job", 3600.0, 0.0, alice),
                ):
                    planner.settings = dataclasses.replace(
                        planner.settings, refresh=refresh, account_ttl=account_ttl
                    )
                    planner.forget()
                    await planner.answer(task, who)  # warm up
                    times = []
                    for _ in range(samples):
                        started = time.perf_counter()
                        body = await planner.answer(task, who)
                        times.append(time.perf_counter() - started)
                        assert not body["failures"], body
                    rows.append((label, times))
                return rows
            finally:
                await network.stop()

    print(f"\n3. network planner over the demo network (in process, {samples} answers, ms)")
    print(f"   {'case':<34}{'p50':>9}{'p99':>9}")
    for label, times in asyncio.run(run()):
        print(f"   {label:<34}{pct(times, 0.5):>9.2f}{pct(times, 0.99):>9.2f}")


def broker_figures(seconds: float, concurrency: int, samples: int, postgres: bool) -> None:
    from broadgauge.demo import notebook_rules, start_network
    from broadgauge.planner.config import parse_config
    from broadgauge.planner.network import NetworkConfig, NetworkSettings
    from broadgauge.planner.offers.records import Phase
    from broadgauge.planner.rules import Identity
    from broadgauge.planner.server import NetworkPlannerServer

    request = {"executable": {"kind": "jupyter-notebook"}, "compute": {"cores": {"min": 1}}}

    async def requests_per_second(bookings: str) -> float:
        with tempfile.TemporaryDirectory() as tmp:
            network = await start_network(Path(tmp))
            rules = notebook_rules("https://jupyter.example/")
            rules["site"] = {"capacity": {"cores": 1_000_000, "memory": 1_000_000}}
            rules["rules"] = [dict(rules["rules"][0], requires_account=False)]  # type: ignore[index]
            network.agents["jupyter"].planner_rules.publish(rules)
            config = NetworkConfig(
                parse_config({"service": {"name": "bench"}}),
                NetworkSettings(port=0, refresh=3600.0, bookings=bookings or ""),
            )
            server = NetworkPlannerServer(network.agents["bridge"], config)
            await server.start()
            try:
                url = f"{server.url}requests"
                headers = {"Prefer": "return=representation"}
                async with httpx.AsyncClient(timeout=60) as http:
                    await http.post(url, json=request, headers=headers)  # warm: sweep, tables
                    done = 0
                    deadline = time.perf_counter() + seconds

                    async def client() -> None:
                        nonlocal done
                        while time.perf_counter() < deadline:
                            answer = await http.post(url, json=request, headers=headers)
                            assert answer.json()["result"] == "YES", answer.text
                            done += 1

                    started = time.perf_counter()
                    await asyncio.gather(*(client() for _ in range(concurrency)))
                    return done / (time.perf_counter() - started)
            finally:
                await server.stop()
                await network.stop()

    async def accept_to_available() -> list[float]:
        with tempfile.TemporaryDirectory() as tmp:
            network = await start_network(Path(tmp))
            broker = network.planner.broker
            assert broker is not None
            times = []
            try:
                for i in range(samples):
                    user = f"r{i}.physics.portal"
                    who = Identity(user, {"sub": user, "openportal_users": [user]})
                    _, offers = await broker.request(request, who)
                    started = time.perf_counter()
                    await broker.update(offers[0].uuid, Phase.ACCEPTED, who)
                    await broker.wait_idle()
                    times.append(time.perf_counter() - started)
                    session = await broker.session(offers[0].uuid, who)
                    assert session.phase is Phase.AVAILABLE, session.messages
                    await broker.update(offers[0].uuid, Phase.CANCELLED, who)
            finally:
                await network.stop()
            return times

    print(f"\n4. the broker over the demo network ({concurrency} clients, {seconds:g} s each)")
    sqlite_rate = asyncio.run(requests_per_second(""))
    print(f"   POST /requests, SQLite store      {sqlite_rate:>9.1f} /s")
    if postgres:
        sys.path.insert(0, str(ROOT))
        from tests.backends import postgres as pg

        reason = pg.missing()
        if reason:
            print(f"   POST /requests, PostgreSQL store  skipped: {reason}")
        else:
            # As the fixture does: under /tmp, owned by the server's user when we are root.
            directory = Path(tempfile.mkdtemp(prefix="bench-pg-", dir="/tmp"))
            if os.geteuid() == 0:
                account = pwd.getpwnam(pg.SYSTEM_USER)
                os.chown(directory, account.pw_uid, account.pw_gid)
            try:
                server = pg.start_postgres(directory)
                try:
                    rate = asyncio.run(requests_per_second(server.create_database()))
                finally:
                    pg.stop_postgres(directory, server.pid)
            finally:
                shutil.rmtree(directory, ignore_errors=True)
            print(f"   POST /requests, PostgreSQL store  {rate:>9.1f} /s")
    times = asyncio.run(accept_to_available())
    print(
        f"   accept -> AVAILABLE (n={len(times)})    p50 {pct(times, 0.5):7.1f} ms"
        f"   p99 {pct(times, 0.99):7.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--network-samples", type=int, default=200)
    parser.add_argument("--broker-samples", type=int, default=50)
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--only-broker", action="store_true")
    parser.add_argument("--fleet-server", nargs=2, metavar=("PORT", "CONFIG"))
    parser.add_argument("--stub-server", type=int, metavar="PORT")
    args = parser.parse_args()
    if args.stub_server:
        stub_server(args.stub_server)
        return
    if args.fleet_server:
        fleet_server(int(args.fleet_server[0]), Path(args.fleet_server[1]))
        return
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    if not args.only_broker:
        throughput(args.seconds, args.concurrency, args.repeat)
        aggregator_latency(args.sizes, {size: 100 if size <= 100 else 30 for size in args.sizes})
        network_latency(args.network_samples)
    broker_figures(
        args.seconds * 2, args.concurrency, args.broker_samples, postgres=not args.no_postgres
    )


if __name__ == "__main__":
    main()
