"""The aggregator's lean HTTP/1.1 client against raw asyncio servers that misbehave on purpose."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

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


def counting(*responses: bytes, close_after: int = 1_000) -> tuple[Handler, list[bytes], list[int]]:
    """:func:`replying`, also counting the connections the client opened."""
    handler, seen = replying(*responses, close_after=close_after)
    opened: list[int] = []

    async def count(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        opened.append(1)
        await handler(reader, writer)

    return count, seen, opened


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def idle(client: Http1Client) -> int:
    return sum(len(conns) for conns in client._idle.values())


@pytest.mark.parametrize(
    ("first", "reused"),
    [
        (OK, True),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-T: 1\r\n\r\n",
            True,
        ),
        (b"HTTP/1.1 204 No Content\r\n\r\n", True),  # no body, and no waiting for one
        (b"HTTP/1.1 100 Continue\r\n\r\n" + OK, True),  # an interim response is skipped
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok", False),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", False),
        (b"HTTP/1.1 200 OK\r\n\r\nok", False),  # delimited by close, even in HTTP/1.1
        (OK + b"HTTP/1.1 200 OK\r\n", False),  # bytes past the response: not trusted again
    ],
)
async def test_a_connection_is_reused_only_when_the_response_allows_it(
    first: bytes, reused: bool
) -> None:
    responses = iter([first, OK])
    opened: list[int] = []
    # Only a body delimited by close needs the server to close; otherwise the server keeps
    # the connection open, so a wrongly reused one would be answered (and counted) on it.
    closes = b"Content-Length" not in first and b"chunked" not in first and b"204" not in first

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        opened.append(1)
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(next(responses))
                await writer.drain()
                if closes:
                    break
        writer.close()

    client = Http1Client()
    async with raw_server(handler) as url:
        reply = await client.get(url, NO_PARAMS, {})
        assert reply.body == (b"" if reply.status == 204 else b"ok")
        assert idle(client) == (1 if reused else 0)
        assert (await client.get(url, NO_PARAMS, {})).body == b"ok"
    await client.aclose()
    assert len(opened) == (1 if reused else 2)


async def test_the_server_closing_an_idle_pooled_connection_mid_response_is_retried() -> None:
    # The pooled connection's server answers the second request with half a response.
    handler, seen, opened = counting(OK, b"HTTP/1.1 200 OK\r\nContent-Len")
    client = Http1Client()
    async with raw_server(handler) as url:
        assert (await client.get(url, NO_PARAMS, {})).body == b"ok"
        # The retry's fresh connection gets the handler's first response again.
        assert (await client.get(url, NO_PARAMS, {})).body == b"ok"
    await client.aclose()
    assert (len(seen), len(opened)) == (3, 2)  # the second request was sent twice


async def test_a_fresh_connection_closed_before_a_response_is_not_retried() -> None:
    handler, _, opened = counting(b"")  # reads the request, answers nothing, closes
    client = Http1Client()
    async with raw_server(handler) as url:
        with pytest.raises(asyncio.IncompleteReadError):
            await client.get(url, NO_PARAMS, {})
    await client.aclose()
    assert len(opened) == 1


async def test_a_body_without_length_is_read_until_close_across_many_reads() -> None:
    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nfirst ")
        for part in (b"second ", b"third"):
            await writer.drain()
            await asyncio.sleep(0.02)
            writer.write(part)
        writer.close()

    client = Http1Client()
    async with raw_server(trickle) as url:
        reply = await client.get(url, NO_PARAMS, {})
        assert (reply.body, idle(client)) == (b"first second third", 0)
    await client.aclose()


async def test_an_oversized_body_is_refused_however_it_is_delimited() -> None:
    big = b"a" * (MAX_BODY + 1)
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunked += b"%x\r\n%s\r\n0\r\n\r\n" % (len(big), big)
    client = Http1Client()
    for response in (b"HTTP/1.0 200 OK\r\n\r\n" + big, chunked):
        handler, _ = replying(response)
        async with raw_server(handler) as url:
            with pytest.raises(ProtocolError, match="too large"):
                await client.get(url, NO_PARAMS, {})
    await client.aclose()


async def test_a_body_of_exactly_max_body_is_accepted() -> None:
    body = b"a" * MAX_BODY
    handler, _ = replying(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (MAX_BODY, body))
    client = Http1Client()
    async with raw_server(handler) as url:
        assert (await client.get(url, NO_PARAMS, {})).body == body
    await client.aclose()


async def test_a_header_that_cannot_be_sent_is_refused_before_connecting() -> None:
    handler, seen, opened = counting(OK)
    client = Http1Client()
    async with raw_server(handler) as url:
        for bad in ("x\r\nInjected: yes", "caf\u00e9\u20ac"):
            with pytest.raises(ProtocolError, match="cannot send"):
                await client.get(url, NO_PARAMS, {"Authorization": bad})
    await client.aclose()
    assert (seen, opened) == ([], [])


async def test_a_timed_out_exchange_leaves_no_connection_in_the_pool() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await asyncio.sleep(1)
        writer.close()

    client = Http1Client()
    async with raw_server(silent) as url:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await client.get(url, NO_PARAMS, {})
        assert idle(client) == 0
    await client.aclose()


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_https_keeps_alive_and_reads_a_body_delimited_by_close(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = self_signed(tmp_path)
    server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ssl.load_cert_chain(cert, key)
    client_ssl = ssl.create_default_context(cafile=str(cert))
    monkeypatch.setattr(ssl, "create_default_context", lambda: client_ssl)
    handler, seen, opened = counting(OK, b"HTTP/1.1 200 OK\r\n\r\nuntil close")
    server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=server_ssl)
    port = server.sockets[0].getsockname()[1]
    client = Http1Client()
    try:
        url = f"https://127.0.0.1:{port}/accepts"
        assert (await client.get(url, NO_PARAMS, {})).body == b"ok"
        assert (await client.get(url, NO_PARAMS, {})).body == b"until close"
    finally:
        await client.aclose()
        server.close()
        await server.wait_closed()
    assert (len(seen), len(opened)) == (2, 1)
