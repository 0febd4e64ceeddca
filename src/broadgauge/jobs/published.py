"""Execution Planner rules an agent publishes to the agents above it (a Broadgauge extension).

An instance (or any routing agent) may publish the same declarative document a planner
service reads from its TOML: its ``[site]`` table and its ``[[rules]]``.  The document travels
up the hierarchy inside :class:`~broadgauge.jobs.commands.PlannerRulesResponse`, each entry
tagged with the path it came from.  That path is built by the agents the entry passed
through, each adding its own name, so an agent can only publish for itself and the agents
below it: :func:`accept_from_child` drops any entry whose path does not start with the name
of the neighbour that sent it.

The document is opaque here (it is parsed and judged by :mod:`broadgauge.planner`); this
module only checks its shape and size.  Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from broadgauge.text import first_bad_name_character

from . import _json
from .errors import ProtocolError

__all__ = [
    "MAX_DOCUMENT_BYTES",
    "PublishedRules",
    "accept_from_child",
    "check_document",
]

#: Largest document one agent may publish (its JSON encoding).  Rules are a few KiB; this
#: keeps a misconfigured agent from filling every frame above it.
MAX_DOCUMENT_BYTES: Final = 256 * 1024
#: Tables a published document may hold: the parts of a planner config that describe a site.
DOCUMENT_TABLES: Final = frozenset({"service", "site", "rules"})


def check_document(document: object, where: str = "document") -> dict[str, Any]:
    """The document as a dict, or :class:`ProtocolError` saying why it cannot be published."""
    if not isinstance(document, dict):
        raise ProtocolError(f"{where}: expected an object, got {_json.type_name(document)}")
    unknown = set(document) - DOCUMENT_TABLES
    if unknown:
        raise ProtocolError(f"{where}: unknown tables {sorted(unknown)[:5]}")
    try:
        # Measured as it will travel: the wire encoder refuses what JSON cannot carry
        # (TOML dates and times, NaN), so such a document fails here, not in every answer.
        size = len(_json.dumps(document).encode("utf-8", "surrogatepass"))
    except (TypeError, ValueError) as exc:
        raise ProtocolError(f"{where}: not JSON-encodable: {exc}") from None
    if size > MAX_DOCUMENT_BYTES:
        raise ProtocolError(f"{where}: {size} bytes is over the {MAX_DOCUMENT_BYTES} limit")
    return document


def _check_path(path: str, where: str) -> str:
    for name in path.split("."):
        if not name:
            raise ProtocolError(f"{where}: agent name must not be empty")
        bad = first_bad_name_character(name)
        if bad is not None:
            raise ProtocolError(
                f"{where}: agent name {name!r} contains {bad!r}; use letters, digits, - and _"
            )
    return path


@dataclass(frozen=True)
class PublishedRules:
    """One agent's published planner document and the path (relative to the holder) to it."""

    destination: str
    document: Mapping[str, Any]

    def to_json_value(self) -> dict[str, Any]:
        """The wire form: ``{"destination": "...", "document": {...}}``."""
        return {"destination": self.destination, "document": dict(self.document)}

    @classmethod
    def from_json_value(cls, value: object, path: str) -> PublishedRules:
        """Decode one entry; :class:`ProtocolError` names what is wrong."""
        r = _json.Reader(value, path, {"destination", "document"})
        destination = _check_path(r.text("destination"), r.sub("destination"))
        return cls(destination, check_document(r.raw("document"), r.sub("document")))

    def below(self, name: str) -> PublishedRules:
        """The same entry as seen from ``name``, the agent above the one that sent it."""
        return PublishedRules(f"{name}.{self.destination}", self.document)


def accept_from_child(
    child: str, entries: Iterable[PublishedRules]
) -> tuple[list[PublishedRules], list[str]]:
    """Split a child's entries into those it may publish and the paths it may not.

    A child speaks for itself and what is below it, so every path must be ``child`` or
    start with ``child.``.
    """
    kept: list[PublishedRules] = []
    refused: list[str] = []
    for entry in entries:
        if entry.destination == child or entry.destination.startswith(child + "."):
            kept.append(entry)
        else:
            refused.append(entry.destination)
    return kept, refused
