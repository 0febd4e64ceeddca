"""The Execution Planner: "which computing services can run this task for me?".

* :mod:`.answers` - the seed's ``/accepts`` request and answer shapes (``reponseword``...);
* :mod:`.rules` - declarative acceptance rules and the pure engine that explains itself;
* :mod:`.config` - a service's TOML configuration;
* :mod:`.auth` - OIDC bearer JWTs checked against the provider's JWKS;
* :mod:`.app` - one service over HTTP (Starlette), with its OpenAPI document;
* :mod:`.aggregate` - one ``/accepts`` over many registered services;
* :mod:`.http1` - the lean keep-alive HTTP/1.1 client the aggregator fans out with;
* :mod:`.openapi` - the hand-written OpenAPI document of the contract.

Operators' guide: ``docs/operators/planner.md``.
"""

from broadgauge.planner.answers import Answer, Task, task_from_pairs
from broadgauge.planner.config import ServiceConfig, load, parse_config
from broadgauge.planner.rules import Explanation, Identity, RuleError, RuleSet, evaluate

__all__ = [
    "Answer",
    "Explanation",
    "Identity",
    "RuleError",
    "RuleSet",
    "ServiceConfig",
    "Task",
    "evaluate",
    "load",
    "parse_config",
    "task_from_pairs",
]
