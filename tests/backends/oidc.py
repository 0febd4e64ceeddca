"""A real OIDC provider for token tests: ``oidc-provider-mock`` (PyPI), per real-backends.md §5.

The provider is a Flask app served by werkzeug on a thread, bound to 127.0.0.1 on a free
port, so its issuer is ``http://127.0.0.1:<port>``.  It signs RS256 ID tokens with its own
key and publishes that key at ``/jwks``; our planner validates tokens against that JWKS
exactly as it would against ESCAPE IAM.  :meth:`OidcProvider.token` runs the real
authorization-code flow non-interactively (the provider's login form takes a ``sub``) and
returns the signed ID token, whose audience is the client id.

When ``oidc-provider-mock`` is missing the fixtures skip with the reason, and fail on CI
(``CI=true``).  Install: ``pip install oidc-provider-mock`` (0.3.4 supports Python 3.11).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pytest

REDIRECT_URI = "http://127.0.0.1:9/callback"  # never followed: we read the code from Location


def missing() -> str | None:
    """Why the provider cannot run here, or None."""
    # find_spec, not import: importing it here would emit authlib's deprecation warnings.
    for module in ("oidc_provider_mock", "werkzeug"):
        if importlib.util.find_spec(module) is None:
            return "oidc-provider-mock is not installed (pip install oidc-provider-mock)"
    return None


def skip_or_fail(reason: str) -> None:
    """Skip the test, or fail it on CI where the backend is part of the image."""
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


@dataclass
class OidcProvider:
    """A running provider and how to get tokens from it."""

    issuer: str

    def set_user(self, sub: str, claims: dict[str, Any]) -> None:
        """Store ``sub``'s claims (e.g. groups) at the provider; they go into its tokens."""
        response = httpx.put(f"{self.issuer}/users/{sub}", json=claims)
        assert response.status_code == 204, response.text

    def token(self, sub: str, client_id: str, claims: dict[str, Any] | None = None) -> str:
        """A signed ID token for ``sub`` with audience ``client_id``, via the code flow."""
        if claims is not None:
            self.set_user(sub, claims)
        with httpx.Client(base_url=self.issuer) as http:
            authorize = http.post(
                "/oauth2/authorize",
                params={
                    "client_id": client_id,
                    "redirect_uri": REDIRECT_URI,
                    "response_type": "code",
                    "scope": "openid profile email",
                },
                data={"sub": sub},
            )
            assert authorize.status_code == 302, authorize.text
            code = parse_qs(urlparse(authorize.headers["location"]).query)["code"][0]
            issued = http.post(
                "/oauth2/token",
                data={
                    "grant_type": "authorization_code",
                    "code": code,
                    "redirect_uri": REDIRECT_URI,
                },
                auth=(client_id, "secret"),  # the mock takes any secret, via basic auth only
            )
            assert issued.status_code == 200, issued.text
            return str(issued.json()["id_token"])


@contextmanager
def run_provider(max_age: timedelta = timedelta(hours=1)) -> Iterator[OidcProvider]:
    """Start a provider on a free loopback port; stop it on exit."""
    import warnings

    import werkzeug.serving

    with warnings.catch_warnings():  # authlib warns about its own deprecated modules
        warnings.simplefilter("ignore")
        from oidc_provider_mock import app

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise

    server = werkzeug.serving.make_server(
        "127.0.0.1", 0, app(access_token_max_age=max_age), threaded=True
    )
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield OidcProvider(issuer=f"http://127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="session")
def oidc_provider() -> Iterator[OidcProvider]:
    """A provider shared by the session (tokens valid for an hour)."""
    reason = missing()
    if reason:
        skip_or_fail(reason)
    with run_provider() as provider:
        yield provider
