"""The aggregator's lean HTTP/1.1 client against raw asyncio servers that misbehave on purpose."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httpx
import pytest

from broadgauge.planner.http1 import MAX_BODY, Http1Client, ProtocolError

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
NO_PARAMS = httpx.QueryParams()


@asynccontextmanager
async def raw_server(handler: Handler) -> AsyncIterator[str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/accepts"
    finally:
        server.close()
        await server.wait_closed()


def replying(*responses: bytes, close_after: int = 1_000) -> tuple[Handler, list[bytes]]:
    """A handler answering each request on a connection with the next response."""
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for i, response in enumerate(responses):
            if i >= close_after:
                break
            try:
                seen.append(await reader.readuntil(b"\r\n\r\n"))
            except asyncio.IncompleteReadError:
                break
            writer.write(response)
            await writer.drain()
        writer.close()

    return handler, seen


async def test_content_length_keep_alive_and_request_shape() -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nCache-Control: max-age=5\r\n\r\n{}"
    handler, seen = replying(ok, ok)
    client = Http1Client()
    async with raw_server(handler) as url:
        params = httpx.QueryParams({"tasktype": "a b", "taskinfo.x": "1"})
        first = await client.get(url, params, {"Authorization": "Bearer t"})
        second = await client.get(url, params, {})
    await client.aclose()
    assert (first.status, first.body, first.headers["cache-control"]) == (200, b"{}", "max-age=5")
    assert second.body == b"{}"
    assert len(seen) == 2  # both requests went over one kept-alive connection
    assert seen[0].startswith(
        b"GET /accepts?tasktype=a+b&taskinfo.x=1 HTTP/1.1\r\nHost: 127.0.0.1:"
    )
    assert b"Authorization: Bearer t" in seen[0]


async def test_a_url_with_its_own_query_keeps_it_and_an_encoded_query_is_sent_as_is() -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
    handler, seen = replying(ok, ok)
    client = Http1Client()
    async with raw_server(handler) as url:
        await client.get(url + "?site=north", "tasktype=x", {})
        await client.get(url, "", {})
    await client.aclose()
    assert seen[0].startswith(b"GET /accepts?site=north&tasktype=x HTTP/1.1\r\n")
    assert seen[1].startswith(b"GET /accepts HTTP/1.1\r\n")
    with pytest.raises(ProtocolError, match="unsupported URL"):
        client.target("ftp://example.org/accepts")


async def test_chunked_and_close_delimited_bodies() -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n"
    )
    closing = b"HTTP/1.0 200 OK\r\n\r\nuntil close"
    client = Http1Client()
    for response, body in ((chunked, b"abcde"), (closing, b"until close")):
        handler, _ = replying(response)
        async with raw_server(handler) as url:
            assert (await client.get(url, NO_PARAMS, {})).body == body
    await client.aclose()


async def test_a_closed_idle_connection_is_retried_on_a_fresh_one() -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx"
    handler, seen = replying(ok, ok, close_after=1)  # server closes after one request
    client = Http1Client()
    async with raw_server(handler) as url:
        assert (await client.get(url, NO_PARAMS, {})).body == b"x"
        await asyncio.sleep(0.05)
        assert (await client.get(url, NO_PARAMS, {})).body == b"x"
    await client.aclose()
    assert len(seen) == 2


@pytest.mark.parametrize(
    "response",
    [
        b"SSH-2.0-OpenSSH\r\n\r\n",
        b"HTTP/1.1 abc OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nbroken header\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: " + str(MAX_BODY + 1).encode() + b"\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70_000 + b"\r\n\r\n",
    ],
)
async def test_garbage_is_a_protocol_error(response: bytes) -> None:
    handler, _ = replying(response)
    client = Http1Client()
    async with raw_server(handler) as url:
        with pytest.raises(ProtocolError):
            await client.get(url, NO_PARAMS, {})
    await client.aclose()


async def test_truncated_body_and_refused_connection_raise() -> None:
    handler, _ = replying(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    client = Http1Client()
    async with raw_server(handler) as url:
        with pytest.raises(asyncio.IncompleteReadError):
            await client.get(url, NO_PARAMS, {})
    with pytest.raises(OSError):
        await client.get("http://127.0.0.1:9/accepts", NO_PARAMS, {})
    with pytest.raises(ProtocolError):
        await client.get("ftp://example.org/accepts", NO_PARAMS, {})
