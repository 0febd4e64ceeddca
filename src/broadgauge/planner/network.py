"""Planning over the agent network: "where can I run X?" across every published offering.

Instance agents (or any routing agent) publish their Execution Planner rules; the bridge
gathers them down the hierarchy (:mod:`broadgauge.runtime.rules_sweep`), each tagged with the
OpenPortal destination it came from, e.g. ``waldur.brics.clusters.cluster``.  The network
planner runs beside the bridge and answers ``/accepts`` over all of them, with the same
contract as the aggregator: a plain seed answer on top, and

* ``answers`` - every YES, each with its ``destination``;
* ``provisionable`` - every NO given *only* because the caller has no account there, with
  ``reponseinfo.provision``: the destination and the ``add_user`` instruction the portal
  would send to create it;
* ``failures`` - destinations that did not answer the sweep, whose rules do not parse, or
  whose account check failed.

Accounts.  A rule with ``requires_account = true`` accepts only callers who already have an
account at that site.  The caller's OpenPortal identities (``user.project.portal``) come from
a token claim (``[network] user_claim``); only those of the destination's own portal count.
Whether one exists is asked of the instance itself (``is_existing_user``), through the
portal, as any bridge job; answers are cached briefly (a missing account for less long, as it
is about to be created).

The sweep is cached for ``refresh`` seconds and shared by concurrent requests.
"""

from __future__ import annotations

import asyncio
import logging
import time
import tomllib
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from broadgauge.grammar import GrammarError, UserIdentifier
from broadgauge.planner.answers import WORD, Answer, Task
from broadgauge.planner.app import Planner, answers_refusals, openapi_route
from broadgauge.planner.auth import TokenValidator
from broadgauge.planner.config import ServiceConfig, parse_config
from broadgauge.planner.rules import (
    Explanation,
    Identity,
    RuleError,
    RuleSet,
    evaluate,
    parse_ruleset,
    turns_on_account,
)
from broadgauge.runtime.agent import Agent
from broadgauge.runtime.rules_sweep import SweepResult
from broadgauge.wire import ConfigError

log = logging.getLogger("broadgauge.planner.network")

#: Account facts kept at most (oldest dropped first), so many callers cannot grow it forever.
MAX_ACCOUNT_ENTRIES = 100_000
#: Recent ``/accepts`` answers kept for the operator console (oldest dropped first).
RECENT_ANSWERS = 200


class AccountCheckError(Exception):
    """The site could not say whether the account exists (the message says why)."""


class NetworkSource(Protocol):
    """Where the network planner gets offerings and account facts (the bridge agent)."""

    async def sweep(self, budget: float) -> SweepResult: ...

    async def has_account(self, destination: str, user: UserIdentifier) -> bool: ...


@dataclass(frozen=True)
class NetworkSettings:
    """The ``[network]`` table of a network planner's configuration."""

    #: Seconds a sweep of published rules is reused.
    refresh: float = 30.0
    #: Seconds the sweep waits for the hierarchy to answer.
    budget: float = 2.0
    #: The token claim holding the caller's OpenPortal user identifiers.
    user_claim: str = "openportal_users"
    account_timeout: float = 10.0
    account_ttl: float = 60.0
    missing_account_ttl: float = 5.0
    host: str = "127.0.0.1"
    port: int = 8401
    #: Where offers and sessions are kept: ``sqlite:///path`` or ``postgresql://...`` (empty:
    #: ``bookings.sqlite3`` in the bridge agent's data directory).
    bookings: str = ""
    #: Seconds an offer holds its capacity before it expires.
    offer_ttl: float = 300.0


@dataclass(frozen=True)
class NetworkConfig:
    """A network planner: its name, ``[auth]`` and ``[site] groups_claim``, and ``[network]``."""

    service: ServiceConfig
    network: NetworkSettings = field(default_factory=NetworkSettings)


_NUMBERS = (
    "refresh",
    "budget",
    "account_timeout",
    "account_ttl",
    "missing_account_ttl",
    "offer_ttl",
)


def parse_network_config(raw: Mapping[str, Any]) -> NetworkConfig:
    """Check and convert a parsed TOML document; :class:`RuleError` says what is wrong."""
    body = dict(raw)
    table = body.pop("network", {})
    if not isinstance(table, Mapping):
        raise RuleError("[network] must be a table")
    if body.get("rules"):
        raise RuleError("a network planner has no [[rules]] of its own; sites publish them")
    unknown = set(table) - {*_NUMBERS, "user_claim", "host", "port", "bookings"}
    if unknown:
        raise RuleError(f"[network] has unknown keys {sorted(unknown)}")
    values: dict[str, Any] = {}
    for key in _NUMBERS:
        if key in table:
            value = table[key]
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise RuleError(f"network.{key} must be a number >= 0")
            values[key] = float(value)
    if "bookings" in table:
        if not isinstance(table["bookings"], str):
            raise RuleError(
                "network.bookings must be a store URL (sqlite:///... or postgresql://...)"
            )
        values["bookings"] = table["bookings"]
    for key in ("user_claim", "host"):
        if key in table:
            if not isinstance(table[key], str) or not table[key]:
                raise RuleError(f"network.{key} must be a non-empty string")
            values[key] = table[key]
    if "port" in table:
        port = table["port"]
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port < 65536:
            raise RuleError("network.port must be a port number (0 picks a free one)")
        values["port"] = port
    return NetworkConfig(parse_config(body), NetworkSettings(**values))


def load_network_config(path: str) -> NetworkConfig:
    """Read and check a network planner's TOML file."""
    try:
        with open(path, "rb") as handle:
            return parse_network_config(tomllib.load(handle))
    except (OSError, tomllib.TOMLDecodeError, RuleError) as exc:
        raise RuleError(f"{path}: {exc}") from exc


def user_identities(identity: Identity | None, claim: str, portal: str) -> list[UserIdentifier]:
    """The caller's OpenPortal users on ``portal``, from the ``claim`` in their token."""
    if identity is None:
        return []
    value = identity.claims.get(claim)
    texts = value.split() if isinstance(value, str) else value if isinstance(value, list) else []
    users: list[UserIdentifier] = []
    for text in texts:
        if not isinstance(text, str):
            continue
        try:
            user = UserIdentifier.parse(text)
        except GrammarError:
            log.info("ignored %r in claim %r: not a user.project.portal identifier", text, claim)
            continue
        if user.portal == portal:
            users.append(user)
    return users


@dataclass(frozen=True)
class Offering:
    """One published destination and its parsed rules (or why they do not parse)."""

    destination: str
    ruleset: RuleSet | None
    error: str | None = None

    @property
    def portal(self) -> str:
        """The portal the destination starts with."""
        return self.destination.split(".", 1)[0]


@dataclass(frozen=True)
class Catalogue:
    """A sweep's offerings, the destinations that did not answer, and when it was taken."""

    offerings: tuple[Offering, ...]
    silent: tuple[str, ...]
    taken_at: float


def catalogue_from(result: SweepResult, taken_at: float) -> Catalogue:
    """Parse every published document; a bad one becomes an offering with an error."""
    offerings = []
    for entry in result.published:
        try:
            offerings.append(Offering(entry.destination, parse_ruleset(entry.document)))
        except RuleError as exc:
            offerings.append(Offering(entry.destination, None, str(exc)))
    return Catalogue(tuple(offerings), result.silent, taken_at)


@dataclass(frozen=True)
class Verdict:
    """What one destination says about a task for a caller."""

    offering: Offering
    answer: Answer | None
    explanation: Explanation | None = None
    status: str = "answered"  # answered, invalid-rules, account-check
    detail: str | None = None


class NetworkPlanner:
    """Answers ``/accepts`` over every offering published in the network."""

    def __init__(
        self,
        config: NetworkConfig,
        source: NetworkSource,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.settings = config.network
        self.source = source
        self.clock = clock
        self._catalogue: Catalogue | None = None
        self._sweeping: asyncio.Task[Catalogue] | None = None
        self._accounts: dict[tuple[str, str], tuple[float, bool]] = {}
        self._asking: dict[tuple[str, str], asyncio.Future[bool]] = {}
        #: The last answers, in brief, for the operator console on the bridge.
        self.recent: deque[dict[str, Any]] = deque(maxlen=RECENT_ANSWERS)

    async def catalogue(self) -> Catalogue:
        """The offerings, from a sweep at most ``refresh`` seconds old."""
        now = self.clock()
        current = self._catalogue
        if current is not None and now - current.taken_at < self.settings.refresh:
            return current
        if self._sweeping is None or self._sweeping.done():
            self._sweeping = asyncio.ensure_future(self._sweep())
        return await asyncio.shield(self._sweeping)

    async def _sweep(self) -> Catalogue:
        result = await self.source.sweep(self.settings.budget)
        catalogue = catalogue_from(result, self.clock())
        self._catalogue = catalogue
        return catalogue

    def forget(self) -> None:
        """Drop the cached sweep and account facts (the next question sweeps again)."""
        self._catalogue = None
        self._accounts.clear()

    async def _has_account(self, destination: str, user: UserIdentifier) -> bool:
        key = (destination, str(user))
        hit = self._accounts.get(key)
        if hit is not None and hit[0] > self.clock():
            return hit[1]
        # Questions asked at once about the same account share one job to the site.
        asking = self._asking.get(key)
        if asking is None or asking.done():
            asking = asyncio.ensure_future(self._ask_site(key, destination, user))
            self._asking[key] = asking
            asking.add_done_callback(lambda done: self._forget_asking(key, done))
        return await asyncio.shield(asking)

    def _forget_asking(self, key: tuple[str, str], done: asyncio.Future[bool]) -> None:
        if self._asking.get(key) is done:
            del self._asking[key]
        if not done.cancelled():
            done.exception()  # retrieved here, so a failure nobody awaits is not logged

    async def _ask_site(self, key: tuple[str, str], destination: str, user: UserIdentifier) -> bool:
        try:
            async with asyncio.timeout(self.settings.account_timeout):
                exists = await self.source.has_account(destination, user)
        except TimeoutError:
            raise AccountCheckError(
                f"no answer within {self.settings.account_timeout}s to is_existing_user {user}"
            ) from None
        ttl = self.settings.account_ttl if exists else self.settings.missing_account_ttl
        if len(self._accounts) >= MAX_ACCOUNT_ENTRIES:
            # Oldest insertion first: a dict keeps insertion order.
            self._accounts.pop(next(iter(self._accounts)))
        self._accounts[key] = (self.clock() + ttl, exists)
        return exists

    async def judge(self, offering: Offering, task: Task, identity: Identity | None) -> Verdict:
        """Evaluate one offering, asking its site about the caller's account if it matters."""
        if offering.ruleset is None:
            return Verdict(offering, None, status="invalid-rules", detail=offering.error)
        ruleset = offering.ruleset
        # Evaluated once as if the account were there; only a rule needing it asks the site.
        answer, why = evaluate(ruleset, task, identity, has_account=True)
        if not turns_on_account(ruleset, why):
            return Verdict(offering, answer, why)
        users = user_identities(identity, self.settings.user_claim, offering.portal)
        wanted = task.taskinfo.get("project")
        if wanted:
            # The short name (physics) or OpenPortal's full one (physics.portal).
            chosen = [u for u in users if wanted in (u.project, str(u.project_identifier))]
            users = chosen or users
        if not users:
            answer, why = evaluate(ruleset, task, identity, has_account=False)
            reason = (
                f"an account is required, and your token names no user of portal "
                f"{offering.portal!r} (claim {self.settings.user_claim!r})"
            )
            return Verdict(offering, replace(answer, reason=reason), why)
        try:
            found = await asyncio.gather(
                *(self._has_account(offering.destination, user) for user in users)
            )
        except AccountCheckError as exc:
            return Verdict(offering, None, status="account-check", detail=str(exc))
        except Exception as exc:  # one site's failure must not fail the whole answer
            log.exception("account check at %s failed", offering.destination)
            detail = f"{type(exc).__name__}: {exc}"
            return Verdict(offering, None, status="account-check", detail=detail)
        answer, why = evaluate(ruleset, task, identity, has_account=any(found))
        if why.account_missing:
            user = users[0]
            answer = replace(
                answer,
                reason=f"You have no account at {offering.destination} yet; "
                f"the portal can provision one",
                provision={"destination": offering.destination, "instruction": f"add_user {user}"},
            )
        return Verdict(offering, answer, why)

    async def verdicts(
        self, task: Task, identity: Identity | None
    ) -> tuple[list[Verdict], Catalogue]:
        """Every offering's verdict, in sweep order."""
        catalogue = await self.catalogue()
        verdicts = await asyncio.gather(
            *(self.judge(offering, task, identity) for offering in catalogue.offerings)
        )
        return list(verdicts), catalogue

    async def answer(self, task: Task, identity: Identity | None) -> dict[str, Any]:
        """The combined answer: a plain seed answer plus the per-destination lists."""
        verdicts, catalogue = await self.verdicts(task, identity)
        body = combine(verdicts, catalogue.silent)
        log.info(
            "%s asked where %r can run: %s (%d yes, %d provisionable, %d failed)",
            identity.subject if identity else "anonymous",
            task.tasktype,
            body[WORD],
            len(body["answers"]),
            len(body["provisionable"]),
            len(body["failures"]),
        )
        self.recent.append(
            {
                "time": time.time(),
                "who": identity.subject if identity else "anonymous",
                "tasktype": task.tasktype,
                "answer": body[WORD],
                "yes": [a["destination"] for a in body["answers"]],
                "provisionable": [p["destination"] for p in body["provisionable"]],
                "failures": len(body["failures"]),
            }
        )
        return body


def combine(verdicts: Sequence[Verdict], silent: Sequence[str]) -> dict[str, Any]:
    """The body of ``/accepts``: YES if any destination said YES, with every list beside it."""
    answers: list[dict[str, Any]] = []
    provisionable: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = [
        {"destination": path, "status": "silent", "detail": "did not answer the sweep"}
        for path in silent
    ]
    noes = 0
    for verdict in verdicts:
        where = {"destination": verdict.offering.destination}
        answer = verdict.answer
        if answer is None:
            failures.append({**where, "status": verdict.status, "detail": verdict.detail})
        elif answer.accepted:
            answers.append({**where, **answer.to_json()})
        elif answer.provision is not None:
            provisionable.append({**where, **answer.to_json()})
        else:
            noes += 1
    body: dict[str, Any]
    if answers:
        first = answers[0]
        body = {WORD: "YES"}
        body.update({k: first[k] for k in ("servicetype", "serviceinfo")})
    elif provisionable:
        body = {k: v for k, v in provisionable[0].items() if k != "destination"}
    else:
        body = {WORD: "NO"}
    body.update(
        {
            "answers": answers,
            "provisionable": provisionable,
            "failures": failures,
            "asked": len(verdicts) + len(silent),
            "noes": noes,
        }
    )
    return body


#: Adds routes to the network planner's app (the broker's), given its planner and network.
ExtraRoutes = Callable[[Planner, "NetworkPlanner"], list[Route]]


def create_network_app(
    config: NetworkConfig,
    source: NetworkSource,
    validator: TokenValidator | None = None,
    *,
    extra_routes: ExtraRoutes | None = None,
) -> Starlette:
    """The ASGI application of the network planner (plus ``extra_routes``)."""
    planner = Planner(config.service, validator)
    network = NetworkPlanner(config, source)

    @answers_refusals
    async def accepts(request: Request) -> Response:
        identity, task = await planner.question(request)
        body = await network.answer(task, identity)
        return JSONResponse(body, headers={"Cache-Control": "no-store", "Vary": "Authorization"})

    @answers_refusals
    async def explain(request: Request) -> Response:
        identity, task = await planner.question(request)
        verdicts, catalogue = await network.verdicts(task, identity)
        return JSONResponse(
            {
                "answer": combine(verdicts, catalogue.silent),
                "identity": identity.subject if identity else None,
                "destinations": [
                    {
                        "destination": v.offering.destination,
                        "status": v.status,
                        "detail": v.detail,
                        "answer": v.answer.to_json() if v.answer else None,
                        "explain": v.explanation.to_json() if v.explanation else None,
                    }
                    for v in verdicts
                ],
            },
            headers={"Cache-Control": "no-store"},
        )

    app = Starlette(
        routes=[
            Route("/accepts", accepts, methods=["GET", "POST"]),
            Route("/accepts/explain", explain, methods=["GET"]),
            Route("/auth/callback", planner.callback, methods=["GET"]),
            Route(
                "/openapi.json",
                openapi_route(
                    f"Broadgauge network planner: {config.service.name}",
                    with_explain=True,
                    network=True,
                    offers=extra_routes is not None,
                ),
                methods=["GET"],
            ),
            *(extra_routes(planner, network) if extra_routes is not None else ()),
        ],
        lifespan=planner.lifespan,
    )
    app.state.planner = planner
    app.state.network = network
    return app


def check_published_rules(agent: Agent) -> None:
    """Refuse to start an agent whose published planner rules would not parse."""
    document = agent.planner_rules.document
    if document is None:
        return
    try:
        parse_ruleset(document)
    except RuleError as exc:
        raise ConfigError(f"{agent.name}: planner-rules: {exc}") from exc
