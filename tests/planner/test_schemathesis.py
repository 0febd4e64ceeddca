"""Property-based checks of the planner against its own OpenAPI document (schemathesis).

Bounded: a few dozen generated requests per operation, so the suite stays fast.
"""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, settings

from broadgauge.planner.aggregate import create_aggregator_app, parse_aggregator
from broadgauge.planner.app import create_app
from broadgauge.planner.config import load
from tests.planner.test_rules import EXAMPLES

service = schemathesis.openapi.from_asgi("/openapi.json", create_app(load(EXAMPLES / "esap.toml")))
# An aggregator with no registered services still has to honour the contract.
aggregator = schemathesis.openapi.from_asgi(
    "/openapi.json", create_aggregator_app(parse_aggregator({"services": []}))
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
