"""The paddington v2 handshake as two sans-I/O state machines (notes §1.4-§1.6).

Feed each machine the frames received from the peer and send the frames it returns.  Neither
touches a socket or a clock, so every step and every failure is tested without a network.

1. The client masks two fresh connection salts with the *opposite* pre-shared keys and sends
   them as upgrade headers (``openportal-inner-salt`` = inner salt ⊕ outer PSK, and the reverse).
2. Client → server, under the PSKs: ``{"session_key": new outer key, "engine", "version"}``.
3. Server → client, under (inner PSK, the client's new outer key): its new inner session key.
4. Client → server, under the session keys: PeerDetails ``{name, zone, version: 2, standby}``.
5. Server → client: its own PeerDetails.  Both sides check name, zone and version.

The server does not know who is calling until a key opens the first frame: it tries every
client entry allowed from the caller's address, in config order.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from broadgauge import OPENPORTAL_VERSION
from broadgauge.wire.config import ClientEntry, ServerEntry
from broadgauge.wire.envelope import (
    REPLAY_WINDOW,
    LayerKey,
    ReplayGuard,
    decode_frame,
    decode_frame_buffer,
    dump_json,
    encode_frame,
    open_inner,
    open_outer,
    parse_json,
    split_frame,
)
from broadgauge.wire.errors import FrameError, HandshakeError
from broadgauge.wire.keys import KEY_SIZE, Key, xor_with_key

INNER_SALT_HEADER = "openportal-inner-salt"
OUTER_SALT_HEADER = "openportal-outer-salt"
PROTOCOL_VERSION = 2
ENGINE = "paddington"
KEEPALIVE = "KEEPALIVE"

_T = TypeVar("_T")


@dataclass(frozen=True)
class StandbyStatus:
    """Which end of a connection is held as a standby (high availability, notes §1.6).

    A server holds a second connection for a ``name@zone`` it already has as a standby
    (``client_is_secondary``); the client then polls with ``{}`` until the server promotes
    it.  ``server_is_secondary`` is never set by the reference and is refused by clients.
    """

    server_is_secondary: bool = False
    client_is_secondary: bool = False

    @property
    def is_primary(self) -> bool:
        """Neither end is a standby."""
        return not (self.server_is_secondary or self.client_is_secondary)

    def to_json(self) -> dict[str, bool]:
        """The wire object."""
        return {
            "server_is_secondary": self.server_is_secondary,
            "client_is_secondary": self.client_is_secondary,
        }

    @classmethod
    def from_json(cls, value: Any) -> StandbyStatus:
        """Validate a received status; :class:`FrameError` if it is not one."""
        if not isinstance(value, dict):
            raise FrameError("bad-standby", "standby status is not an object")
        flags = [value.get(k) for k in ("server_is_secondary", "client_is_secondary")]
        if not all(isinstance(flag, bool) for flag in flags):
            raise FrameError("bad-standby", "standby status flags must be booleans")
        return cls(bool(flags[0]), bool(flags[1]))


PRIMARY = StandbyStatus()
SECONDARY_CLIENT = StandbyStatus(client_is_secondary=True)


@dataclass(frozen=True)
class PeerDetails:
    """What each side learns about the other once the keys are agreed."""

    name: str
    zone: str
    version: int
    standby: StandbyStatus = PRIMARY

    def to_json(self) -> dict[str, Any]:
        """The wire object."""
        return {
            "name": self.name,
            "zone": self.zone,
            "version": self.version,
            "standby_status": self.standby.to_json(),
        }

    @classmethod
    def from_json(cls, value: Any) -> PeerDetails:
        """Validate a received PeerDetails object (no ``standby_status``: primary)."""
        if not isinstance(value, dict):
            raise HandshakeError("bad-peer-details", "peer details are not an object")
        name, zone, version = value.get("name"), value.get("zone"), value.get("version")
        if not isinstance(name, str) or not isinstance(zone, str):
            raise HandshakeError("bad-peer-details", "peer details lack a name or zone")
        if not isinstance(version, int) or isinstance(version, bool):
            raise HandshakeError("bad-peer-details", "peer details lack a protocol version")
        standby = PRIMARY
        if "standby_status" in value:
            try:
                standby = StandbyStatus.from_json(value["standby_status"])
            except FrameError as exc:
                raise HandshakeError("bad-peer-details", str(exc)) from None
        return cls(name, zone, version, standby)


class Channel:
    """Seals and opens the traffic of one established connection.

    Holds the session keys bound to the connection salts, and a replay guard for frames
    received.  Payloads are strings; the only other value a peer may send is ``{}`` (a
    standby poll), which :meth:`open` reports as ``None`` so the caller can answer it.
    """

    __slots__ = ("_inner", "_outer", "_replay")

    def __init__(
        self, inner: LayerKey, outer: LayerKey, replay_window: int = REPLAY_WINDOW
    ) -> None:
        self._inner = inner
        self._outer = outer
        self._replay = ReplayGuard(replay_window)

    def seal(self, payload: str) -> str:
        """Return the frame carrying ``payload``."""
        return self.seal_value(payload)

    def seal_value(self, value: Any) -> str:
        """Return a frame carrying any JSON value (used for standby answers)."""
        frame = encode_frame(dump_json(value), self._inner, self._outer)
        self._replay.sent(frame)
        return frame

    def open_status(self, frame: str) -> StandbyStatus:
        """Open the answer to a standby poll; :class:`FrameError` if it is anything else."""
        value = parse_json(decode_frame(frame, self._inner, self._outer))
        self._replay.check(frame)
        return StandbyStatus.from_json(value)

    def open(self, frame: str) -> str | None:
        """Return the payload string, or ``None`` for a standby poll.

        Raises :class:`FrameError` for anything else, including a replayed frame.
        """
        value = parse_json(decode_frame_buffer(frame, self._inner, self._outer))
        self._replay.check(frame)
        if isinstance(value, str):
            return value
        if value == {}:
            return None
        raise FrameError("bad-payload", "payload is neither a string nor a standby poll")

    @staticmethod
    def standby_answer(status: StandbyStatus = PRIMARY) -> dict[str, bool]:
        """The answer to a standby poll (a primary connection is told it is primary)."""
        return status.to_json()


class _State(enum.Enum):
    START = "start"
    AWAIT_SESSION_KEY = "await-session-key"
    AWAIT_PEER_DETAILS = "await-peer-details"
    DONE = "done"
    FAILED = "failed"


def _handshake_body(session_key: Key) -> bytes:
    return dump_json(
        {"session_key": session_key.to_table(), "engine": ENGINE, "version": OPENPORTAL_VERSION}
    )


def _session_key_from(plaintext: bytes) -> Key:
    value = parse_json(plaintext)
    if not isinstance(value, dict) or "session_key" not in value:
        raise HandshakeError("bad-handshake", "handshake object has no session_key")
    try:
        return Key.from_table(value["session_key"])
    except ValueError as exc:
        raise HandshakeError("bad-handshake", f"bad session key: {exc}") from None


class _Machine:
    """What both ends' state machines share: a failure on any frame is final."""

    _state: _State

    def _step(self, receive: Callable[[str], _T], frame: str) -> _T:
        """Feed ``frame`` to ``receive``; on failure stay FAILED, and raise HandshakeError."""
        try:
            return receive(frame)
        except (HandshakeError, FrameError) as exc:
            self._state = _State.FAILED
            if isinstance(exc, FrameError):
                raise HandshakeError("bad-frame", str(exc)) from None
            raise


def _check_details(details: PeerDetails, name: str, zone: str, who: str) -> None:
    if details.version != PROTOCOL_VERSION:
        raise HandshakeError(
            "wrong-version", f"{who} speaks protocol {details.version}, not {PROTOCOL_VERSION}"
        )
    if details.zone != zone:
        raise HandshakeError("wrong-zone", f"{who} is in zone {details.zone!r}, not {zone!r}")
    if details.name != name:
        raise HandshakeError("wrong-name", f"{who} says it is {details.name!r}, not {name!r}")


class ClientHandshake(_Machine):
    """The dialling side.  Usage::

    hs = ClientHandshake("me", server_entry)
    connect(url, headers=hs.headers); send(hs.start())
    send(hs.receive(frame_2)); hs.receive(frame_4)  # -> None, hs.channel is ready
    """

    def __init__(
        self,
        name: str,
        server: ServerEntry,
        *,
        random_bytes: Callable[[int], bytes] = os.urandom,
        replay_window: int = REPLAY_WINDOW,
    ) -> None:
        self.name = name
        self.server = server
        self._replay_window = replay_window
        self._inner_salt = random_bytes(KEY_SIZE)
        self._outer_salt = random_bytes(KEY_SIZE)
        self._outer_session = Key(random_bytes(KEY_SIZE))
        self._inner_session: Key | None = None
        self._state = _State.START
        self.channel: Channel | None = None
        self.peer: PeerDetails | None = None

    @property
    def headers(self) -> dict[str, str]:
        """The salt headers of the upgrade request (masked with the crossed PSKs)."""
        return {
            INNER_SALT_HEADER: xor_with_key(self._inner_salt, self.server.outer_key).hex(),
            OUTER_SALT_HEADER: xor_with_key(self._outer_salt, self.server.inner_key).hex(),
        }

    def start(self) -> str:
        """Step 2: offer our new outer session key under the pre-shared keys."""
        if self._state is not _State.START:
            raise HandshakeError("out-of-order", "the handshake has already started")
        self._state = _State.AWAIT_SESSION_KEY
        return encode_frame(
            _handshake_body(self._outer_session),
            LayerKey(self.server.inner_key, self._inner_salt),
            LayerKey(self.server.outer_key, self._outer_salt),
        )

    def receive(self, frame: str) -> str | None:
        """Consume a server frame; return the frame to send next, or ``None`` when done."""
        return self._step(self._receive, frame)

    def _receive(self, frame: str) -> str | None:
        if self._state is _State.AWAIT_SESSION_KEY:
            plaintext = decode_frame(
                frame,
                LayerKey(self.server.inner_key, self._inner_salt),
                LayerKey(self._outer_session, self._outer_salt),
            )
            self._inner_session = _session_key_from(plaintext)
            self._state = _State.AWAIT_PEER_DETAILS
            mine = PeerDetails(self.name, self.server.zone, PROTOCOL_VERSION)
            return encode_frame(dump_json(mine.to_json()), *self._session_layers())
        if self._state is _State.AWAIT_PEER_DETAILS:
            details = PeerDetails.from_json(
                parse_json(decode_frame(frame, *self._session_layers()))
            )
            _check_details(details, self.server.name, self.server.zone, "server")
            self.peer = details
            self.channel = Channel(*self._session_layers(), self._replay_window)
            self._state = _State.DONE
            return None
        raise HandshakeError("out-of-order", f"unexpected frame in state {self._state.value}")

    def _session_layers(self) -> tuple[LayerKey, LayerKey]:
        assert self._inner_session is not None
        return (
            LayerKey(self._inner_session, self._inner_salt),
            LayerKey(self._outer_session, self._outer_salt),
        )


def unmask_salts(headers: dict[str, str], entry: ClientEntry) -> tuple[bytes, bytes]:
    """Recover the connection salts from the upgrade headers for one candidate client."""
    inner_masked = bytes.fromhex(headers[INNER_SALT_HEADER])
    outer_masked = bytes.fromhex(headers[OUTER_SALT_HEADER])
    return xor_with_key(inner_masked, entry.outer_key), xor_with_key(outer_masked, entry.inner_key)


def check_salt_headers(headers: dict[str, str | None]) -> dict[str, str]:
    """Validate that both salt headers are present and hold 32 bytes of hex."""
    checked: dict[str, str] = {}
    for header in (INNER_SALT_HEADER, OUTER_SALT_HEADER):
        value = headers.get(header)
        if value is None:
            raise HandshakeError("missing-salt", f"no {header} header")
        try:
            raw = bytes.fromhex(value)
        except ValueError:
            raise HandshakeError("bad-salt", f"{header} is not hexadecimal") from None
        if len(raw) != KEY_SIZE:
            raise HandshakeError("bad-salt", f"{header} is {len(raw)} bytes, not {KEY_SIZE}")
        checked[header] = value
    return checked


class ServerHandshake(_Machine):
    """The listening side, for one incoming connection.

    ``candidates`` are the client entries whose IP allowlist matched the caller, in config
    order.  The first whose keys open the first frame is the caller; if several could, the
    first wins (the reference warns about this configuration).
    """

    def __init__(
        self,
        name: str,
        candidates: Sequence[ClientEntry],
        headers: dict[str, str | None],
        *,
        random_bytes: Callable[[int], bytes] = os.urandom,
        claim: Callable[[str, str], bool] | None = None,
        replay_window: int = REPLAY_WINDOW,
    ) -> None:
        self.name = name
        self._replay_window = replay_window
        #: ``claim(name, zone)`` is asked once the client is known: True makes this the
        #: primary connection for it, False holds it as a standby (without it: primary).
        self._claim = claim
        self.client_is_secondary = False
        self._candidates = list(candidates)
        self._headers = check_salt_headers(headers)
        self._random_bytes = random_bytes
        self._state = _State.START
        self.client: ClientEntry | None = None
        self.channel: Channel | None = None
        self.peer: PeerDetails | None = None
        self._layers: tuple[LayerKey, LayerKey] | None = None

    def receive(self, frame: str) -> str:
        """Consume a client frame and return the frame to send back."""
        return self._step(self._receive, frame)

    @property
    def done(self) -> bool:
        """Whether the connection is authenticated and :attr:`channel` is ready."""
        return self._state is _State.DONE

    def _receive(self, frame: str) -> str:
        if self._state is _State.START:
            return self._first_frame(frame)
        if self._state is _State.AWAIT_PEER_DETAILS:
            assert self._layers is not None and self.client is not None
            details = PeerDetails.from_json(parse_json(decode_frame(frame, *self._layers)))
            _check_details(details, self.client.name, self.client.zone, "client")
            self.peer = details
            self.channel = Channel(*self._layers, self._replay_window)
            self._state = _State.DONE
            if self._claim is not None:
                self.client_is_secondary = not self._claim(self.client.name, self.client.zone)
            status = SECONDARY_CLIENT if self.client_is_secondary else PRIMARY
            mine = PeerDetails(self.name, self.client.zone, PROTOCOL_VERSION, status)
            return encode_frame(dump_json(mine.to_json()), *self._layers)
        raise HandshakeError("out-of-order", f"unexpected frame in state {self._state.value}")

    def _first_frame(self, frame: str) -> str:
        inner_info, outer_info, outer_blob = split_frame(frame)
        inner_masked = bytes.fromhex(self._headers[INNER_SALT_HEADER])
        outer_masked = bytes.fromhex(self._headers[OUTER_SALT_HEADER])
        # Needed for this frame only: a link would otherwise hold a list of every client
        # allowed from its address for as long as it lives.
        candidates, self._candidates = self._candidates, []
        for entry in candidates:
            # A wrong key fails at the outer layer, before the inner one is derived; this loop
            # runs once per entry allowed from the caller's address, so keep it cheap.
            outer_salt = xor_with_key(outer_masked, entry.inner_key)
            inner_salt = xor_with_key(inner_masked, entry.outer_key)
            try:
                inner_blob = open_outer(
                    outer_info, outer_blob, LayerKey(entry.outer_key, outer_salt)
                )
                plaintext = open_inner(
                    inner_info, inner_blob, LayerKey(entry.inner_key, inner_salt)
                )
            except FrameError as exc:
                if exc.reason == "bad-auth":
                    continue  # not this client's keys; try the next candidate
                raise
            outer_session = _session_key_from(plaintext)
            inner_session = Key(self._random_bytes(KEY_SIZE))
            self.client = entry
            self._layers = (
                LayerKey(inner_session, inner_salt),
                LayerKey(outer_session, outer_salt),
            )
            self._state = _State.AWAIT_PEER_DETAILS
            return encode_frame(
                _handshake_body(inner_session),
                LayerKey(entry.inner_key, inner_salt),
                LayerKey(outer_session, outer_salt),
            )
        raise HandshakeError(
            "no-matching-key",
            f"no client allowed from this address holds keys that open the handshake "
            f"({len(candidates)} tried)",
        )
