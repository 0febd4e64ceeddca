"""The bridge fixtures of tests/bridge, shared with the client tests."""

from tests.bridge.conftest import bridge, client_file, demo_network, network, signals

__all__ = ["bridge", "client_file", "demo_network", "network", "signals"]
