"""Recovery: an instance agent SIGKILLed mid-work resumes from its data directory, and Sync
on reconnection repairs what a lost agent or a lost frame left unfinished (notes §3.4, §7.2).

For the kill tests the instance runs in a subprocess (:mod:`tests.jobs.agent_process`) so it
can be killed for real; the portal runs in the test's event loop.  The instance's
``add_user`` handler writes one ledger line per execution, which is how they count executions.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections import Counter
from pathlib import Path

from broadgauge.jobs import AgentType, Job, Status, Update, decode_command
from broadgauge.runtime.agent import Agent
from broadgauge.runtime.config import AgentConfig
from broadgauge.runtime.store import BoardStore
from broadgauge.runtime.trace import Action
from broadgauge.wire import ServerEntry, ServiceConfig

from . import agent_helpers as h

ROOT = Path(__file__).resolve().parents[2]


class InstanceProcess:
    """An instance agent process that dials ``portal``, restartable on the same data dir."""

    def __init__(self, tmp_path: Path, portal: Agent) -> None:
        self.tmp_path = tmp_path
        self.config = tmp_path / "instance.toml"
        self.data_dir = tmp_path / "instance-data"
        self.ledger_file = tmp_path / "ledger.txt"
        self.trace_file = tmp_path / "trace.jsonl"
        self.process: asyncio.subprocess.Process | None = None
        self.pids: list[int] = []
        invite = portal.service.add_client("instance", "127.0.0.1")
        service = ServiceConfig.create("instance", port=0).with_server(
            ServerEntry.from_invite(invite)
        )
        AgentConfig(AgentType.INSTANCE, service).save(self.config)

    async def start(self, *options: str) -> None:
        """Start (or restart) the process with the same config and data directory."""
        log = (self.tmp_path / f"instance-{len(self.pids)}.log").open("wb")
        with log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tests.jobs.agent_process",
                str(self.config),
                str(self.data_dir),
                str(self.ledger_file),
                "--trace",
                str(self.trace_file),
                *options,
                cwd=ROOT,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        self.pids.append(self.process.pid)

    async def wait(self, timeout: float = 10.0) -> int:
        """Wait for the process to end; its return code."""
        assert self.process is not None
        async with asyncio.timeout(timeout):
            return await self.process.wait()

    async def kill(self) -> None:
        """SIGKILL the process and reap it."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        assert await self.wait() == -signal.SIGKILL

    async def stop(self) -> None:
        """Kill the process if it is still running (test cleanup)."""
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.wait()

    def ledger(self) -> Counter[str]:
        """How many times each user's ``add_user`` was executed."""
        if not self.ledger_file.exists():
            return Counter()
        return Counter(self.ledger_file.read_text(encoding="utf-8").split())

    def traces(self, pid: int) -> list[dict[str, object]]:
        """The trace events one of the processes emitted."""
        if not self.trace_file.exists():
            return []
        events = [json.loads(line) for line in self.trace_file.read_text().splitlines()]
        return [e for e in events if e["pid"] == pid]


async def test_a_killed_instance_resumes_and_never_reruns_a_finished_job(tmp_path: Path) -> None:
    async with h.Network() as net:
        portal = await net.start("portal", AgentType.PORTAL)
        instance = InstanceProcess(tmp_path, portal)
        try:
            await instance.start()
            await h.eventually(lambda: h.is_connected(portal, "instance"), timeout=15)

            users = [f"u{i}.p.portal" for i in range(20)]
            now = time.time()
            jobs = [Job.parse(f"portal.instance add_user {user}", now=now) for user in users]
            tasks = [asyncio.create_task(portal.submit(job, timeout=60)) for job in jobs]
            await h.eventually(lambda: sum(instance.ledger().values()) >= 6, timeout=15)
            await instance.kill()

            assert not all(task.done() for task in tasks)
            with BoardStore(instance.data_dir) as store:
                executions = {job.id: store.execution(job.id) for job in jobs}
            done_before = {i for i, e in executions.items() if e is not None and e.is_finished}
            assert 4 <= len(done_before) < len(jobs)
            ledger_before = instance.ledger()

            await instance.start()
            results = await h.finished(asyncio.gather(*tasks), timeout=30)
        finally:
            await instance.stop()

        for job, user, result in zip(jobs, users, results, strict=True):
            assert (result.id, result.state, result.version) == (job.id, Status.COMPLETE, 1002)
            assert result.result_value() == h.mapping_for(user)
        ledger = instance.ledger()
        assert set(ledger) == set(users)  # every user was created ...
        for job, user in zip(jobs, users, strict=True):
            if job.id in done_before:  # ... and nothing finished before the kill ran again
                assert ledger[user] == ledger_before[user] == 1, user
        # Jobs run one at a time, so at most the one cut off mid-run was executed twice.
        assert sum(ledger.values()) - len(users) in (0, 1)

        second_pid = instance.pids[1]
        started_after = Counter(
            e["job"] for e in instance.traces(second_pid) if e["action"] == "started"
        )
        assert set(started_after) == {str(j.id) for j in jobs if j.id not in done_before}
        assert set(started_after.values()) == {1}


async def test_a_result_stored_before_a_crash_is_answered_from_the_record(tmp_path: Path) -> None:
    async with h.Network() as net:
        portal = await net.start("portal", AgentType.PORTAL)
        instance = InstanceProcess(tmp_path, portal)
        user = "u0.p.portal"
        job = Job.parse(f"portal.instance add_user {user}", now=time.time())
        try:
            await instance.start("--crash-after-finish", user)
            await h.eventually(lambda: h.is_connected(portal, "instance"), timeout=15)
            task = asyncio.create_task(portal.submit(job, timeout=60))

            # The process kills itself after storing the result, before sending it.
            assert await instance.wait() == -signal.SIGKILL
            await asyncio.sleep(0.1)
            assert not task.done()
            with BoardStore(instance.data_dir) as store:
                execution = store.execution(job.id)
            assert execution is not None and execution.is_finished
            assert execution.result is not None
            assert execution.result.result_value() == h.mapping_for(user)
            assert instance.ledger() == Counter({user: 1})

            await instance.start()
            result = await h.finished(task, timeout=20)
        finally:
            await instance.stop()

        assert result == execution.result  # the stored copy, not a fresh run
        assert instance.ledger() == Counter({user: 1})
        first_pid, second_pid = instance.pids
        actions = [e["action"] for e in instance.traces(second_pid) if e["job"] == str(job.id)]
        assert "resumed" in actions
        assert "started" not in actions
        assert [e["action"] for e in instance.traces(first_pid)] == [
            "received",
            "started",
            "finished",
        ]


# ------------------------------------------------------- Sync on reconnect (in process)


async def test_an_instance_restarted_without_a_store_gets_unfinished_work_from_sync() -> None:
    async with h.Network() as net:
        portal = await net.start("portal", AgentType.PORTAL)
        lost = h.Recorder(gate=asyncio.Event())  # never finishes: the agent dies first
        first = await net.start_instance(lost)
        waiter = asyncio.create_task(portal.run("portal.instance", f"add_user {h.USER}"))
        await h.eventually(lambda: len(lost.calls) == 1)
        job_id = lost.calls[0].job.id
        await first.stop()  # its board lived in memory only
        await h.eventually(lambda: not h.is_connected(portal, "instance"))

        second = h.make_agent("instance", AgentType.INSTANCE)
        traces = h.Traces(second)
        again = h.Recorder()
        second.add_handler("add_user", again)
        second.service.add_server(net.invites[("portal", "instance")])
        await second.start(listen=False)
        net.agents["instance"] = second

        # The portal's Sync carries the Pending job; the instance is its destination: re-Put.
        job = await h.finished(waiter)
        assert job.id == job_id
        assert job.result_value() == h.MAPPING
        assert [c.job.id for c in again.calls] == [job_id]
        assert traces.actions("instance", job_id) == [
            Action.RECEIVED,
            Action.STARTED,
            Action.FINISHED,
        ]


async def test_a_result_lost_on_the_wire_is_recovered_by_sync_on_reconnect() -> None:
    async with h.Network() as net:
        portal = await net.start("portal", AgentType.PORTAL)
        recorder = h.Recorder()
        instance = await net.start_instance(recorder)
        # Lose the first Update in transit, as a link dying mid-frame would.
        send = instance.service.send
        lost: list[Job] = []

        async def lossy(name: str, payload: str, zone: str | None = None) -> None:
            command = decode_command(payload)
            if not lost and isinstance(command, Update):
                lost.append(command.job)
                return
            await send(name, payload, zone)

        instance.service.send = lossy  # type: ignore[method-assign,assignment]
        waiter = asyncio.create_task(portal.run("portal.instance", f"add_user {h.USER}"))
        await h.eventually(lambda: bool(lost))
        await asyncio.sleep(0.1)
        assert not waiter.done()
        copy = portal.board(h.peer("instance")).get(lost[0].id)
        assert copy is not None and copy.state is Status.PENDING

        await portal.service.disconnect("instance")  # the instance redials; both Sync
        job = await h.finished(waiter)
        assert job == lost[0]
        assert len(recorder.calls) == 1
