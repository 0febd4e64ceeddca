"""Real files and real loopback sockets for the doctor's tests."""

from __future__ import annotations

import email.utils
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from broadgauge.doctor.findings import Finding
from broadgauge.jobs.agent_type import AgentType
from broadgauge.runtime.config import AgentConfig
from broadgauge.site.topology import Topology
from broadgauge.wire import Service, ServiceConfig


def agent_config(kind: AgentType, name: str, port: int, **extras: str) -> AgentConfig:
    """A fresh config listening on 127.0.0.1:``port``."""
    return AgentConfig(kind, ServiceConfig.create(name, port=port), extras)


def write(config: AgentConfig, path: Path) -> Path:
    """Save ``config`` (mode 0600) and return its path."""
    config.save(path)
    return path


def only(findings: Sequence[Finding], check: str) -> Finding:
    """The one finding of ``check``."""
    matches = [f for f in findings if f.check == check]
    assert len(matches) == 1, (check, findings)
    return matches[0]


def statuses(findings: Sequence[Finding]) -> dict[str, str]:
    """check -> status, for the findings of one agent."""
    return {f.check: f.status.value for f in findings}


@contextmanager
def date_server(offset: float, status: str = "400 Bad Request") -> Iterator[str]:
    """A loopback HTTP server answering every request with ``status`` and a ``Date`` header
    ``offset`` seconds from now; yields its ws:// URL."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                date = email.utils.formatdate(time.time() + offset, usegmt=True)
                conn.sendall(
                    f"HTTP/1.1 {status}\r\nDate: {date}\r\nContent-Length: 0\r\n"
                    "Connection: close\r\n\r\n".encode()
                )

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"ws://127.0.0.1:{port}/"
    finally:
        stop.set()
        # Wakes the accept() of the thread (close alone does not, on Linux).
        listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        thread.join(timeout=5)


def build_site(topology: Topology, out: Path) -> dict[str, Path]:
    """Write every agent's config as ``broadgauge site init`` does: invites exchanged along
    each link, ``out/<host>/<agent>/config.toml`` (0600), and a data folder (0700)."""
    services = {
        spec.name: Service(ServiceConfig.create(spec.name, ip=spec.address, port=spec.port or 0))
        for spec in topology.agents
    }
    for link in topology.links:
        invite = services[link.listens].add_client(link.dials, topology.agent(link.dials).address)
        services[link.dials].add_server(invite)
    paths: dict[str, Path] = {}
    for spec in topology.agents:
        folder = out / spec.host / spec.name
        (folder / "data").mkdir(parents=True, mode=0o700)
        extras = {k: str(v) for k, v in spec.settings.items() if not isinstance(v, dict)}
        paths[spec.name] = write(
            AgentConfig(spec.role, services[spec.name].config, extras), folder / "config.toml"
        )
    return paths
