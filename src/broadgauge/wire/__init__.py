"""The secure peer-to-peer wire layer ("paddington", protocol version 2).

Services talk over WebSockets.  Every frame is sealed twice with XChaCha20-Poly1305 under
per-message keys derived with HKDF-SHA512, and each link is authenticated by a pair of
pre-shared keys handed over in an invite.  The pure parts (keys, frames, handshake, config,
invites) do no I/O; :class:`Service` is the asyncio edge.
"""

from broadgauge.wire.config import ClientEntry, IpAllow, ServerEntry, ServiceConfig
from broadgauge.wire.errors import (
    ConfigError,
    FrameError,
    HandshakeError,
    KeysRefused,
    MessageTooLarge,
    PeerNotConnected,
    WireError,
)
from broadgauge.wire.handshake import Channel, ClientHandshake, PeerDetails, ServerHandshake
from broadgauge.wire.invite import Invite
from broadgauge.wire.keys import Key
from broadgauge.wire.secrets import (
    EncryptionScheme,
    EnvironmentEncryption,
    SimpleEncryption,
    decrypt_secret,
    encrypt_secret,
    key_from_password,
)
from broadgauge.wire.service import Limits, Message, PeerId, Service, Timers
from broadgauge.wire.stats import WireStats

__all__ = [
    "Channel",
    "ClientEntry",
    "ClientHandshake",
    "ConfigError",
    "EncryptionScheme",
    "EnvironmentEncryption",
    "FrameError",
    "HandshakeError",
    "Invite",
    "IpAllow",
    "Key",
    "KeysRefused",
    "Limits",
    "Message",
    "MessageTooLarge",
    "PeerDetails",
    "PeerId",
    "PeerNotConnected",
    "ServerEntry",
    "ServerHandshake",
    "Service",
    "ServiceConfig",
    "SimpleEncryption",
    "Timers",
    "WireError",
    "WireStats",
    "decrypt_secret",
    "encrypt_secret",
    "key_from_password",
]
