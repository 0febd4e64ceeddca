"""The blocking client: the official module's functions, on httpx.

Module-level functions use the configuration loaded by :func:`load_config`, as the official
module does; :class:`Client` is the same API bound to one bridge (useful with several).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterable
from typing import Any

import httpx

from broadgauge.client import _replies
from broadgauge.client._protocol import RETRY_DELAYS, BridgeError, Request, decode
from broadgauge.client._protocol import destinations_body as _destinations
from broadgauge.client.config import ClientConfig
from broadgauge.client.types import Diagnostics, Health, Job, RestartResponse
from broadgauge.grammar import Destination, PortalIdentifier
from broadgauge.jobs.notification import Notification

__all__ = [
    "Client",
    "add_offerings",
    "diagnostics",
    "fetch_job",
    "fetch_jobs",
    "fetch_notification",
    "get",
    "get_offerings",
    "get_portal",
    "health",
    "is_config_loaded",
    "load_config",
    "notify",
    "remove_offerings",
    "restart",
    "run",
    "send_result",
    "status",
    "sync_offerings",
]

Offerings = Iterable[str | Destination]
JobRef = str | uuid.UUID | Job


class Client:
    """The bridge API for one client file (blocking)."""

    def __init__(self, config: ClientConfig, *, timeout: float = 60.0) -> None:
        self.config = config
        self._http = httpx.Client(timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, request: Request) -> Any:
        """Send ``request`` (re-signed for each retry of a 429); the reply's JSON value."""
        for delay in (*RETRY_DELAYS, None):
            attempt = request.attempt(self.config.url, self.config.key, time.time())
            try:
                response = self._http.request(**attempt)
            except httpx.HTTPError as exc:
                raise BridgeError(request.function, None, str(exc)) from exc
            if response.status_code != 429 or delay is None:
                return decode(request.function, response.status_code, response.text)
            time.sleep(delay)
        raise AssertionError("unreachable")

    # --- jobs -------------------------------------------------------------------------------

    def run(self, command: str, max_ms: int = 0) -> Job:
        """Start ``command``; with ``max_ms`` wait up to that long (negative: forever)."""
        job = _replies.job("run", self.call(Request.post("run", {"command": command})), self)
        job.update()
        if max_ms != 0:
            job.wait(max_ms)
        return job

    def status(self, job: JobRef) -> Job:
        """The job's latest version (``POST /status``)."""
        reply = self.call(Request.post("status", {"job": _replies.as_id(job)}))
        return _replies.job("status", reply, self)

    def get(self, job_id: JobRef) -> Job:
        """The job with this id, as the bridge has it now."""
        return self.status(job_id)

    def fetch_jobs(self) -> list[Job]:
        """Jobs the network has passed to the portal software to answer."""
        return _replies.jobs("fetch_jobs", self.call(Request.get("fetch_jobs")), self)

    def fetch_job(self, job: JobRef) -> Job:
        """One job waiting for the portal software's answer."""
        reply = self.call(Request.post("fetch_job", _replies.as_id(job)))
        return _replies.job("fetch_job", reply, self)

    def send_result(self, job: Job) -> None:
        """Post the finished version of a fetched job."""
        self.call(Request.post_raw("send_result", job.to_json()))

    # --- operations -------------------------------------------------------------------------

    def health(self) -> Health:
        """Health of the bridge and every agent it reaches."""
        return _replies.health(self.call(Request.get("health")))

    def diagnostics(self, destination: str) -> Diagnostics:
        """Diagnostics of the agent at ``destination`` (a path relative to the bridge)."""
        reply = self.call(Request.post("diagnostics", {"destination": destination}))
        return _replies.diagnostics(reply)

    def restart(self, restart_type: str, destination: str) -> RestartResponse:
        """Order a ``soft`` or ``hard`` restart of the agent at ``destination``."""
        body = {"restart_type": restart_type, "destination": destination}
        return _replies.restart(self.call(Request.post("restart", body)))

    def get_portal(self) -> PortalIdentifier:
        """The name of the bridge's portal agent."""
        return _replies.portal("get_portal", self.call(Request.get("get_portal")))

    # --- offerings --------------------------------------------------------------------------

    def get_offerings(self) -> list[Destination]:
        """The resources the portal offers."""
        return _replies.destinations("get_offerings", self.call(Request.get("get_offerings")))

    def _offerings(self, function: str, offerings: Offerings) -> list[Destination]:
        reply = self.call(Request.post(function, _destinations(offerings)))
        return _replies.destinations(function, reply)

    def sync_offerings(self, offerings: Offerings) -> list[Destination]:
        """Replace the offerings; the accepted list."""
        return self._offerings("sync_offerings", offerings)

    def add_offerings(self, offerings: Offerings) -> list[Destination]:
        """Add offerings; the accepted list."""
        return self._offerings("add_offerings", offerings)

    def remove_offerings(self, offerings: Offerings) -> list[Destination]:
        """Remove offerings; the list removed."""
        return self._offerings("remove_offerings", offerings)

    # --- notifications ----------------------------------------------------------------------

    def notify(self, command: str) -> None:
        """Send ``<destination> <event> <argument>`` into the network."""
        self.call(Request.post("notify", {"command": command}))

    def fetch_notification(self, notification: str | uuid.UUID | Notification) -> Notification:
        """A notification the bridge signalled."""
        reply = self.call(Request.post("fetch_notification", _replies.as_id(notification)))
        return _replies.notification("fetch_notification", reply)


# --- the module-level API, as the official module ----------------------------------------

_default: Client | None = None


def load_config(config_file: str | os.PathLike[str]) -> None:
    """Read the client file (``url`` and ``key``) and use it for every call."""
    global _default  # noqa: PLW0603 - one loaded config per process, as the official module
    client = Client(ClientConfig.load(config_file))
    if _default is not None:
        _default.close()
    _default = client


def is_config_loaded() -> bool:
    """Whether :func:`load_config` has been called."""
    return _default is not None


def _client() -> Client:
    if _default is None:
        raise OSError("No config loaded: call load_config(<client file>) first")
    return _default


def run(command: str, max_ms: int = 0) -> Job:
    """Start ``command``; with ``max_ms`` wait up to that long (negative: forever)."""
    return _client().run(command, max_ms)


def status(job: JobRef) -> Job:
    """The job's latest version (``POST /status``)."""
    return _client().status(job)


def get(job_id: JobRef) -> Job:
    """The job with this id, as the bridge has it now."""
    return _client().get(job_id)


def fetch_jobs() -> list[Job]:
    """Jobs the network has passed to the portal software to answer."""
    return _client().fetch_jobs()


def fetch_job(job: JobRef) -> Job:
    """One job waiting for the portal software's answer."""
    return _client().fetch_job(job)


def send_result(job: Job) -> None:
    """Post the finished version of a fetched job."""
    _client().send_result(job)


def health() -> Health:
    """Health of the bridge and every agent it reaches."""
    return _client().health()


def diagnostics(destination: str) -> Diagnostics:
    """Diagnostics of the agent at ``destination`` (a path relative to the bridge)."""
    return _client().diagnostics(destination)


def restart(restart_type: str, destination: str) -> RestartResponse:
    """Order a ``soft`` or ``hard`` restart of the agent at ``destination``."""
    return _client().restart(restart_type, destination)


def get_portal() -> PortalIdentifier:
    """The name of the bridge's portal agent."""
    return _client().get_portal()


def get_offerings() -> list[Destination]:
    """The resources the portal offers."""
    return _client().get_offerings()


def sync_offerings(offerings: Offerings) -> list[Destination]:
    """Replace the offerings; the accepted list."""
    return _client().sync_offerings(offerings)


def add_offerings(offerings: Offerings) -> list[Destination]:
    """Add offerings; the accepted list."""
    return _client().add_offerings(offerings)


def remove_offerings(offerings: Offerings) -> list[Destination]:
    """Remove offerings; the list removed."""
    return _client().remove_offerings(offerings)


def notify(command: str) -> None:
    """Send ``<destination> <event> <argument>`` into the network."""
    _client().notify(command)


def fetch_notification(notification: str | uuid.UUID | Notification) -> Notification:
    """A notification the bridge signalled."""
    return _client().fetch_notification(notification)
