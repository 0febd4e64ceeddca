"""The single exception type raised by the grammar package."""

from __future__ import annotations

__all__ = ["GrammarError"]


class GrammarError(ValueError):
    """A string (or JSON value) does not follow the OpenPortal 0.32.2 grammar.

    The message always names the part that failed: the instruction keyword, the
    argument or the offending token.  Parsing never raises anything else for
    malformed input (the Rust parser panics on a few inputs; we never do).
    """
