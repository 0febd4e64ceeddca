"""The same API as :mod:`broadgauge.client.sync`, for asyncio (``await client.run(...)``).

Jobs it returns are plain :class:`~broadgauge.client.types.Job` values; poll them with
:meth:`AsyncClient.status` or :meth:`AsyncClient.wait` rather than the blocking
``Job.update``/``Job.wait``.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from typing import Any

import httpx

from broadgauge.client import _replies
from broadgauge.client._protocol import RETRY_DELAYS, BridgeError, Request, decode, poll_schedule
from broadgauge.client._protocol import destinations_body as _destinations
from broadgauge.client.config import ClientConfig
from broadgauge.client.sync import JobRef, Offerings
from broadgauge.client.types import Diagnostics, Health, Job, RestartResponse
from broadgauge.grammar import Destination, PortalIdentifier
from broadgauge.jobs.notification import Notification

__all__ = ["AsyncClient"]


class AsyncClient:
    """The bridge API for one client file, on ``httpx.AsyncClient``."""

    def __init__(self, config: ClientConfig, *, timeout: float = 60.0) -> None:
        self.config = config
        self._http = httpx.AsyncClient(timeout=timeout)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], **options: Any) -> AsyncClient:
        """A client for the bridge named in a client file."""
        return cls(ClientConfig.load(path), **options)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def call(self, request: Request) -> Any:
        """Send ``request`` (re-signed for each retry of a 429); the reply's JSON value."""
        for delay in (*RETRY_DELAYS, None):
            attempt = request.attempt(self.config.url, self.config.key, time.time())
            try:
                response = await self._http.request(**attempt)
            except httpx.HTTPError as exc:
                raise BridgeError(request.function, None, str(exc)) from exc
            if response.status_code != 429 or delay is None:
                return decode(request.function, response.status_code, response.text)
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    # --- jobs -------------------------------------------------------------------------------

    async def run(self, command: str, max_ms: int = 0) -> Job:
        """Start ``command``; with ``max_ms`` wait up to that long (negative: forever)."""
        job = _replies.job("run", await self.call(Request.post("run", {"command": command})), None)
        job = await self.status(job)
        if max_ms != 0:
            job = await self.wait(job, max_ms)
        return job

    async def status(self, job: JobRef) -> Job:
        """The job's latest version (``POST /status``)."""
        if isinstance(job, Job) and job.is_finished:
            return job
        reply = await self.call(Request.post("status", {"job": _replies.as_id(job)}))
        return _replies.job("status", reply, None)

    async def get(self, job_id: JobRef) -> Job:
        """The job with this id, as the bridge has it now."""
        reply = await self.call(Request.post("status", {"job": _replies.as_id(job_id)}))
        return _replies.job("status", reply, None)

    async def wait(self, job: Job, max_ms: int = 1000) -> Job:
        """Poll until finished or ``max_ms`` pass (negative: forever); the latest job."""
        interval, deadline = poll_schedule(max_ms, time.monotonic())
        job = await self.status(job)
        while not job.is_finished and (deadline is None or time.monotonic() < deadline):
            await asyncio.sleep(interval)
            job = await self.status(job)
        return job

    async def fetch_jobs(self) -> list[Job]:
        """Jobs the network has passed to the portal software to answer."""
        return _replies.jobs("fetch_jobs", await self.call(Request.get("fetch_jobs")), None)

    async def fetch_job(self, job: JobRef) -> Job:
        """One job waiting for the portal software's answer."""
        reply = await self.call(Request.post("fetch_job", _replies.as_id(job)))
        return _replies.job("fetch_job", reply, None)

    async def send_result(self, job: Job) -> None:
        """Post the finished version of a fetched job."""
        await self.call(Request.post_raw("send_result", job.to_json()))

    # --- operations -------------------------------------------------------------------------

    async def health(self) -> Health:
        """Health of the bridge and every agent it reaches."""
        return _replies.health(await self.call(Request.get("health")))

    async def diagnostics(self, destination: str) -> Diagnostics:
        """Diagnostics of the agent at ``destination`` (a path relative to the bridge)."""
        reply = await self.call(Request.post("diagnostics", {"destination": destination}))
        return _replies.diagnostics(reply)

    async def restart(self, restart_type: str, destination: str) -> RestartResponse:
        """Order a ``soft`` or ``hard`` restart of the agent at ``destination``."""
        body = {"restart_type": restart_type, "destination": destination}
        return _replies.restart(await self.call(Request.post("restart", body)))

    async def get_portal(self) -> PortalIdentifier:
        """The name of the bridge's portal agent."""
        return _replies.portal("get_portal", await self.call(Request.get("get_portal")))

    # --- offerings --------------------------------------------------------------------------

    async def get_offerings(self) -> list[Destination]:
        """The resources the portal offers."""
        reply = await self.call(Request.get("get_offerings"))
        return _replies.destinations("get_offerings", reply)

    async def _offerings(self, function: str, offerings: Offerings) -> list[Destination]:
        reply = await self.call(Request.post(function, _destinations(offerings)))
        return _replies.destinations(function, reply)

    async def sync_offerings(self, offerings: Offerings) -> list[Destination]:
        """Replace the offerings; the accepted list."""
        return await self._offerings("sync_offerings", offerings)

    async def add_offerings(self, offerings: Offerings) -> list[Destination]:
        """Add offerings; the accepted list."""
        return await self._offerings("add_offerings", offerings)

    async def remove_offerings(self, offerings: Offerings) -> list[Destination]:
        """Remove offerings; the list removed."""
        return await self._offerings("remove_offerings", offerings)

    # --- notifications ----------------------------------------------------------------------

    async def notify(self, command: str) -> None:
        """Send ``<destination> <event> <argument>`` into the network."""
        await self.call(Request.post("notify", {"command": command}))

    async def fetch_notification(
        self, notification: str | uuid.UUID | Notification
    ) -> Notification:
        reply = await self.call(Request.post("fetch_notification", _replies.as_id(notification)))
        return _replies.notification("fetch_notification", reply)
