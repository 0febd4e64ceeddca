"""The dialling side says so, at WARNING and with the fix, when a server refuses its keys."""

from __future__ import annotations

import logging

import pytest

from broadgauge.wire import Service

from .conftest import eventually, make_client, running, wait_for_peer

STALE = "refused our keys"


def stale_key_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if STALE in r.getMessage()]


async def test_a_rotation_on_the_server_is_reported_by_the_client_with_the_fix(
    server: Service, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="broadgauge.wire")
    async with running(server):
        old = server.add_client("client", "127.0.0.1")
        client = make_client(old)
        async with running(client, listen=False):
            await wait_for_peer(client)
            assert stale_key_warnings(caplog) == []

            new = server.rotate_client("client")  # the server's side of a rotation only
            await eventually(lambda: len(stale_key_warnings(caplog)) >= 2)

            record = stale_key_warnings(caplog)[0]
            assert (record.name, record.levelno) == ("broadgauge.wire", logging.WARNING)
            assert record.getMessage() == (
                f"server@default at {server.url} refused our keys (closed the handshake: "
                "received 1008 (policy violation); then sent 1008 (policy violation)): the "
                "keys this agent holds for it are stale, most likely rotated on its side.  "
                "Get the file its operator made with `client --rotate client` "
                "(rotate_client_default.toml), run "
                "`broadgauge <role> server --rotate rotate_client_default.toml` for this "
                "agent, then restart it"
            )
            # Nothing else about the refusal is logged as a mere "cannot reach".
            assert not [r for r in caplog.records if "cannot reach" in r.getMessage()]

            client.add_server(new)  # the client's side: what `server --rotate` writes
            await wait_for_peer(client)
            seen = len(stale_key_warnings(caplog))
            await client.send("server", "back")
            assert len(stale_key_warnings(caplog)) == seen


async def test_a_server_that_is_not_there_is_not_reported_as_stale_keys(
    server: Service, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="broadgauge.wire")
    async with running(server):
        invite = server.add_client("client", "127.0.0.1")
    client = make_client(invite)  # the server has stopped: nothing listens at its URL
    async with running(client, listen=False):
        await eventually(lambda: any("cannot reach" in r.getMessage() for r in caplog.records))
    assert stale_key_warnings(caplog) == []
    unreachable = [r for r in caplog.records if "cannot reach" in r.getMessage()]
    assert {r.levelno for r in unreachable} == {logging.INFO}


async def test_a_wrong_name_is_a_handshake_failure_not_stale_keys(
    server: Service, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="broadgauge.wire")
    async with running(server):
        invite = server.add_client("client", "127.0.0.1")
        impostor = make_client(invite, name="impostor")  # right keys, wrong name
        async with running(impostor, listen=False):
            await eventually(lambda: server.stats.connections_rejected["wrong-name"] >= 2)
    assert stale_key_warnings(caplog) == []
