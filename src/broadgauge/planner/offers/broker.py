"""The broker: execution requests become offers, and an accepted offer becomes a session.

1. **Request.**  The request's executable names a task type (``jupyter-notebook``, ...).  The
   network planner judges it at every site that publishes rules; a site that says YES, or NO
   only because the researcher has no account there yet, is a candidate.  Each candidate
   with a published capacity (``[site] capacity``) gets up to ``offers_per_site`` offers, one
   per candidate start inside the requested windows, each holding the request's minima of
   cores and memory for the duration.  An offer is a reservation in the shared booking store
   (:mod:`.booking`): it is only made if the capacity is free, so no two offers, from any
   planner process, ever hold the same capacity.  A NO says why, site by site.
2. **Accept.**  The offer becomes ACCEPTED and its siblings REJECTED, atomically.  Then the
   broker drives the session: WAITING, PREPARING (the account is provisioned through the
   network with the site's own ``add_user`` if the researcher has none there), AVAILABLE
   with a connector (a notebook is started on the site's hub, and its URL is the connector),
   or FAILED with the network's error in the session's messages.
3. **End.**  Cancelling an offer makes it CANCELLED.  Cancelling a session, or reaching the
   end of its booked interval, releases it: RELEASING (the notebook is stopped), then
   COMPLETED, and the capacity is free again.  The account stays: accounts outlive sessions.

Every transition is written to the audit log with who asked.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid as uuidlib
from collections.abc import Callable
from typing import Any, Protocol

from broadgauge.grammar import UserIdentifier
from broadgauge.planner.answers import Task
from broadgauge.planner.network import AccountCheckError, NetworkPlanner, user_identities
from broadgauge.planner.offers.booking import BookingConflict, BookingStore
from broadgauge.planner.offers.model import (
    USER_TRANSITIONS,
    ExecutionRequest,
    Limits,
    candidate_starts,
    check_transition,
    message_item,
    parse_request,
    tasktype_for_kind,
)
from broadgauge.planner.offers.records import OfferSetRecord, Phase, SessionRecord
from broadgauge.planner.rules import Capacity, Identity

log = logging.getLogger("broadgauge.planner.offers")

#: The connector kind of a notebook session (Calycopis names kinds by URI).
NOTEBOOK_CONNECTOR = (
    "https://www.purl.org/ivoa.net/Calycopis-openapi/schema/v1.0/kinds/connector/"
    "jupyter-notebook.yaml"
)
#: Phases of a session being prepared: cancelling one ends it at once.
_PREPARING = frozenset({Phase.ACCEPTED, Phase.WAITING, Phase.PREPARING})
#: Phases of a session that runs: ending one releases it first.
_RUNNING = frozenset({Phase.AVAILABLE, Phase.RUNNING})
_LIVE = _PREPARING | _RUNNING


class ProvisionError(Exception):
    """A job the broker sent through the network failed (the message is the network's)."""


class Network(Protocol):
    """The agent network as the broker uses it (the bridge agent)."""

    async def has_account(self, destination: str, user: UserIdentifier) -> bool: ...

    async def run(self, destination: str, instruction: str) -> object:
        """Run ``instruction`` at ``destination`` through the portal; its result value,
        or :class:`ProvisionError`."""
        ...


AuditHook = Callable[[str, str, str], None]


class NotFound(Exception):
    """No such record, or not the caller's (the two are not told apart)."""


class Forbidden(Exception):
    """The caller may not do this (an anonymous caller accepting, say)."""


class Broker:
    """Offers over the network's sites, and the sessions they become."""

    def __init__(
        self,
        network: NetworkPlanner,
        store: BookingStore,
        provisioner: Network,
        *,
        limits: Limits | None = None,
        clock: Callable[[], float] = time.time,
        audit: AuditHook | None = None,
    ) -> None:
        self.network = network
        self.store = store
        self.provisioner = provisioner
        self.limits = limits or Limits()
        self.clock = clock
        self.audit = audit
        self._driving: set[asyncio.Task[None]] = set()

    # --- requests ------------------------------------------------------------------------

    async def request(
        self, body: object, identity: Identity | None
    ) -> tuple[OfferSetRecord, list[SessionRecord]]:
        """Offers for ``body`` (:class:`~.model.RequestError` if it is malformed)."""
        now = self.clock()
        wanted = parse_request(body, now, limits=self.limits)
        owner = identity.subject if identity else None
        offerset = str(uuidlib.uuid4())
        notes = [message_item(now, "INFO", f"ignored {key!r}") for key in wanted.ignored]
        made: list[SessionRecord] = []
        verdicts, catalogue = await self.network.verdicts(Task(wanted.tasktype), identity)
        for path in catalogue.silent:
            notes.append(message_item(now, "WARN", f"{path} did not answer"))
        for verdict in verdicts:
            site = verdict.offering.destination
            answer = verdict.answer
            if answer is None:
                notes.append(
                    message_item(now, "WARN", f"{site}: {verdict.status}: {verdict.detail}")
                )
                continue
            if not answer.accepted and answer.provision is None:
                notes.append(message_item(now, "INFO", f"{site}: NO: {answer.reason or 'no rule'}"))
                continue
            ruleset = verdict.offering.ruleset
            capacity = ruleset.capacity if ruleset is not None else None
            if capacity is None:
                notes.append(message_item(now, "INFO", f"{site} publishes no capacity to offer"))
                continue
            made += await self._offer_at(
                site, capacity, wanted, offerset=offerset, owner=owner, now=now, notes=notes
            )
        result = "YES" if made else "NO"
        record = OfferSetRecord(
            offerset, owner, wanted.name or "", result, now, tuple(notes), wanted.raw
        )
        await self.store.create_offerset(record)
        self._audit(
            owner, f"request {offerset} for {wanted.tasktype}", f"{result}, {len(made)} offers"
        )
        return record, made

    async def _offer_at(
        self,
        site: str,
        capacity: Capacity,
        wanted: ExecutionRequest,
        *,
        offerset: str,
        owner: str | None,
        now: float,
        notes: list[dict[str, Any]],
    ) -> list[SessionRecord]:
        if wanted.cores_min > capacity.cores or wanted.memory_mib_min > capacity.memory_mib:
            notes.append(
                message_item(
                    now,
                    "INFO",
                    f"{site}: the minimum of {wanted.cores_min} cores and "
                    f"{wanted.memory_mib_min} MiB is above its capacity of {capacity.cores} "
                    f"cores and {capacity.memory_mib} MiB",
                )
            )
            return []
        await self.store.set_capacity(site, capacity.cores, capacity.memory_mib)
        made = []
        for start in candidate_starts(wanted, self.limits):
            record = SessionRecord(
                uuid=str(uuidlib.uuid4()),
                offerset=offerset,
                owner=owner,
                resource=site,
                cores=wanted.cores_min,
                memory_mib=wanted.memory_mib_min,
                storage_gib=wanted.storage_gib,
                start=start,
                end=start + wanted.duration,
                expires=now + self.limits.offer_ttl,
                phase=Phase.OFFERED,
                executable=wanted.executable,
                created=now,
                modified=now,
            )
            if await self.store.offer(record, now):
                made.append(record)
        if not made:
            notes.append(
                message_item(now, "INFO", f"{site}: no free capacity in the requested windows")
            )
        return made

    # --- reading -------------------------------------------------------------------------

    async def offerset(
        self, uuid: str, identity: Identity | None
    ) -> tuple[OfferSetRecord, list[SessionRecord]]:
        """An offer set and its sessions (:class:`NotFound` unless the caller's)."""
        record = await self.store.get_offerset(uuid)
        if record is None or not _owns(record.owner, identity):
            raise NotFound(uuid)
        return record, await self.store.sessions_of(uuid, self.clock())

    async def session(self, uuid: str, identity: Identity | None) -> SessionRecord:
        """A session (:class:`NotFound` unless the caller's); one past its end is released."""
        record = await self._session(uuid, identity)
        if record.phase in _RUNNING and record.end <= self.clock():
            record = await self._release(record, Phase.COMPLETED, "the booked time is over")
        return record

    async def _session(self, uuid: str, identity: Identity | None) -> SessionRecord:
        record = await self.store.get_session(uuid, self.clock())
        if record is None or not _owns(record.owner, identity):
            raise NotFound(uuid)
        return record

    # --- updates -------------------------------------------------------------------------

    async def update(self, uuid: str, to: Phase, identity: Identity | None) -> SessionRecord:
        """Accept or cancel a session (:class:`BookingConflict` if its phase forbids it)."""
        record = await self._session(uuid, identity)
        if identity is None:
            raise Forbidden("an anonymous caller may ask for offers but not accept or cancel them")
        if to is Phase.ACCEPTED:
            accepted = await self.store.accept(uuid, self.clock())
            self._audit(identity.subject, f"session {uuid} OFFERED -> ACCEPTED", accepted.resource)
            self._drive(accepted, identity)
            return accepted
        if to is Phase.CANCELLED:
            if record.phase is Phase.OFFERED or record.phase in _PREPARING:
                # The preparation, if any, sees the change and stops (see _prepare).
                allowed = _PREPARING | {Phase.OFFERED}
                return await self._move(record, allowed, Phase.CANCELLED, identity)
            if record.phase in _RUNNING:
                # Released like a session whose time is over (RELEASING, then COMPLETED).
                why = f"cancelled by {identity.subject}"
                return await self._release(record, Phase.COMPLETED, why, identity)
        raise BookingConflict(uuid, record.phase, USER_TRANSITIONS.get(to, frozenset()))

    async def direct(
        self, body: object, identity: Identity | None
    ) -> tuple[OfferSetRecord, SessionRecord | None]:
        """``POST /direct``: request, then accept the first offer (None if there was none)."""
        record, offers = await self.request(body, identity)
        if not offers:
            return record, None
        return record, await self.update(offers[0].uuid, Phase.ACCEPTED, identity)

    # --- driving an accepted session -----------------------------------------------------

    def _drive(self, record: SessionRecord, identity: Identity) -> None:
        task = asyncio.ensure_future(self._prepare(record, identity))
        self._driving.add(task)
        task.add_done_callback(self._driving.discard)

    async def wait_idle(self) -> None:
        """Wait until every session being driven has settled (for tests and shutdown)."""
        while self._driving:
            await asyncio.gather(*self._driving, return_exceptions=True)

    async def _prepare(self, record: SessionRecord, identity: Identity) -> None:
        try:
            record = await self._move(record, {Phase.ACCEPTED}, Phase.WAITING, identity)
            record = await self._move(record, {Phase.WAITING}, Phase.PREPARING, identity)
            user = self._user_at(record.resource, identity)
            if not await self.provisioner.has_account(record.resource, user):
                await self.provisioner.run(record.resource, f"add_user {user}")
                await self._note(record, "INFO", f"provisioned {user} at {record.resource}")
            connectors: tuple[dict[str, Any], ...] = ()
            if _tasktype(record) == "jupyter-notebook":
                url = await self.provisioner.run(record.resource, f"start_notebook {user}")
                connectors = (
                    {
                        "kind": NOTEBOOK_CONNECTOR,
                        "status": "AVAILABLE",
                        "protocol": "HTTP",
                        "location": str(url),
                    },
                )
            else:
                raise ProvisionError(
                    f"Broadgauge starts only jupyter-notebook sessions; {record.resource} "
                    "accepts this executable, but no agent can start it"
                )
            try:
                await self._move(record, {Phase.PREPARING}, Phase.AVAILABLE, identity, connectors)
            except BookingConflict:
                # Cancelled while the notebook started: stop it again.
                await self.provisioner.run(record.resource, f"stop_notebook {user}")
                raise
        except BookingConflict as exc:
            # Cancelled while it was being prepared: the cancel released its capacity.
            log.info("session %s stopped preparing: %s", record.uuid, exc)
        except (ProvisionError, AccountCheckError, LookupError) as exc:
            await self._fail(record, str(exc), identity)
        except Exception as exc:
            # Nobody awaits this task: an unexpected error must still end the session, not
            # leave it PREPARING for ever.
            log.exception("session %s failed while it was being prepared", record.uuid)
            await self._fail(record, f"{type(exc).__name__}: {exc}", identity)

    def _user_at(self, destination: str, identity: Identity) -> UserIdentifier:
        portal = destination.split(".", 1)[0]
        users = user_identities(identity, self.network.settings.user_claim, portal)
        if not users:
            raise LookupError(
                f"your token names no user of portal {portal!r} "
                f"(claim {self.network.settings.user_claim!r}) to provision"
            )
        return users[0]

    async def _fail(self, record: SessionRecord, why: str, identity: Identity) -> None:
        now = self.clock()
        try:
            await self.store.transition(
                record.uuid,
                _LIVE,
                Phase.FAILED,
                now,
                message=message_item(now, "ERROR", why),
            )
        except BookingConflict:
            return
        self._audit(identity.subject, f"session {record.uuid} -> FAILED", why)

    async def _release(
        self, record: SessionRecord, final: Phase, why: str, identity: Identity | None = None
    ) -> SessionRecord:
        record = await self._move(record, _RUNNING, Phase.RELEASING, identity)
        if _tasktype(record) == "jupyter-notebook" and record.connectors and identity is not None:
            try:
                user = self._user_at(record.resource, identity)
                await self.provisioner.run(record.resource, f"stop_notebook {user}")
            except (ProvisionError, LookupError) as exc:
                await self._note(record, "WARN", f"could not stop the notebook: {exc}")
        elif record.connectors:
            await self._note(record, "WARN", "the notebook is left to the hub to cull")
        record = await self._move(record, {Phase.RELEASING}, final, identity)
        return await self._note(record, "INFO", f"{why}; the account at {record.resource} is kept")

    async def _move(
        self,
        record: SessionRecord,
        allowed: set[Phase] | frozenset[Phase],
        to: Phase,
        identity: Identity | None,
        connectors: tuple[dict[str, Any], ...] | None = None,
    ) -> SessionRecord:
        for phase in allowed:
            check_transition(phase, to)  # the phase graph, whatever the store holds
        moved = await self.store.transition(
            record.uuid, frozenset(allowed), to, self.clock(), connectors=connectors
        )
        who = identity.subject if identity else "the broker"
        self._audit(who, f"session {record.uuid} {record.phase} -> {to}", record.resource)
        return moved

    async def _note(self, record: SessionRecord, level: str, text: str) -> SessionRecord:
        now = self.clock()
        return await self.store.add_message(record.uuid, message_item(now, level, text), now)

    def _audit(self, who: str | None, what: str, outcome: str) -> None:
        log.info("%s: %s (%s)", who or "anonymous", what, outcome)
        if self.audit is not None:
            self.audit(who or "anonymous", what, outcome)


def _owns(owner: str | None, identity: Identity | None) -> bool:
    """Whether the caller may see a record: its owner, or anyone for an anonymous one."""
    return owner is None or (identity is not None and identity.subject == owner)


def _tasktype(record: SessionRecord) -> str | None:
    return tasktype_for_kind(str(record.executable.get("kind", "")))
