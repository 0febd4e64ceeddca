"""One service's planner over HTTP: ``/accepts``, ``/accepts/explain`` and ``/openapi.json``.

The request is handled in the order the seed's authentication cases imply:

1. a bearer token, if sent, is validated (invalid → 401 ``invalid_token``);
2. no token and the service requires one → a browser (``Accept: text/html``) is redirected
   to the OIDC provider, an API client gets 401 with ``WWW-Authenticate: Bearer``;
3. an authenticated caller outside ``[auth.may_ask]`` → 403 ("may not ask");
4. the task is evaluated by the pure rule engine, with the caller's claims (or none): a rule
   that covers the task but not the caller gives 200 NO with ``reponseinfo.httpcode`` 403.
"""

from __future__ import annotations

import functools
import json
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, ParamSpec
from urllib.parse import parse_qsl, urlencode

import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from broadgauge.planner.answers import Answer, Task, TaskError, task_from_pairs
from broadgauge.planner.auth import TokenError, TokenValidator, bearer_token, www_authenticate
from broadgauge.planner.config import ServiceConfig
from broadgauge.planner.openapi import document
from broadgauge.planner.rules import Identity, check_may_ask, evaluate
from broadgauge.text import decoded_lone_surrogate

STATE_COOKIE = "bg_planner_login"
MAX_FORM_FIELDS = 200
TOKEN_COOKIE = "bg_planner_token"


class Refusal(Exception):
    """Stop handling a request and send ``response`` instead."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


_P = ParamSpec("_P")


def answers_refusals(
    handler: Callable[_P, Awaitable[Response]],
) -> Callable[_P, Awaitable[Response]]:
    """``handler``, answering a :class:`Refusal` it raises with the refusal's response."""

    @functools.wraps(handler)
    async def answering(*args: _P.args, **kwargs: _P.kwargs) -> Response:
        try:
            return await handler(*args, **kwargs)
        except Refusal as refusal:
            return refusal.response

    return answering


def _spent(response: Response) -> Response:
    """``response`` with the login's state cookie removed (its code went to the provider)."""
    response.delete_cookie(STATE_COOKIE)
    return response


def _error(status: int, error: str, reason: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"error": error, "reason": reason}, status_code=status, headers=headers)


async def read_task(request: Request) -> Task:
    """The task from a GET query, or a POST form or JSON body (:class:`Refusal` if malformed)."""
    try:
        if request.method == "GET":
            return task_from_pairs(request.query_params.multi_items())
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype == "application/json":
            try:
                text = (await request.body()).decode("utf-8")
                body = json.loads(text)
            except (ValueError, UnicodeDecodeError) as exc:
                raise TaskError(f"the body is not JSON: {exc}") from exc
            if decoded_lone_surrogate(text, body):
                # Not text: it could not be passed on to another service, or answered.
                raise TaskError("the body holds a lone UTF-16 surrogate, which is not text")
            if not isinstance(body, dict):
                raise TaskError("the JSON body must be an object")
            return task_from_pairs(body.items())
        if ctype == "application/x-www-form-urlencoded":
            # Parsed directly: the fast path for the seed's form posts.
            try:
                text = (await request.body()).decode()
            except UnicodeDecodeError as exc:
                raise TaskError("the form body is not UTF-8") from exc
            return task_from_pairs(parse_qsl(text, keep_blank_values=True))
        if ctype == "multipart/form-data":
            # Browsers' file-upload forms; python-multipart parses them for Starlette.  Only
            # text fields describe a task, and the limits bound what a caller can make us hold.
            try:
                async with request.form(max_files=0, max_fields=MAX_FORM_FIELDS) as form:
                    fields = [(k, v) for k, v in form.multi_items() if isinstance(v, str)]
            except (HTTPException, MultiPartException, ValueError) as exc:
                raise TaskError(f"the multipart body cannot be read: {exc}") from exc
            return task_from_pairs(fields)
        # Clients like curl -d without a content type still send query parameters.
        return task_from_pairs(request.query_params.multi_items())
    except TaskError as exc:
        raise Refusal(_error(400, "bad_request", str(exc))) from exc


def wants_html(request: Request) -> bool:
    """A browser navigation (HTML preferred over JSON), not an API client."""
    accept = request.headers.get("accept", "").lower()
    return "text/html" in accept and "application/json" not in accept.split("text/html")[0]


class Planner:
    """The request handling of one service, independent of the routes that call it."""

    def __init__(self, config: ServiceConfig, validator: TokenValidator | None = None) -> None:
        self.config = config
        if validator is None and config.auth.uses_tokens:
            validator = TokenValidator(config.auth)
        self.validator = validator

    async def identify(self, request: Request) -> Identity | None:
        """The caller's identity, None for anonymous, or :class:`Refusal` (401/303/403)."""
        auth = self.config.auth
        # A browser that logged in through /auth/callback carries its ID token in a cookie.
        token = bearer_token(request.headers.get("authorization")) or request.cookies.get(
            TOKEN_COOKIE
        )
        identity: Identity | None = None
        if token is not None and self.validator is not None:
            try:
                identity = await self.validator.validate(token)
            except TokenError as exc:
                raise Refusal(
                    _error(
                        401,
                        "invalid_token",
                        str(exc),
                        {"WWW-Authenticate": www_authenticate("invalid_token", str(exc))},
                    )
                ) from exc
        if identity is None and auth.mode == "required":
            if wants_html(request) and self.validator is not None:
                raise Refusal(await self._login_redirect(request))
            raise Refusal(
                _error(
                    401,
                    "unauthorized",
                    "this planner requires a bearer token",
                    {"WWW-Authenticate": www_authenticate()},
                )
            )
        refused = check_may_ask(auth.may_ask, identity, self.config.ruleset.groups_claim)
        if refused:
            raise Refusal(_error(403, "forbidden", f"may not ask this planner: {refused}"))
        return identity

    async def aclose(self) -> None:
        """Close the token validator's HTTP client (if there is one)."""
        if self.validator is not None:
            await self.validator.aclose()

    @asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        """The Starlette lifespan of an app built on this planner: close on shutdown."""
        yield
        await self.aclose()

    def _redirect_uri(self, request: Request) -> str:
        return self.config.auth.redirect_uri or str(request.base_url) + "auth/callback"

    async def _login_redirect(self, request: Request) -> Response:
        # The OIDC authorization-code request.  The random state also goes into a short-lived
        # cookie, so the callback only accepts the answer to a login this browser started.
        assert self.validator is not None
        auth = self.config.auth
        endpoint = await self.validator.authorization_endpoint()
        state = secrets.token_urlsafe(16)
        # The nonce comes back inside the ID token: a token issued for another login is
        # refused even when it arrives with this browser's state.
        nonce = secrets.token_urlsafe(16)
        query = urlencode(
            {
                "response_type": "code",
                "client_id": auth.client_id or "",
                "redirect_uri": self._redirect_uri(request),
                "scope": auth.scope,
                "state": state,
                "nonce": nonce,
            }
        )
        sep = "&" if "?" in endpoint else "?"
        response = RedirectResponse(f"{endpoint}{sep}{query}", status_code=303)
        # Only our own path and query are remembered, so the callback cannot be turned
        # into an open redirect.
        back = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        response.set_cookie(
            STATE_COOKIE, f"{state} {nonce} {back}", max_age=600, httponly=True, samesite="lax"
        )
        return response

    async def callback(self, request: Request) -> Response:
        """``GET /auth/callback``: redeem the code, keep the ID token in a cookie, go back."""
        if self.validator is None:
            return _error(404, "not_found", "this planner does not use OIDC")
        remembered = request.cookies.get(STATE_COOKIE, "")
        state, nonce, back = [*remembered.split(" ", 2), "", ""][:3]
        code = request.query_params.get("code")
        given = request.query_params.get("state", "")
        if not state or not nonce or not code or not secrets.compare_digest(given, state):
            return _error(400, "bad_request", "no login in progress for this browser")
        try:
            token = await self.validator.exchange_code(code, self._redirect_uri(request))
            identity = await self.validator.validate(token)
        except (TokenError, httpx.HTTPError) as exc:
            return _spent(_error(401, "invalid_token", str(exc)))
        got = identity.claims.get("nonce")
        if not isinstance(got, str) or not secrets.compare_digest(got, nonce):
            return _spent(_error(401, "invalid_token", "the ID token was issued for another login"))
        expires = identity.claims.get("exp")
        max_age = max(0, int(expires - time.time())) if isinstance(expires, int) else 300
        response = RedirectResponse(back if back.startswith("/") else "/accepts", status_code=303)
        response.set_cookie(TOKEN_COOKIE, token, max_age=max_age, httponly=True, samesite="lax")
        response.delete_cookie(STATE_COOKIE)
        return response

    def _cache_headers(self, answer: Answer, identity: Identity | None) -> dict[str, str]:
        # YES answers are stable for a while; NOs may flip as soon as an operator edits rules.
        if answer.accepted and self.config.cache_max_age > 0:
            scope = "private" if identity is not None else "public"
            control = f"{scope}, max-age={self.config.cache_max_age}"
        else:
            control = "no-cache"
        return {"Cache-Control": control, "Vary": "Authorization"}

    async def question(self, request: Request) -> tuple[Identity | None, Task]:
        """Who asks, and for what task (:class:`Refusal` for the auth cases and bad input)."""
        identity = await self.identify(request)
        return identity, await read_task(request)

    @answers_refusals
    async def accepts(self, request: Request) -> Response:
        """``GET|POST /accepts``."""
        identity, task = await self.question(request)
        answer, _ = evaluate(self.config.ruleset, task, identity)
        return JSONResponse(answer.to_json(), headers=self._cache_headers(answer, identity))

    @answers_refusals
    async def explain(self, request: Request) -> Response:
        """``GET /accepts/explain``: the answer and which rule decided it."""
        identity, task = await self.question(request)
        answer, why = evaluate(self.config.ruleset, task, identity)
        body: dict[str, Any] = {"answer": answer.to_json(), "explain": why.to_json()}
        body["explain"]["identity"] = identity.subject if identity else None
        return JSONResponse(body, headers={"Cache-Control": "no-store"})


def openapi_route(
    title: str, *, with_explain: bool, network: bool = False, offers: bool = False
) -> Callable[[Request], Any]:
    """A handler serving the OpenAPI document."""
    doc = document(title, with_explain=with_explain, network=network, offers=offers)

    async def handler(request: Request) -> Response:
        return JSONResponse(doc)

    return handler


def create_app(config: ServiceConfig, validator: TokenValidator | None = None) -> Starlette:
    """The ASGI application for one service."""
    planner = Planner(config, validator)

    app = Starlette(
        routes=[
            Route("/accepts", planner.accepts, methods=["GET", "POST"]),
            Route("/accepts/explain", planner.explain, methods=["GET"]),
            Route("/auth/callback", planner.callback, methods=["GET"]),
            Route(
                "/openapi.json",
                openapi_route(f"Broadgauge planner: {config.name}", with_explain=True),
                methods=["GET"],
            ),
        ],
        lifespan=planner.lifespan,
    )
    app.state.planner = planner
    return app
