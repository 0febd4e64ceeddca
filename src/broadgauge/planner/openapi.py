"""The OpenAPI 3.0 document for the ``/accepts`` contract (one service or an aggregator).

Written by hand rather than generated, because the contract is the seed's and must not drift
with the framework: ``reponseword``/``reponseinfo`` are the seed's spellings.
"""

from __future__ import annotations

from typing import Any

_TASK_PARAMS: list[dict[str, Any]] = [
    {
        "name": "tasktype",
        "in": "query",
        "required": True,
        "description": "The task type, e.g. jupyter-notebook, binder-notebook, esap-notebook.",
        "schema": {"type": "string", "minLength": 1},
    },
    {
        "name": "taskinfo.repository",
        "in": "query",
        "required": False,
        "description": "Example task detail; any taskinfo.<key> parameter is accepted.",
        "schema": {"type": "string"},
    },
    {
        "name": "taskinfo.dependencies",
        "in": "query",
        "required": False,
        "description": "Example task detail: a dependency file such as requirements.txt.",
        "schema": {"type": "string"},
    },
]

_ANSWER = {
    "oneOf": [
        {
            "type": "object",
            "required": ["reponseword", "servicetype", "serviceinfo"],
            "properties": {
                "reponseword": {"type": "string", "enum": ["YES"]},
                "servicetype": {"type": "string"},
                "serviceinfo": {
                    "type": "object",
                    "required": ["endpoint"],
                    "properties": {"endpoint": {"type": "string"}},
                },
                "answers": {"type": "array", "items": {"type": "object"}},
                "failures": {"type": "array", "items": {"type": "object"}},
            },
        },
        {
            "type": "object",
            "required": ["reponseword"],
            "properties": {
                "reponseword": {"type": "string", "enum": ["NO"]},
                "reponseinfo": {
                    "type": "object",
                    "properties": {
                        "httpcode": {"type": "integer"},
                        "reason": {"type": "string"},
                        "provision": {
                            "type": "object",
                            "description": "Broadgauge: the OpenPortal destination and "
                            "instruction that would create the caller's missing account.",
                            "required": ["destination", "instruction"],
                            "properties": {
                                "destination": {"type": "string"},
                                "instruction": {"type": "string"},
                            },
                        },
                    },
                },
                "answers": {"type": "array", "items": {"type": "object"}},
                "provisionable": {"type": "array", "items": {"type": "object"}},
                "failures": {"type": "array", "items": {"type": "object"}},
            },
        },
    ]
}

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string"}, "reason": {"type": "string"}},
}

_TASK_BODY = {
    "type": "object",
    "required": ["tasktype"],
    "properties": {
        "tasktype": {"type": "string", "minLength": 1},
        "taskinfo": {
            "type": "object",
            "additionalProperties": {"$ref": "#/components/schemas/TaskinfoValue"},
        },
    },
}


_FORM = {
    "type": "object",
    "required": ["tasktype"],
    "properties": {"tasktype": {"type": "string", "minLength": 1}},
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _responses(answer_schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "200": _json(answer_schema, "The answer: YES with where to run it, or NO."),
        "303": {"description": "A browser without a token is sent to the OIDC provider."},
        "400": _json(_ERROR, "The request names no task type, or malformed taskinfo."),
        "401": _json(_ERROR, "A token is required (WWW-Authenticate: Bearer), or is invalid."),
        "403": _json(_ERROR, "The authenticated caller may not use this planner."),
    }


_OFFERSET = {
    "type": "object",
    "required": ["meta", "result", "offers"],
    "properties": {
        "meta": {"type": "object"},
        "result": {"type": "string", "enum": ["YES", "NO"]},
        "offers": {"type": "array", "items": {"$ref": "#/components/schemas/Session"}},
    },
}
_SESSION = {
    "type": "object",
    "required": ["meta", "phase", "site"],
    "properties": {
        "kind": {"type": "string"},
        "meta": {"type": "object"},
        "phase": {"type": "string"},
        "expires": {"type": "string"},
        "site": {"type": "string", "description": "The OpenPortal destination of the offer."},
        "executable": {"type": "object"},
        "compute": {"type": "object"},
        "schedule": {"type": "object"},
        "connectors": {"type": "array", "items": {"type": "object"}},
    },
}
_UUID = [{"name": "uuid", "in": "path", "required": True, "schema": {"type": "string"}}]
_REQUEST = {
    "required": True,
    "content": {"application/json": {"schema": {"type": "object"}}},
    "description": "A Calycopis execution request: executable, compute, storage, schedule.",
}


def _offer_paths() -> dict[str, Any]:
    """The broker's endpoints (Calycopis's API shape): offers, sessions, direct."""
    session_ref = {"$ref": "#/components/schemas/Session"}
    not_found = _json(_ERROR, "No such record, or not the caller's.")
    posted = {
        "303": {"description": "See Location (the default)."},
        "400": _json(_ERROR, "A malformed request, with the path of the bad field."),
        "401": _json(_ERROR, "A token is required."),
        "413": _json(_ERROR, "The body is too large."),
        "415": _json(_ERROR, "The body is not application/json."),
    }
    return {
        "/requests": {
            "post": {
                "summary": "Offers for an execution request (303 to the offer set)",
                "operationId": "requestOffers",
                "requestBody": _REQUEST,
                "responses": {
                    "200": _json(_OFFERSET, "With Prefer: return=representation."),
                    **posted,
                },
            }
        },
        "/direct": {
            "post": {
                "summary": "Request and accept the first offer (303 to the session)",
                "operationId": "direct",
                "requestBody": _REQUEST,
                "responses": {
                    "200": _json(session_ref, "With Prefer: return=representation."),
                    **posted,
                    "409": _json(_ERROR, "The offer was taken meanwhile."),
                },
            }
        },
        "/offersets/{uuid}": {
            "get": {
                "summary": "An offer set",
                "operationId": "getOfferSet",
                "parameters": _UUID,
                "responses": {"200": _json(_OFFERSET, "The offer set."), "404": not_found},
            }
        },
        "/sessions/{uuid}": {
            "get": {
                "summary": "A session",
                "operationId": "getSession",
                "parameters": _UUID,
                "responses": {"200": _json(session_ref, "The session."), "404": not_found},
            },
            "post": {
                "summary": "Accept (phase ACCEPTED) or cancel (phase CANCELLED) a session",
                "operationId": "updateSession",
                "parameters": _UUID,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
                "responses": {
                    "200": _json(session_ref, "The session after the change."),
                    "400": _json(_ERROR, "Not an enum-value-update of the phase."),
                    "401": _json(_ERROR, "Anonymous callers may not accept or cancel."),
                    "404": not_found,
                    "409": _json(_ERROR, "The session's phase does not allow it."),
                },
            },
        },
    }


def document(
    title: str, *, with_explain: bool = True, network: bool = False, offers: bool = False
) -> dict[str, Any]:
    """The OpenAPI document served at ``/openapi.json`` (the aggregator has no explain).

    ``network``: the network planner's explain, which gives a verdict per destination.
    ``offers``: the broker's endpoints, which the network planner serves beside a bridge.
    """
    explain: dict[str, Any] = {
        "type": "object",
        "required": ["answer", "explain"],
        "properties": {"answer": _ANSWER, "explain": {"type": "object"}},
    }
    if network:
        explain = {
            "type": "object",
            "required": ["answer", "destinations"],
            "properties": {
                "answer": _ANSWER,
                # Untyped: OpenAPI 3.0 spells "string or null" with nullable, which plain JSON
                # Schema validators do not read.
                "identity": {"description": "The caller's subject, or null when anonymous."},
                "destinations": {"type": "array", "items": {"type": "object"}},
            },
        }
    accepts = {
        "get": {
            "summary": "May this task run here? (the seed's GET form)",
            "operationId": "acceptsGet",
            "parameters": _TASK_PARAMS,
            "responses": _responses(_ANSWER),
        },
        "post": {
            "summary": "May this task run here? (form or JSON body)",
            "operationId": "acceptsPost",
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": _TASK_BODY},
                    "application/x-www-form-urlencoded": {"schema": _FORM},
                    "multipart/form-data": {"schema": _FORM},
                },
            },
            "responses": _responses(_ANSWER),
        },
    }
    paths: dict[str, Any] = {"/accepts": accepts}
    if with_explain:
        paths["/accepts/explain"] = {
            "get": {
                "summary": "Which rule decided, for operators",
                "operationId": "acceptsExplain",
                "parameters": _TASK_PARAMS,
                "responses": _responses(explain),
            }
        }
    schemas: dict[str, Any] = {}
    if offers:
        paths.update(_offer_paths())
        schemas["Session"] = _SESSION
    return {
        "openapi": "3.0.3",
        "info": {
            "title": title,
            "version": "1",
            "description": (
                "Execution Planner /accepts. Field spellings reponseword and reponseinfo "
                "are the seed's, kept on purpose."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": {
                # Nested objects flatten to dotted taskinfo keys; arrays and null are refused.
                "TaskinfoValue": {
                    "anyOf": [
                        {"type": "string"},
                        {"type": "number"},
                        {"type": "boolean"},
                        {
                            "type": "object",
                            "additionalProperties": {"$ref": "#/components/schemas/TaskinfoValue"},
                        },
                    ]
                },
                **schemas,
            }
        },
    }
