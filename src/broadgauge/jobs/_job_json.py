"""A Job's JSON object as msgspec reads and writes it.

serde_json writes a Job's fields in the struct's order, each of them, compact, with raw UTF-8
and only the escapes JSON demands.  msgspec writes a :class:`WireJob` the same way: its
string escaping equals ``json.dumps(..., ensure_ascii=False)`` for every code point (a test
checks each one against the installed msgspec), and integers are plain digits in both.
"""

from __future__ import annotations

from typing import Final

import msgspec

__all__ = ["ENCODER", "WireJob"]


class WireJob(msgspec.Struct):
    """A Job's JSON object: the wire's spellings, fields in the order Rust writes them."""

    id: str
    created: int
    changed: int
    expires: int
    version: int
    command: str
    state: str
    result: str | None
    result_type: str | None
    forwarded_for: str | None


#: One encoder for every document.
ENCODER: Final = msgspec.json.Encoder()
