"""The seed's six authentication cases, with bearer JWTs from a real OIDC provider.

The provider is ``oidc-provider-mock`` started by the suite (tests/backends/oidc.py); the
planner validates its RS256 ID tokens against the provider's real JWKS.  Key rotation and
the refetch rate limit are tested against a JWKS we control, because the provider cannot
rotate its key while running.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from broadgauge.planner.app import create_app
from broadgauge.planner.auth import AuthSettings, TokenError, TokenValidator
from broadgauge.planner.config import parse_config
from tests.backends.oidc import OidcProvider, missing, run_provider, skip_or_fail
from tests.planner.rulesets import escape_members_only, yes_rule
from tests.planner.servers import serve

# authlib (inside the provider) warns about its own deprecated APIs; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

AUDIENCE = "planner-test"
ESCAPE_RULES = [
    yes_rule(
        "notebooks",
        "jupyter-notebook",
        servicetype="binder-hub",
        endpoint="http://binder.example.eu/",
    ),
    escape_members_only("datalake"),
]


def config(issuer: str, mode: str, **auth: Any) -> Any:
    return parse_config(
        {
            "service": {"name": "escape"},
            "site": {"capabilities": ["rucio"]},
            "auth": {"mode": mode, "issuer": issuer, "audience": AUDIENCE, **auth},
            "rules": ESCAPE_RULES,
        }
    )


def client(cfg: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(cfg)), base_url="http://planner.test"
    )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


ESAP = {"tasktype": "esap-notebook"}


async def ask_as(
    provider: OidcProvider, sub: str, *groups: str
) -> tuple[httpx.Response, httpx.Response, httpx.Response]:
    """As ``sub``, a member of ``groups``, ask a planner that requires a token and lets ESCAPE
    and LOFAR members ask: ``GET /accepts`` and ``GET /accepts/explain`` for an ESAP notebook,
    and ``POST /accepts`` for a Jupyter notebook."""
    cfg = config(provider.issuer, "required", may_ask={"groups_any": ["escape", "lofar"]})
    headers = bearer(provider.token(sub, AUDIENCE, {"groups": list(groups)}))
    async with client(cfg) as http:
        return (
            await http.get("/accepts", params=ESAP, headers=headers),
            await http.get("/accepts/explain", params=ESAP, headers=headers),
            await http.post("/accepts", json={"tasktype": "jupyter-notebook"}, headers=headers),
        )


async def test_case1_anonymous_allowed_is_evaluated_without_identity(
    oidc_provider: OidcProvider,
) -> None:
    async with client(config(oidc_provider.issuer, "anonymous")) as http:
        open_task = await http.get("/accepts", params={"tasktype": "jupyter-notebook"})
        assert open_task.json()["reponseword"] == "YES"
        members_only = await http.get("/accepts", params=ESAP)
        assert members_only.status_code == 200
        assert members_only.json() == {
            "reponseword": "NO",
            "reponseinfo": {"httpcode": 403, "reason": "ESCAPE members only"},
        }
        # A token is still used when sent: a member gets the members-only answer.
        token = oidc_provider.token("ann", AUDIENCE, {"groups": ["escape"]})
        member = await http.get("/accepts", params=ESAP, headers=bearer(token))
        assert member.json()["reponseword"] == "YES"


async def test_case2_browser_without_token_is_redirected_to_the_provider(
    oidc_provider: OidcProvider,
) -> None:
    cfg = config(oidc_provider.issuer, "required", redirect_uri="http://planner.test/cb")
    async with client(cfg) as http:
        response = await http.get(
            "/accepts", params=ESAP, headers={"Accept": "text/html,application/xhtml+xml,*/*"}
        )
    assert response.status_code == 303
    location = response.headers["location"]
    assert location.startswith(f"{oidc_provider.issuer}/oauth2/authorize?")
    query = parse_qs(urlparse(location).query)
    assert query["client_id"] == [AUDIENCE]
    assert query["response_type"] == ["code"]
    assert query["redirect_uri"] == ["http://planner.test/cb"]
    # The provider really serves that login page for this request.
    async with httpx.AsyncClient() as browser:
        login = await browser.get(location)
    assert login.status_code == 200
    assert "text/html" in login.headers["content-type"]


async def test_case2_api_client_without_token_gets_401_bearer(oidc_provider: OidcProvider) -> None:
    async with client(config(oidc_provider.issuer, "required")) as http:
        for headers in ({}, {"Accept": "application/json"}, {"Authorization": "Basic dTpw"}):
            response = await http.get("/accepts", params=ESAP, headers=headers)
            assert response.status_code == 401
            assert response.headers["www-authenticate"].startswith("Bearer")
            assert response.json()["error"] == "unauthorized"


async def test_case3_authenticated_but_may_not_ask_gets_403(oidc_provider: OidcProvider) -> None:
    response, explain, _ = await ask_as(oidc_provider, "mallory", "other")
    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"
    assert explain.status_code == 403  # the rules are not shown to those who may not ask


async def test_case4_5_allowed_caller_is_evaluated_with_claims_and_gets_yes(
    oidc_provider: OidcProvider,
) -> None:
    response, explain, _ = await ask_as(oidc_provider, "alice", "escape")
    assert response.status_code == 200
    assert response.json() == {
        "reponseword": "YES",
        "servicetype": "binder-hub",
        "serviceinfo": {"endpoint": "http://binder.example.eu/"},
    }
    assert response.headers["cache-control"] == "private, max-age=60"
    assert explain.json()["explain"]["identity"] == "alice"
    assert explain.json()["explain"]["decided_by"] == "datalake"


async def test_case6_allowed_to_ask_but_not_to_run_gets_200_no_403(
    oidc_provider: OidcProvider,
) -> None:
    response, _, other = await ask_as(oidc_provider, "bob", "lofar")
    assert response.status_code == 200
    assert response.json() == {
        "reponseword": "NO",
        "reponseinfo": {"httpcode": 403, "reason": "ESCAPE members only"},
    }
    assert other.json()["reponseword"] == "YES"


async def test_bad_tokens_get_401_invalid_token(oidc_provider: OidcProvider) -> None:
    wrong_audience = oidc_provider.token("alice", "someone-else", {"groups": ["escape"]})
    tampered = oidc_provider.token("alice", AUDIENCE, {"groups": ["escape"]})
    head, body, signature = tampered.split(".")
    tampered = f"{head}.{body}.{signature[:-4]}AAAA"
    with run_provider() as other:  # a different issuer with a different key
        foreign = other.token("alice", AUDIENCE, {"groups": ["escape"]})
    async with client(config(oidc_provider.issuer, "anonymous")) as http:
        for token in ("not-a-jwt", wrong_audience, tampered, foreign):
            response = await http.get("/accepts", params=ESAP, headers=bearer(token))
            assert response.status_code == 401, token
            assert 'error="invalid_token"' in response.headers["www-authenticate"]


async def test_expired_token_is_refused() -> None:
    if missing():
        skip_or_fail(str(missing()))
    # Long enough that the first use (with JWKS discovery) is in time on a loaded machine.
    lifetime = 3.0
    with run_provider(max_age=timedelta(seconds=lifetime)) as provider:
        token = provider.token("alice", AUDIENCE, {"groups": ["escape"]})
        minted = time.monotonic()
        cfg = config(provider.issuer, "required", leeway_seconds=0)
        async with client(cfg) as http:
            fresh = await http.get("/accepts", params=ESAP, headers=bearer(token))
            assert fresh.json()["reponseword"] == "YES"
            await asyncio.sleep(max(0.0, minted + lifetime + 1.1 - time.monotonic()))
            stale = await http.get("/accepts", params=ESAP, headers=bearer(token))
    assert stale.status_code == 401
    assert "expired" in stale.json()["reason"]


async def test_auth_over_a_real_socket(oidc_provider: OidcProvider) -> None:
    cfg = config(oidc_provider.issuer, "required")
    token = oidc_provider.token("alice", AUDIENCE, {"groups": ["escape"]})
    with serve(create_app(cfg)) as url:
        async with httpx.AsyncClient() as http:
            anonymous = await http.get(f"{url}accepts", params=ESAP)
            member = await http.get(f"{url}accepts", params=ESAP, headers=bearer(token))
    assert anonymous.status_code == 401
    assert member.json()["reponseword"] == "YES"


# --- key rotation and the refetch rate limit, against a JWKS we control -------------------

ISSUER = "https://issuer.test"


class Keys:
    """A provider whose key we can rotate; counts JWKS fetches."""

    def __init__(self) -> None:
        self.current = self._new("k1")
        self.fetches = 0

    @staticmethod
    def _new(kid: str) -> tuple[str, rsa.RSAPrivateKey]:
        return kid, rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def rotate(self, kid: str) -> None:
        self.current = self._new(kid)

    def jwks(self) -> dict[str, Any]:
        kid, key = self.current
        public = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
        return {"keys": [{**public, "kid": kid, "alg": "RS256", "use": "sig"}]}

    def sign(self, **claims: Any) -> str:
        kid, key = self.current
        now = int(time.time())
        body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "exp": now + 60, **claims}
        return jwt.encode(body, key, algorithm="RS256", headers={"kid": kid})

    def handler(self, request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/jwks"
        self.fetches += 1
        return httpx.Response(200, json=self.jwks())


def validator(keys: Keys, min_refresh: float) -> TokenValidator:
    settings = AuthSettings(
        mode="required",
        issuer=ISSUER,
        audience=AUDIENCE,
        jwks_uri=f"{ISSUER}/jwks",
        min_refresh_seconds=min_refresh,
    )
    return TokenValidator(settings, httpx.AsyncClient(transport=httpx.MockTransport(keys.handler)))


async def test_keys_are_cached_and_refetched_on_rotation() -> None:
    keys = Keys()
    check = validator(keys, min_refresh=0)
    first = keys.sign()
    assert (await check.validate(first)).subject == "alice"
    assert (await check.validate(first)).subject == "alice"
    assert keys.fetches == 1  # cached
    keys.rotate("k2")
    assert (await check.validate(keys.sign(sub="bob"))).subject == "bob"
    assert keys.fetches == 2  # unknown kid: refetched once
    with pytest.raises(TokenError, match="no key 'k1'"):
        await check.validate(first)  # the old key is gone after rotation


async def test_unknown_kids_cannot_hammer_the_provider() -> None:
    keys = Keys()
    check = validator(keys, min_refresh=60)
    await check.validate(keys.sign())
    for i in range(20):
        forged = jwt.encode(
            {"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "exp": int(time.time()) + 60},
            rsa.generate_private_key(public_exponent=65537, key_size=2048),
            algorithm="RS256",
            headers={"kid": f"forged-{i}"},
        )
        with pytest.raises(TokenError):
            await check.validate(forged)
    assert keys.fetches == 1


async def test_missing_claims_and_wrong_algorithms_are_refused() -> None:
    keys = Keys()
    check = validator(keys, min_refresh=0)
    kid, key = keys.current
    no_exp = jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "sub": "a"}, key, "RS256", {"kid": kid})
    with pytest.raises(TokenError, match="exp"):
        await check.validate(no_exp)
    hmac = jwt.encode(
        {"iss": ISSUER, "aud": AUDIENCE, "sub": "a", "exp": int(time.time()) + 60},
        "a-long-enough-shared-secret-for-hs256-tests",
        algorithm="HS256",
    )
    with pytest.raises(TokenError, match="not allowed"):
        await check.validate(hmac)
    with pytest.raises(TokenError, match="Invalid issuer"):
        await check.validate(keys.sign(iss="https://evil.test"))


async def test_case2_browser_login_round_trip_through_the_real_provider(
    oidc_provider: OidcProvider,
) -> None:
    """Redirect, log in at the provider, callback, cookie, and the answer with claims."""
    oidc_provider.set_user("carol", {"groups": ["escape"]})
    cfg = config(oidc_provider.issuer, "required", client_secret="anything")
    html = {"Accept": "text/html"}
    async with client(cfg) as planner, httpx.AsyncClient() as browser:
        first = await planner.get("/accepts", params=ESAP, headers=html)
        assert first.status_code == 303
        # The user logs in at the provider (its form posts the subject).
        login = await browser.post(first.headers["location"], data={"sub": "carol"})
        assert login.status_code == 302
        callback = login.headers["location"]
        assert callback.startswith("http://planner.test/auth/callback?")
        # A callback without this browser's state cookie is refused.
        stranger = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(cfg)), base_url="http://planner.test"
        )
        async with stranger:
            assert (await stranger.get(callback)).status_code == 400
        back = await planner.get(callback)
        assert back.status_code == 303
        assert back.headers["location"] == "/accepts?tasktype=esap-notebook"
        answer = await planner.get(back.headers["location"], headers=html)
        assert answer.status_code == 200
        assert answer.json()["reponseword"] == "YES"
        explain = await planner.get("/accepts/explain", params=ESAP)
        assert explain.json()["explain"]["identity"] == "carol"


async def test_case2_an_id_token_for_another_login_is_refused_by_its_nonce(
    oidc_provider: OidcProvider,
) -> None:
    """This browser's state, but a code whose ID token carries another login's nonce."""
    oidc_provider.set_user("carol", {"groups": ["escape"]})
    cfg = config(oidc_provider.issuer, "required", client_secret="anything")
    async with client(cfg) as planner, httpx.AsyncClient() as browser:
        first = await planner.get("/accepts", params=ESAP, headers={"Accept": "text/html"})
        assert first.status_code == 303
        authorize = urlparse(first.headers["location"])
        query = {k: v[0] for k, v in parse_qs(authorize.query).items()}
        assert query["nonce"] and query["nonce"] in planner.cookies["bg_planner_login"]
        query["nonce"] = "a-nonce-from-someone-elses-login"
        login = await browser.post(
            authorize._replace(query=urlencode(query)).geturl(), data={"sub": "carol"}
        )
        assert login.status_code == 302
        refused = await planner.get(login.headers["location"])
        assert refused.status_code == 401
        assert refused.json()["reason"] == "the ID token was issued for another login"
        assert "bg_planner_token" not in planner.cookies
        assert "bg_planner_login" not in planner.cookies  # spent
