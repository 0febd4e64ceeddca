"""Signed raw requests for the refusal tests (independent of both clients)."""

from __future__ import annotations

import time
import uuid

import httpx

from broadgauge.bridge.auth import format_date, sign


def signed(
    key: bytes,
    method: str,
    function: str,
    body: bytes = b"",
    *,
    now: float | None = None,
    nonce: str | None = "fresh",
) -> dict[str, str]:
    """Headers as the official client sends them (``nonce="fresh"`` makes a new one)."""
    date = format_date(time.time() if now is None else now)
    if nonce == "fresh":
        nonce = str(uuid.uuid4())
    headers = {
        "Date": date,
        "Authorization": sign(key, method, function, date, body, nonce),
        "Accept": "application/json",
    }
    if nonce is not None:
        headers["X-Nonce"] = nonce
    if method == "post":
        headers["Content-Type"] = "application/json"
    return headers


async def call(  # noqa: PLR0917
    http: httpx.AsyncClient,
    base: str,
    key: bytes,
    method: str,
    function: str,
    body: bytes = b"",
    **options: object,
) -> httpx.Response:
    headers = signed(key, method, function, body, **options)  # type: ignore[arg-type]
    return await http.request(
        method.upper(), f"{base}{function}?openportal-version=0.1", content=body, headers=headers
    )
