"""The fenced blocks of ``docs/operators/quickstart.md``, with the test's markers.

A marker is an HTML comment (invisible once rendered) on the line before a fence::

    <!-- quickstart-test: skip (why) -->       an sh block that is not run
    <!-- quickstart-test: background -->       started and left running (e.g. run.sh)
    <!-- quickstart-test: restart -->          the background process with the same command
                                               is stopped, then started again
    <!-- quickstart-test: file NAME -->        the block's text is written to NAME
    <!-- quickstart-test: append NAME -->      ... or appended to it
    <!-- quickstart-test: output -->           each line (but "...") appears in what the sh
                                               block before it printed

Unmarked ``sh`` blocks are run in order; other unmarked blocks are prose.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

QUICKSTART = Path(__file__).resolve().parents[2] / "docs" / "operators" / "quickstart.md"
_MARKER = re.compile(r"^<!--\s*quickstart-test:\s*(\S+)\s*([^()\s]*)?.*-->\s*$")
_FENCE = re.compile(r"^```(\w*)\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced block: its language, text, marker (if any) and first line in the file."""

    lang: str
    text: str
    marker: str | None
    argument: str
    line: int


def blocks(path: Path = QUICKSTART) -> list[Block]:
    """Every fenced block of ``path``, in order."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        fence = _FENCE.match(lines[i])
        if fence is None:
            i += 1
            continue
        start = i
        i += 1
        body: list[str] = []
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i])
            i += 1
        previous = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        marker = _MARKER.match(previous.strip())
        found.append(
            Block(
                lang=fence.group(1),
                text="\n".join(body) + "\n",
                marker=marker.group(1) if marker else None,
                argument=(marker.group(2) or "") if marker else "",
                line=start + 1,
            )
        )
        i += 1
    return found


def file_block(name: str, path: Path = QUICKSTART) -> Block:
    """The block the quickstart writes to ``name`` (``file`` marker)."""
    return next(b for b in blocks(path) if b.marker == "file" and b.argument == name)
