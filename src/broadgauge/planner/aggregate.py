"""The aggregator: one ``/accepts`` over many registered planner services.

It asks every registered service at once (:class:`~.http1.Http1Client`), each with its own
timeout, all within an overall deadline, and answers with the seed's contract plus two arrays:

* ``answers`` - every YES, each with the ``service`` (name and URL) it came from;
* ``failures`` - every service that timed out, missed the deadline, errored, or sent
  something that is not an ``/accepts`` answer, with that status.

For older clients the top-level answer is a plain seed answer: YES (with the first YES's
``servicetype``/``serviceinfo``, in registration order) if any service said YES, else NO.

The caller's ``Authorization`` header is forwarded only to services with
``forward_token = true``; a token is a credential for its audience, not for everyone.
Answers are cached: a NO for ``negative_ttl`` seconds, a YES for the ``max-age`` in the
service's ``Cache-Control`` (never with ``no-store``/``no-cache``).  Cache keys include a
hash of the forwarded token, so one caller's answers are never served to another.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import re
import time
import tomllib
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from broadgauge.planner.answers import WORD, Answer, AnswerError, Task, answer_from_json
from broadgauge.planner.app import answers_refusals, openapi_route, read_task
from broadgauge.planner.http1 import Http1Client, ProtocolError
from broadgauge.planner.metrics import instrument
from broadgauge.planner.rules import RuleError
from broadgauge.runtime.metrics import PlannerMetrics


@dataclass(frozen=True)
class RemoteService:
    """A registered planner service: where its ``/accepts`` is and how to ask it."""

    name: str
    url: str  # the full /accepts URL
    timeout: float
    forward_token: bool = False


@dataclass(frozen=True)
class AggregatorConfig:
    """The ``[aggregator]`` table and the ``[[services]]`` list."""

    services: tuple[RemoteService, ...]
    name: str = "aggregator"
    deadline: float = 5.0
    negative_ttl: float = 10.0
    max_concurrency: int = 256
    max_cache_entries: int = 100_000


def _accepts_url(url: str) -> str:
    # Operators register a service by its base URL or by its /accepts URL; both work.
    return url if url.rstrip("/").endswith("/accepts") else url.rstrip("/") + "/accepts"


def parse_aggregator(raw: Mapping[str, Any]) -> AggregatorConfig:
    """Check and convert a parsed aggregator TOML; :class:`RuleError` says what is wrong."""
    table = raw.get("aggregator", {})
    if not isinstance(table, Mapping):
        raise RuleError("[aggregator] must be a table")
    default_timeout = float(table.get("timeout", 2.0))
    deadline = float(table.get("deadline", 5.0))
    if default_timeout <= 0 or deadline <= 0:
        raise RuleError("aggregator.timeout and aggregator.deadline must be positive")
    raw_services = raw.get("services", [])
    if not isinstance(raw_services, list):
        raise RuleError("services must be an array of tables ([[services]])")
    services = []
    for i, item in enumerate(raw_services):
        if not isinstance(item, Mapping) or not isinstance(item.get("url"), str):
            raise RuleError(f"services[{i}] needs a string 'url'")
        forward = item.get("forward_token", False)
        if not isinstance(forward, bool):
            raise RuleError(f"services[{i}].forward_token must be true or false")
        services.append(
            RemoteService(
                name=str(item.get("name", item["url"])),
                url=_accepts_url(item["url"]),
                timeout=float(item.get("timeout", default_timeout)),
                forward_token=forward,
            )
        )
    names = [s.name for s in services]
    if len(set(names)) != len(names):
        raise RuleError("service names must be unique")
    return AggregatorConfig(
        services=tuple(services),
        name=str(table.get("name", "aggregator")),
        deadline=deadline,
        negative_ttl=float(table.get("negative_ttl", 10.0)),
        max_concurrency=int(table.get("max_concurrency", 256)),
        max_cache_entries=int(table.get("max_cache_entries", 100_000)),
    )


def load_aggregator(path: Path) -> AggregatorConfig:
    """Read and check an aggregator's TOML file."""
    with path.open("rb") as handle:
        try:
            return parse_aggregator(tomllib.load(handle))
        except (tomllib.TOMLDecodeError, RuleError, ValueError) as exc:
            raise RuleError(f"{path}: {exc}") from exc


_MAX_AGE = re.compile(r"(?:^|,)\s*(?:s-)?max-age\s*=\s*\"?(\d+)")


def positive_ttl(cache_control: str | None) -> float:
    """Seconds a YES may be kept, from the service's ``Cache-Control`` (0: do not keep)."""
    if not cache_control:
        return 0.0
    lowered = cache_control.lower()
    if "no-store" in lowered or "no-cache" in lowered:
        return 0.0
    match = _MAX_AGE.search(lowered)
    return float(match.group(1)) if match else 0.0


@dataclass(frozen=True)
class Outcome:
    """What one service said, or why it said nothing usable."""

    service: RemoteService
    status: str  # yes, no, timeout, deadline, error, invalid, http-<code>
    answer: Answer | None = None
    detail: str | None = None
    cached: bool = False
    #: When the cached copy of this answer expires (None: not cached).
    expires_at: float | None = None


class Aggregator:
    """Fans a task out to every registered service and gathers the answers."""

    def __init__(
        self,
        config: AggregatorConfig,
        clock: Callable[[], float] = time.monotonic,
        metrics: PlannerMetrics | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self._http = Http1Client(max_idle_per_origin=config.max_concurrency)
        self._clock = clock
        self._cache: dict[tuple[Any, ...], tuple[float, Answer]] = {}
        self._semaphore = asyncio.Semaphore(config.max_concurrency)
        self._bodies: dict[tuple[Any, ...], tuple[float, bytes]] = {}

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._http.aclose()

    def _cache_get(self, key: tuple[Any, ...]) -> tuple[float, Answer] | None:
        hit = self._cache.get(key)
        if hit is None:
            return None
        if hit[0] <= self._clock():
            del self._cache[key]
            return None
        return hit

    def _cache_put(self, key: tuple[Any, ...], answer: Answer, ttl: float) -> float | None:
        if ttl <= 0:
            return None
        if len(self._cache) >= self.config.max_cache_entries:
            # Oldest insertion first: a dict keeps insertion order.
            self._cache.pop(next(iter(self._cache)))
        expires = self._clock() + ttl
        self._cache[key] = (expires, answer)
        return expires

    async def _ask_one(
        self,
        service: RemoteService,
        params: str,
        authorization: str | None,
        key: tuple[Any, ...],
    ) -> Outcome:
        if self.metrics is None:
            return await self._exchange(service, params, authorization, key)
        started = time.perf_counter()
        outcome = await self._exchange(service, params, authorization, key)
        self.metrics.asked(service.name, outcome.status, time.perf_counter() - started)
        return outcome

    async def _exchange(
        self,
        service: RemoteService,
        params: str,
        authorization: str | None,
        key: tuple[Any, ...],
    ) -> Outcome:
        headers = {"Accept": "application/json"}
        if service.forward_token and authorization:
            headers["Authorization"] = authorization
        async with self._semaphore:
            try:
                # The whole exchange is bounded, so a service that trickles bytes cannot
                # hold its slot past its timeout.
                async with asyncio.timeout(service.timeout):
                    reply = await self._http.get(service.url, params, headers)
            except TimeoutError:
                return Outcome(service, "timeout", detail=f"no answer within {service.timeout}s")
            except ProtocolError as exc:
                return Outcome(service, "invalid", detail=str(exc)[:200])
            except (OSError, asyncio.IncompleteReadError) as exc:
                return Outcome(service, "error", detail=f"{type(exc).__name__}: {exc}"[:200])
        if reply.status != 200:
            text = reply.body[:200].decode("utf-8", "replace")
            return Outcome(service, f"http-{reply.status}", detail=text)
        try:
            answer = answer_from_json(json.loads(reply.body))
        except (ValueError, AnswerError) as exc:
            return Outcome(service, "invalid", detail=str(exc)[:200])
        ttl = (
            positive_ttl(reply.headers.get("cache-control"))
            if answer.accepted
            else self.config.negative_ttl
        )
        expires = self._cache_put(key, answer, ttl)
        word = "yes" if answer.accepted else "no"
        return Outcome(service, word, answer=answer, expires_at=expires)

    async def ask(self, task: Task, authorization: str | None = None) -> list[Outcome]:
        """Every service's outcome, in registration order, within the deadline."""
        started = self._clock()
        token_hash = hashlib.sha256(authorization.encode()).hexdigest() if authorization else None
        params = str(httpx.QueryParams(tuple(task.as_params())))  # encoded once
        task_key = task.cache_key()  # once, not once per service
        outcomes: dict[int, Outcome] = {}
        to_ask: list[tuple[int, RemoteService, tuple[Any, ...]]] = []
        for i, service in enumerate(self.config.services):
            key = (service.name, task_key, token_hash if service.forward_token else None)
            hit = self._cache_get(key)
            if hit is not None:
                word = "yes" if hit[1].accepted else "no"
                outcomes[i] = Outcome(service, word, hit[1], cached=True, expires_at=hit[0])
            else:
                to_ask.append((i, service, key))
        if to_ask:
            queue = iter(to_ask)

            async def worker() -> None:
                # A few workers share one iterator instead of a task per service waiting
                # on the semaphore: a thousand waiters cost more CPU than their exchanges.
                for i, service, key in queue:
                    outcomes[i] = await self._ask_one(service, params, authorization, key)

            count = min(self.config.max_concurrency, len(to_ask))
            workers = [asyncio.create_task(worker()) for _ in range(count)]
            remaining = max(0.0, self.config.deadline - (self._clock() - started))
            done, late = await asyncio.wait(workers, timeout=remaining)
            for job in late:
                job.cancel()
            if late:
                await asyncio.gather(*late, return_exceptions=True)
            for job in done:
                job.result()  # a worker's unexpected error is the caller's, as before
            for i, service, _ in to_ask:
                if i not in outcomes:
                    detail = f"overall deadline of {self.config.deadline}s passed"
                    outcomes[i] = Outcome(service, "deadline", detail=detail)
                    if self.metrics is not None:
                        self.metrics.asked(service.name, "deadline", None)
        return [outcomes[i] for i in range(len(self.config.services))]

    async def answer(self, task: Task, authorization: str | None = None) -> bytes:
        """The encoded aggregated answer.

        When every service's answer is cached, the combined answer cannot change until the
        first of those entries expires, so its encoding is kept until then: a warm question
        over 1,000 services then costs one lookup instead of 1,000 (see bench/planner.py).
        """
        forwards = any(s.forward_token for s in self.config.services)
        token_hash = (
            hashlib.sha256(authorization.encode()).hexdigest()
            if authorization and forwards
            else None
        )
        key = (task.cache_key(), token_hash)
        hit = self._bodies.get(key)
        if hit is not None and hit[0] > self._clock():
            return hit[1]
        outcomes = await self.ask(task, authorization)
        body = _encode(combine(outcomes))
        expiries = [o.expires_at for o in outcomes]
        if outcomes and all(e is not None for e in expiries):
            if len(self._bodies) >= self.config.max_cache_entries:
                self._bodies.pop(next(iter(self._bodies)))
            as_cached = [dataclasses.replace(o, cached=True) for o in outcomes]
            self._bodies[key] = (
                min(e for e in expiries if e is not None),
                _encode(combine(as_cached)),
            )
        return body


def _encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def combine(outcomes: list[Outcome]) -> dict[str, Any]:
    """The aggregated answer: a plain seed answer plus ``answers`` and ``failures``."""
    answers = []
    failures = []
    noes = 0
    for outcome in outcomes:
        where = {"service": outcome.service.name, "url": outcome.service.url}
        if outcome.status == "yes" and outcome.answer is not None:
            answers.append({**where, **outcome.answer.to_json(), "cached": outcome.cached})
        elif outcome.status == "no":
            noes += 1
        else:
            failures.append({**where, "status": outcome.status, "detail": outcome.detail})
    body: dict[str, Any]
    if answers:
        first = answers[0]
        body = {
            WORD: "YES",
            "servicetype": first["servicetype"],
            "serviceinfo": first["serviceinfo"],
        }
    else:
        body = {WORD: "NO"}
    body.update({"answers": answers, "failures": failures, "asked": len(outcomes), "noes": noes})
    return body


def create_aggregator_app(
    config: AggregatorConfig,
    aggregator: Aggregator | None = None,
    *,
    metrics: PlannerMetrics | None = None,
) -> Starlette:
    """The ASGI application of ``broadgauge planner aggregate`` (with ``metrics``: its
    fan-out counted, and served at ``/metrics``)."""
    made: list[Aggregator] = [aggregator] if aggregator else []

    def current() -> Aggregator:
        # Created lazily inside the server's event loop, which owns the HTTP client.
        if not made:
            made.append(Aggregator(config, metrics=metrics))
        return made[0]

    @answers_refusals
    async def accepts(request: Request) -> Response:
        task = await read_task(request)
        body = await current().answer(task, request.headers.get("authorization"))
        return Response(body, media_type="application/json", headers={"Cache-Control": "no-store"})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        if made:
            await made[0].aclose()

    app = Starlette(
        routes=[
            Route("/accepts", accepts, methods=["GET", "POST"]),
            Route(
                "/openapi.json",
                openapi_route(f"Broadgauge planner aggregator: {config.name}", with_explain=False),
                methods=["GET"],
            ),
        ],
        lifespan=lifespan,
    )
    return app if metrics is None else instrument(app, metrics)
