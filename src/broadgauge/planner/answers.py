"""The ``/accepts`` request and answer shapes, exactly as the Execution Planner seed spells them.

The seed's wire fields are ``reponseword`` and ``reponseinfo`` (sic: "reponse", not "response").
Clients written against the seed look for those names, so we keep them on the wire and use
correctly spelled names only inside Python.

A task is a ``tasktype`` plus optional ``taskinfo.*`` details.  Query strings and form bodies
carry the details as flat ``taskinfo.<key>`` parameters; JSON bodies may carry them either flat
or nested under a ``taskinfo`` object.  Both normalise to the same flat mapping here.

This module is pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

#: The seed's spelling of the answer word and the optional detail on a NO.
WORD = "reponseword"
INFO = "reponseinfo"
TASKINFO_PREFIX = "taskinfo."


class TaskError(ValueError):
    """The request does not describe a task (no ``tasktype``, or malformed ``taskinfo``)."""


@dataclass(frozen=True)
class Task:
    """What the caller wants to run: a task type and its flat ``taskinfo`` details."""

    tasktype: str
    taskinfo: Mapping[str, str] = field(default_factory=dict)

    def cache_key(self) -> tuple[str, tuple[tuple[str, str], ...]]:
        """A hashable identity of the task, for the aggregator's answer cache."""
        return self.tasktype, tuple(sorted(self.taskinfo.items()))

    def as_params(self) -> list[tuple[str, str]]:
        """The task as query parameters, the way the seed's ``GET /accepts`` carries it."""
        params = [("tasktype", self.tasktype)]
        params.extend((TASKINFO_PREFIX + k, v) for k, v in sorted(self.taskinfo.items()))
        return params


def _flatten(prefix: str, value: Any, out: dict[str, str]) -> None:
    if isinstance(value, Mapping):
        for key, inner in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), inner, out)
    elif isinstance(value, bool):
        out[prefix] = "true" if value else "false"
    elif isinstance(value, str | int | float):
        out[prefix] = str(value)
    else:
        raise TaskError(f"taskinfo.{prefix} must be a string, number or object")


def task_from_pairs(pairs: Iterable[tuple[str, Any]]) -> Task:
    """Build a :class:`Task` from query, form or JSON key/value pairs.

    Keys other than ``tasktype`` and ``taskinfo``/``taskinfo.*`` are ignored, so that a
    future client can send more without breaking an older service.
    """
    tasktype: str | None = None
    info: dict[str, str] = {}
    for key, value in pairs:
        if key == "tasktype":
            if not isinstance(value, str):
                raise TaskError("tasktype must be a string")
            tasktype = value
        elif key == "taskinfo":
            if not isinstance(value, Mapping):
                raise TaskError("taskinfo must be an object")
            _flatten("", value, info)
        elif key.startswith(TASKINFO_PREFIX) and len(key) > len(TASKINFO_PREFIX):
            _flatten(key[len(TASKINFO_PREFIX) :], value, info)
    if tasktype is None or not tasktype.strip():
        raise TaskError("tasktype is required")
    return Task(tasktype=tasktype.strip(), taskinfo=info)


@dataclass(frozen=True)
class Answer:
    """One service's answer to ``/accepts``.

    ``accepted`` maps to ``reponseword`` YES/NO.  A YES carries ``servicetype`` and
    ``serviceinfo``; a NO may carry ``httpcode`` and ``reason``, which go out as the seed's
    optional ``reponseinfo``.  A NO given only for lack of an account may also carry
    ``provision`` (a Broadgauge addition inside ``reponseinfo``): the OpenPortal
    ``destination`` and ``instruction`` that would create the account.
    """

    accepted: bool
    servicetype: str | None = None
    serviceinfo: Mapping[str, Any] | None = None
    httpcode: int | None = None
    reason: str | None = None
    provision: Mapping[str, str] | None = None

    def to_json(self) -> dict[str, Any]:
        """The wire form, with the seed's field spellings."""
        if self.accepted:
            return {
                WORD: "YES",
                "servicetype": self.servicetype,
                "serviceinfo": dict(self.serviceinfo or {}),
            }
        body: dict[str, Any] = {WORD: "NO"}
        provision = None if self.provision is None else dict(self.provision)
        given = {"httpcode": self.httpcode, "reason": self.reason, "provision": provision}
        info = {name: value for name, value in given.items() if value is not None}
        if info:
            body[INFO] = info
        return body


NO = Answer(accepted=False)


class AnswerError(ValueError):
    """A remote service sent something that is not an ``/accepts`` answer."""


def answer_from_json(body: Any) -> Answer:
    """Parse a service's answer strictly enough that the aggregator can flag garbage."""
    if not isinstance(body, Mapping):
        raise AnswerError("answer is not a JSON object")
    word = body.get(WORD)
    if word == "YES":
        servicetype = body.get("servicetype")
        serviceinfo = body.get("serviceinfo")
        if not isinstance(servicetype, str) or not servicetype:
            raise AnswerError("YES without a servicetype")
        if not isinstance(serviceinfo, Mapping) or not isinstance(serviceinfo.get("endpoint"), str):
            raise AnswerError("YES without serviceinfo.endpoint")
        return Answer(True, servicetype=servicetype, serviceinfo=dict(serviceinfo))
    if word == "NO":
        info = body.get(INFO)
        if isinstance(info, Mapping):
            code = info.get("httpcode")
            reason = info.get("reason")
            provision = info.get("provision")
            well_formed = isinstance(provision, Mapping) and all(
                isinstance(provision.get(k), str) for k in ("destination", "instruction")
            )
            return Answer(
                False,
                httpcode=code if isinstance(code, int) else None,
                reason=reason if isinstance(reason, str) else None,
                provision=dict(provision) if well_formed and provision else None,
            )
        return NO
    raise AnswerError(f"{WORD} is {word!r}, not YES or NO")
