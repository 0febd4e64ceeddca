"""Agent types as announced in ``Register`` and reported in ``HealthInfo``."""

from __future__ import annotations

from ._json import WireEnum

__all__ = ["AgentType"]


class AgentType(WireEnum):
    """templemeads ``agent::Type``; ``value`` is the wire spelling (capitalised).

    ``Register.agent`` carries this *type* name, not the agent's own name
    (notes §0 erratum 6).  :attr:`display` is Rust's lowercase ``Display``.
    """

    PORTAL = "Portal"
    PROVIDER = "Provider"
    PLATFORM = "Platform"
    INSTANCE = "Instance"
    BRIDGE = "Bridge"
    ACCOUNT = "Account"
    FILESYSTEM = "Filesystem"
    SCHEDULER = "Scheduler"
    VIRTUAL = "Virtual"

    @property
    def is_leaf(self) -> bool:
        """Account, filesystem and scheduler agents never cascade or forward."""
        return self in (AgentType.ACCOUNT, AgentType.FILESYSTEM, AgentType.SCHEDULER)
