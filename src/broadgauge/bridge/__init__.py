"""The bridge: OpenPortal's HTTP API for portal software, in front of a ``Bridge`` agent.

* :mod:`~broadgauge.bridge.auth`, :mod:`~broadgauge.bridge.limits`,
  :mod:`~broadgauge.bridge.config`: sans-I/O signing, replay and rate limits, settings.
* :mod:`~broadgauge.bridge.runtime`: what the endpoints do with the agent (no HTTP).
* :mod:`~broadgauge.bridge.app`, :mod:`~broadgauge.bridge.server`: Starlette and uvicorn.
"""

from broadgauge.bridge.config import BridgeSettings, ClientFile
from broadgauge.bridge.runtime import BridgeRuntime, Retry
from broadgauge.bridge.server import BridgeServer, attach_bridge

__all__ = [
    "BridgeRuntime",
    "BridgeServer",
    "BridgeSettings",
    "ClientFile",
    "Retry",
    "attach_bridge",
]
