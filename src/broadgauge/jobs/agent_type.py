"""Agent types as announced in ``Register`` and reported in ``HealthInfo``."""

from __future__ import annotations

import enum

__all__ = ["AgentType"]


class AgentType(enum.Enum):
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

    def __str__(self) -> str:
        return self.value

    @property
    def display(self) -> str:
        """Rust's lowercase ``Display`` form (``instance``)."""
        return self.value.lower()

    @property
    def is_leaf(self) -> bool:
        """Account, filesystem and scheduler agents never cascade or forward."""
        return self in (AgentType.ACCOUNT, AgentType.FILESYSTEM, AgentType.SCHEDULER)

    @classmethod
    def from_wire(cls, value: object) -> AgentType:
        """Decode the exact wire spelling; ``ValueError`` otherwise."""
        if isinstance(value, str):
            try:
                return cls(value)
            except ValueError:
                pass
        expected = ", ".join(f"`{t.value}`" for t in cls)
        raise ValueError(f"unknown variant {value!r}, expected one of {expected}")
