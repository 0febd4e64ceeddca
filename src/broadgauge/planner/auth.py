"""OIDC bearer-token checks for a planner: settings, a JWKS cache, and JWT validation.

Tokens are OIDC JWTs (an ID token, or a JWT access token) sent as ``Authorization: Bearer``.
A token is valid when its signature verifies with a key from the provider's JWKS and its
issuer, audience and expiry are right.  Keys are cached; a token signed with an unknown
``kid`` makes the cache refetch the JWKS (the provider rotated its keys), but at most once
per ``min_refresh_seconds``, so a flood of forged kids cannot turn us into a JWKS hammer.

The endpoints (``jwks_uri``, ``authorization_endpoint``) come from the settings, or else
from the provider's ``/.well-known/openid-configuration``, fetched once on first use.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt

from broadgauge.planner.rules import (
    Identity,
    IdentityCondition,
    RuleError,
    parse_identity_condition,
)

MODES = ("anonymous", "required")


class TokenError(Exception):
    """A bearer token was presented but is not acceptable; the message says why."""


@dataclass(frozen=True)
class AuthSettings:
    """The ``[auth]`` table of a service configuration.

    ``mode`` is ``anonymous`` (no token needed; a token, if sent, must still be valid and
    its claims are used) or ``required``.  ``may_ask`` lists who may use this planner at
    all: an authenticated caller outside it gets HTTP 403.
    """

    mode: str = "anonymous"
    issuer: str | None = None
    audience: str | None = None
    jwks_uri: str | None = None
    authorization_endpoint: str | None = None
    client_id: str | None = None
    client_secret: str | None = None
    redirect_uri: str | None = None
    scope: str = "openid"
    algorithms: tuple[str, ...] = ("RS256", "ES256", "PS256", "EdDSA")
    leeway_seconds: float = 30.0
    min_refresh_seconds: float = 10.0
    may_ask: IdentityCondition = field(default_factory=IdentityCondition)

    @property
    def uses_tokens(self) -> bool:
        """True when an issuer is configured, so bearer tokens can be checked."""
        return self.issuer is not None


def parse_auth(raw: Any) -> AuthSettings:
    """Parse the ``[auth]`` table; :class:`RuleError` says what is wrong."""
    if raw is None:
        return AuthSettings()
    if not isinstance(raw, Mapping):
        raise RuleError("[auth] must be a table")
    mode = raw.get("mode", "anonymous")
    if mode not in MODES:
        raise RuleError(f"auth.mode must be one of {list(MODES)}")
    strings = {}
    keys = ("issuer", "audience", "jwks_uri", "authorization_endpoint", "client_id")
    for key in (*keys, "client_secret", "redirect_uri"):
        value = raw.get(key)
        if value is not None and not isinstance(value, str):
            raise RuleError(f"auth.{key} must be a string")
        strings[key] = value
    if mode == "required" and not (strings["issuer"] and strings["audience"]):
        raise RuleError('auth.mode = "required" needs auth.issuer and auth.audience')
    if strings["issuer"] and not strings["audience"]:
        raise RuleError("auth.issuer needs auth.audience (tokens for other clients are refused)")
    algorithms = raw.get("algorithms", list(AuthSettings.algorithms))
    if not isinstance(algorithms, list) or not all(isinstance(a, str) for a in algorithms):
        raise RuleError("auth.algorithms must be a list of strings")
    if "none" in [a.lower() for a in algorithms] or any(a.startswith("HS") for a in algorithms):
        # Symmetric or unsigned algorithms would let anyone who can read the JWKS mint tokens.
        raise RuleError("auth.algorithms may only name asymmetric algorithms")
    return AuthSettings(
        mode=mode,
        issuer=strings["issuer"],
        audience=strings["audience"],
        jwks_uri=strings["jwks_uri"],
        authorization_endpoint=strings["authorization_endpoint"],
        client_id=strings["client_id"] or strings["audience"],
        client_secret=strings["client_secret"],
        redirect_uri=strings["redirect_uri"],
        scope=str(raw.get("scope", "openid")),
        algorithms=tuple(algorithms),
        leeway_seconds=float(raw.get("leeway_seconds", 30.0)),
        min_refresh_seconds=float(raw.get("min_refresh_seconds", 10.0)),
        may_ask=parse_identity_condition(raw.get("may_ask", {}), "auth.may_ask"),
    )


class TokenValidator:
    """Validates bearer JWTs against one provider, caching its metadata and keys."""

    def __init__(self, settings: AuthSettings, http: httpx.AsyncClient | None = None) -> None:
        if settings.issuer is None or settings.audience is None:
            raise ValueError("a TokenValidator needs an issuer and an audience")
        self.settings = settings
        self._http = http or httpx.AsyncClient(timeout=5.0)
        self._metadata: dict[str, Any] | None = None
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = float("-inf")
        self._lock = asyncio.Lock()
        #: How many times the JWKS was fetched (observable by tests and operators).
        self.fetches = 0

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._http.aclose()

    async def metadata(self) -> Mapping[str, Any]:
        """The provider's discovery document (fetched once)."""
        if self._metadata is None:
            issuer = str(self.settings.issuer).rstrip("/")
            response = await self._http.get(f"{issuer}/.well-known/openid-configuration")
            response.raise_for_status()
            self._metadata = dict(response.json())
        return self._metadata

    async def authorization_endpoint(self) -> str:
        """Where a browser is sent to log in."""
        if self.settings.authorization_endpoint:
            return self.settings.authorization_endpoint
        return str((await self.metadata())["authorization_endpoint"])

    async def exchange_code(self, code: str, redirect_uri: str) -> str:
        """Redeem an authorization code at the provider; the ID token (not yet validated)."""
        token_endpoint = str((await self.metadata())["token_endpoint"])
        response = await self._http.post(
            token_endpoint,
            data={"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri},
            auth=(self.settings.client_id or "", self.settings.client_secret or ""),
        )
        if response.status_code != 200:
            raise TokenError(f"the provider refused the code: {response.text[:200]}")
        token = response.json().get("id_token")
        if not isinstance(token, str):
            raise TokenError("the provider's answer has no id_token")
        return token

    async def _refresh(self) -> None:
        uri = self.settings.jwks_uri or str((await self.metadata())["jwks_uri"])
        response = await self._http.get(uri)
        response.raise_for_status()
        keys: dict[str, jwt.PyJWK] = {}
        for raw in response.json().get("keys", []):
            try:
                key = jwt.PyJWK(raw)
            except jwt.PyJWTError:
                continue  # a key type we cannot use (e.g. an encryption key) is not fatal
            keys[str(raw.get("kid", ""))] = key
        self._keys = keys
        self._fetched_at = time.monotonic()
        self.fetches += 1

    async def _key(self, kid: str) -> jwt.PyJWK:
        if kid in self._keys:
            return self._keys[kid]
        async with self._lock:
            if kid in self._keys:  # another request refreshed while we waited
                return self._keys[kid]
            if time.monotonic() - self._fetched_at >= self.settings.min_refresh_seconds:
                try:
                    await self._refresh()
                except (httpx.HTTPError, ValueError, KeyError) as exc:
                    raise TokenError(f"cannot fetch the provider's keys: {exc}") from exc
        if kid not in self._keys and not kid and len(self._keys) == 1:
            # A token without a kid is checked against a provider's only key.
            return next(iter(self._keys.values()))
        if kid not in self._keys:
            raise TokenError(f"no key {kid!r} at the provider")
        return self._keys[kid]

    async def validate(self, token: str) -> Identity:
        """The identity in ``token``; :class:`TokenError` when it is not acceptable."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise TokenError(f"not a JWT: {exc}") from exc
        if header.get("alg") not in self.settings.algorithms:
            raise TokenError(f"algorithm {header.get('alg')!r} is not allowed")
        kid = str(header.get("kid", ""))
        key = await self._key(kid)
        try:
            claims = self._decode(token, key)
        except jwt.InvalidSignatureError as exc:
            # A provider without kids rotates by replacing its only key: refetch once
            # (rate-limited like an unknown kid) and try the new key.
            if not await self._refresh_if_allowed():
                raise TokenError(str(exc)) from exc
            try:
                claims = self._decode(token, await self._key(kid))
            except jwt.PyJWTError as again:
                raise TokenError(str(again)) from again
        except jwt.PyJWTError as exc:
            raise TokenError(str(exc)) from exc
        return Identity(subject=str(claims["sub"]), claims=claims)

    def _decode(self, token: str, key: jwt.PyJWK) -> dict[str, Any]:
        return jwt.decode(
            token,
            key=key,
            algorithms=list(self.settings.algorithms),
            audience=self.settings.audience,
            issuer=self.settings.issuer,
            leeway=self.settings.leeway_seconds,
            options={"require": ["exp", "iss", "aud", "sub"]},
        )

    async def _refresh_if_allowed(self) -> bool:
        async with self._lock:
            if time.monotonic() - self._fetched_at < self.settings.min_refresh_seconds:
                return False
            try:
                await self._refresh()
            except (httpx.HTTPError, ValueError, KeyError):
                return False
            return True


def bearer_token(authorization: str | None) -> str | None:
    """The token in an ``Authorization: Bearer`` header, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def www_authenticate(error: str | None = None, description: str | None = None) -> str:
    """The RFC 6750 challenge for a 401."""
    parts = ['Bearer realm="broadgauge-planner"']
    if error:
        parts.append(f'error="{error}"')
    if description:
        parts.append(f"error_description={json.dumps(description[:200])}")
    return ", ".join(parts)
