"""Job commands: ``"<destination> <instruction>"``.

This is the outer tokenisation level (notes §4.1): the text is split on Unicode
whitespace (Rust ``split_whitespace``), the first token is the destination and
the remaining tokens are re-joined with single spaces to form the instruction.
Runs of whitespace inside JSON arguments are therefore collapsed.

``Command.parse(text, portal_check=True)`` additionally applies the portal
check of notes §4.4 (used by the bridge ``/run`` endpoint and the portal's
``submit`` handling).
"""

from __future__ import annotations

import datetime as _dt
import functools
from dataclasses import dataclass

from ._text import rust_split_whitespace
from .destination import Destination
from .errors import GrammarError
from .identifiers import PortalIdentifier, ProjectIdentifier, UserIdentifier
from .instructions import Instruction

__all__ = ["Command"]


#: How many parsed destinations are kept for sharing: a site's jobs go to a few paths.
DESTINATIONS_KEPT = 1024

_destination = functools.lru_cache(maxsize=DESTINATIONS_KEPT)(Destination.parse)
_destination_text = functools.lru_cache(maxsize=DESTINATIONS_KEPT)(Destination.__str__)


@dataclass(frozen=True)
class Command:
    """A destination plus the instruction to run there."""

    destination: Destination
    instruction: Instruction

    @classmethod
    def parse(
        cls, text: str, *, portal_check: bool = False, today: _dt.date | None = None
    ) -> Command:
        """Parse a job command, optionally enforcing the portal check.

        Raises :class:`GrammarError` for a bad destination, a bad instruction
        or, with ``portal_check``, an identifier whose portal is not the first
        agent of the destination (message text identical to OpenPortal's).
        """
        tokens = rust_split_whitespace(text)
        try:
            destination = _destination(tokens[0] if tokens else "")
        except GrammarError as exc:
            raise GrammarError(
                f"Could not parse destination from command {text!r}: {exc}"
            ) from None
        try:
            instruction = Instruction.parse(" ".join(tokens[1:]), today=today)
        except GrammarError as exc:
            raise GrammarError(
                f"Could not parse instruction from command {text!r}: {exc}"
            ) from None
        command = cls(destination, instruction)
        if portal_check:
            command.check_portal(text)
        return command

    def check_portal(self, original: str | None = None) -> None:
        """Raise unless the checked identifier belongs to the first agent.

        ``original`` is the command text quoted in the error (defaults to the
        canonical form).
        """
        identifier = self.instruction.checked_identifier()
        if identifier is None:
            return
        if identifier.portal == self.destination.first:
            return
        if isinstance(identifier, UserIdentifier):
            kind = "user"
        elif isinstance(identifier, ProjectIdentifier):
            kind = "project"
        else:
            assert isinstance(identifier, PortalIdentifier)
            kind = "portal"
        quoted = str(self) if original is None else original
        raise GrammarError(
            f"Invalid command '{quoted}'. Commands involving {kind} '{identifier}' can only "
            f"be issued via the portal '{identifier.portal}', not '{self.destination.first}'."
        )

    @property
    def keyword(self) -> str:
        """The instruction keyword."""
        return self.instruction.keyword

    # Rendering an instruction is not free and a job's command is rendered on every hop
    # (JSON, traces, audit entries); the value is immutable, so render each part once.
    @functools.cached_property
    def destination_text(self) -> str:
        """The canonical destination, rendered once (and shared, like the destination)."""
        return _destination_text(self.destination)

    @functools.cached_property
    def instruction_text(self) -> str:
        """The canonical instruction, rendered once."""
        return str(self.instruction)

    def __str__(self) -> str:
        return f"{self.destination_text} {self.instruction_text}"
