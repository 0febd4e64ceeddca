"""Runs the official ``openportal`` client in its own process, driven over stdin/stdout.

The wheel holds the GIL for the whole of each blocking HTTP call, so it cannot share a
process with the bridge it calls (the event loop would freeze until the call times out);
and some malformed input aborts the interpreter.  Each line on stdin is a JSON object
``{"code": "<python>"}`` run with ``op`` (the module) in scope; the value left in
``result`` is written back as one JSON line: ``{"ok": <value>}`` or ``{"error": "<text>"}``.
"""

from __future__ import annotations

import json
import sys
import traceback
from typing import Any

import openportal as op


def plain(value: Any) -> Any:
    """A JSON-able form of what the official module returned."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if hasattr(value, "to_json"):
        return {"type": type(value).__name__, "json": json.loads(value.to_json())}
    return {"type": type(value).__name__, "str": str(value)}


def main() -> None:
    namespace: dict[str, Any] = {"op": op, "json": json}
    for line in sys.stdin:
        request = json.loads(line)
        try:
            namespace.pop("result", None)
            exec(request["code"], namespace)
            reply = {"ok": plain(namespace.get("result"))}
        except BaseException as exc:  # report everything; the test decides
            first = str(exc).splitlines()[0] if str(exc) else ""
            reply = {
                "error": f"{type(exc).__name__}: {first}",
                "detail": str(exc)[:2000],
                "trace": traceback.format_exc(limit=3)[-500:],
            }
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
