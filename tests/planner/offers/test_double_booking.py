"""No double booking through the broker: 50 researchers at once, two planners, room for 10.

Two network planners (two apps, two stores opened on the same URL, as two processes behind one
name would have) serve the demo network; the notebook instance publishes room for 10 cores.
Fifty researchers each ask for one core at the same moment, half of them of each planner.
Exactly ten are offered it, against SQLite and against a real PostgreSQL.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from broadgauge.demo import Network, notebook_rules, start_network
from broadgauge.planner.config import parse_config
from broadgauge.planner.network import NetworkConfig, NetworkSettings
from broadgauge.planner.rules import Identity
from broadgauge.planner.server import NetworkPlannerServer
from tests.backends.postgres import Postgres

GUARD = 120.0
ONE_CORE = {"executable": {"kind": "jupyter-notebook"}, "compute": {"cores": {"min": 1}}}


def planner_config(bookings: str) -> NetworkConfig:
    return NetworkConfig(
        parse_config({"service": {"name": "double booking"}}),
        NetworkSettings(port=0, refresh=0.0, missing_account_ttl=0.0, bookings=bookings),
    )


async def fifty_at_once(tmp_path: Path, bookings: Callable[[Network], str]) -> list[str]:
    network = await start_network(tmp_path)
    hub_rules = notebook_rules("https://jupyter.instance.example/")
    hub_rules["site"] = {"capacity": {"cores": 10, "memory": 100}}
    # Anyone may run a notebook here: no account needed, so only capacity limits the offers.
    hub_rules["rules"] = [dict(hub_rules["rules"][0], requires_account=False)]  # type: ignore[index]
    network.agents["jupyter"].planner_rules.publish(hub_rules)
    url = bookings(network)
    planners = [
        NetworkPlannerServer(network.agents["bridge"], planner_config(url)) for _ in range(2)
    ]
    try:
        for planner in planners:
            await planner.start()

        async def ask(i: int) -> str:
            planner = planners[i % 2]
            assert planner.broker is not None
            who = Identity(f"r{i}", {"sub": f"r{i}"})
            record, _ = await planner.broker.request(ONE_CORE, who)
            return record.result

        async with asyncio.timeout(GUARD):
            return list(await asyncio.gather(*(ask(i) for i in range(50))))
    finally:
        for planner in planners:
            await planner.stop()
        await network.stop()


async def test_fifty_requests_for_room_for_ten_sqlite(tmp_path: Path) -> None:
    results = await fifty_at_once(
        tmp_path, lambda network: f"sqlite:///{network.root / 'shared-bookings.sqlite3'}"
    )
    assert results.count("YES") == 10 and results.count("NO") == 40


async def test_fifty_requests_for_room_for_ten_postgres(tmp_path: Path, postgres: Postgres) -> None:
    database = postgres.create_database()
    results = await fifty_at_once(tmp_path, lambda network: database)
    assert results.count("YES") == 10 and results.count("NO") == 40
