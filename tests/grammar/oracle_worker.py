"""Long-lived worker that answers questions with the official ``openportal`` wheel.

Run as a script; reads one JSON request per line on stdin and writes one JSON
answer per line on stdout.  Some inputs make the compiled Rust code panic and
abort the whole process - the parent (:mod:`tests.grammar.oracle`) notices the
closed pipe, records a crash and starts a new worker.

Requests: ``{"op": "instruction", "text": ...}``, ``{"op": "command", "text":
...}``, ``{"op": "decode", "result": ..., "result_type": ...}`` and
``{"op": "encode", "kind": ..., "json": ...}`` and ``{"op": "merge", "base": ...,
"other": ...}`` (AwardDetails JSON), ``{"op": "notification", "text": ...}`` and
``{"op": "notification_json", "text": ...}``.  Answers are ``{"ok": ...}`` or
``{"err": ...}``.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import openportal as op

_JOB_ID = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
_FAR = 4102444800  # 2100-01-01, so jobs never count as expired


def _job_json(command: str, state: str, **extra: Any) -> str:
    job: dict[str, Any] = {
        "id": _JOB_ID,
        "created": 1717400000,
        "changed": 1717400000,
        "expires": _FAR,
        "version": 2,
        "command": command,
        "state": state,
    }
    job.update(extra)
    return json.dumps(job)


def _completed(value: Any) -> dict[str, Any]:
    job = op.Job.from_json(_job_json("a.b get_offerings", "Pending"))
    done = json.loads(job.completed(value).to_json())
    return {"result": done["result"], "result_type": done["result_type"]}


def _encode(kind: str, text: str) -> Any:
    """Build an oracle value from JSON text and let ``Job.completed`` encode it."""
    value: Any
    data = json.loads(text)
    if kind in ("UsageReport", "ProjectUsageReport", "ProjectStorageReport", "StorageReport"):
        value = getattr(op, kind).from_json(text)
    elif kind == "ProjectDetails":
        value = op.AwardDetails.from_json(text)
    elif kind in (
        "UserIdentifier",
        "ProjectIdentifier",
        "PortalIdentifier",
        "UserMapping",
        "ProjectMapping",
        "Volume",
    ):
        value = getattr(op, kind)(data)
    elif kind == "ProjectTemplate":
        value = op.ProjectTemplate(data)
    elif kind == "DateRange":
        value = op.DateRange.parse(data)
    elif kind == "Usage":
        value = op.Usage.from_seconds(data["seconds"])
    elif kind == "StorageSize":
        value = op.StorageSize.parse(data)
    elif kind == "StorageUsage":
        value = op.StorageUsage(op.StorageSize.parse(data))
    elif kind == "QuotaLimit":
        value = op.QuotaLimit.parse(data)
    elif kind == "Quota":
        value = _quota(data)
    elif kind == "HashMap<Volume, Quota>":
        value = {op.Volume(k): _quota(v) for k, v in data.items()}
    elif kind in ("String", "bool", "Vec<String>"):
        value = data
    elif kind.startswith("Vec<"):
        inner = kind[4:-1]
        value = [_encode_item(inner, item) for item in data]
    else:
        raise ValueError(f"cannot build {kind}")
    return _completed(value)


def _encode_item(inner: str, item: Any) -> Any:
    if inner == "Usage":
        return op.Usage.from_seconds(item["seconds"])
    if inner == "Quota":
        return _quota(item)
    if inner in ("StorageSize",):
        return op.StorageSize.parse(item)
    if inner == "StorageUsage":
        return op.StorageUsage(op.StorageSize.parse(item))
    if inner == "QuotaLimit":
        return op.QuotaLimit.parse(item)
    return getattr(op, inner)(item)


def _quota(data: dict[str, Any]) -> Any:
    limit = op.QuotaLimit.parse(data["limit"])
    if "usage" in data:
        return op.Quota.with_usage(limit, op.StorageUsage(op.StorageSize.parse(data["usage"])))
    if limit.is_unlimited():
        return op.Quota.unlimited()
    return op.Quota.limited(limit.size)


def _decode(result: str | None, result_type: str) -> Any:
    """Decode through ``Job.result`` then re-encode with ``Job.completed``."""
    extra = {"result": result, "result_type": result_type}
    job = op.Job.from_json(_job_json("a.b get_offerings", "Complete", **extra))
    value = job.result
    if result_type == "None":
        return {"value": None}
    try:
        return {"value": repr(value), "reencoded": _completed(value)}
    except OSError as exc:  # the wheel cannot encode some types
        return {"value": repr(value), "reencode_error": str(exc)}


def _answer(request: dict[str, Any]) -> Any:
    op_name = request["op"]
    if op_name == "instruction":
        return str(op.Instruction(request["text"]))
    if op_name == "command":
        job = op.Job.from_json(_job_json(request["text"], "Pending"))
        return json.loads(job.to_json())["command"]
    if op_name == "decode":
        return _decode(request["result"], request["result_type"])
    if op_name == "encode":
        return _encode(request["kind"], request["json"])
    if op_name == "notification":
        return str(op.Notification.parse(request["text"]))
    if op_name == "notification_json":
        return op.Notification.from_json(request["text"]).to_json()
    if op_name == "merge":
        base = op.AwardDetails.from_json(request["base"])
        return base.merge(op.AwardDetails.from_json(request["other"])).to_json()
    raise ValueError(f"unknown op {op_name}")


def main() -> None:
    """Serve requests until stdin closes."""
    for line in sys.stdin:
        request = json.loads(line)
        try:
            answer = {"ok": _answer(request)}
        except Exception as exc:  # the oracle raises assorted exception types
            answer = {"err": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
