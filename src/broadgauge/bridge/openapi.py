"""The OpenAPI 3.1 document of the bridge API, and the ``/docs`` page that renders it.

Written by hand (not generated from the routes) because the wire shapes are OpenPortal's,
not ours: a bare JSON string body for ``/fetch_job``, a Job whose ``result`` is JSON text,
and so on.  Tests check every route is described and that responses match (schemathesis).
"""

from __future__ import annotations

from typing import Any, Final

__all__ = ["DOCS_HTML", "ENDPOINTS", "openapi_document"]

_UUID = {"type": "string", "format": "uuid"}
_TEXT_OR_NULL = {"type": ["string", "null"]}

SCHEMAS: Final[dict[str, Any]] = {
    "Error": {
        "type": "object",
        "required": ["message"],
        "properties": {"message": {"type": "string"}},
    },
    "Job": {
        "type": "object",
        "required": ["id", "created", "changed", "expires", "version", "command", "state"],
        "properties": {
            "id": _UUID,
            "created": {"type": "integer", "description": "Unix seconds"},
            "changed": {"type": "integer"},
            "expires": {"type": "integer"},
            "version": {"type": "integer", "minimum": 0},
            "command": {"type": "string", "description": "<destination> <instruction>"},
            "state": {"enum": ["Created", "Pending", "Running", "Complete", "Error", "Duplicate"]},
            "result": {
                **_TEXT_OR_NULL,
                "description": "Complete: JSON text of the value; Error: the message",
            },
            "result_type": _TEXT_OR_NULL,
            "forwarded_for": _TEXT_OR_NULL,
        },
    },
    "Notification": {
        "type": "object",
        "required": ["id", "destination", "event"],
        "properties": {
            "id": _UUID,
            "destination": {"type": "string"},
            "event": {"type": "object", "description": 'externally tagged: {"UserAdded": "…"}'},
        },
    },
    "Destinations": {"type": "array", "items": {"type": "string"}},
    "Status": {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"type": "string"}, "message": {"type": "string"}},
    },
    "Command": {
        "type": "object",
        "required": ["command"],
        "properties": {"command": {"type": "string"}},
    },
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


_ID_BODY = {"type": "string", "format": "uuid", "description": "a bare JSON string"}

#: (method, function, summary, request schema or None, 200 schema, may answer 404)
ENDPOINTS: Final[tuple[tuple[str, str, str, dict[str, Any] | None, dict[str, Any], bool], ...]] = (
    (
        "get",
        "health",
        "Health of the bridge and every agent it reaches",
        None,
        {
            "type": "object",
            "required": ["status"],
            "properties": {"status": {"type": "string"}, "health": {"type": "object"}},
        },
        False,
    ),
    (
        "post",
        "restart",
        "Order a soft or hard restart of the agent at a path relative to the bridge",
        {
            "type": "object",
            "required": ["restart_type", "destination"],
            "properties": {
                "restart_type": {"enum": ["soft", "hard"]},
                "destination": {"type": "string"},
            },
        },
        _ref("Status"),
        True,
    ),
    (
        "post",
        "diagnostics",
        "Diagnostics report of the agent at a path relative to the bridge",
        {
            "type": "object",
            "required": ["destination"],
            "properties": {"destination": {"type": "string"}},
        },
        {
            "type": "object",
            "required": ["status"],
            "properties": {"status": {"type": "string"}, "report": {"type": "object"}},
        },
        True,
    ),
    (
        "post",
        "run",
        "Start an instruction; returns the job to poll",
        _ref("Command"),
        _ref("Job"),
        False,
    ),
    (
        "post",
        "status",
        "Latest version of a job started with /run",
        {"type": "object", "required": ["job"], "properties": {"job": _UUID}},
        _ref("Job"),
        True,
    ),
    (
        "post",
        "notify",
        "Send a notification into the network",
        _ref("Command"),
        _ref("Status"),
        False,
    ),
    (
        "get",
        "fetch_jobs",
        "Jobs the network asks the portal software to answer",
        None,
        {"type": "array", "items": _ref("Job")},
        False,
    ),
    ("post", "fetch_job", "One job awaiting an answer", _ID_BODY, _ref("Job"), True),
    (
        "post",
        "fetch_notification",
        "A notification the bridge signalled",
        _ID_BODY,
        _ref("Notification"),
        True,
    ),
    (
        "post",
        "send_result",
        "Post the finished version of a fetched job",
        _ref("Job"),
        _ref("Status"),
        False,
    ),
    ("get", "get_portal", "Name of the portal agent", None, {"type": "string"}, False),
    ("get", "get_offerings", "Resources offered", None, _ref("Destinations"), False),
    (
        "post",
        "sync_offerings",
        "Replace the offerings",
        _ref("Destinations"),
        _ref("Destinations"),
        False,
    ),
    ("post", "add_offerings", "Add offerings", _ref("Destinations"), _ref("Destinations"), False),
    (
        "post",
        "remove_offerings",
        "Remove offerings",
        _ref("Destinations"),
        _ref("Destinations"),
        False,
    ),
)

_ERRORS = {
    "400": "the request cannot be served as sent (bad JSON, unparseable instruction)",
    "401": "missing or invalid signature, Date outside ±5 s, or a replayed nonce",
    "413": "request body too large",
    "429": "too many requests from this client",
    "500": "the network could not serve the request",
}


def _operation(
    function: str,
    summary: str,
    request: dict[str, Any] | None,
    reply: dict[str, Any],
    not_found: bool,
) -> dict[str, Any]:
    error = {"application/json": {"schema": _ref("Error")}}
    responses: dict[str, Any] = {
        "200": {"description": "OK", "content": {"application/json": {"schema": reply}}}
    }
    errors = dict(_ERRORS)
    if not_found:
        errors["404"] = "no such job, notification or agent"
    for code, text in sorted(errors.items()):
        responses[code] = {"description": text, "content": error}
    operation: dict[str, Any] = {
        "operationId": function,
        "summary": summary,
        "security": [{"openportal": []}],
        "responses": responses,
    }
    if request is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": request}},
        }
    return operation


def openapi_document() -> dict[str, Any]:
    """The whole document."""
    paths: dict[str, Any] = {
        "/": {
            "get": {
                "operationId": "root",
                "summary": "Liveness; no authentication",
                "responses": {
                    "200": {
                        "description": "null",
                        "content": {"application/json": {"schema": {"type": "null"}}},
                    }
                },
            }
        }
    }
    for method, function, summary, request, reply, not_found in ENDPOINTS:
        paths[f"/{function}"] = {method: _operation(function, summary, request, reply, not_found)}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Broadgauge bridge (OpenPortal 0.32.2 bridge API)",
            "version": "0.32.2",
            "description": (
                "Every operation but `GET /` is signed: `Authorization: OpenPortal <hex>` is "
                "keyed BLAKE2b-256 over the JSON-quoted string `method\\napplication/json\\n"
                "date\\nfunction[\\nbody][\\nnonce]`, with `Date` (±5 s) and an optional "
                "`X-Nonce` (single use within 30 s)."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "openportal": {"type": "apiKey", "in": "header", "name": "Authorization"}
            },
        },
    }


DOCS_HTML: Final = """<!doctype html>
<html><head><meta charset="utf-8"><title>Broadgauge bridge API</title>
<link rel="stylesheet" href="https://unpkg.com/swagger-ui-dist@5/swagger-ui.css"></head>
<body><div id="ui"><p>The API description is at <a href="openapi.json">openapi.json</a>.</p></div>
<script src="https://unpkg.com/swagger-ui-dist@5/swagger-ui-bundle.js"></script>
<script>if (window.SwaggerUIBundle) SwaggerUIBundle({url: "openapi.json", dom_id: "#ui"});</script>
</body></html>
"""
