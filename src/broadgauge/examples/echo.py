"""Example 1 (echo): two wire services bounce a counter back and forth.

It shows the whole life of a link: the server creates a client entry and writes its invite;
the client imports the invite and dials; the handshake authenticates both; then each side's
message handler answers the other until the counter reaches its end.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from broadgauge.wire import Invite, Message, Service, ServiceConfig

DEFAULT_HOPS = 10
CONNECT_TIMEOUT = 60.0


class _Bouncer:
    """Answers ``n`` with ``n + 1`` until ``hops`` is reached, then signals ``done``."""

    def __init__(self, service: Service, hops: int, say: Callable[[str], None]) -> None:
        self.service = service
        self.hops = hops
        self.say = say
        self.done = asyncio.Event()
        service.on_message(self.receive)

    async def receive(self, message: Message) -> None:
        try:
            count = int(message.payload)
        except ValueError:
            self.say(f"[{self.service.name}] ignoring {message.payload!r} from {message.peer}")
            return
        self.say(f"[{self.service.name}] received {count} from {message.peer.name}")
        if count >= self.hops:
            self.done.set()
            return
        await self.send(message.peer.name, count + 1)

    async def send(self, peer: str, count: int) -> None:
        self.say(f"[{self.service.name}] sending {count} to {peer}")
        await self.service.send(peer, str(count))
        if count >= self.hops:
            self.done.set()


async def run_server(
    invitation: Path,
    url: str = "ws://127.0.0.1:0",
    *,
    client_ip: str = "127.0.0.1",
    hops: int = DEFAULT_HOPS,
    say: Callable[[str], None] = print,
) -> None:
    """Listen on ``url``, write an invite for a client named ``client``, bounce until done."""
    parts = urlsplit(url)
    config = ServiceConfig.create("server", ip=parts.hostname or "127.0.0.1", port=parts.port or 0)
    service = Service(config)
    bouncer = _Bouncer(service, hops, say)
    async with service:
        invite = service.add_client("client", client_ip)
        invite.save(invitation)
        say(f"[server] listening on {service.url}; invite for 'client' written to {invitation}")
        await bouncer.done.wait()
        await asyncio.sleep(0.1)  # let the last frame reach the client before closing
    say("[server] done")


async def run_client(
    invitation: Path, *, hops: int = DEFAULT_HOPS, say: Callable[[str], None] = print
) -> None:
    """Dial the server named in ``invitation`` and start the bounce."""
    invite = Invite.load(invitation)
    service = Service(ServiceConfig.create("client", port=0))
    service.add_server(invite)
    bouncer = _Bouncer(service, hops, say)
    async with asyncio.timeout(CONNECT_TIMEOUT):
        await service.start(listen=False)
        try:
            await service.wait_for_peer(invite.name, invite.zone)
            say(f"[client] connected to {invite.name} at {invite.url}")
            await bouncer.send(invite.name, 1)
            await bouncer.done.wait()
        finally:
            await service.stop()
    say("[client] done")


async def run_both(*, hops: int = DEFAULT_HOPS, say: Callable[[str], None] = print) -> None:
    """Run server and client in one process, with the invite in a temporary directory."""
    with tempfile.TemporaryDirectory(prefix="broadgauge-echo-") as tmp:
        invitation = Path(tmp) / "invite_client_default.toml"
        server = asyncio.create_task(run_server(invitation, hops=hops, say=say))
        async with asyncio.timeout(CONNECT_TIMEOUT):
            while not invitation.exists():
                if server.done():
                    await server  # surface its error
                await asyncio.sleep(0.01)
        await asyncio.gather(server, run_client(invitation, hops=hops, say=say))
