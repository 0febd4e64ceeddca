"""Operator console page times on a 50-agent network (goal: at most 300 ms server time).

The network: bridge, portal, provider, 3 platforms, 11 cluster instances, each with account,
filesystem and scheduler agents (50 agents), all in this process on loopback.  A few jobs go
through first so the jobs page has traces to draw.  Each page is asked for in-process (the
bridge's ASGI app through httpx's ASGI transport: server time, no sockets), logged in:

* *cold*: the cached network view dropped first, so the time includes the health sweep and
  the 50 diagnostics round trips the view is made of;
* *stale*: the view older than its 2 s: the page is drawn from it while a new one is taken
  in the background (what a browser's live refresh costs in steady state);
* *warm*: drawn from a view already taken (what a second browser, or a refresh within the
  view's 2 s, costs).

Prints numbers; asserts nothing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from broadgauge.bridge.console import hash_password
from broadgauge.demo import start_network, with_console_user
from broadgauge.site.topology import parse_topology

INSTANCES = (4, 4, 3)
PAGES = ["/console/", "/console/jobs", "/console/boards", "/console/audit", "/console/planner"]
ROUNDS = 5


def topology() -> str:
    """A 50-agent site in the format of ``broadgauge site init``."""
    parts = ['[hosts]\nloopback = "127.0.0.1"\n']

    def agent(name: str, role: str, port: bool = True) -> None:
        parts.append(f'[[agent]]\nname = "{name}"\nrole = "{role}"\nhost = "loopback"\n')
        if port:
            parts.append("port = 0\n")

    def link(dials: str, listens: str) -> None:
        parts.append(f'[[link]]\ndials = "{dials}"\nlistens = "{listens}"\n')

    agent("portal", "portal")
    parts.append('[[agent]]\nname = "bridge"\nrole = "bridge"\nhost = "loopback"\n')
    parts.append("[agent.settings.bridge]\nport = 0\n")
    agent("provider", "provider")
    link("bridge", "portal")
    link("provider", "portal")
    for p, count in enumerate(INSTANCES):
        platform = f"platform{p}"
        agent(platform, "platform")
        link(platform, "provider")
        for i in range(count):
            instance = f"cluster{p}x{i}"
            agent(instance, "instance")
            link(instance, platform)
            for leaf in ("account", "filesystem", "scheduler"):
                agent(f"{leaf}{p}x{i}", leaf, port=False)
                link(f"{leaf}{p}x{i}", instance)
    return "\n".join(parts)


async def main() -> None:
    spec = parse_topology(topology(), "bench topology", any_port=True)
    root = Path(tempfile.mkdtemp(prefix="bench-console-"))
    started = time.perf_counter()
    network = await start_network(
        root, topology=spec, configure=with_console_user("ops", hash_password("bench password"))
    )
    print(f"{len(network.agents)} agents up in {time.perf_counter() - started:.1f} s")
    try:
        for p, count in enumerate(INSTANCES):
            for i in range(count):
                path = f"portal.provider.platform{p}.cluster{p}x{i}"
                await network.submit("add_project physics.portal", path=path)
                await network.submit("add_user alice.physics.portal", path=path)
        bridge = network.bridge
        transport = httpx.ASGITransport(app=bridge.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bridge") as http:
            form = await http.get("/console/login")
            token = re.search(r'name="csrf" value="([^"]+)"', form.text)
            assert token is not None
            login = await http.post(
                "/console/login",
                data={"user": "ops", "password": "bench password", "csrf": token.group(1)},
            )
            assert login.status_code == 303, login.text
            gatherer = bridge.console.gatherer
            print(f"{'page (median ms)':<18}{'cold':>9}{'stale':>9}{'warm':>9}{'bytes':>9}")
            for page in PAGES:
                cold, stale, warm = [], [], []
                size = 0
                for _ in range(ROUNDS):
                    gatherer._view = None  # drop the cached view: sweep and ask everyone
                    t = time.perf_counter()
                    response = await http.get(page)
                    cold.append((time.perf_counter() - t) * 1000)
                    assert response.status_code == 200, (page, response.status_code)
                    t = time.perf_counter()
                    response = await http.get(page)
                    warm.append((time.perf_counter() - t) * 1000)
                    size = len(response.content)
                    view = await gatherer.view()
                    gatherer._view = dataclasses.replace(view, taken_at=view.taken_at - 5)
                    t = time.perf_counter()
                    response = await http.get(page)
                    stale.append((time.perf_counter() - t) * 1000)
                    await gatherer.refresh()  # let the background taking finish
                print(
                    f"{page:<18}{statistics.median(cold):>9.1f}{statistics.median(stale):>9.1f}"
                    f"{statistics.median(warm):>9.1f}{size:>9}"
                )
            view = await gatherer.view()
            print(
                f"network view: {len(view.rows)} agents in the tree, "
                f"{sum(1 for r in view.reports.values() if r is not None)} diagnostics reports, "
                f"{len(view.events)} trace events"
            )
    finally:
        await network.stop()


if __name__ == "__main__":
    asyncio.run(main())
