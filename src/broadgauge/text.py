"""Rules on text shared by every layer: lone UTF-16 surrogates, and agent-name characters.

Python strings can hold a lone surrogate (``"\\ud800"`` decodes from a JSON escape), but no
Rust ``String`` can, so no OpenPortal peer ever sends one, and no UTF-8 encoder (SQLite, the
next frame, an HTTP answer) can write one back.  Every layer that reads text from outside
asks these two functions, so this module sits below all of them and imports nothing.

Agent names (and zones) appear in configs and invites (the wire), in destinations (the
grammar) and in published documents (the jobs core); :func:`first_bad_name_character` is
their one character rule.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["decoded_lone_surrogate", "first_bad_name_character", "has_lone_surrogate"]

_SURROGATE = re.compile("[\ud800-\udfff]")
# \uD800 to \uDFFF, hex digits in either case.  It also matches an escaped backslash
# followed by "uD8.." (a string holding JSON with such an escape), which costs only a walk
# that finds nothing.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def has_lone_surrogate(text: str) -> bool:
    """Whether ``text`` holds a UTF-16 surrogate (which cannot be encoded as UTF-8)."""
    # A regex scans in C, and isascii answers most texts in constant time.
    return not text.isascii() and _SURROGATE.search(text) is not None


def decoded_lone_surrogate(text: str, value: Any) -> bool:
    """Whether ``value``, decoded by ``json.loads`` from ``text``, holds a lone surrogate.

    In text that decoded as UTF-8 only an escape can make one (strict decoding refuses
    encoded surrogates), and senders write non-ASCII raw, so ``\\u`` is rare and the walk
    of ``value`` almost never runs.  A valid pair (``\\ud83d\\ude00``) decodes to one
    character, which is not a surrogate.  The walk is iterative, so any nesting that
    ``json.loads`` accepted is walked without recursion.
    """
    if "\\u" not in text or _SURROGATE_ESCAPE.search(text) is None:
        return False
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if has_lone_surrogate(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def first_bad_name_character(name: str, allowed: str = "-_") -> str | None:
    """The first character of ``name`` that is neither alphanumeric nor in ``allowed``.

    Agent names allow ``-`` and ``_``; zones also ``<`` and ``>`` (OpenPortal's rule).
    """
    return next((c for c in name if not (c.isalnum() or c in allowed)), None)
