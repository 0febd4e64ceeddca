"""A TCP proxy that delays what it forwards: fixed delay, random jitter, optional stalls.

The kernel here has no ``netem`` qdisc, so latency cannot be added to a veth link the usual
way (``tc qdisc add ... netem delay``).  Instead the harness puts this proxy on a link: it
runs in the *dialling* agent's namespace, listens on that namespace's loopback, and the
dialling agent's config names the proxy instead of the listening agent.  The proxy connects
on to the listening agent from the dialling agent's own address, so the listener's IP
allowlist sees the real peer address.

Every chunk read from either side is held for ``delay + uniform(0, jitter)`` seconds before
it is written on, but never before the chunk read before it on the same side: jitter spreads
the arrival times without ever reordering a byte stream (as TCP itself guarantees).  A
*stall* holds every connection's traffic, both ways, for ``stall_for`` seconds once every
``stall_every`` seconds: a link that goes silent and comes back without breaking.

Run as a process (``python -m tests.netns.latency_proxy LISTEN TARGET``), it prints
``listening on HOST:PORT`` on stdout once bound, then reads JSON requests on stdin, one per
line, and answers each on stdout with the same ``id``:

* ``{"id": 1, "set": {"delay": 0.05, "jitter": 0.02, "stall_every": 2, "stall_for": 0.5}}``
  changes the settings (keys left out keep their value);
* ``{"id": 2, "stats": true}`` answers with the counters of :class:`ProxyStats`.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import random
import sys
from dataclasses import dataclass

#: Read at most this much at a time: one chunk, delayed as a unit.
CHUNK = 64 * 1024
#: Chunks held per direction before reading stops (TCP then pushes back on the sender).
QUEUE_LIMIT = 256


@dataclass(frozen=True)
class LatencySettings:
    """How the proxy delays traffic, in seconds (all zero: forward at once)."""

    delay: float = 0.0
    jitter: float = 0.0
    stall_every: float = 0.0
    stall_for: float = 0.0

    def __post_init__(self) -> None:
        for name, value in dataclasses.asdict(self).items():
            if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                raise ValueError(f"latency {name} must be a number of seconds >= 0, not {value!r}")
        if (self.stall_every > 0) != (self.stall_for > 0):
            raise ValueError("give both stall_every and stall_for, or neither")


@dataclass
class ProxyStats:
    """What the proxy has done so far."""

    connections: int = 0
    refused_upstream: int = 0
    chunks: int = 0
    bytes: int = 0
    #: The most chunks held at once in one direction of one connection.
    max_held: int = 0
    #: The longest any chunk was held, in seconds.
    max_hold: float = 0.0
    stalls: int = 0


#: A chunk read, when it was read and when it is due (an empty chunk: the end of the stream).
_Held = tuple[float, float, bytes]


class LatencyProxy:
    """Forward every connection made to ``listen`` on to ``target``, delayed."""

    def __init__(
        self,
        listen: tuple[str, int],
        target: tuple[str, int],
        settings: LatencySettings | None = None,
        *,
        seed: int | None = None,
    ) -> None:
        self.listen = listen
        self.target = target
        self.settings = settings or LatencySettings()
        self.stats = ProxyStats()
        self._random = random.Random(seed)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        #: Loop time until which every connection is held (a stall in progress).
        self._held_until = 0.0
        self._stalls: asyncio.Task[None] | None = None

    @property
    def address(self) -> tuple[str, int]:
        """Where the proxy listens (the real port when it was asked for port 0)."""
        assert self._server is not None, "the proxy has not started"
        host, port = self._server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    async def start(self) -> None:
        """Bind and start accepting."""
        self._server = await asyncio.start_server(self._accept, *self.listen)
        self.configure(self.settings)

    async def stop(self) -> None:
        """Stop accepting and close every connection."""
        if self._server is not None:
            self._server.close()
        if self._stalls is not None:
            self._stalls.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def configure(self, settings: LatencySettings) -> None:
        """Use ``settings`` from now on (a stall in progress ends at once)."""
        self.settings = settings
        self._held_until = 0.0
        if self._stalls is not None:
            self._stalls.cancel()
            self._stalls = None
        if settings.stall_every > 0:
            self._stalls = asyncio.create_task(self._stall_schedule(settings))

    async def _stall_schedule(self, settings: LatencySettings) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(settings.stall_every)
            self._held_until = loop.time() + settings.stall_for
            self.stats.stalls += 1

    # --- one connection --------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.target)
            except OSError:
                # As a dead link would: the dialler sees its connection closed.
                self.stats.refused_upstream += 1
                writer.close()
                return
            self.stats.connections += 1
            parts = [
                *self._direction(reader, up_writer),
                *self._direction(up_reader, writer),
            ]
            try:
                # Each direction ends at its end of stream (passed on as a half-close, as
                # TCP would); a reset or error on either side ends the whole connection.
                await asyncio.wait(parts, return_when=asyncio.FIRST_EXCEPTION)
            finally:
                for part in parts:
                    part.cancel()
                await asyncio.gather(*parts, return_exceptions=True)
                for end in (writer, up_writer):
                    end.close()
        finally:
            self._tasks.discard(task)

    def _direction(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> list[asyncio.Task[None]]:
        """The two tasks of one direction: read chunks as they come, write each when due."""
        queue: asyncio.Queue[_Held] = asyncio.Queue(QUEUE_LIMIT)
        return [
            asyncio.create_task(self._read(reader, queue)),
            asyncio.create_task(self._deliver(queue, writer)),
        ]

    async def _read(self, reader: asyncio.StreamReader, queue: asyncio.Queue[_Held]) -> None:
        loop = asyncio.get_running_loop()
        last_due = 0.0
        while True:
            data = await reader.read(CHUNK)
            settings = self.settings
            now = loop.time()
            hold = settings.delay + self._random.uniform(0.0, settings.jitter)
            # Never before the chunk ahead of it: jitter must not reorder the stream.
            last_due = max(now + hold, last_due)
            await queue.put((now, last_due, data))
            self.stats.max_held = max(self.stats.max_held, queue.qsize())
            if not data:
                return

    async def _deliver(self, queue: asyncio.Queue[_Held], writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        while True:
            read_at, due, data = await queue.get()
            while (wait := max(due, self._held_until) - loop.time()) > 0:
                await asyncio.sleep(wait)
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()
            self.stats.chunks += 1
            self.stats.bytes += len(data)
            self.stats.max_hold = max(self.stats.max_hold, loop.time() - read_at)


# --- the process: requests on stdin, answers on stdout ---------------------------------------


def _answer(request_id: object, **fields: object) -> None:
    print(json.dumps({"id": request_id, **fields}), flush=True)


def _apply(proxy: LatencyProxy, request: dict[str, object]) -> dict[str, object]:
    if "set" in request:
        changes = request["set"]
        if not isinstance(changes, dict):
            raise ValueError('"set" must be an object of settings')
        proxy.configure(dataclasses.replace(proxy.settings, **changes))
        return {"settings": dataclasses.asdict(proxy.settings)}
    if request.get("stats"):
        return {"stats": dataclasses.asdict(proxy.stats)}
    raise ValueError(f"unknown request {request!r}: expected set or stats")


async def serve(proxy: LatencyProxy) -> None:
    """Run ``proxy`` and answer requests from stdin until stdin closes."""
    await proxy.start()
    host, port = proxy.address
    print(f"listening on {host}:{port}", flush=True)
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    try:
        while line := await stdin.readline():
            request_id: object = None
            try:
                request = json.loads(line)
                if not isinstance(request, dict):
                    raise ValueError("a request is a JSON object")
                request_id = request.get("id")
                _answer(request_id, **_apply(proxy, request))
            except (ValueError, TypeError) as exc:
                # A bad request is answered with why; the proxy carries on.
                _answer(request_id, error=f"{type(exc).__name__}: {exc}")
    finally:
        await proxy.stop()


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, not {text!r}")
    return host, int(port)


def main(argv: list[str] | None = None) -> None:
    """``python -m tests.netns.latency_proxy LISTEN TARGET [--delay S] [--jitter S] ...``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("listen", type=_host_port, help="HOST:PORT to listen on")
    parser.add_argument("target", type=_host_port, help="HOST:PORT to forward to")
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--jitter", type=float, default=0.0)
    parser.add_argument("--stall-every", type=float, default=0.0)
    parser.add_argument("--stall-for", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=None, help="for the jitter")
    args = parser.parse_args(argv)
    settings = LatencySettings(args.delay, args.jitter, args.stall_every, args.stall_for)
    asyncio.run(serve(LatencyProxy(args.listen, args.target, settings, seed=args.seed)))


if __name__ == "__main__":
    main()
