"""The operator console: a read-only web view of the network, served by the bridge.

The bridge is where the network's state already meets HTTP: its agent sweeps the health tree,
asks any agent for diagnostics, holds the boards of its links and serves the bridge API; it
is the portal's way into the network.  So the console needs no role of its own to deploy and
sees the network as the portal's entry point does.  See ``docs/operators/console.md``.

* :mod:`~broadgauge.bridge.console.auth`, :mod:`~broadgauge.bridge.console.settings`:
  passwords, login limits, sessions and CSRF (no HTTP); the ``[console]`` table.
* :mod:`~broadgauge.bridge.console.model`, :mod:`~broadgauge.bridge.console.gather`: what the
  pages show, and getting it from the bridge agent.
* :mod:`~broadgauge.bridge.console.web`, :mod:`~broadgauge.bridge.console.views`: Starlette
  routes and Jinja2 templates (``templates/``, ``static/console.css``).
"""

from broadgauge.bridge.console.auth import hash_password
from broadgauge.bridge.console.settings import ConsoleSettings
from broadgauge.bridge.console.web import PREFIX, Console

__all__ = ["PREFIX", "Console", "ConsoleSettings", "hash_password"]
