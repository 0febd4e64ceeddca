"""The bridge's HTTP API on Starlette (notes §6.2), served by :mod:`broadgauge.bridge.server`.

Each signed endpoint runs, in order: rate limit (429), body-size limit (413), the request's
shape (400: a GET with a body, a body that is not UTF-8), signature and nonce (401), then its
handler.  Handlers refuse JSON that holds a lone surrogate (400): no Rust string, and so no
OpenPortal peer, can carry one, and it cannot be stored.  Handlers answer with exactly the
JSON the official ``openportal`` client parses; failures are JSON ``{"message": …}`` bodies
with 400, 404, 413, 500 or 504.  Every refusal is logged with the caller's address.
The query string is ignored (the official client always adds ``?openportal-version=0.1``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route, Router
from starlette.types import Receive, Scope, Send

from broadgauge.bridge.auth import AuthError, MalformedRequest, SignedRequest, Verifier
from broadgauge.bridge.limits import RateLimiter, TrustedProxies
from broadgauge.bridge.openapi import DOCS_HTML, openapi_document
from broadgauge.bridge.runtime import BadRequest, BridgeRuntime, NotFound, TooMany
from broadgauge.jobs.errors import ProtocolError, StoreError
from broadgauge.jobs.job import Job, parse_uuid
from broadgauge.runtime.agent import JobRefused
from broadgauge.runtime.metrics import BridgeMetrics
from broadgauge.serving import metrics_route
from broadgauge.text import decoded_lone_surrogate
from broadgauge.wire import ConfigError
from broadgauge.wire.names import check_name, check_zone

__all__ = ["HttpError", "build_app"]

log = logging.getLogger("broadgauge.bridge.http")

JSON = "application/json"
#: How many jobs' JSON renderings /status keeps, the latest polled.  Enough for the jobs a
#: portal polls at once; each holds its Job alive, so 10,000 (as it was) kept ~20 MiB of
#: finished jobs after the boards had let them go.
RENDERED_JOBS = 1_024

Handler = Callable[[bytes], Awaitable[str]]


class HttpError(Exception):
    """A refusal with a status code and a message for the JSON body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> Response:
    body = json.dumps({"message": message})
    return Response(body, status_code=status, media_type=JSON, headers=headers)


def _json_body(body: bytes) -> Any:
    # The body was checked to be UTF-8 before its signature; decoding it ourselves keeps
    # json from guessing UTF-16 or UTF-32 for bodies that begin with NUL bytes.
    text = body.decode("utf-8")
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc}") from None
    if decoded_lone_surrogate(text, value):
        raise BadRequest(
            "the request body holds a lone UTF-16 surrogate (\\ud800-\\udfff without its "
            "pair), which is not text"
        )
    return value


def _field(body: bytes, name: str) -> str:
    value = _json_body(body)
    if not isinstance(value, dict) or not isinstance(value.get(name), str):
        raise BadRequest(f'the request body must be {{"{name}": "<text>"}}')
    text: str = value[name]
    return text


def _uuid(value: object) -> uuid.UUID:
    if not isinstance(value, str):
        raise BadRequest("expected a job or notification id (a UUID string)")
    try:
        return parse_uuid(value)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None


def _string_list(body: bytes) -> list[str]:
    value = _json_body(body)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadRequest("the request body must be a JSON array of destination strings")
    return value


def _agent_path(text: str) -> str:
    """``text`` if every hop is an agent name (``name`` or ``name@zone``), else 400.

    No agent can have another name, so a path that fails here could only travel the network
    to be dropped, and leave the caller waiting for an answer that never comes.
    """
    for hop in (part for part in text.split(".") if part):
        name, at, zone = hop.partition("@")
        try:
            check_name(name, "agent name")
            if at:
                check_zone(zone)
        except ConfigError as exc:
            raise BadRequest(f"invalid agent path: {exc}") from None
    return text


def _dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _headers(scope: Scope) -> dict[bytes, bytes]:
    """The request's headers by (lower-case) name, the first of repeated ones winning.

    One pass in C, where each look-up in Starlette's ``Headers`` scans them all again.
    """
    raw = scope["headers"]
    return dict(reversed(raw if isinstance(raw, list) else list(raw)))


def _text(value: bytes | None) -> str | None:
    # Header values are latin-1, as Starlette decodes them.
    return None if value is None else value.decode("latin-1")


class _Signed:
    """The ASGI app of one signed endpoint: :meth:`BridgeApi.answer`, timed when metered."""

    __slots__ = ("api", "function", "handler", "method")

    def __init__(self, api: BridgeApi, method: str, function: str, handler: Handler) -> None:
        self.api = api
        self.method = method
        self.function = function
        self.handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        api, function = self.api, self.function
        metrics = api.metrics
        if metrics is None:
            response = await api.answer(self.method, function, self.handler, scope, receive)
        else:
            started = time.perf_counter()
            response = await api.answer(self.method, function, self.handler, scope, receive)
            metrics.request(function, response.status_code, time.perf_counter() - started)
        await response(scope, receive, send)


class _Routes(Router):
    """A Router that finds a plain route by a dictionary look-up instead of trying each.

    The table holds the routes with neither parameters nor sub-apps that come before any
    route that has them (the first of a path only), so a request it answers is one the
    routes, tried in order, give the same route; everything else (a method the route does
    not allow: 405, a mount, a redirect, 404) goes the usual way.
    """

    def __init__(self, routes: list[BaseRoute]) -> None:
        super().__init__(routes)
        self.exact: dict[str, Route] = {}
        for route in routes:
            if not isinstance(route, Route) or route.param_convertors:
                break
            self.exact.setdefault(route.path, route)

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Dispatch ``scope`` (see the class)."""
        if scope["type"] == "http" and not scope.get("root_path"):
            route = self.exact.get(scope["path"])
            if route is not None and (route.methods is None or scope["method"] in route.methods):
                # What Router.app and Route.matches put in the scope for a full match.
                if "router" not in scope:
                    scope["router"] = self
                scope["route"] = route
                scope["endpoint"] = route.endpoint
                scope["path_params"] = dict(scope.get("path_params", {}))
                await route.handle(scope, receive, send)
                return
        await super().app(scope, receive, send)


class BridgeApi:
    """The endpoints, bound to one runtime and one set of security settings."""

    def __init__(
        self,
        runtime: BridgeRuntime,
        *,
        rate_limit: int = 10_000,
        rate_period: float = 10.0,
        clock: Callable[[], float] = time.time,
        metrics: BridgeMetrics | None = None,
    ) -> None:
        settings = runtime.settings
        self.runtime = runtime
        self.metrics = metrics
        self.verifier = Verifier(settings.key, allow_missing_nonce=settings.allow_missing_nonce)
        self.limiter = RateLimiter(rate_limit, rate_period)
        self.proxies = TrustedProxies(settings.trusted_proxies)
        self.max_body = settings.max_body
        self.clock = clock
        self._rendered: OrderedDict[uuid.UUID, tuple[Job, str]] = OrderedDict()

    # --- the request pipeline --------------------------------------------------------------

    def route(self, method: str, function: str, handler: Handler) -> Route:
        """A signed endpoint ``/<function>``."""
        # An ASGI app rather than a function: Starlette then builds no Request for it and
        # adds no exception wrapper, which the pipeline has no use for (it answers every
        # Exception itself).
        endpoint = _Signed(self, method, function, handler)
        return Route(f"/{function}", endpoint, methods=[method.upper()], name=function)

    async def answer(
        self, method: str, function: str, handler: Handler, scope: Scope, receive: Receive
    ) -> Response:
        """Run one request to ``/<function>`` through the pipeline; the response to send."""
        now = self.clock()
        headers = _headers(scope)
        client = scope.get("client")
        peer = client[0] if client is not None else None
        forwarded = headers.get(b"x-forwarded-for")
        who = self.proxies.client_address(peer, _text(forwarded))
        if not self.limiter.allow(who, now):
            if self.metrics is not None:
                self.metrics.refused("rate_limit")
            return _error(429, "Too many requests - rate limit exceeded")
        nonce = headers.get(b"x-nonce")
        try:
            body = await self._read_body(receive, headers.get(b"content-length"))
            self.verifier.verify(
                SignedRequest(
                    method,
                    function,
                    _text(headers.get(b"authorization")),
                    _text(headers.get(b"date")),
                    _text(nonce),
                    body,
                ),
                now,
            )
            if nonce is None:
                log.warning(
                    "bridge: /%s from %s accepted without X-Nonce (allow_missing_nonce)",
                    function,
                    who,
                )
            return Response(await handler(body), media_type=JSON)
        except HttpError as exc:
            reason = "too_large" if exc.status == 413 else "malformed"
            return self._refuse(function, who, exc.status, exc.message, reason)
        except AuthError as exc:
            return self._refuse(function, who, 401, str(exc), _auth_reason(str(exc)))
        except MalformedRequest as exc:
            return self._refuse(function, who, 400, str(exc), "malformed")
        except TooMany as exc:
            return self._refuse(function, who, 413, str(exc))
        except BadRequest as exc:
            return self._refuse(function, who, 400, str(exc))
        except (NotFound, JobRefused) as exc:
            # JobRefused: a path naming no such agent (restart, diagnostics).
            return _error(404, str(exc))
        except TimeoutError:
            # A diagnostics request that no agent on the path answered.
            return _error(504, f"/{function}: no answer from the network in time")
        except Exception as exc:
            log.exception("bridge: /%s failed", function)
            return _error(500, f"Something went wrong: {exc}")

    def _refuse(
        self, function: str, who: str, status: int, message: str, reason: str | None = None
    ) -> Response:
        # Every refusal is logged with who sent it: an operator watching for attacks (or a
        # misconfigured portal) needs the address, the endpoint and the reason.
        log.warning("bridge: refused /%s from %s: %d %r", function, who, status, message)
        if reason is not None and self.metrics is not None:
            # Only requests refused before they ran count; a handler's own 400 does not.
            self.metrics.refused(reason)
        return _error(status, message)

    async def _read_body(self, receive: Receive, declared: bytes | None) -> bytes:
        # What Starlette's Request.stream() does (a disconnect is ClientDisconnect, other
        # messages are skipped), with the size limit checked as each chunk arrives.
        if declared is not None:
            try:
                size = int(declared.decode("latin-1"))
            except ValueError:
                raise HttpError(400, "invalid Content-Length") from None
            if size > self.max_body:
                raise HttpError(413, f"request body exceeds {self.max_body} bytes")
        chunks: list[bytes] = []
        total = 0
        while True:
            message = await receive()
            kind = message["type"]
            if kind == "http.request":
                chunk = message.get("body", b"")
                if chunk:
                    total += len(chunk)
                    if total > self.max_body:
                        raise HttpError(413, f"request body exceeds {self.max_body} bytes")
                    chunks.append(chunk)
                if not message.get("more_body", False):
                    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
            elif kind == "http.disconnect":
                raise ClientDisconnect()

    # --- endpoints ---------------------------------------------------------------------------

    async def health(self, _: bytes) -> str:
        info = await self.runtime.agent.health()
        return _dumps({"status": "ok", "health": info.to_json_value()})

    async def restart(self, body: bytes) -> str:
        value = _json_body(body)
        if not isinstance(value, dict):
            raise BadRequest('the body must be {"restart_type": …, "destination": …}')
        kind, destination = value.get("restart_type"), value.get("destination")
        if kind not in ("soft", "hard") or not isinstance(destination, str):
            raise BadRequest("restart_type must be soft or hard; destination a string")
        await self.runtime.agent.restart(kind, _agent_path(destination))
        return _dumps({"status": "ok", "message": "Restart command sent successfully"})

    async def diagnostics(self, body: bytes) -> str:
        report = await self.runtime.agent.diagnostics(_agent_path(_field(body, "destination")))
        return _dumps({"status": "ok", "report": report.to_json_value()})

    def _job_json(self, job: Job) -> str:
        # Pollers ask for the same version many times; Jobs are immutable, so the text of
        # the very object last rendered can be reused.
        rendered = self._rendered
        cached = rendered.get(job.id)
        if cached is not None and cached[0] is job:
            rendered.move_to_end(job.id)
            return cached[1]
        text = job.to_json()
        rendered[job.id] = (job, text)
        rendered.move_to_end(job.id)
        if len(rendered) > RENDERED_JOBS:
            rendered.popitem(last=False)
        return text

    async def run(self, body: bytes) -> str:
        return self._job_json(await self.runtime.run(_field(body, "command")))

    async def status(self, body: bytes) -> str:
        value = _json_body(body)
        if not isinstance(value, dict):
            raise BadRequest('the body must be {"job": "<uuid>"}')
        job_id = _uuid(value.get("job"))
        # Answer only what is committed: a version recorded in this turn of the loop waits
        # for its batch (if that is lost, the boards are reloaded as the store holds them).
        with contextlib.suppress(StoreError):
            await self.runtime.agent.durable()
        return self._job_json(self.runtime.status(job_id))

    async def notify(self, body: bytes) -> str:
        await self.runtime.notify(_field(body, "command"))
        return _dumps({"status": "ok"})

    async def fetch_jobs(self, _: bytes) -> str:
        return "[" + ",".join(job.to_json() for job in self.runtime.fetch_jobs()) + "]"

    async def fetch_job(self, body: bytes) -> str:
        return self.runtime.fetch_job(_uuid(_json_body(body))).to_json()

    async def fetch_notification(self, body: bytes) -> str:
        return self.runtime.fetch_notification(_uuid(_json_body(body))).to_json()

    async def send_result(self, body: bytes) -> str:
        try:
            job = Job.from_json(body)
        except ProtocolError as exc:
            raise BadRequest(str(exc)) from None
        self.runtime.send_result(job)
        return _dumps({"status": "ok"})

    async def get_portal(self, _: bytes) -> str:
        return _dumps((await self.runtime.portal()).name)

    async def get_offerings(self, _: bytes) -> str:
        return _dumps(self.runtime.get_offerings())

    def offerings(self, how: str) -> Handler:
        async def change(body: bytes) -> str:
            return _dumps(self.runtime.change_offerings(how, _string_list(body)))

        return change

    def routes(self) -> list[Route]:
        """Every route, the unsigned ones first."""

        async def root(_: Request) -> Response:
            return Response("null", media_type=JSON)

        async def openapi(_: Request) -> Response:
            return JSONResponse(openapi_document())

        async def docs(_: Request) -> Response:
            return HTMLResponse(DOCS_HTML)

        return [
            Route("/", root, methods=["GET"]),
            Route("/openapi.json", openapi, methods=["GET"]),
            Route("/docs", docs, methods=["GET"]),
            self.route("get", "health", self.health),
            self.route("post", "restart", self.restart),
            self.route("post", "diagnostics", self.diagnostics),
            self.route("post", "run", self.run),
            self.route("post", "status", self.status),
            self.route("post", "notify", self.notify),
            self.route("get", "fetch_jobs", self.fetch_jobs),
            self.route("post", "fetch_job", self.fetch_job),
            self.route("post", "fetch_notification", self.fetch_notification),
            self.route("post", "send_result", self.send_result),
            self.route("get", "get_portal", self.get_portal),
            self.route("get", "get_offerings", self.get_offerings),
            self.route("post", "sync_offerings", self.offerings("sync")),
            self.route("post", "add_offerings", self.offerings("add")),
            self.route("post", "remove_offerings", self.offerings("remove")),
        ]


def _auth_reason(message: str) -> str:
    """The metrics reason for an :class:`AuthError` (its texts name what failed)."""
    if "Date" in message:
        return "date"
    if "Nonce" in message:
        return "nonce"
    return "signature"  # no Authorization header, or a signature that does not match


def build_app(api: BridgeApi, registry: CollectorRegistry | None = None) -> Starlette:
    """The Starlette application for ``api``, with JSON bodies for 404 and 405 as well, and
    ``GET /metrics`` (unsigned, as Prometheus scrapes it) when given a ``registry``."""

    async def http_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        # Keep the framework's headers: a 405 must say what is Allowed (RFC 9110).
        return _error(exc.status_code, exc.detail, exc.headers)

    routes: list[BaseRoute] = [*api.routes()]
    if registry is not None:
        routes.append(metrics_route(registry))
    app = Starlette(exception_handlers={HTTPException: http_error})
    app.router = _Routes(routes)
    return app
