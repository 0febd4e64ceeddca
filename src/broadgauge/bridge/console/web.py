"""The console's HTTP side: login, logout, OIDC, and the read-only pages and data endpoints.

Every page and ``/api/`` endpoint needs a session: without one a page redirects to the login
form (303) and a data endpoint (or a page's refresh fragment) answers 401; each refusal is
logged with the client's address and why (no cookie, forged or altered, unknown, expired).
Only ``GET``/``HEAD`` are served, and ``POST`` only at ``/login`` and ``/logout``; any other
method anywhere is refused with 405 before routing.  Responses carry a strict
Content-Security-Policy (the one inline script, the refresh, is allowed by a nonce) and
``Cache-Control: no-store``.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from importlib.resources import files
from typing import Any, Protocol, runtime_checkable
from urllib.parse import quote, urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from broadgauge.bridge.console import views
from broadgauge.bridge.console.auth import (
    CookieProblem,
    LoginLimiter,
    PasswordBook,
    Session,
    SessionStore,
)
from broadgauge.bridge.console.gather import AnswerRing, Gatherer
from broadgauge.bridge.console.settings import ConsoleSettings
from broadgauge.bridge.limits import TrustedProxies
from broadgauge.jobs.job import Job
from broadgauge.runtime.agent import Agent

__all__ = ["PREFIX", "Console", "TokenChecker"]

log = logging.getLogger("broadgauge.bridge.console")

#: Where the bridge mounts the console.
PREFIX = "/console"
SESSION_COOKIE = "bg_console"
LOGIN_COOKIE = "bg_console_login"
STATE_COOKIE = "bg_console_oidc"
STATE_PATH = f"{PREFIX}/auth"
_PACKAGE = files("broadgauge.bridge.console")
_CSS = (_PACKAGE / "static" / "console.css").read_bytes()
_MAX_FORM = 4096

Handler = Callable[[Request, Session], Awaitable[Response]]


@runtime_checkable
class TokenChecker(Protocol):
    """An OIDC provider as the planner's ``TokenValidator`` wraps it (duck-typed, because
    the bridge does not import the planner)."""

    settings: Any

    async def authorization_endpoint(self) -> str: ...

    async def exchange_code(self, code: str, redirect_uri: str) -> str: ...

    async def validate(self, token: str) -> Any: ...


class Console:
    """The operator console of one bridge agent."""

    def __init__(
        self,
        agent: Agent,
        settings: ConsoleSettings,
        *,
        held: Callable[[], list[Job]] = list,
        proxies: TrustedProxies | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.agent = agent
        self.settings = settings
        self.passwords = PasswordBook(settings.users)
        self.sessions = SessionStore(idle=settings.session_minutes * 60, clock=clock)
        self.limiter = LoginLimiter(clock=clock)
        self.proxies = proxies or TrustedProxies()
        self.gatherer = Gatherer(agent, held=held, ttl=min(2.0, settings.refresh_seconds))
        self.oidc: TokenChecker | None = None
        self.templates = Environment(
            loader=FileSystemLoader(str(_PACKAGE / "templates")),
            autoescape=select_autoescape(["html"]),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates.filters.update(
            age=views.age, stamp=views.stamp, short=views.short, clock=views.clock
        )

    def beside(self, planner: object) -> None:
        """Use the network planner served beside the bridge: its recent answers for the
        planner page, and its OIDC provider (if it has one) for logins."""
        network = getattr(planner, "planner", None)
        if isinstance(network, AnswerRing):
            self.gatherer.answers = network
        state = getattr(getattr(planner, "app", None), "state", None)
        validator = getattr(getattr(state, "planner", None), "validator", None)
        if isinstance(validator, TokenChecker):
            self.oidc = validator

    def set_users(self, users: dict[str, str]) -> None:
        """Replace the local operator accounts (e.g. after the config changed)."""
        self.passwords = PasswordBook(users)

    # --- plumbing --------------------------------------------------------------------------

    def _who(self, request: Request) -> str:
        peer = request.client.host if request.client is not None else None
        return self.proxies.client_address(peer, request.headers.get("x-forwarded-for"))

    def _secure(self, request: Request) -> bool:
        if self.settings.secure_cookie is not None:
            return self.settings.secure_cookie
        if request.url.scheme == "https" or (self.settings.public_url or "").startswith("https:"):
            return True
        peer = request.client.host if request.client is not None else ""
        forwarded = request.headers.get("x-forwarded-proto", "")
        return self.proxies.trusts(peer) and forwarded == "https"

    def _session(self, request: Request) -> Session | CookieProblem:
        return self.sessions.lookup(request.cookies.get(SESSION_COOKIE))

    def _render(self, request: Request, name: str, status: int = 200, **context: Any) -> Response:
        nonce = secrets.token_urlsafe(16)
        template = self.templates.get_template(name)
        values = {
            "prefix": PREFIX,
            "nonce": nonce,
            "refresh": self.settings.refresh_seconds,
            "path": request.url.path,
            **context,
        }
        if request.query_params.get("partial") == "1" and "main" in template.blocks:
            body = "".join(template.blocks["main"](template.new_context(values)))
        else:
            body = template.render(values)
        return HTMLResponse(body, status_code=status, headers=_headers(nonce))

    def _refuse(self, request: Request, problem: CookieProblem) -> Response:
        level = logging.INFO if problem is CookieProblem.MISSING else logging.WARNING
        log.log(
            level,
            "console: refused %s %s from %s: %s",
            request.method,
            request.url.path,
            self._who(request),
            problem.value,
        )
        wants_data = "/api/" in request.url.path or request.query_params.get("partial") == "1"
        if wants_data:
            response: Response = JSONResponse(
                {"error": "login required"}, status_code=401, headers=_headers("")
            )
        else:
            target = quote(
                request.url.path + (f"?{request.url.query}" if request.url.query else "")
            )
            response = RedirectResponse(f"{PREFIX}/login?next={target}", status_code=303)
        if problem is not CookieProblem.MISSING:
            response.delete_cookie(SESSION_COOKIE, path=PREFIX)
        return response

    def guarded(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        """``handler`` behind the session check."""

        async def endpoint(request: Request) -> Response:
            session = self._session(request)
            if isinstance(session, CookieProblem):
                return self._refuse(request, session)
            return await handler(request, session)

        return endpoint

    def _start_session(self, request: Request, user: str, method: str, target: str) -> Response:
        _, cookie = self.sessions.create(user, method)
        log.info("console: %s logged in (%s) from %s", user, method, self._who(request))
        if method == "oidc":
            # Back from the provider, the browser is on a cross-site redirect chain, on which
            # it withholds SameSite=Strict cookies; a page of ours that moves on by itself
            # makes the next request a same-site one that carries the new cookie.
            nonce = secrets.token_urlsafe(16)
            page = self.templates.get_template("moving.html").render(
                target=target, prefix=PREFIX, nonce=nonce
            )
            response: Response = HTMLResponse(page, headers=_headers(nonce))
        else:
            response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            cookie,
            max_age=int(self.sessions.lifetime),
            path=PREFIX,
            httponly=True,
            secure=self._secure(request),
            samesite="strict",
        )
        response.delete_cookie(LOGIN_COOKIE, path=PREFIX)
        return response

    # --- login and logout --------------------------------------------------------------------

    def _login_form(
        self, request: Request, *, error: str = "", status: int = 200, user: str = ""
    ) -> Response:
        nonce = request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(24)
        response = self._render(
            request,
            "login.html",
            status=status,
            csrf=self.sessions.login_token(nonce),
            error=error,
            user=user,
            next=_safe_next(request.query_params.get("next")),
            oidc=self.oidc is not None,
            local=bool(self.passwords.users),
        )
        response.set_cookie(
            LOGIN_COOKIE,
            nonce,
            max_age=3600,
            path=PREFIX,
            httponly=True,
            secure=self._secure(request),
            samesite="strict",
        )
        return response

    async def login_page(self, request: Request) -> Response:
        """``GET /login``: the form (straight to the console if already logged in)."""
        if isinstance(self._session(request), Session):
            return RedirectResponse(f"{PREFIX}/", status_code=303)
        return self._login_form(request)

    async def login(self, request: Request) -> Response:
        """``POST /login``: check the CSRF token, the rate limits, then the password."""
        who = self._who(request)
        async with request.form(max_files=0, max_fields=8, max_part_size=_MAX_FORM) as form:
            fields = {k: v for k, v in form.items() if isinstance(v, str)}
        user = fields.get("user", "")[:128]
        if not self.sessions.check_login_token(
            fields.get("csrf"), request.cookies.get(LOGIN_COOKIE)
        ):
            log.warning("console: refused login from %s: missing or wrong CSRF token", who)
            return self._login_form(
                request, error="The form expired; please try again.", status=403
            )
        wait = self.limiter.retry_after(user, who)
        if wait > 0:
            log.warning("console: refused login for %r from %s: rate limited", user, who)
            response = self._login_form(
                request,
                error=f"Too many failed logins; try again in {wait:.0f} s.",
                status=429,
                user=user,
            )
            response.headers["Retry-After"] = str(int(wait) + 1)
            return response
        if not self.passwords.verify(user, fields.get("password", "")):
            self.limiter.failed(user, who)
            log.warning("console: failed login for %r from %s", user, who)
            return self._login_form(
                request, error="Wrong user name or password.", status=401, user=user
            )
        self.limiter.succeeded(user)
        return self._start_session(request, user, "password", _safe_next(fields.get("next")))

    async def logout(self, request: Request) -> Response:
        """``POST /logout``: end the session (its CSRF token required)."""
        session = self._session(request)
        if isinstance(session, CookieProblem):
            return self._refuse(request, session)
        async with request.form(max_files=0, max_fields=4, max_part_size=_MAX_FORM) as form:
            token = form.get("csrf")
        if not isinstance(token, str) or not secrets.compare_digest(token, session.csrf):
            log.warning("console: refused logout from %s: wrong CSRF token", self._who(request))
            return JSONResponse({"error": "bad CSRF token"}, status_code=403, headers=_headers(""))
        self.sessions.end(session.id)
        log.info("console: %s logged out", session.user)
        response = RedirectResponse(f"{PREFIX}/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path=PREFIX)
        return response

    async def oidc_start(self, request: Request) -> Response:
        """``GET /auth/oidc``: off to the provider (authorization-code flow)."""
        if self.oidc is None:
            return JSONResponse({"error": "no OIDC provider"}, status_code=404)
        settings = self.oidc.settings
        state = secrets.token_urlsafe(24)
        # The nonce ties the ID token to this browser's login: a token issued for another
        # login (say, replayed from a log) carries another nonce and is refused.
        nonce = secrets.token_urlsafe(24)
        query = urlencode(
            {
                "response_type": "code",
                "client_id": getattr(settings, "client_id", "") or "",
                "redirect_uri": self._redirect_uri(request),
                "scope": getattr(settings, "scope", "openid") or "openid",
                "state": state,
                "nonce": nonce,
            }
        )
        endpoint = await self.oidc.authorization_endpoint()
        sep = "&" if "?" in endpoint else "?"
        response = RedirectResponse(f"{endpoint}{sep}{query}", status_code=303)
        back = _safe_next(request.query_params.get("next"))
        # Lax, not Strict: it must come back with the provider's cross-site redirect.
        response.set_cookie(
            STATE_COOKIE,
            f"{state} {nonce} {back}",
            max_age=600,
            path=STATE_PATH,
            httponly=True,
            secure=self._secure(request),
            samesite="lax",
        )
        return response

    def _redirect_uri(self, request: Request) -> str:
        base = self.settings.public_url or f"{request.url.scheme}://{request.url.netloc}"
        return f"{base}{PREFIX}/auth/callback"

    async def oidc_callback(self, request: Request) -> Response:
        """``GET /auth/callback``: redeem the code, check the subject, start a session."""
        if self.oidc is None:
            return JSONResponse({"error": "no OIDC provider"}, status_code=404)
        who = self._who(request)
        state, nonce, back = [*request.cookies.get(STATE_COOKIE, "").split(" ", 2), "", ""][:3]
        code = request.query_params.get("code")
        if (
            not state
            or not nonce
            or not code
            or not secrets.compare_digest(request.query_params.get("state", ""), state)
        ):
            # Not this browser's login: its own login in progress (if any) stays usable.
            log.warning("console: refused OIDC callback from %s: no login in progress", who)
            return self._login_form(request, error="No login in progress; try again.", status=400)
        response = await self._redeem(request, code, nonce, back)
        # The state is spent once its code was taken to the provider, refused or not.
        response.delete_cookie(STATE_COOKIE, path=STATE_PATH)
        return response

    async def _redeem(self, request: Request, code: str, nonce: str, back: str) -> Response:
        assert self.oidc is not None
        who = self._who(request)
        try:
            token = await self.oidc.exchange_code(code, self._redirect_uri(request))
            identity = await self.oidc.validate(token)
        except Exception as exc:
            log.warning("console: refused OIDC login from %s: %s", who, exc)
            return self._login_form(request, error="The provider's answer was refused.", status=401)
        claims = getattr(identity, "claims", None) or {}
        got = claims.get("nonce")
        if not isinstance(got, str) or not secrets.compare_digest(got, nonce):
            log.warning("console: refused OIDC login from %s: ID token nonce does not match", who)
            return self._login_form(request, error="The provider's answer was refused.", status=401)
        subject = str(getattr(identity, "subject", ""))
        if subject not in self.settings.oidc_subjects:
            log.warning("console: refused OIDC login for %r from %s: not an operator", subject, who)
            return self._login_form(
                request, error=f"{subject} is not a console operator.", status=403
            )
        return self._start_session(request, subject, "oidc", _safe_next(back))

    async def css(self, request: Request) -> Response:
        """The one stylesheet (no session needed: it holds nothing about the network)."""
        return Response(_CSS, media_type="text/css", headers={"Cache-Control": "max-age=3600"})

    # --- the application -------------------------------------------------------------------

    def app(self) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
        """The ASGI application the bridge mounts at :data:`PREFIX`."""
        pages = views.Pages(self.agent, self.gatherer, self._render)
        routes = [
            Route("/login", self.login_page, methods=["GET"]),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", self.logout, methods=["POST"]),
            Route("/auth/oidc", self.oidc_start, methods=["GET"]),
            Route("/auth/callback", self.oidc_callback, methods=["GET"]),
            Route("/static/console.css", self.css, methods=["GET"]),
            *(
                Route(path, self.guarded(handler), methods=["GET"])
                for path, handler in pages.routes()
            ),
        ]
        starlette = Starlette(routes=routes)

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            # Read-only: anything but GET/HEAD, or POST to login/logout, is refused here,
            # before routing, so no handler added later can become a write by accident.
            if scope["type"] == "http":
                method = scope["method"]
                path = scope["path"][len(scope.get("root_path", "")) :] or scope["path"]
                allowed = method in ("GET", "HEAD") or (
                    method == "POST" and path.rstrip("/").endswith(("/login", "/logout"))
                )
                if not allowed:
                    log.warning("console: refused %s %s (read-only)", method, scope["path"])
                    response = JSONResponse(
                        {"error": "the console is read-only"},
                        status_code=405,
                        headers={"Allow": "GET, HEAD"},
                    )
                    await response(scope, receive, send)
                    return
            await starlette(scope, receive, send)

        return app


def _safe_next(value: str | None) -> str:
    """A local console path to go to after login (never another site)."""
    if (
        value
        and value.startswith(PREFIX + "/")
        and not value.startswith("//")
        and "\\" not in value
    ):
        return value
    return f"{PREFIX}/"


def _headers(nonce: str) -> dict[str, str]:
    script = f"'nonce-{nonce}'" if nonce else "'none'"
    return {
        "Content-Security-Policy": (
            f"default-src 'none'; script-src {script}; style-src 'self'; img-src 'self'; "
            "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        ),
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
        "Cache-Control": "no-store",
    }
