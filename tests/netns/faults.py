"""Network faults on the harness's hosts: nftables for partitions and loss, a proxy for latency.

**Partitions.**  Every host's namespace holds one nftables table, ``inet bgfaults``, whose
input chain drops every packet arriving on ``eth0`` from an address in the set ``cut``.
Cutting the link between hosts *a* and *b* puts *b*'s address in *a*'s set and *a*'s in
*b*'s: packets between them vanish on arrival, both ways, and nothing tells either sender
(no reset, no ICMP), as when a cable or a router in between fails.  Isolating a host cuts
its link with every other host.  Healing removes the addresses again.

**Loss.**  The same input chain jumps to a chain ``loss`` that, when loss is on, holds one
rule ``numgen random mod 100 < N drop``.  Every packet on every link arrives at exactly one
host's ``eth0``, so each is dropped with probability N %, independently.

Both count what they drop in named counters (``cut_dropped``, ``loss_dropped``), beside a
count of every packet that arrived (``arrived``), which :meth:`Faults.counters` reads, so a
test can show that its fault really was in force.

**Latency.**  The kernel has no ``netem``; :class:`LatencyLink` runs
:mod:`tests.netns.latency_proxy` in the dialling agent's namespace, and the harness points
that agent at it.  Its delay, jitter and stalls can be changed while it runs.
"""

from __future__ import annotations

import itertools
import json
import sys
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tests.netns.child import JsonChild
from tests.netns.latency_proxy import LatencySettings
from tests.netns.namespaces import HOST_INTERFACE, Hosts

TABLE = "inet bgfaults"
#: The loss rates the tests use; any whole percentage from 0 to 100 works.
MAX_LOSS = 100
PROXY_START_TIMEOUT = 15.0
PROXY_ANSWER_TIMEOUT = 10.0

_SETUP = f"""\
add table {TABLE}
add counter {TABLE} arrived
add counter {TABLE} cut_dropped
add counter {TABLE} loss_dropped
add set {TABLE} cut {{ type ipv4_addr; }}
add chain {TABLE} loss
add chain {TABLE} input {{ type filter hook input priority filter; policy accept; }}
add rule {TABLE} input iifname "{HOST_INTERFACE}" counter name "arrived"
add rule {TABLE} input iifname "{HOST_INTERFACE}" ip saddr @cut counter name "cut_dropped" drop
add rule {TABLE} input iifname "{HOST_INTERFACE}" jump loss
"""


class Faults:
    """The nftables faults of one :class:`~tests.netns.namespaces.Hosts`."""

    def __init__(self, hosts: Hosts) -> None:
        self.hosts = hosts
        #: Host pairs whose link is cut (unordered).
        self.cut: set[frozenset[str]] = set()
        self.loss = 0

    def install(self) -> None:
        """Put the (empty) fault table in every host's namespace."""
        for host in self.hosts.names:
            self._nft(host, _SETUP)

    def _nft(self, host: str, script: str) -> None:
        # One `nft -f` per change: the whole script applies atomically, or not at all.
        self.hosts.run_in(host, "nft", "-f", "-", stdin=script)

    def _host(self, name: str) -> str:
        if name not in self.hosts.addresses:
            raise KeyError(f"no host {name!r}; hosts: {', '.join(self.hosts.names)}")
        return name

    # --- partitions ----------------------------------------------------------------------

    def partition(self, a: str, b: str) -> None:
        """Drop everything between ``a`` and ``b``, both ways."""
        if self._host(a) == self._host(b):
            raise ValueError(f"cannot cut {a} off from itself")
        self.cut.add(frozenset((a, b)))
        self._sync(a, b)

    def heal(self, a: str, b: str) -> None:
        """Let ``a`` and ``b`` reach each other again."""
        self.cut.discard(frozenset((self._host(a), self._host(b))))
        self._sync(a, b)

    def isolate(self, name: str) -> None:
        """Cut ``name`` off from every other host."""
        others = [host for host in self.hosts.names if host != self._host(name)]
        self.cut.update(frozenset((name, other)) for other in others)
        self._sync(name, *others)

    def heal_all(self) -> None:
        """Heal every cut link."""
        touched = {host for pair in self.cut for host in pair}
        self.cut.clear()
        self._sync(*touched)

    def cut_off(self, host: str) -> list[str]:
        """The hosts ``host`` cannot reach now."""
        return sorted(other for pair in self.cut if host in pair for other in pair - {host})

    def _sync(self, *hosts: str) -> None:
        for host in dict.fromkeys(hosts):
            addresses = ", ".join(self.hosts.address(other) for other in self.cut_off(host))
            script = f"flush set {TABLE} cut\n"
            if addresses:
                script += f"add element {TABLE} cut {{ {addresses} }}\n"
            self._nft(host, script)

    # --- loss ----------------------------------------------------------------------------

    def set_loss(self, percent: int) -> None:
        """Drop ``percent`` % of the packets on every link, at random (0: none)."""
        if isinstance(percent, bool) or not isinstance(percent, int):
            raise TypeError(f"loss is a whole percentage, not {percent!r}")
        if not 0 <= percent <= MAX_LOSS:
            raise ValueError(f"loss must be between 0 and {MAX_LOSS} %, not {percent}")
        script = f"flush chain {TABLE} loss\n"
        if percent:
            script += (
                f"add rule {TABLE} loss numgen random mod 100 < {percent} "
                'counter name "loss_dropped" drop\n'
            )
        for host in self.hosts.names:
            self._nft(host, script)
        self.loss = percent

    def clear_loss(self) -> None:
        """No more random loss."""
        self.set_loss(0)

    # --- what was counted ----------------------------------------------------------------

    def counters(self) -> dict[str, dict[str, int]]:
        """Per host, the packets each counter has counted so far."""
        counts = {}
        for host in self.hosts.names:
            listing = self.hosts.run_in(
                host, "nft", "-j", "list", "counters", "table", *TABLE.split()
            )
            counts[host] = {
                item["counter"]["name"]: int(item["counter"]["packets"])
                for item in json.loads(listing)["nftables"]
                if "counter" in item
            }
        return counts

    def total(self, kind: str) -> int:
        """Packets counted on all hosts by ``kind`` (``cut_dropped``, ``loss_dropped``, or
        ``arrived``: every packet that reached a host's ``eth0``)."""
        return sum(host.get(kind, 0) for host in self.counters().values())


class LatencyLink:
    """A latency proxy on one link: in the dialler's namespace, forwarding to the listener."""

    _ports = itertools.count(9100)

    def __init__(self, hosts: Hosts, dialler: str, listener: str, target_port: int) -> None:
        self.hosts = hosts
        self.dialler = dialler
        self.listener = listener
        self.target = (hosts.address(listener), target_port)
        # Each namespace has its own ports: only links from one dialler must differ.
        self.port = next(self._ports)
        self.child: JsonChild | None = None

    @property
    def url(self) -> str:
        """What the dialler dials instead of the listener."""
        return f"ws://127.0.0.1:{self.port}/"

    async def start(self, env: Mapping[str, str], cwd: Path, seed: int) -> None:
        """Start the proxy (forwarding without delay until :meth:`set` says otherwise)."""
        command = [
            *self.hosts.exec_prefix(self.dialler),
            sys.executable, "-m", "tests.netns.latency_proxy",
            f"127.0.0.1:{self.port}", f"{self.target[0]}:{self.target[1]}", "--seed", str(seed),
        ]  # fmt: skip
        name = f"latency proxy {self.dialler}->{self.listener}"
        self.child = await JsonChild.start(
            name, command, env=env, cwd=cwd, ready="listening on", timeout=PROXY_START_TIMEOUT
        )

    async def set(self, settings: LatencySettings) -> None:
        """Change the delay, jitter and stalls from now on."""
        assert self.child is not None, "the proxy has not started"
        await self.child.request(PROXY_ANSWER_TIMEOUT, set=asdict(settings))

    async def stats(self) -> dict[str, Any]:
        """The proxy's counters (connections, chunks, the most held at once, ...)."""
        assert self.child is not None, "the proxy has not started"
        answer = await self.child.request(PROXY_ANSWER_TIMEOUT, stats=True)
        return dict(answer["stats"])

    async def stop(self) -> None:
        """Stop the proxy (its connections close)."""
        if self.child is not None:
            await self.child.stop()
