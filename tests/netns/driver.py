"""The portal software of the harness: it drives jobs through the bridge's HTTP API.

It runs inside the bridge's namespace (``ip netns exec <bridge namespace> python -m
tests.netns.driver CLIENT_FILE``) and calls the bridge on that namespace's loopback with
:class:`broadgauge.client.AsyncClient`, the way portal software calls it with the official
``openportal`` module.  The test process talks to it over stdin and stdout, one JSON object
per line (see :mod:`tests.netns.child`):

* ``{"id": 1, "command": "portal.provider.platform.instance add_user a.b.portal",
  "timeout": 30}`` runs the command with ``POST /run``, polls ``POST /status`` until the job
  is finished or ``timeout`` seconds have passed, and answers
  ``{"id": 1, "job": "<Job JSON>", "finished": true, "submit_attempts": 1}``;
* ``{"id": 2, "status": "<job id>"}`` asks ``POST /status`` once and answers
  ``{"id": 2, "job": "<Job JSON>"}``, as portal software reads a job it started earlier;
* a request that cannot be carried out is answered ``{"id": 1, "error": "<why>"}``.

``/run`` is tried again while the bridge cannot take the job (no answer: the bridge is
down or restarting; a 5xx: its portal link is down), as portal software retries; a 4xx is
final.  Polls that get no answer are repeated: the bridge keeps its board in its store, so a
restarted bridge still knows the job.  Polls start at 50 ms apart and slow to ``--poll-max``
so that many waiting jobs do not flood the bridge.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from broadgauge.client import AsyncClient, BridgeError, ClientConfig
from broadgauge.client.types import Job

READY = "driver ready"
FIRST_POLL = 0.05
#: Between two attempts at ``/run`` the bridge refused for want of its portal.
RUN_RETRY = 0.25


def _answer(request_id: object, **fields: object) -> None:
    print(json.dumps({"id": request_id, **fields}), flush=True)


async def run_job(client: AsyncClient, command: str, timeout: float, poll_max: float) -> Any:
    """Run ``command`` and wait for its final state; the answer's fields."""
    deadline = time.monotonic() + timeout
    attempts = 0
    while True:
        attempts += 1
        try:
            job: Job = await client.run(command)
            break
        except BridgeError as exc:
            if exc.status is not None and exc.status < 500:
                return {"error": f"the bridge refused {command!r}: {exc}"}
            if time.monotonic() >= deadline:
                return {"error": f"not submitted after {attempts} attempt(s): {exc}"}
            await asyncio.sleep(RUN_RETRY)
    interval = FIRST_POLL
    unanswered = 0
    while not job.is_finished and time.monotonic() < deadline:
        await asyncio.sleep(min(interval, max(0.0, deadline - time.monotonic())))
        interval = min(interval * 1.5, poll_max)
        try:
            job = await client.status(job)
        except BridgeError as exc:
            if exc.status is not None:
                return {"error": f"status of {job.id}: {exc}"}
            # No answer: the bridge is down for a moment; it keeps the job in its store.
            unanswered += 1
    return {
        "job": job.wire.to_json(),
        "finished": job.is_finished,
        "submit_attempts": attempts,
        "unanswered_polls": unanswered,
    }


async def serve(client: AsyncClient, poll_max: float) -> None:
    """Answer requests from stdin, each in a task of its own, until stdin closes."""
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader(limit=1024 * 1024)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    print(READY, flush=True)
    tasks: set[asyncio.Task[None]] = set()

    async def one(request: dict[str, Any]) -> None:
        try:
            if "status" in request:
                job = await client.get(str(request["status"]))
                answer = {"job": job.wire.to_json()}
            else:
                command, timeout = request["command"], float(request["timeout"])
                answer = await run_job(client, command, timeout, poll_max)
        except Exception as exc:  # whatever went wrong is the answer: the test reads it
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        _answer(request["id"], **answer)

    while line := await stdin.readline():
        request: Any = None
        try:
            request = json.loads(line)
            if not isinstance(request, dict) or not (
                isinstance(request.get("status"), str)
                or (isinstance(request.get("command"), str) and float(request["timeout"]) > 0)
            ):
                raise TypeError('expected {"command": str, "timeout": seconds} or {"status": id}')
        except (ValueError, KeyError, TypeError) as exc:
            # A malformed request is answered with why; the driver carries on.
            request_id = request.get("id") if isinstance(request, dict) else None
            _answer(request_id, error=f"bad request {line!r}: {exc}")
            continue
        task = asyncio.create_task(one(request))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)


async def amain(client_file: str, poll_max: float) -> None:
    """Load the client file and serve until stdin closes."""
    async with AsyncClient(ClientConfig.load(client_file)) as client:
        await serve(client, poll_max)


def main(argv: list[str] | None = None) -> None:
    """``python -m tests.netns.driver CLIENT_FILE [--poll-max SECONDS]``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("client_file", help="the file `broadgauge bridge bridge` wrote")
    parser.add_argument("--poll-max", type=float, default=0.5, help="slowest poll, seconds")
    args = parser.parse_args(argv)
    asyncio.run(amain(args.client_file, args.poll_max))


if __name__ == "__main__":
    main()
