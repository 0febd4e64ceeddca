"""The console's pages and their JSON twins: network, jobs (and one job's trace), boards,
audit and planner.  Each page is drawn from the gatherer's cached view of the network."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from broadgauge.bridge.console.auth import Session
from broadgauge.bridge.console.gather import Gatherer
from broadgauge.bridge.console.model import (
    AgentRow,
    TraceRow,
    age,
    clock,
    events_from_report,
    stamp,
)
from broadgauge.jobs.job import Job
from broadgauge.runtime.agent import Agent

__all__ = ["Pages", "age", "clock", "short", "stamp"]

Handler = Callable[[Request, Session], Awaitable[Response]]
#: Traces listed on the jobs page at most.
MAX_TRACES = 300


def short(text: object, length: int = 8) -> str:
    """The first ``length`` characters (job ids in tables)."""
    return str(text)[:length]


def _job(job: Job, now: float) -> dict[str, Any]:
    return {
        "id": str(job.id),
        "instruction": job.command.instruction_text,
        "destination": job.command.destination_text,
        "state": job.state.value,
        "version": job.version,
        "created": job.created,
        "changed": job.changed,
        "age": now - job.created,
        "expires_in": job.expires - now,
        "result_type": job.result_type,
        "result": job.error_message if job.is_error else job.result,
        "error": job.is_error,
    }


def _trace(row: TraceRow, now: float, *, full: bool) -> dict[str, Any]:
    value: dict[str, Any] = {
        "trace": row.trace,
        "id": row.root,
        "instruction": row.instruction,
        "destination": row.destination,
        "state": row.state,
        "created": row.created,
        "age": now - row.created,
        "hops": row.hops,
    }
    if full:
        value["jobs"] = [_job(job, now) for job in row.jobs]
        value["events"] = [dataclasses.asdict(event) for event in row.events]
    return value


def _row(row: AgentRow) -> dict[str, Any]:
    value = dataclasses.asdict(row)
    value["links"] = [{"peer": link.peer, "up": link.up} for link in row.links]
    return value


class Render(Protocol):
    """Draws a template into a response (the console's, with its headers and nonce)."""

    def __call__(
        self, request: Request, name: str, status: int = 200, **context: Any
    ) -> Response: ...


class Pages:
    """The page and data handlers of one console."""

    def __init__(self, agent: Agent, gatherer: Gatherer, render: Render) -> None:
        self.agent = agent
        self.gatherer = gatherer
        self.render = render

    def routes(self) -> list[tuple[str, Handler]]:
        """``(path, handler)`` for every page and data endpoint (all need a session)."""
        return [
            ("/", self.network),
            ("/jobs", self.jobs),
            ("/jobs/{job_id}", self.job),
            ("/boards", self.boards),
            ("/audit", self.audit),
            ("/planner", self.planner),
            ("/api/network", self.network_data),
            ("/api/jobs", self.jobs_data),
            ("/api/jobs/{job_id}", self.job_data),
            ("/api/boards", self.boards_data),
            ("/api/audit", self.audit_data),
            ("/api/planner", self.planner_data),
        ]

    def _page(self, request: Request, session: Session, name: str, **context: Any) -> Response:
        return self.render(
            request, name, session=session, now=time.time(), agent=self.agent.name, **context
        )

    # --- network ---------------------------------------------------------------------------

    async def network(self, request: Request, session: Session) -> Response:
        """The agent tree."""
        view = await self.gatherer.view()
        counts = {
            s: sum(1 for r in view.rows if r.status == s) for s in ("up", "down", "unreachable")
        }
        return self._page(
            request, session, "network.html", view=view, counts=counts, page="network"
        )

    async def network_data(self, request: Request, session: Session) -> Response:
        """The agent tree as JSON."""
        view = await self.gatherer.view()
        return JSONResponse({"taken_at": view.taken_at, "agents": [_row(r) for r in view.rows]})

    # --- jobs ------------------------------------------------------------------------------

    async def jobs(self, request: Request, session: Session) -> Response:
        """Recent traces across the network."""
        view, rows = await self.gatherer.traces()
        state = request.query_params.get("state", "")
        shown = [r for r in rows if not state or r.state == state][:MAX_TRACES]
        return self._page(
            request,
            session,
            "jobs.html",
            view=view,
            rows=shown,
            total=len(rows),
            state=state,
            page="jobs",
        )

    async def jobs_data(self, request: Request, session: Session) -> Response:
        """Recent traces as JSON."""
        _, rows = await self.gatherer.traces()
        now = time.time()
        return JSONResponse([_trace(r, now, full=False) for r in rows[:MAX_TRACES]])

    async def _find(self, request: Request) -> TraceRow | None:
        try:
            wanted = str(uuid.UUID(request.path_params["job_id"]))
        except ValueError:
            return None
        _, rows = await self.gatherer.traces()
        return next((r for r in rows if r.trace == wanted[:8]), None)

    async def job(self, request: Request, session: Session) -> Response:
        """One trace, hop by hop."""
        row = await self._find(request)
        status = 200 if row is not None else 404
        return self._page(
            request,
            session,
            "job.html",
            status=status,
            row=row,
            wanted=request.path_params["job_id"],
            page="jobs",
        )

    async def job_data(self, request: Request, session: Session) -> Response:
        """One trace as JSON."""
        row = await self._find(request)
        if row is None:
            return JSONResponse({"error": "no such job in the recent traces"}, status_code=404)
        return JSONResponse(_trace(row, time.time(), full=True))

    # --- boards ----------------------------------------------------------------------------

    def _boards(self) -> list[dict[str, Any]]:
        agent = self.agent
        now = agent.clock()
        connected = set(agent.service.connected_peers())
        boards = []
        for peer, board in sorted(agent.boards_by_peer(), key=lambda pb: pb[0].name):
            kind = agent.peer_types.get(peer)
            jobs = sorted(board.jobs(), key=lambda j: j.changed, reverse=True)
            boards.append(
                {
                    "peer": str(peer),
                    "type": kind.display if kind is not None else "unknown",
                    "connected": peer in connected,
                    "stats": dataclasses.asdict(board.stats(agent.name, now)),
                    "jobs": [_job(job, now) for job in jobs],
                }
            )
        held = [_job(job, now) for job in self.gatherer.held()]
        return [
            *boards,
            {
                "peer": "portal software",
                "type": "held",
                "connected": True,
                "stats": {},
                "jobs": held,
            },
        ]

    async def boards(self, request: Request, session: Session) -> Response:
        """The jobs on each of the bridge's boards."""
        return self._page(request, session, "boards.html", boards=self._boards(), page="boards")

    async def boards_data(self, request: Request, session: Session) -> Response:
        """The boards as JSON."""
        return JSONResponse(self._boards())

    # --- audit -----------------------------------------------------------------------------

    async def _audit(self, request: Request) -> dict[str, Any]:
        try:
            page = max(0, int(request.query_params.get("page", "0")))
        except ValueError:
            page = 0
        wanted = request.query_params.get("agent", "")
        own = self.agent.name
        context: dict[str, Any] = {"page_number": page, "wanted": wanted or own, "own": own}
        # The view (a sweep, when cold) and the audit log's verification (a thread) are
        # independent: wait for both at once, not one after the other.
        taking = asyncio.ensure_future(self.gatherer.view())
        try:
            if not wanted or wanted == own:
                context["audit"] = await self.gatherer.audit(page)
            view = await taking
        finally:
            taking.cancel()  # only if the audit read failed; a done task ignores it
        if wanted and wanted != own:
            report = view.reports.get(wanted)
            context["remote"] = events_from_report(report) if report is not None else None
        context["agents"] = [r.name for r in view.rows if r.up]
        return context

    async def audit(self, request: Request, session: Session) -> Response:
        """The bridge's audit log, and other agents' recent trace."""
        return self._page(
            request, session, "audit.html", page="audit", **await self._audit(request)
        )

    async def audit_data(self, request: Request, session: Session) -> Response:
        """The audit page's data as JSON."""
        context = await self._audit(request)
        audit = context.get("audit")
        body: dict[str, Any] = {"agent": context["wanted"]}
        if audit is not None:
            check = audit.verification
            body.update(
                path=audit.path,
                entries=audit.entries,
                total=audit.total,
                verified={
                    "ok": check.ok,
                    "entries": check.entries,
                    "first_bad_line": check.first_bad_line,
                    "reason": check.reason,
                }
                if check is not None
                else None,
            )
        if "remote" in context:
            remote = context["remote"]
            body["recent_trace"] = (
                [dataclasses.asdict(e) for e in remote] if remote is not None else None
            )
        return JSONResponse(body)

    # --- planner ---------------------------------------------------------------------------

    async def _planner(self) -> dict[str, Any]:
        taken, result = await self.gatherer.rules()
        published = [
            {"destination": p.destination, "document": p.document} for p in result.published
        ]
        return {
            "swept_at": taken,
            "published": published,
            "silent": list(result.silent),
            "refused": list(result.refused),
            "answers": self.gatherer.recent_answers(),
        }

    async def planner(self, request: Request, session: Session) -> Response:
        """The published rules and recent answers."""
        return self._page(request, session, "planner.html", page="planner", **await self._planner())

    async def planner_data(self, request: Request, session: Session) -> Response:
        """The planner page's data as JSON."""
        return JSONResponse(await self._planner())
