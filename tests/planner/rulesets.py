"""Planner rules shared by the rule-engine and authentication tests."""

from __future__ import annotations

from typing import Any


def yes_rule(
    name: str, *tasktypes: str, servicetype: str = "s", endpoint: str = "e", **more: Any
) -> dict[str, Any]:
    """A rule answering YES to ``tasktypes`` with ``servicetype`` at ``endpoint``, plus ``more``
    keys (conditions, a deny reason)."""
    return {
        "name": name,
        "tasktypes": list(tasktypes),
        "servicetype": servicetype,
        "serviceinfo": {"endpoint": endpoint},
        **more,
    }


def escape_members_only(name: str) -> dict[str, Any]:
    """The seed's datalake rule: ESAP notebooks on a site with Rucio, for ESCAPE members only
    (anyone else is told 403 with the deny reason)."""
    return yes_rule(
        name,
        "esap-notebook",
        servicetype="binder-hub",
        endpoint="http://binder.example.eu/",
        requires_capabilities=["rucio"],
        deny_reason="ESCAPE members only",
        identity={"groups_any": ["escape"]},
    )
