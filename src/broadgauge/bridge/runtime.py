"""What the bridge agent does behind its HTTP API (notes §5.7 and §6.2 to §6.4).

:class:`BridgeRuntime` attaches to a ``Bridge`` :class:`~broadgauge.runtime.agent.Agent`:

* ``/run`` puts ``<bridge>.<portal> submit <command>`` (5-minute lifetime) to the portal;
  ``/status`` reads that wrapper's latest version from the board shared with the portal,
  which the runtime keeps current as the portal's updates arrive.
* Questions the network asks the portal software (``create_project``,
  ``get_project_mapping``, ``get_usage_report`` …) arrive as jobs from the portal.  Each is
  held on the *bridge board*, the portal software is signalled with
  ``GET <signal_url>?job_id=<uuid>``, and the handler waits until a finished version is
  posted to ``/send_result``; that result goes back to the asking agent.
* Notifications the portal passes on are queued (bounded), signalled with
  ``GET <notification_url>?notification_id=<uuid>``, and fetched with
  ``/fetch_notification``.

Errors the HTTP layer turns into status codes are :class:`BadRequest` (400) and
:class:`NotFound` (404); anything else becomes a 500.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

from broadgauge.agents.portal import ANSWERED_BY_PORTAL_SOFTWARE
from broadgauge.bridge.config import BridgeSettings
from broadgauge.grammar import Destination, Destinations, GrammarError
from broadgauge.jobs.agent_type import AgentType
from broadgauge.jobs.commands import Notify, decode_command
from broadgauge.jobs.errors import ProtocolError
from broadgauge.jobs.job import Job
from broadgauge.jobs.notification import EventKind, Notification, NotificationEvent
from broadgauge.runtime.agent import Agent, Envelope, JobRefused
from broadgauge.wire import Message, PeerId

__all__ = [
    "BRIDGE_BOARD_KEYWORDS",
    "BadRequest",
    "BridgeRuntime",
    "NotFound",
    "Signaller",
    "TooMany",
]

log = logging.getLogger("broadgauge.bridge")

#: Instructions the portal software answers (notes §5.7): exactly those the portal agent
#: passes up to its bridge.
BRIDGE_BOARD_KEYWORDS: Final = ANSWERED_BY_PORTAL_SOFTWARE
RUN_LIFETIME: Final = 300
PORTAL_WAIT: Final = 5.0
NOTIFICATION_CAPACITY: Final = 500

#: ``signal(url, param, value)``: GET ``url?param=value``; raise on failure or non-2xx.
Signaller = Callable[[str, str, str], Awaitable[None]]


class BadRequest(Exception):
    """The request cannot be served as sent (HTTP 400)."""


class TooMany(BadRequest):
    """A request names more items than a configured limit allows (HTTP 413)."""


class NotFound(Exception):
    """The job or notification asked for is not here (HTTP 404)."""


@dataclass
class Retry:
    """How often and how patiently to signal the portal software."""

    attempts: int
    delay: float


@dataclass
class _Held:
    job: Job
    future: asyncio.Future[Job]


class BridgeRuntime:
    """The bridge's business rules, independent of HTTP."""

    def __init__(
        self,
        agent: Agent,
        settings: BridgeSettings,
        signaller: Signaller,
        *,
        job_retry: Retry | None = None,
        notification_retry: Retry | None = None,
        notification_capacity: int = NOTIFICATION_CAPACITY,
    ) -> None:
        self.agent = agent
        self.settings = settings
        self.signal = signaller
        self.job_retry = job_retry or Retry(5, 2.0)
        self.notification_retry = notification_retry or Retry(3, 2.0)
        self.held: dict[uuid.UUID, _Held] = {}
        self.capacity = notification_capacity
        self._queue: deque[Notification] = deque()
        self._queued = asyncio.Event()
        #: Delivered but not yet fetched (bounded: oldest dropped first).
        self.pending_notifications: OrderedDict[uuid.UUID, Notification] = OrderedDict()
        self.offerings: list[Destination] = []
        for keyword in BRIDGE_BOARD_KEYWORDS:
            agent.add_handler(keyword, self.hold)
        self._inbound = agent.inbound.on_message
        agent.service.on_message(self._on_message)
        agent.spawn(self._drain_notifications())

    # --- the portal ------------------------------------------------------------------------

    async def portal(self) -> PeerId:
        """The connected portal (waiting up to 5 s, as the reference)."""
        try:
            return await self.agent.peer_of_type(AgentType.PORTAL, wait=PORTAL_WAIT)
        except JobRefused as exc:
            raise RuntimeError(str(exc)) from None

    async def run(self, command: str) -> Job:
        """Start ``command`` (``<portal>.… <instruction>``) and return the job to poll."""
        portal = await self.portal()
        now = self.agent.clock()
        try:
            inner = Job.parse(command, now=now, portal_check=True)
        except GrammarError as exc:
            raise BadRequest(str(exc)) from None
        agents = inner.destination.agents
        me = self.agent.name
        if agents[0] == me:
            if len(agents) != 2 or agents[1] != portal.name:
                raise BadRequest(f"a job for the bridge itself must be sent to {me}.{portal.name}")
            job = inner
        elif agents[0] != portal.name:
            raise BadRequest(
                f"Invalid destination {inner.destination}: it must start with the portal "
                f"{portal.name}"
            )
        else:
            try:
                job = Job.parse(
                    f"{me}.{portal.name} submit {inner.command}", now=now, lifetime=RUN_LIFETIME
                )
            except GrammarError as exc:
                raise BadRequest(str(exc)) from None
        await self.agent.put(portal, job)
        return self.agent.board(portal).get(job.id) or job.pending(now=now)

    def status(self, job_id: uuid.UUID) -> Job:
        """The latest version of a job started with :meth:`run`.

        A restarted bridge answers from the boards it loaded from its store before its
        portal has registered again: a board shared with a server it dials that has not
        registered yet counts as the portal's (the bridge dials nothing else).
        """
        servers = {PeerId(server.name, server.zone) for server in self.agent.service.config.servers}
        for peer, board in self.agent.boards_by_peer():
            kind = self.agent.peer_types.get(peer)
            if kind is AgentType.PORTAL or (kind is None and peer in servers):
                job = board.get(job_id)
                if job is not None:
                    return job
        raise NotFound(f"Job not found: {job_id}")

    # --- offerings -------------------------------------------------------------------------

    def get_offerings(self) -> list[str]:
        """The resources this portal offers."""
        return [str(d) for d in self.offerings]

    def change_offerings(self, how: str, texts: list[str]) -> list[str]:
        """``sync``, ``add`` or ``remove`` offerings; the accepted list (first occurrences).

        Linear in the number of offerings, and bounded by ``max_offerings`` per request and
        in all (:class:`TooMany`, or :class:`BadRequest` for an add past the total), so one
        signed request cannot hold the event loop.
        """
        limit = self.settings.max_offerings
        if len(texts) > limit:
            raise TooMany(
                f"{len(texts)} offerings in one request; at most {limit} are allowed "
                "([bridge] max_offerings)"
            )
        try:
            accepted = list(Destinations.of(Destination.parse(t) for t in texts))
        except GrammarError as exc:
            raise BadRequest(str(exc)) from None
        if how == "sync":
            offerings = accepted
        elif how == "add":
            offerings = list(dict.fromkeys([*self.offerings, *accepted]))
            if len(offerings) > limit:
                raise BadRequest(
                    f"adding these would make {len(offerings)} offerings; at most {limit} "
                    "are allowed ([bridge] max_offerings)"
                )
        else:
            gone = set(accepted)
            offerings = [d for d in self.offerings if d not in gone]
        self.offerings = offerings
        return [str(d) for d in accepted]

    # --- the bridge board: network → portal software ---------------------------------------

    async def hold(self, envelope: Envelope) -> Job:
        """Handler: hold the job for the portal software and return its posted answer."""
        job = envelope.job
        future: asyncio.Future[Job] = asyncio.get_running_loop().create_future()
        self.held[job.id] = _Held(job, future)
        try:
            url = self.settings.signal_url
            if url:
                try:
                    await self._signal(url, "job_id", str(job.id), self.job_retry)
                except Exception as exc:
                    raise JobRefused(f"Failed to signal web portal: {exc}") from None
            budget = max(0.0, job.expires - self.agent.clock())
            try:
                async with asyncio.timeout(budget):
                    return await future
            except TimeoutError:
                raise JobRefused("Job expired") from None
        finally:
            self.held.pop(job.id, None)

    def fetch_jobs(self) -> list[Job]:
        """Every held job the portal software has not answered."""
        return [h.job for h in self.held.values() if not h.job.is_finished]

    def fetch_job(self, job_id: uuid.UUID) -> Job:
        """One held, unanswered job."""
        held = self.held.get(job_id)
        if held is None or held.job.is_finished:
            raise NotFound(f"Job not found: {job_id}")
        return held.job

    def send_result(self, job: Job) -> None:
        """Accept the portal software's newer version; ignore unknown ids and stale versions."""
        held = self.held.get(job.id)
        if held is None or job.version <= held.job.version or held.future.done():
            return
        held.job = job
        if job.is_finished:
            held.future.set_result(job)

    async def _signal(self, url: str, param: str, value: str, retry: Retry) -> None:
        last: Exception | None = None
        for attempt in range(retry.attempts):
            if attempt:
                await asyncio.sleep(retry.delay)
            try:
                await self.signal(url, param, value)
                return
            except Exception as exc:
                last = exc
                log.info("signal %s?%s=%s failed: %s", url, param, value, exc)
        raise RuntimeError(str(last) if last else "no attempts")

    # --- notifications ---------------------------------------------------------------------

    async def notify(self, command: str) -> None:
        """Send ``<destination> <event> <argument>`` into the network through the portal."""
        portal = await self.portal()
        try:
            inner = Notification.parse(command)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        if portal.name not in inner.destination.agents:
            raise BadRequest(
                f"notification destination {inner.destination} must include the portal "
                f"{portal.name}"
            )
        wrapper = Notification.create(
            Destination.parse(f"{self.agent.name}.{portal.name}"),
            NotificationEvent(EventKind.FORWARD, inner),
        )
        await self.agent.notify(wrapper)

    def fetch_notification(self, notification_id: uuid.UUID) -> Notification:
        """A delivered notification (it stays fetchable until it is dropped)."""
        found = self.pending_notifications.get(notification_id)
        if found is None:
            raise NotFound(f"Notification not found: {notification_id}")
        return found

    def deliver(self, notification: Notification) -> None:
        """Queue a notification for the portal software (the whole backlog goes if full)."""
        if len(self._queue) >= self.capacity:
            log.warning("notification queue full: discarding %d", len(self._queue))
            self._queue.clear()
        self._queue.append(notification)
        self._queued.set()

    def _for_portal_software(self, notification: Notification) -> bool:
        agents = notification.destination.agents
        # Addressed to us, or ending at (or just past) our portal (notes §3.9).
        if agents[-1] == self.agent.name:
            return True
        portals = {p.name for p, t in self.agent.peer_types.items() if t is AgentType.PORTAL}
        return bool(portals.intersection(agents[-2:]))

    async def _on_message(self, message: Message) -> None:
        # Notifications reach the bridge with paths that do not include it, which the
        # generic router would drop; everything else is the runtime's business.
        if message.payload.startswith('{"Notify"'):
            try:
                command = decode_command(message.payload)
            except ProtocolError:
                command = None
            if isinstance(command, Notify) and self._for_portal_software(command.notification):
                self.deliver(command.notification)
                return
        await self._inbound(message)

    async def _drain_notifications(self) -> None:
        while True:
            await self._queued.wait()
            while self._queue:
                notification = self._queue.popleft()
                self._remember(notification)
                url = self.settings.notification_url
                if url:
                    try:
                        await self._signal(
                            url, "notification_id", str(notification.id), self.notification_retry
                        )
                    except Exception as exc:
                        log.warning("could not signal notification %s: %s", notification.id, exc)
                        self.pending_notifications.pop(notification.id, None)
                await asyncio.sleep(0.01)
            self._queued.clear()

    def _remember(self, notification: Notification) -> None:
        self.pending_notifications[notification.id] = notification
        while len(self.pending_notifications) > self.capacity:
            self.pending_notifications.popitem(last=False)
