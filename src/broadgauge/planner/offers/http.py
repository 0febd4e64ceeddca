"""The broker's HTTP endpoints, in Calycopis's API shape, beside the network planner's.

``POST /requests``
    an execution request (JSON); ``303`` to ``/offersets/{uuid}``, or ``200`` with the offer
    set when the client sends ``Prefer: return=representation``.
``GET /offersets/{uuid}``, ``GET /sessions/{uuid}``
    the records, as JSON.
``POST /sessions/{uuid}``
    an update: ``{"kind": "uri:enum-value-update", "path": "phase", "value": "ACCEPTED"}``
    accepts, ``"CANCELLED"`` cancels.  ``409`` if the session's phase forbids it.
``POST /direct``
    request and accept the first offer in one step: ``303`` to the session (or ``200`` with
    it); ``400`` with the reasons when there was no offer.

Authentication is the planner's own (:meth:`~broadgauge.planner.app.Planner.identify`).  A
record is visible only to the researcher who asked for it: anyone else gets ``404``, exactly
as for a uuid that does not exist, so nobody learns which exist.  An anonymous caller may ask
for offers where the planner allows anonymous questions, but may not accept or cancel.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from broadgauge.planner.app import Planner, answers_refusals
from broadgauge.planner.auth import www_authenticate
from broadgauge.planner.offers.booking import BookingConflict
from broadgauge.planner.offers.broker import Broker, Forbidden, NotFound
from broadgauge.planner.offers.model import (
    RequestError,
    offerset_json,
    parse_update,
    session_json,
)
from broadgauge.planner.offers.records import OfferSetRecord, SessionRecord

#: The largest request body read (an execution request is a few KiB).
MAX_BODY = 64 * 1024


def _error(status: int, error: str, reason: str, **extra: Any) -> Response:
    headers = {"WWW-Authenticate": www_authenticate()} if status == 401 else None
    return JSONResponse(
        {"error": error, "reason": reason, **extra}, status_code=status, headers=headers
    )


async def _json_body(request: Request) -> object | Response:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        return _error(415, "unsupported_media_type", "send the request as application/json")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            return _error(413, "too_large", f"the body is over {MAX_BODY} bytes")
    try:
        parsed: object = json.loads(body.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        return _error(400, "bad_request", f"the body is not JSON: {exc}")
    return parsed


def _wants_body(request: Request) -> bool:
    return "return=representation" in request.headers.get("prefer", "").lower()


def _created(request: Request, path: str, body: Callable[[], dict[str, Any]]) -> Response:
    """``303`` to ``path`` (Calycopis's answer), or ``200`` with ``body()`` and a Location
    when the client sends ``Prefer: return=representation``."""
    location = f"{_base(request)}{path}"
    if _wants_body(request):
        return JSONResponse(body(), headers={"Location": location})
    return RedirectResponse(location, status_code=303)


def _base(request: Request) -> str:
    return str(request.base_url)


def _offerset(
    request: Request, record: OfferSetRecord, sessions: list[SessionRecord]
) -> dict[str, Any]:
    return offerset_json(record, sessions, _base(request))


def offer_routes(planner: Planner, broker: Broker) -> list[Route]:
    """The routes of the broker, authenticated by ``planner``."""

    @answers_refusals
    async def post_request(request: Request) -> Response:
        identity = await planner.identify(request)
        body = await _json_body(request)
        if isinstance(body, Response):
            return body
        try:
            record, sessions = await broker.request(body, identity)
        except RequestError as exc:
            return _error(400, "bad_request", str(exc), path=exc.path)
        return _created(
            request, f"offersets/{record.uuid}", lambda: _offerset(request, record, sessions)
        )

    @answers_refusals
    async def get_offerset(request: Request) -> Response:
        identity = await planner.identify(request)
        try:
            record, sessions = await broker.offerset(request.path_params["uuid"], identity)
        except NotFound:
            return _error(404, "not_found", "no such offer set")
        return JSONResponse(
            _offerset(request, record, sessions), headers={"Cache-Control": "no-store"}
        )

    @answers_refusals
    async def get_session(request: Request) -> Response:
        identity = await planner.identify(request)
        try:
            record = await broker.session(request.path_params["uuid"], identity)
        except NotFound:
            return _error(404, "not_found", "no such session")
        return JSONResponse(
            session_json(record, _base(request)), headers={"Cache-Control": "no-store"}
        )

    @answers_refusals
    async def post_session(request: Request) -> Response:
        identity = await planner.identify(request)
        body = await _json_body(request)
        if isinstance(body, Response):
            return body
        try:
            to = parse_update(body)
            record = await broker.update(request.path_params["uuid"], to, identity)
        except RequestError as exc:
            return _error(400, "bad_request", str(exc), path=exc.path)
        except NotFound:
            return _error(404, "not_found", "no such session")
        except Forbidden as exc:
            return _error(401, "unauthorized", str(exc))
        except BookingConflict as exc:
            return _error(409, "conflict", str(exc))
        return JSONResponse(session_json(record, _base(request)))

    @answers_refusals
    async def post_direct(request: Request) -> Response:
        identity = await planner.identify(request)
        if identity is None:
            return _error(401, "unauthorized", "an anonymous caller may not accept an offer")
        body = await _json_body(request)
        if isinstance(body, Response):
            return body
        try:
            offerset, record = await broker.direct(body, identity)
        except RequestError as exc:
            return _error(400, "bad_request", str(exc), path=exc.path)
        except BookingConflict as exc:
            return _error(409, "conflict", str(exc))
        if record is None:
            reasons = [m["message"] for m in offerset.messages]
            return _error(400, "no_offer", "no site could offer this request", messages=reasons)
        session = record  # narrowed to a SessionRecord for the lambda below
        return _created(
            request, f"sessions/{session.uuid}", lambda: session_json(session, _base(request))
        )

    return [
        Route("/requests", post_request, methods=["POST"]),
        Route("/direct", post_direct, methods=["POST"]),
        Route("/offersets/{uuid}", get_offerset, methods=["GET"]),
        Route("/sessions/{uuid}", get_session, methods=["GET"]),
        Route("/sessions/{uuid}", post_session, methods=["POST"]),
    ]
