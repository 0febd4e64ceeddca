"""Property-based checks of the planner against its own OpenAPI document (schemathesis).

Bounded: a few dozen generated requests per operation, so the suite stays fast.
"""

from __future__ import annotations

import tomllib

import schemathesis
from hypothesis import HealthCheck, settings

from broadgauge.grammar import UserIdentifier
from broadgauge.jobs.published import PublishedRules
from broadgauge.planner.aggregate import create_aggregator_app, parse_aggregator
from broadgauge.planner.app import create_app
from broadgauge.planner.config import load
from broadgauge.planner.network import create_network_app, parse_network_config
from broadgauge.runtime.rules_sweep import SweepResult
from tests.planner.test_rules import EXAMPLES

service = schemathesis.openapi.from_asgi("/openapi.json", create_app(load(EXAMPLES / "esap.toml")))
# An aggregator with no registered services still has to honour the contract.
aggregator = schemathesis.openapi.from_asgi(
    "/openapi.json", create_aggregator_app(parse_aggregator({"services": []}))
)


class PublishedSites:
    """Two published sites and a silent one, without a network (the contract is the point)."""

    async def sweep(self, budget: float) -> SweepResult:
        esap = tomllib.loads((EXAMPLES / "esap.toml").read_text())
        document = {k: v for k, v in esap.items() if k in ("service", "site", "rules")}
        broken = {"rules": [{"name": "no task types"}]}
        return SweepResult(
            (PublishedRules("p.esap", document), PublishedRules("p.broken", broken)),
            ("p.gone",),
        )

    async def has_account(self, destination: str, user: UserIdentifier) -> bool:
        return False


network = schemathesis.openapi.from_asgi(
    "/openapi.json", create_network_app(parse_network_config({}), PublishedSites())
)

_bounded = settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))


@service.parametrize()
@_bounded
def test_service_conforms_to_its_openapi_document(case: schemathesis.Case) -> None:
    case.call_and_validate()


@aggregator.parametrize()
@_bounded
def test_aggregator_conforms_to_its_openapi_document(case: schemathesis.Case) -> None:
    case.call_and_validate()


@network.parametrize()
@_bounded
def test_network_planner_conforms_to_its_openapi_document(case: schemathesis.Case) -> None:
    case.call_and_validate()
