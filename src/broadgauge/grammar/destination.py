"""Destinations (dot paths of agent names) and lists of destinations.

A :class:`Destination` such as ``portal.provider.clusters.cluster`` routes a job
through the agent hierarchy (notes §3.7).  Parsing splits on ``.`` and silently
drops empty segments (``a..b.`` is ``a.b``); at least two agents are required.
Agent names are *not* trimmed (Rust ``Destination::parse`` does no trimming).

:class:`Destinations` is the argument of the ``*_offerings`` instructions.  Its
text form is ``[]`` for none, the bare destination for one and
``[a.b.c, d.e.f]`` for two or more; its JSON form is an array of strings.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from broadgauge.text import has_lone_surrogate

from ._text import is_array, rust_trim
from .errors import GrammarError

__all__ = ["Destination", "Destinations", "Position"]


class Position(enum.Enum):
    """Where an agent sits on a job's path relative to the neighbour that sent it."""

    DESTINATION = "Destination"
    DOWNSTREAM = "Downstream"
    UPSTREAM = "Upstream"
    ERROR = "Error"


@dataclass(frozen=True, slots=True)
class Destination:
    """An ordered path of at least two agent names."""

    agents: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.agents) < 2:
            raise GrammarError(
                f"Invalid destination {'.'.join(self.agents)!r}: needs at least two agents"
            )
        for agent in self.agents:
            if not agent or "." in agent:
                raise GrammarError(f"Invalid agent name {agent!r} in destination")

    @classmethod
    def parse(cls, text: str) -> Destination:
        """Parse a dot path, dropping empty segments (``a..b.`` -> ``a.b``)."""
        agents = tuple(part for part in text.split(".") if part)
        if not agents:
            raise GrammarError(f"Invalid empty destination {text!r}")
        if len(agents) == 1:
            raise GrammarError(f"Invalid single agent destination {text!r}")
        return cls(agents)

    @classmethod
    def of(cls, agents: Iterable[str]) -> Destination:
        """Build a destination from agent names."""
        return cls(tuple(agents))

    def __str__(self) -> str:
        return ".".join(self.agents)

    @property
    def first(self) -> str:
        """The first agent (the portal for jobs issued through a bridge)."""
        return self.agents[0]

    @property
    def second(self) -> str:
        """The second agent."""
        return self.agents[1]

    @property
    def last(self) -> str:
        """The final destination agent."""
        return self.agents[-1]

    def reverse(self) -> Destination:
        """The path walked backwards (used to address notifications upstream)."""
        return Destination(tuple(reversed(self.agents)))

    def _index(self, agent: str) -> int | None:
        # Rust uses ``iter().position`` - the *first* occurrence of the name.
        try:
            return self.agents.index(agent)
        except ValueError:
            return None

    def position(self, me: str, sender: str) -> Position:
        """Position of ``me`` relative to the neighbour ``sender`` (notes §3.7).

        An unknown sender is an error; otherwise the last agent is the
        destination, and the first-occurrence indexes decide downstream (``me``
        later than ``sender``) or upstream (earlier).  Equal or missing indexes
        are an error.
        """
        sender_index = self._index(sender)
        if sender_index is None:
            return Position.ERROR
        if self.agents[-1] == me:
            return Position.DESTINATION
        me_index = self._index(me)
        if me_index is None or me_index == sender_index:
            return Position.ERROR
        return Position.DOWNSTREAM if me_index > sender_index else Position.UPSTREAM

    def next(self, me: str) -> str | None:
        """The agent after the first occurrence of ``me``, if any."""
        index = self._index(me)
        if index is None or index + 1 >= len(self.agents):
            return None
        return self.agents[index + 1]

    def previous(self, me: str) -> str | None:
        """The agent before the first occurrence of ``me``, if any."""
        index = self._index(me)
        if index is None or index == 0:
            return None
        return self.agents[index - 1]

    def to_json(self) -> str:
        """JSON value form: the dotted string."""
        return str(self)


@dataclass(frozen=True, slots=True)
class Destinations(Sequence[Destination]):
    """An ordered list of destinations (offerings).

    Parsing from text de-duplicates (first occurrence wins); decoding from JSON
    does not, matching the Rust ``Deserialize`` implementation.
    """

    destinations: tuple[Destination, ...] = ()

    @classmethod
    def of(cls, destinations: Iterable[Destination]) -> Destinations:
        """Build a de-duplicated list, keeping the first occurrence (linear time)."""
        return cls(tuple(dict.fromkeys(destinations)))

    @classmethod
    def parse(cls, text: str) -> Destinations:
        """Parse ``[a.b.c, d.e.f]``, ``a.b.c,d.e.f``, ``a.b.c`` or ``[]``.

        Rust quirk kept on purpose: a leading ``[`` is only removed when a
        trailing ``]`` is also present (``[a.b`` keeps an agent named ``[a``),
        whereas a lone trailing ``]`` is removed.
        """
        trimmed = rust_trim(text)
        inner = trimmed[1:] if trimmed.startswith("[") else trimmed
        if inner.endswith("]"):
            inner = inner[:-1]
        elif trimmed.startswith("["):
            inner = trimmed
        pieces = [rust_trim(piece) for piece in rust_trim(inner).split(",")]
        return cls.of(Destination.parse(piece) for piece in pieces if piece)

    @classmethod
    def from_json_value(cls, value: Any) -> Destinations:
        """Decode the JSON array form (no de-duplication)."""
        if not is_array(value) or not all(
            isinstance(v, str) and not has_lone_surrogate(v) for v in value
        ):
            raise GrammarError("Destinations JSON must be an array of strings")
        return cls(tuple(Destination.parse(v) for v in value))

    def to_json_value(self) -> list[str]:
        """The JSON array form."""
        return [str(d) for d in self.destinations]

    def add(self, other: Iterable[Destination]) -> Destinations:
        """Append destinations not already present (linear time).

        Only presence in ``self`` is checked, as in the reference: a destination given twice
        in ``other`` is appended twice.
        """
        present = set(self.destinations)
        return Destinations(self.destinations + tuple(d for d in other if d not in present))

    def remove(self, other: Iterable[Destination]) -> Destinations:
        """Remove the first occurrence of each given destination (linear time).

        A destination given ``k`` times removes its first ``k`` occurrences, exactly as
        removing the first occurrence once per mention would.
        """
        to_remove = Counter(other)
        result = []
        for destination in self.destinations:
            if to_remove.get(destination, 0) > 0:
                to_remove[destination] -= 1
            else:
                result.append(destination)
        return Destinations(tuple(result))

    def __str__(self) -> str:
        if not self.destinations:
            return "[]"
        if len(self.destinations) == 1:
            return str(self.destinations[0])
        return "[" + ", ".join(str(d) for d in self.destinations) + "]"

    def __len__(self) -> int:
        return len(self.destinations)

    def __iter__(self) -> Iterator[Destination]:
        return iter(self.destinations)

    def __getitem__(self, index: int) -> Destination:  # type: ignore[override]
        return self.destinations[index]

    def __contains__(self, item: object) -> bool:
        return item in self.destinations
