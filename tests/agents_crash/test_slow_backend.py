"""A slow or hung back end holds up only the jobs that wait for it.

A real site runs as seven ``broadgauge <role> run`` processes (see :mod:`.site`), and one
of its back ends gets stuck, by a real mechanism, while the test keeps other work going:

**An LDAP lookup, per call.**  The account agent keeps users in a real ``slapd``, which it
reaches through a relay in the test: a plain TCP forwarder on loopback that holds back
every request naming one project's group, ``portal.stall``.  So the one user who joins that
project, ``slow.stall.portal``, waits on the directory exactly as if the server were stuck
on that lookup, while requests about anything else go straight through, on the same
account agent and the same server.  Two ways of being stuck:

* **slow**: the held requests go through once the stall has lasted :data:`STALL` (30 s);
  ``ldap-timeout`` is set above that, so the job completes, late.
* **hung**: the held requests never go through while the job runs; the default
  ``ldap-timeout`` (10 s) bounds each try and the one retry on a fresh connection, so the
  job fails with an error naming the operation, the LDAP server and the timeout.  The
  relay then lets the held requests through (the server recovers, and sees requests whose
  caller gave up), and the portal's second attempt completes.

**The whole scheduler ledger.**  Another connection holds the scheduler's SQLite ledger in
an exclusive transaction for 30 s.  Each scheduler call waits up to SQLite's busy timeout
and fails naming the ledger; the portal sends the ``add_user`` jobs again until the lock
is gone.  Meanwhile work that needs no scheduler goes on.

What must hold:

* **(a) nothing else stalls**: while the call is stuck, the other jobs (twenty other users
  through the same account agent; blocking, unblocking and looking up users beside the
  locked ledger) all complete at their first attempt, and the agent whose back end is
  stuck answers the bridge's health sweeps while it runs the stuck handler.  How many jobs
  completed during the stall is printed.
* **(b) the stuck job ends as documented**, late or with that error, and is never run twice:
  each user is in the back ends once, with distinct uids, and the uid and gid counters
  advanced exactly once per user and group; no audit log records a creation twice, and
  every audit log's hash chain verifies.
* **(c) a hung call does not hold the agent**: once the hung job has failed, and while its
  requests are still held, the account agent reports no handler running (health's
  ``worker_count``).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from pathlib import Path

import pytest
from ldap3 import Connection, Server  # type: ignore[import-untyped, unused-ignore]

from broadgauge.runtime.agent import JobFailed
from broadgauge.runtime.audit import verify
from tests.backends.slapd import Slapd

from .site import AGENTS, Bulk, Site, everyone

pytestmark = pytest.mark.slow

SLOW_USER = "slow.stall.portal"
#: Every request that names this group is held back by the relay while the stall lasts.
STALLED_GROUP = "portal.stall"
OTHERS = [f"u{i:02d}.bulk.portal" for i in range(20)]
#: How long the slow backend takes to answer, in the "slow" case.
STALL = 30.0
#: ``ldap-timeout`` in the slow case: above the stall, so the call waits it out.
PATIENT_TIMEOUT = 60.0
#: The local directory's and LDAP back end's default uid and gid ranges start here.
FIRST_ID = 20000
CASE_BUDGET = 150.0
#: One attempt's wait for its answer (the portal's own job lives 2 minutes).
ATTEMPT_TIMEOUT = 110.0


class StallingRelay:
    """Forwards TCP connections to ``upstream``, holding back requests that name ``marker``.

    Every chunk the client sends is passed on as it comes, unless it contains ``marker``
    and the relay has not been released: then that connection's requests wait (ldap3 sends
    each request in one write and waits for its answer, so a chunk is a request).  Answers
    always flow.  Released requests are still delivered, even if their caller gave up: a
    server that recovers sees them late.
    """

    def __init__(self, upstream: tuple[str, int], marker: bytes) -> None:
        self.upstream = upstream
        self.marker = marker
        #: Requests held back so far.
        self.held = 0
        #: Set once the first request is held.
        self.holding = asyncio.Event()
        self._released = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> str:
        """Listen on a free loopback port; the ``ldap://`` URL to give the account agent."""
        self._server = await asyncio.start_server(self._connected, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"ldap://127.0.0.1:{port}"

    def release(self) -> None:
        """Deliver what is held, and hold nothing from now on."""
        self._released.set()

    async def close(self) -> None:
        """Stop listening and drop every relayed connection."""
        self.release()
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _connected(
        self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            server_in, server_out = await asyncio.open_connection(*self.upstream)
            try:
                await asyncio.gather(
                    self._pump(client_in, server_out, hold=True),
                    self._pump(server_in, client_out, hold=False),
                )
            finally:
                server_out.close()
        except (OSError, asyncio.IncompleteReadError):
            pass  # either side hung up: so does the relay
        finally:
            client_out.close()
            self._tasks.discard(task)

    async def _pump(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, *, hold: bool
    ) -> None:
        while chunk := await source.read(65536):
            if hold and self.marker in chunk and not self._released.is_set():
                self.held += 1
                self.holding.set()
                await self._released.wait()
            sink.write(chunk)
            await sink.drain()
        sink.close()


class HealthSweeps:
    """The bridge's health sweep, every half second until cancelled: for each sweep, the
    agents that answered and how many handlers each was running."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self.sweeps: list[dict[str, int]] = []

    async def run(self) -> None:
        """Sweep until cancelled."""
        assert self.site.bridge is not None
        while True:
            tree = await self.site.bridge.health()
            self.sweeps.append({name: h.worker_count for name, h in everyone(tree).items()})
            await asyncio.sleep(0.5)

    def check_answered_while_busy(self, agent: str) -> int:
        """How many sweeps ``agent`` answered while running a handler; there must be one.

        Its answer then proves that its event loop was free while its back-end call was
        stuck, since the stuck call is a running handler.
        """
        busy = sum(1 for sweep in self.sweeps if sweep.get(agent, 0) >= 1)
        assert busy, f"{agent} never answered a health sweep while its handler was stuck"
        return busy

    def summary(self) -> str:
        """How many sweeps reached every agent."""
        whole = sum(1 for sweep in self.sweeps if set(AGENTS) <= set(sweep))
        return f"{whole} of {len(self.sweeps)} health sweeps reached all seven agents"


@asynccontextmanager
async def ldap_site(
    root: Path, slapd: Slapd, *, ldap_timeout: float | None
) -> AsyncIterator[tuple[Site, StallingRelay, str]]:
    """A site whose account agent uses ``slapd`` through a :class:`StallingRelay`.

    Yields the site (configured, not started), the relay and the base DN of this test's
    own branch of the directory.
    """
    base = f"ou=stall{uuid.uuid4().hex[:10]},{slapd.suffix}"
    with admin(slapd) as conn:
        conn.add(base, ["organizationalUnit"], {"ou": base.split(",", 1)[0][3:]})
        for ou in ("people", "groups"):
            conn.add(f"ou={ou},{base}", ["organizationalUnit"], {"ou": ou})
    host, _, port = slapd.url.removeprefix("ldap://").partition(":")
    relay = StallingRelay((host, int(port)), STALLED_GROUP.encode())
    url = await relay.start()
    site = Site(root)
    site.configure()
    account = str(site.config("account"))
    settings = {
        "account-backend": "ldap",
        "ldap-url": url,
        "ldap-bind-dn": slapd.admin_dn,
        "ldap-base-dn": base,
    }
    if ldap_timeout is not None:
        settings["ldap-timeout"] = f"{ldap_timeout:g}"
    for key, value in settings.items():
        site.cli("account", "extra", "-c", account, "-k", key, "-v", value)
    site.cli("account", "encryption", "-c", account, "--simple")
    site.cli("account", "secret", "-c", account, "-k", "ldap-password", "-v", slapd.password)
    # slapd's users are not in this host's NSS: the sandbox leaves owners alone.
    filesystem = str(site.config("filesystem"))
    for key, value in {"id-resolver": "nss", "chown": "false"}.items():
        site.cli("filesystem", "extra", "-c", filesystem, "-k", key, "-v", value)
    try:
        yield site, relay, base
    finally:
        await relay.close()


def admin(slapd: Slapd) -> Connection:
    """A bound admin connection to slapd itself (not through the relay)."""
    return Connection(Server(slapd.url), slapd.admin_dn, slapd.password, auto_bind=True)


@pytest.mark.parametrize("how", ["slow", "hung"])
async def test_a_stuck_ldap_call_holds_up_only_its_own_job(
    how: str, tmp_path: Path, slapd: Slapd
) -> None:
    """One user's directory lookup is stuck; everyone else's jobs flow past it."""
    timeout = PATIENT_TIMEOUT if how == "slow" else None
    timeline: list[str] = []
    began = time.monotonic()

    def note(what: str) -> None:
        timeline.append(f"{time.monotonic() - began:6.2f} s  {what}")

    async with ldap_site(tmp_path, slapd, ldap_timeout=timeout) as (site, relay, base):
        bulk = Bulk(site, OTHERS, concurrency=5, attempt_timeout=ATTEMPT_TIMEOUT, max_attempts=1)
        sweeps = HealthSweeps(site)
        #: How many other users had completed when the stuck job ended.
        completed_meanwhile: list[int] = []

        try:
            async with asyncio.timeout(CASE_BUDGET):
                await site.start_all()
                note("all agents linked")
                stuck = asyncio.create_task(site.submit(f"add_user {SLOW_USER}", ATTEMPT_TIMEOUT))
                stuck.add_done_callback(lambda _: completed_meanwhile.append(len(bulk.finished)))
                await relay.holding.wait()
                stalled_at = time.monotonic()
                note(f"the directory holds a request about {STALLED_GROUP}")
                await bulk.run()
                note(f"{len(bulk.finished)} other users completed")
                # From here on the stuck call is the account agent's only handler.
                sweeper = asyncio.create_task(sweeps.run())
                try:
                    if how == "slow":
                        await asyncio.sleep(max(0.0, STALL - (time.monotonic() - stalled_at)))
                        assert not stuck.done(), f"the stuck job ended early: {stuck}"
                        note(f"the directory answers after {time.monotonic() - stalled_at:.0f} s")
                        relay.release()
                    try:
                        job = await stuck
                        message = None
                    except JobFailed as exc:
                        message = exc.job.error_message or ""
                finally:
                    sweeper.cancel()
                if how == "slow":
                    assert message is None, f"the slow job failed: {message}"
                    note(f"the slow job completed: {job.result}")
                    assert job.result == f'"{SLOW_USER}:slow.stall:{STALLED_GROUP}"', job.result
                else:
                    assert message is not None, f"the hung job completed: {job}"
                    note(f"the hung job failed: {message}")
                    check_timeout_error(message, relay)
                    await check_no_handler_left(site)
                    relay.release()
                    note("the directory recovers; the portal sends the job again")
                    job = await site.submit(f"add_user {SLOW_USER}", ATTEMPT_TIMEOUT)
                    note(f"the second attempt completed: {job.result}")
                statuses = await site.stop()
            note("agents stopped")
            assert all(status == 0 for status in statuses.values()), f"exit statuses: {statuses}"
            busy = sweeps.check_answered_while_busy("account")
            assert completed_meanwhile == [len(OTHERS)], (
                f"only {completed_meanwhile} of {len(OTHERS)} other users completed while "
                "one user's call was stuck"
            )
            check_exactly_once(site, slapd, base)
        except BaseException:
            site.kill_leftovers()
            print("\n".join(timeline))
            print(bulk.summary())
            print(site.logs())
            raise
        finally:
            site.kill_leftovers()
    print(
        f"[{how}] " + "; ".join(timeline) + f"\n{completed_meanwhile[0]} other users completed "
        f"while the call was stuck; {sweeps.summary()}, the account agent answered {busy} "
        f"while running the stuck handler; the relay held {relay.held} request(s)"
    )


async def check_no_handler_left(site: Site) -> None:
    """The account agent runs no handler any more, though its request is still held."""
    assert site.bridge is not None
    account = everyone(await site.bridge.health())["account"]
    assert account.worker_count == 0, (
        f"the account agent still runs {account.worker_count} handler(s) after the hung call "
        "timed out"
    )


def check_timeout_error(message: str, relay: StallingRelay) -> None:
    """The error says which operation failed, on which server, and that it timed out."""
    assert f"add_user {SLOW_USER}" in message, message
    assert "LDAP server ldap://127.0.0.1:" in message, message
    assert "timed out" in message, message
    # One try and one retry on a fresh connection, both held.
    assert relay.held == 2, f"the relay held {relay.held} requests, not 2"


def check_exactly_once(site: Site, slapd: Slapd, base: str) -> None:
    """Every user once in slapd, with distinct uids; counters advanced once per entry."""
    users = {name.rsplit(".", 1)[0]: name for name in [*OTHERS, SLOW_USER]}
    with admin(slapd) as conn:
        conn.search(base, "(objectClass=posixAccount)", attributes=["uid", "uidNumber", "cn"])
        entries = [(str(e.uid), int(e.uidNumber.value), str(e.cn)) for e in conn.entries]
        conn.search(base, "(objectClass=posixGroup)", attributes=["cn", "memberUid"])
        groups = {str(e.cn): sorted(e.memberUid.values) for e in conn.entries}
        counters = {}
        for kind in ("uid", "gid"):
            conn.search(f"cn={kind}Next,{base}", "(objectClass=*)", attributes=[f"{kind}Number"])
            counters[kind] = int(conn.entries[0][f"{kind}Number"].value)
    assert sorted(uid for uid, _, _ in entries) == sorted(users), entries
    assert {uid: cn for uid, _, cn in entries} == users, entries
    uids = sorted(number for _, number, _ in entries)
    assert uids == list(range(FIRST_ID, FIRST_ID + len(users))), f"uids: {uids}"
    assert counters == {"uid": FIRST_ID + len(users), "gid": FIRST_ID + len(groups)}, counters
    assert groups == {
        "openportal": sorted(users),
        "portal.bulk": sorted(u for u in users if u.endswith(".bulk")),
        STALLED_GROUP: ["slow.stall"],
    }, groups
    created = [op for op in site.operations("account") if op.startswith("created ")]
    twice = [op for op, n in Counter(created).items() if n > 1]
    assert not twice, f"the account agent recorded these creations more than once: {twice}"
    for agent in [*AGENTS, "bridge"]:
        result = verify(site.data_dir(agent) / "audit.jsonl")
        assert result.ok, f"{agent} audit log: line {result.first_bad_line}: {result.reason}"


#: Users whose add_user needs the scheduler while its ledger is locked.
STUCK = [f"s{i}.stall.portal" for i in range(3)]
#: Users onboarded before the lock, then blocked, unblocked and looked up meanwhile.
BYSTANDERS = [f"b{i}.bulk.portal" for i in range(5)]


async def test_a_locked_scheduler_ledger_holds_up_only_scheduler_work(tmp_path: Path) -> None:
    """Another process holds the scheduler's SQLite ledger locked for 30 s.

    Every scheduler call waits for the lock up to SQLite's busy timeout, then fails with an
    error naming the ledger; the instance undoes the rest of each ``add_user`` and the portal
    (:class:`.site.Bulk`) sends it again, until the lock is gone and it completes.
    Meanwhile everything that does not need the scheduler goes on (blocking, unblocking and
    looking up users, through the account and filesystem agents), and every health sweep
    reaches all seven agents, the scheduler included.
    """
    site = Site(tmp_path)
    site.configure()
    # Each attempt waits out SQLite's busy timeout (10 s): enough of them to outlast the lock.
    stuck = Bulk(
        site, STUCK, concurrency=len(STUCK), attempt_timeout=ATTEMPT_TIMEOUT, max_attempts=8
    )
    timeline: list[str] = []
    began = time.monotonic()
    bystanders_done: list[str] = []
    sweeps = HealthSweeps(site)

    def note(what: str) -> None:
        timeline.append(f"{time.monotonic() - began:6.2f} s  {what}")

    async def bystand(user: str) -> None:
        while True:
            for instruction in ("block_user", "unblock_user", "get_home_dir"):
                await site.submit(f"{instruction} {user}", ATTEMPT_TIMEOUT)
                bystanders_done.append(instruction)

    try:
        async with asyncio.timeout(CASE_BUDGET):
            await site.start_all()
            await Bulk(site, BYSTANDERS, concurrency=5, attempt_timeout=ATTEMPT_TIMEOUT).run()
            note("all agents linked, bystanders onboarded")
            with closing(sqlite3.connect(site.ledger, isolation_level=None)) as lock:
                lock.execute("BEGIN EXCLUSIVE")
                locked_at = time.monotonic()
                note("the ledger is locked by another connection")
                onboarding = asyncio.create_task(stuck.run())
                others = [asyncio.create_task(bystand(user)) for user in BYSTANDERS]
                others.append(asyncio.create_task(sweeps.run()))
                try:
                    await asyncio.sleep(STALL)
                    assert not onboarding.done(), "add_user completed while the ledger was locked"
                    lock.execute("ROLLBACK")
                    note(f"the ledger is unlocked after {time.monotonic() - locked_at:.0f} s")
                    during = len(bystanders_done)
                    await onboarding
                finally:
                    for task in others:
                        task.cancel()
                    results = await asyncio.gather(*others, return_exceptions=True)
            failures = [r for r in results if not isinstance(r, asyncio.CancelledError)]
            assert not failures, f"work that needs no scheduler failed meanwhile: {failures}"
            note(f"the stuck users completed; {during} other jobs completed while locked")
            statuses = await site.stop()
        assert all(status == 0 for status in statuses.values()), f"exit statuses: {statuses}"
        busy = sweeps.check_answered_while_busy("scheduler")
        check_ledger_errors(site, stuck)
        check_each_user_once(site, [*BYSTANDERS, *STUCK])
    except BaseException:
        site.kill_leftovers()
        print("\n".join(timeline))
        print(stuck.summary())
        print(site.logs())
        raise
    finally:
        site.kill_leftovers()
    print(
        "; ".join(timeline) + f"\n{sweeps.summary()}; the scheduler answered {busy} while "
        "running a stuck handler"
    )
    print(stuck.summary())


def check_ledger_errors(site: Site, stuck: Bulk) -> None:
    """Each attempt cut short by the lock failed naming the ledger and the lock."""
    assert stuck.resubmitted, "no add_user failed while the ledger was locked"
    for user, _, reason in stuck.resubmitted:
        assert f"add_user {user} failed: the scheduler ledger {site.ledger}: " in reason, reason
        assert reason.endswith("database is locked}"), reason


def check_each_user_once(site: Site, users: list[str]) -> None:
    """One ledger association and one directory row per user; uids handed out once."""
    names = sorted(user.rsplit(".", 1)[0] for user in users)
    with closing(sqlite3.connect(site.ledger)) as db:
        associations = sorted(db.execute("SELECT user FROM associations").fetchall())
    assert associations == [(name,) for name in names], associations
    with closing(sqlite3.connect(site.directory)) as db:
        rows = db.execute("SELECT name, uid, enabled FROM users ORDER BY name").fetchall()
        counters = dict(db.execute("SELECT name, next FROM counters").fetchall())
    assert [(name, enabled) for name, _, enabled in rows] == [(n, 1) for n in names], rows
    assert sorted(uid for _, uid, _ in rows) == list(range(FIRST_ID, FIRST_ID + len(names)))
    assert counters["uid"] == FIRST_ID + len(names), counters
    created = [op for op in site.operations("account") if op.startswith("created ")]
    twice = [op for op, n in Counter(created).items() if n > 1]
    assert not twice, f"the account agent recorded these creations more than once: {twice}"
    for agent in [*AGENTS, "bridge"]:
        result = verify(site.data_dir(agent) / "audit.jsonl")
        assert result.ok, f"{agent} audit log: line {result.first_bad_line}: {result.reason}"
