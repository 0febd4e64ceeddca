"""The agent engine: what moves jobs between agents and keeps them safe across restarts.

* :class:`~broadgauge.runtime.agent.Agent` - one agent: a wire service, its boards in motion,
  the routing rules, handlers, health and restarts
* :mod:`~broadgauge.runtime.handling` - what arrives from a neighbour (Put, Update, Sync …)
* :mod:`~broadgauge.runtime.control` - health, diagnostics and restart requests
* :mod:`~broadgauge.runtime.rules_sweep` - gathering published planner rules down the tree
* :class:`~broadgauge.runtime.store.BoardStore` - durable boards, outbox and execution
  markers (SQLite)
* :mod:`~broadgauge.runtime.audit`, :mod:`~broadgauge.runtime.trace` - every action traced
* :class:`~broadgauge.runtime.config.AgentConfig` - an agent's config file

It builds on the pure :mod:`broadgauge.jobs` core and on :mod:`broadgauge.wire`, and knows
nothing of roles, the bridge, the planner or the command line (``lint-imports`` holds that).
"""
