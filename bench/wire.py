"""Wire-layer benchmark: prints numbers, asserts nothing.

    python bench/wire.py [--count 5000] [--peers 1000] [--size 1024]

For 1 KiB messages on one loopback connection (echo server in a separate process, so the two
sides run on separate cores as they would on separate hosts), it measures round trips/s and
p50/p99 latency with one message in flight and with 64 in flight:

* through our encrypted layer (``broadgauge.wire.Service`` on both ends);
* through bare ``websockets`` with no encryption;
* through the protocol's frame alone on bare ``websockets`` (each message sealed and each
  reply opened by a ``Channel`` of both layers, no ``Service``): what is left of the encrypted
  layer once its own bookkeeping is gone;
* through bare ``websockets`` carrying as many characters as the encrypted frame of the
  message (the protocol's frame is the hex of both sealed layers: about twice the message);
* the protocol's crypto floor: the HKDF derivations and AEAD operations one round trip needs
  (two seals and two opens of both layers), in a tight loop with no I/O.

The ratios put the encrypted layer against bare + crypto floor, and against frame-sized
bare + crypto floor: the least any implementation of this wire format pays.

Then the memory of ``--peers`` idle connected peers, on the server and on the client side.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from benchlib import crypto_floor, main_parser, read_channel, write_link
from broadgauge.wire import Invite, Message, Service, ServiceConfig
from broadgauge.wire.envelope import LayerKey, dump_json, encode_frame
from broadgauge.wire.handshake import Channel
from broadgauge.wire.keys import Key

WINDOW = 64
#: Client-side CPU seconds per round trip of the last ``drive`` (wake-up latency excluded).
CPU_PER_RT: list[float] = []


def rss_bytes() -> int:
    """Resident set size of this process."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def raise_fd_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# --- servers (run in a child process) ----------------------------------------------------


async def serve_bare(ready: Path, link: Path | None = None) -> None:
    """Echo on bare websockets; with ``link``, through the protocol's frame alone: each frame
    opened and its payload sealed again (both layers, the replay check), no Service."""
    channel = None if link is None else read_channel(link)

    async def echo(ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    async def echo_frames(ws: ServerConnection) -> None:
        assert channel is not None
        async for frame in ws:
            await ws.send(channel.seal(channel.open(str(frame)) or ""))

    handler = echo if channel is None else echo_frames
    async with serve(handler, "127.0.0.1", 0, compression=None, max_size=None) as server:
        port = server.sockets[0].getsockname()[1]
        ready.write_text(f"ws://127.0.0.1:{port}/")
        await asyncio.Event().wait()


async def serve_encrypted(ready: Path, peers: int) -> None:
    service = Service(ServiceConfig.create("server", port=0))

    @service.on_message
    async def echo(message: Message) -> None:
        await service.send(message.peer.name, message.payload, message.peer.zone)

    await service.start()
    invites = [service.add_client(f"c{i}", "127.0.0.1").dumps() for i in range(peers)]
    gc.collect()
    baseline = rss_bytes()
    ready.write_text(json.dumps({"invites": invites, "baseline_rss": baseline}))
    # Report memory whenever asked (a line on stdin), until stdin closes.
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while await reader.readline():
        gc.collect()
        report = {"connected": len(service.connected_peers()), "rss": rss_bytes()}
        print(json.dumps(report), flush=True)
    await service.stop()


def start_child(*args: str) -> tuple[subprocess.Popen[str], Path]:
    ready = Path(tempfile.mkdtemp(prefix="bg-bench-")) / "ready"
    child = subprocess.Popen(
        [sys.executable, __file__, "--child", *args, str(ready)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not ready.exists() or not ready.read_text():
        if child.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("benchmark server failed to start")
        time.sleep(0.02)
    return child, ready


# --- load generation ---------------------------------------------------------------------


async def drive(
    send: Callable[[str], Awaitable[None]],
    replies: asyncio.Queue[str],
    count: int,
    window: int,
    payload: str,
) -> tuple[float, list[float]]:
    """Keep ``window`` messages in flight until ``count`` round trips are done."""
    sent_at: dict[str, float] = {}
    latencies: list[float] = []
    body = payload[: len(payload) - 8]
    clock = time.perf_counter
    started = clock()
    cpu_started = time.process_time()
    next_id = 0

    async def launch() -> None:
        nonlocal next_id
        tag = f"{next_id:08d}"
        next_id += 1
        sent_at[tag] = clock()
        await send(tag + body)

    for _ in range(min(window, count)):
        await launch()
    while len(latencies) < count:
        reply = await replies.get()
        latencies.append(clock() - sent_at.pop(reply[:8]))
        if next_id < count:
            await launch()
    CPU_PER_RT.append((time.process_time() - cpu_started) / count)
    return clock() - started, latencies


async def bench_bare(
    url: str, count: int, window: int, payload: str, channel: Channel | None = None
) -> tuple[float, list[float]]:
    """Round trips through bare websockets; with ``channel``, each message sealed and each
    reply opened by it."""
    async with connect(url, compression=None, max_size=None) as ws:
        replies: asyncio.Queue[str] = asyncio.Queue()

        async def pump() -> None:
            async for message in ws:
                reply = str(message) if channel is None else channel.open(str(message))
                replies.put_nowait(reply or "")

        async def send(text: str) -> None:
            await ws.send(text if channel is None else channel.seal(text))

        reader = asyncio.create_task(pump())
        await drive(send, replies, min(count, 500), window, payload)  # warm up
        result = await drive(send, replies, count, window, payload)
        reader.cancel()
        return result


async def bench_encrypted(
    invite: Invite, count: int, window: int, payload: str
) -> tuple[float, list[float]]:
    client = Service(ServiceConfig.create("c0", port=0))
    replies: asyncio.Queue[str] = asyncio.Queue()

    @client.on_message
    async def collect(message: Message) -> None:
        replies.put_nowait(message.payload)

    client.add_server(invite)
    async with asyncio.timeout(10):
        await client.start(listen=False)
        await client.wait_for_peer("server")

    async def send(text: str) -> None:
        await client.send("server", text)

    await drive(send, replies, min(count, 500), window, payload)  # warm up
    result = await drive(send, replies, count, window, payload)
    await client.stop()
    return result


def overhead_of_framing(size: int, repeat: int = 20000) -> float:
    """Seconds for the full encode_frame of one message (for context)."""
    inner = LayerKey(Key.generate(), os.urandom(32))
    outer = LayerKey(Key.generate(), os.urandom(32))
    plaintext = dump_json("x" * size)
    started = time.perf_counter()
    for _ in range(repeat):
        encode_frame(plaintext, inner, outer)
    return (time.perf_counter() - started) / repeat


def print_ratios(
    label: str, row: dict[str, float], base: dict[str, float], floor: float, window: int
) -> None:
    """``row`` against ``base`` plus the crypto floor: p50 latency (1 in flight) and time per
    round trip."""
    if window == 1:
        p50_ratio = row["p50_us"] / (base["p50_us"] + floor * 1e6)
        print(f"  ratio {label}, p50 latency:  {p50_ratio:5.2f}")
    per_rt = (1 / row["rt_per_s"]) / (1 / base["rt_per_s"] + floor)
    print(f"  ratio {label}, time per rt:  {per_rt:5.2f}")


def summarise(name: str, elapsed: float, latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    row = {
        "rt_per_s": len(latencies) / elapsed,
        "p50_us": statistics.median(ordered) * 1e6,
        "p99_us": ordered[int(0.99 * (len(ordered) - 1))] * 1e6,
        "mean_us": statistics.fmean(ordered) * 1e6,
    }
    print(
        f"  {name:<24} {row['rt_per_s']:>10.0f} rt/s   p50 {row['p50_us']:>8.1f} µs"
        f"   p99 {row['p99_us']:>8.1f} µs   client CPU {CPU_PER_RT[-1] * 1e6:6.1f} µs/rt"
    )
    return row


async def idle_memory(peers: int) -> dict[str, float]:
    raise_fd_limit()
    child, ready = start_child("idle", str(peers))
    assert child.stdin is not None and child.stdout is not None
    try:
        info = json.loads(ready.read_text())
        invites = [Invite.loads(text) for text in info["invites"]]
        gc.collect()
        client_before = rss_bytes()
        clients = []
        started = time.perf_counter()
        # Peers come up in waves of 50, as a fleet does; all 1,000 dialling in the same
        # millisecond would make each handshake try every key allowed from 127.0.0.1.
        for first in range(0, len(invites), 50):
            wave = []
            for i, invite in enumerate(invites[first : first + 50], start=first):
                client = Service(ServiceConfig.create(f"c{i}", port=0))
                client.add_server(invite)
                await client.start(listen=False)
                wave.append(client)
            async with asyncio.timeout(120):
                for client in wave:
                    await client.wait_for_peer("server")
            clients.extend(wave)
        connect_time = time.perf_counter() - started
        await asyncio.sleep(1.0)
        gc.collect()
        client_after = rss_bytes()
        child.stdin.write("report\n")
        child.stdin.flush()
        report = json.loads(child.stdout.readline())
        report["connect_time"] = connect_time
        for client in clients:
            await client.stop()
    finally:
        with contextlib.suppress(Exception):
            assert child.stdin is not None
            child.stdin.close()
        child.wait(timeout=30)
    connect_time = report["connect_time"]
    server_per_peer = (report["rss"] - info["baseline_rss"]) / peers
    client_per_peer = (client_after - client_before) / peers
    print(f"  connected at server: {report['connected']} of {peers} in {connect_time:.1f} s")
    print(f"  server RSS per idle peer: {server_per_peer / 1024:8.1f} KiB")
    print(f"  client RSS per idle peer: {client_per_peer / 1024:8.1f} KiB  (a whole Service each)")
    return {
        "server_kib_per_peer": server_per_peer / 1024,
        "client_kib_per_peer": client_per_peer / 1024,
    }


async def main(args: argparse.Namespace) -> None:
    payload = "x" * args.size
    print(f"wire benchmark: {args.size}-byte messages, {args.count} round trips per row")
    floor = crypto_floor(args.size)
    print(
        f"  crypto floor per round trip:  {floor * 1e6:8.1f} µs  (8 HKDF expands, 4 seals, 4 opens)"
    )
    print(f"  encode_frame (one message):   {overhead_of_framing(args.size) * 1e6:8.1f} µs")
    link = Path(tempfile.mkdtemp(prefix="bg-bench-link-")) / "link"
    write_link(link)
    # The frame the protocol sends for the message: both layers' hex, infos, nonces, tags.
    frame_size = len(read_channel(link).seal(payload))
    print(f"  frame on the wire:            {frame_size:8d} characters")

    bare_child, bare_ready = start_child("bare")
    enc_child, enc_ready = start_child("encrypted", "1")
    channel_child, channel_ready = start_child("channel", str(link))
    try:
        invite = Invite.loads(json.loads(enc_ready.read_text())["invites"][0])
        results: dict[str, dict[str, float]] = {}
        for window in (1, WINDOW):
            print(f"{window} in flight:")
            bare = summarise(
                "bare websockets",
                *await bench_bare(bare_ready.read_text(), args.count, window, payload),
            )
            # Bare websockets carrying as many characters as the encrypted frame: what the
            # protocol's frame costs the socket and websockets, before any cryptography.
            sized = summarise(
                "bare, frame-sized",
                *await bench_bare(bare_ready.read_text(), args.count, window, "x" * frame_size),
            )
            # The protocol's frame alone: sealed and opened on bare websockets, no Service.
            framed = summarise(
                "frames only, no Service",
                *await bench_bare(
                    channel_ready.read_text(), args.count, window, payload, read_channel(link)
                ),
            )
            enc = summarise(
                "broadgauge encrypted", *await bench_encrypted(invite, args.count, window, payload)
            )
            results[f"bare_{window}"], results[f"enc_{window}"] = bare, enc
            enc_rt, framed_rt = 1 / enc["rt_per_s"], 1 / framed["rt_per_s"]
            print(
                "  ratio encrypted / bare (time per rt, throughput): "
                f"{enc_rt * bare['rt_per_s']:5.2f}"
            )
            # Against bare + crypto floor; then with the frame's size counted (the least any
            # implementation of this wire format pays, whatever it is written in); then the
            # frames alone, without the Service.
            print_ratios("encrypted / (bare + floor)", enc, bare, floor, window)
            print_ratios("encrypted / (frame-sized bare + floor)", enc, sized, floor, window)
            print_ratios("frames only / (bare + floor)", framed, bare, floor, window)
            print(f"  ratio encrypted / frames only, time per rt: {enc_rt / framed_rt:5.2f}")
    finally:
        for child in (bare_child, enc_child, channel_child):
            if child.stdin:
                child.stdin.close()
            child.terminate()
            child.wait(timeout=10)
        shutil.rmtree(link.parent, ignore_errors=True)
    if args.peers:
        print(f"{args.peers} idle connected peers:")
        await idle_memory(args.peers)


def child_main(argv: list[str]) -> None:
    role = argv[0]
    if role == "bare":
        asyncio.run(serve_bare(Path(argv[1])))
    elif role == "channel":
        asyncio.run(serve_bare(Path(argv[2]), Path(argv[1])))
    elif role == "encrypted":
        asyncio.run(serve_encrypted(Path(argv[2]), int(argv[1])))
    elif role == "idle":
        raise_fd_limit()
        asyncio.run(serve_encrypted(Path(argv[2]), int(argv[1])))


if __name__ == "__main__":
    parser = main_parser(__doc__, child_main)
    parser.add_argument("--count", type=int, default=5000, help="round trips per row")
    parser.add_argument("--size", type=int, default=1024, help="message size in bytes")
    parser.add_argument("--peers", type=int, default=1000, help="idle peers (0 to skip)")
    asyncio.run(main(parser.parse_args()))
