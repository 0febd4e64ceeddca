"""The agent runtime over real loopback sockets: routing, directions, expiry, duplicates,
queueing and notifications (notes §3.3-3.5, §3.7, §3.9)."""

from __future__ import annotations

import asyncio
import re
import time

import pytest

from broadgauge.grammar import UserMapping
from broadgauge.jobs import (
    AgentType,
    Job,
    Notification,
    Put,
    Register,
    Status,
    Update,
    decode_command,
    encode_command,
)
from broadgauge.jobs.directions import Link, refusal
from broadgauge.runtime.agent import Agent, Envelope, JobExpired, JobFailed, JobRefused, PeerInfo
from broadgauge.runtime.trace import Action
from broadgauge.wire import Message, Service, ServiceConfig

from .agent_helpers import (
    CHAIN_PATH,
    FAST,
    MAPPING,
    USER,
    Network,
    Recorder,
    Traces,
    eventually,
    finished,
    is_connected,
    link,
    make_agent,
    peer,
    wait_linked,
)

# --------------------------------------------------------------------------- routing


async def test_two_hop_job_returns_the_handler_value() -> None:
    async with Network() as net:
        portal = await net.start("portal", AgentType.PORTAL)
        recorder = Recorder()
        instance = await net.start_instance(recorder)

        job = await finished(portal.run("portal.instance", f"add_user {USER}", timeout=5))

        assert job.state is Status.COMPLETE
        assert job.result_type == "UserMapping"
        assert job.result == '"u.p.portal:u:portal.p"'
        assert job.result_value() == MAPPING
        assert job.version == 1002
        assert str(job.command) == f"portal.instance add_user {USER}"
        # The handler saw who asked and on which link.
        [envelope] = recorder.calls
        assert envelope.recipient == "instance"
        assert envelope.sender == PeerInfo(peer("portal"), Link.UP, AgentType.PORTAL)
        assert envelope.zone == "default"
        assert envelope.job.id == job.id
        assert envelope.job.state is Status.PENDING
        # Both ends of the link hold the same finished copy.
        assert instance.board(peer("portal")).get(job.id) == job
        assert portal.board(peer("instance")).get(job.id) == job


async def test_four_hop_chain_routes_down_and_back_up() -> None:
    async with Network() as net:
        portal, provider, platform, instance = await net.chain()
        traces = Traces(portal, provider, platform, instance)
        recorder = Recorder()
        instance.add_handler("add_user", recorder)

        job = await finished(portal.run(CHAIN_PATH, f"add_user {USER}", timeout=5))

        assert (job.state, job.result_type, job.version) == (Status.COMPLETE, "UserMapping", 1002)
        assert job.result_value() == MAPPING
        assert len(recorder.calls) == 1
        assert recorder.calls[0].sender.peer == peer("platform")
        # The job travelled unchanged (v2, Pending) to the instance ...
        assert recorder.calls[0].job.version == 2
        # ... and every board along the path now holds the finished copy (v1002).
        boards = [
            (portal, "provider"),
            (provider, "portal"),
            (provider, "platform"),
            (platform, "provider"),
            (platform, "instance"),
            (instance, "platform"),
        ]
        for agent, neighbour in boards:
            copy = agent.board(peer(neighbour)).get(job.id)
            assert copy is not None, f"{agent.name} has no copy on its {neighbour} board"
            assert (copy.state, copy.version, copy.result) == (Status.COMPLETE, 1002, job.result)
            assert (copy.created, copy.expires) == (job.created, job.expires)
        # Nothing was left in any queue.
        assert all(agent.board(peer(n)).queued() == () for agent, n in boards)

        # Each agent reports what it did, in order.
        assert traces.actions("portal", job.id) == [Action.FORWARDED, Action.FINISHED]
        for middle in ("provider", "platform"):
            assert traces.actions(middle, job.id) == [
                Action.RECEIVED,
                Action.FORWARDED,
                Action.RETURNED,
            ]
        assert traces.actions("instance", job.id) == [
            Action.RECEIVED,
            Action.STARTED,
            Action.FINISHED,
        ]
        forwarded = {e.agent: e.peer for e in traces.of(action=Action.FORWARDED)}
        assert forwarded == {
            "portal": "provider@default",
            "provider": "platform@default",
            "platform": "instance@default",
        }
        returned = {e.agent: e.peer for e in traces.of(action=Action.RETURNED)}
        assert returned == {"provider": "platform@default", "platform": "instance@default"}
        done = traces.of("instance", Action.FINISHED)[0]
        assert (done.state, done.detail, done.path) == ("Complete", "UserMapping", CHAIN_PATH)
        assert {e.job_id for e in traces.events} == {str(job.id)}


async def test_handler_errors_come_back_as_job_failed() -> None:
    async with Network() as net:
        portal, _provider, _platform, instance = await net.chain()
        traces = Traces(*net.agents.values())

        @instance.handler("add_user")
        async def refuse(envelope: Envelope) -> object:
            raise JobRefused(f"project of {envelope.job.instruction} is not known here")

        @instance.handler("remove_user")
        async def crash(envelope: Envelope) -> object:
            raise RuntimeError("disk on fire")

        with pytest.raises(JobFailed) as refused:
            await finished(portal.run(CHAIN_PATH, f"add_user {USER}", timeout=5))
        message = f"project of add_user {USER} is not known here"
        assert str(refused.value) == message
        failed = refused.value.job
        assert (failed.state, failed.result, failed.result_type) == (
            Status.ERROR,
            message,
            "Error",
        )
        assert failed.version == 1002
        assert not isinstance(refused.value, JobExpired)
        returned = traces.of("platform", Action.RETURNED, failed.id)
        assert [e.detail for e in returned] == [message]

        with pytest.raises(JobFailed, match=r"^RuntimeError: disk on fire$"):
            await finished(portal.run(CHAIN_PATH, f"remove_user {USER}", timeout=5))


async def test_an_instruction_without_a_handler_has_no_default_runner() -> None:
    async with Network() as net:
        portal = await net.start("portal", AgentType.PORTAL)
        await net.start("instance", AgentType.INSTANCE, dials=["portal"], listen=False)

        with pytest.raises(JobFailed) as failed:
            await finished(portal.run("portal.instance", "get_offerings", timeout=5))
        assert str(failed.value).startswith("No default runner for job: ")
        assert "portal.instance get_offerings" in str(failed.value)


async def test_a_next_hop_that_is_not_a_neighbour_fails_the_job() -> None:
    async with Network() as net:
        portal, _provider, _platform, instance = await net.chain()
        traces = Traces(*net.agents.values())
        instance.add_handler("add_user", Recorder())

        with pytest.raises(JobFailed) as failed:
            await finished(
                portal.run("portal.provider.nowhere.instance", f"add_user {USER}", timeout=5)
            )
        assert str(failed.value) == "provider has no neighbour called nowhere in zone default"
        assert failed.value.job.version == 1002
        job_id = failed.value.job.id
        assert traces.actions("platform", job_id) == []
        assert traces.actions("instance", job_id) == []
        assert traces.actions("provider", job_id) == [Action.RECEIVED]

        # At the first hop the caller is told at once.
        with pytest.raises(JobRefused, match="portal has no neighbour called nowhere"):
            await portal.run("portal.nowhere", f"add_user {USER}", timeout=5)


# -------------------------------------------------------------------------- directions


async def test_an_account_agent_refuses_work_from_an_agent_that_dials_it() -> None:
    async with Network() as net:
        await net.start("instance", AgentType.INSTANCE)
        recorder = Recorder()
        account = await net.start(
            "account",
            AgentType.ACCOUNT,
            dials=["instance"],
            before_start=lambda a: a.add_handler("add_user", recorder),
        )
        # "x" dials the account, so to the account it is below, whatever it claims to be.
        x = await net.start("x", AgentType.INSTANCE, dials=["account"], listen=False)
        traces = Traces(account)

        with pytest.raises(JobFailed) as failed:
            await finished(x.run("x.account", f"add_user {USER}", timeout=5))
        reason = refusal(AgentType.ACCOUNT, Link.DOWN, AgentType.INSTANCE, "add_user")
        assert reason is not None
        assert "account agents do not accept add_user from below" in reason
        assert str(failed.value) == reason
        assert recorder.calls == []
        [refused] = traces.of("account", Action.REFUSED)
        assert (refused.job_id, refused.peer, refused.detail) == (
            str(failed.value.job.id),
            "x@default",
            reason,
        )
        assert traces.of("account", Action.STARTED) == []

        # The same instruction from its upstream instance is accepted.
        job = await finished(net["instance"].run("instance.account", f"add_user {USER}", timeout=5))
        assert job.result_value() == MAPPING
        assert len(recorder.calls) == 1
        assert recorder.calls[0].sender == PeerInfo(peer("instance"), Link.UP, AgentType.INSTANCE)


async def test_an_instance_answers_only_read_only_callbacks_from_its_account_agent() -> None:
    async with Network() as net:
        instance = await net.start("instance", AgentType.INSTANCE)
        home = Recorder(result="/home/u")
        adds = Recorder()
        instance.add_handler("get_local_home_dir", home)
        instance.add_handler("add_user", adds)
        account = await net.start("account", AgentType.ACCOUNT, dials=["instance"], listen=False)
        traces = Traces(instance)

        job = await finished(
            account.run("account.instance", f"get_local_home_dir {MAPPING}", timeout=5)
        )
        assert (job.result_type, job.result_value()) == ("String", "/home/u")
        assert home.calls[0].sender == PeerInfo(peer("account"), Link.DOWN, AgentType.ACCOUNT)

        with pytest.raises(JobFailed) as failed:
            await finished(account.run("account.instance", f"add_user {USER}", timeout=5))
        assert str(failed.value).startswith("instance agents answer only get_local_home_dir")
        assert str(failed.value).endswith("from their account agent, not add_user")
        assert adds.calls == []
        assert [e.detail for e in traces.of("instance", Action.REFUSED)] == [str(failed.value)]


async def test_a_put_just_ahead_of_its_senders_register_is_judged_by_that_register() -> None:
    """Regression: the wait for Register used to block the link's in-order reader, so the
    Register right behind the Put could not be read (a 5 s stall, then "unregistered")."""
    async with Network() as net:
        instance = await net.start("instance", AgentType.INSTANCE)
        instance.add_handler("get_local_home_dir", Recorder(result="/home/u"))
        # A bare wire service stands in for an account agent that sends Put before Register.
        account = Service(ServiceConfig.create("account", port=0), timers=FAST)
        replies: asyncio.Queue[object] = asyncio.Queue()

        async def collect(message: Message) -> None:
            await replies.put(decode_command(message.payload))

        account.on_message(collect)
        account.add_server(instance.service.add_client("account", "127.0.0.1"))
        await account.start(listen=False)
        try:
            await eventually(lambda: is_connected(instance, "account"))
            now = time.time()
            job = Job.parse(f"account.instance get_local_home_dir {MAPPING}", now=now)
            await account.send("instance", encode_command(Put(job.pending(now=now))))
            await account.send("instance", encode_command(Register(AgentType.ACCOUNT)))

            async def answer() -> Job:
                while True:
                    command = await replies.get()
                    if isinstance(command, Update) and command.job.id == job.id:
                        return command.job

            update = await finished(answer(), timeout=2)
            assert (update.state, update.result) == (Status.COMPLETE, '"/home/u"')
        finally:
            await account.stop()


# ------------------------------------------------------------------------------ expiry


async def test_a_caller_timeout_raises_job_expired() -> None:
    async with Network() as net:
        portal = await net.start("portal", AgentType.PORTAL)
        hang = Recorder(gate=asyncio.Event())
        await net.start_instance(hang)
        started = time.monotonic()
        with pytest.raises(JobExpired) as expired:
            await finished(portal.run("portal.instance", f"add_user {USER}", timeout=0.5))
        assert 0.4 < time.monotonic() - started < 3
        assert expired.value.job.is_error
        assert len(hang.calls) == 1


async def test_the_cleaner_expires_a_waiting_job_by_the_agents_clock() -> None:
    now = [time.time()]
    async with Network() as net:
        portal = await net.start("portal", AgentType.PORTAL, clock=lambda: now[0])
        traces = Traces(portal)
        hang = Recorder(gate=asyncio.Event())
        await net.start_instance(hang)
        waiter = asyncio.create_task(portal.run("portal.instance", f"add_user {USER}"))
        await eventually(lambda: len(hang.calls) == 1)
        job = hang.calls[0].job
        board = portal.board(peer("instance"))
        assert board.get(job.id) is not None

        now[0] = job.expires  # not yet: expiry is strictly after `expires`
        assert portal.sweep() == []
        assert not waiter.done()

        now[0] = job.expires + 1
        [swept] = portal.sweep()
        assert (swept.id, swept.state, swept.result) == (job.id, Status.ERROR, "Job expired")
        assert board.get(job.id) is None
        with pytest.raises(JobExpired, match=r"^Job expired$") as expired:
            await finished(waiter)
        assert expired.value.job.id == job.id
        [event] = traces.of("portal", Action.EXPIRED)
        assert (event.job_id, event.detail) == (str(job.id), "Job expired")


async def test_a_job_that_arrives_expired_is_refused_with_the_reason() -> None:
    # The portal's clock runs three minutes late, so its jobs arrive already expired.
    # OpenPortal drops them without a word, and the caller waits for its own cleaner; the
    # instance answers instead, so the caller hears at once why nothing ran.
    now = [time.time() - 180]
    async with Network() as net:
        portal = await net.start("portal", AgentType.PORTAL, clock=lambda: now[0])
        recorder = Recorder()
        instance = await net.start_instance(recorder)
        traces = Traces(portal, instance)
        with pytest.raises(JobFailed) as refused:
            await finished(portal.run("portal.instance", f"add_user {USER}"))
        message = str(refused.value)
        assert message.startswith("instance refused the job: by instance's clock it expired ")
        # Job times are whole seconds: the creation time is rounded down.
        assert re.search(r"instance's clock is about 18[01] s ahead of portal's", message), message
        [event] = traces.of("instance", Action.REFUSED)
        assert (event.job_id, event.detail) == (str(refused.value.job.id), message)
        assert recorder.calls == []
        assert len(instance.board(peer("portal"))) == 0
        # Once the clocks agree, the same instruction runs.
        now[0] = time.time()
        await finished(portal.run("portal.instance", f"add_user {USER}", timeout=5))
        assert [str(c.job.instruction) for c in recorder.calls] == [f"add_user {USER}"]


# -------------------------------------------------------------------------- duplicates


async def test_identical_pending_jobs_share_one_execution() -> None:
    async with Network() as net:
        portal, _provider, _platform, instance = await net.chain()
        slow = Recorder(gate=asyncio.Event())
        instance.add_handler("add_user", slow)
        first = asyncio.create_task(portal.run(CHAIN_PATH, f"add_user {USER}"))
        await eventually(lambda: len(slow.calls) == 1)
        second = asyncio.create_task(portal.run(CHAIN_PATH, f"add_user {USER}"))
        board = portal.board(peer("provider"))
        await eventually(lambda: len(board) == 2)
        original, duplicate = board.jobs()
        assert original.id == slow.calls[0].job.id
        assert original.state is Status.PENDING
        assert duplicate.state is Status.DUPLICATE
        assert duplicate.result == str(original.id)
        assert duplicate.version == 3  # Created 1 -> Pending 2 -> Duplicate 3
        await asyncio.sleep(0.1)
        assert not first.done() and not second.done()

        slow.gate.set()  # type: ignore[union-attr]
        one, two = await finished(asyncio.gather(first, second))
        assert len(slow.calls) == 1
        assert one.id == original.id and two.id == duplicate.id
        assert (one.state, two.state) == (Status.COMPLETE, Status.COMPLETE)
        assert one.result == two.result == '"u.p.portal:u:portal.p"'
        assert one.result_type == two.result_type == "UserMapping"
        assert two.version == 1003  # the duplicate copies the result: +1000


async def test_a_reconnect_while_a_duplicate_waits_does_not_run_it_again() -> None:
    """Regression: the sender's Sync carries its Duplicate jobs; the destination used to
    re-Put and run them (the handler ran twice, then failed on state Duplicate)."""
    async with Network() as net:
        portal = await net.start("portal", AgentType.PORTAL)
        instance = await net.start("instance", AgentType.INSTANCE, dials=["portal"], listen=False)
        slow = Recorder(gate=asyncio.Event())
        instance.add_handler("add_user", slow)
        instance.add_handler("get_offerings", Recorder(result="pong"))
        first = asyncio.create_task(portal.run("portal.instance", f"add_user {USER}"))
        await eventually(lambda: len(slow.calls) == 1)
        second = asyncio.create_task(portal.run("portal.instance", f"add_user {USER}"))
        board = portal.board(peer("instance"))
        await eventually(lambda: len(board) == 2)
        assert board.jobs()[1].state is Status.DUPLICATE

        await portal.service.disconnect("instance")  # the instance redials; both Sync
        await eventually(lambda: not is_connected(portal, "instance"))
        await wait_linked(portal, instance)
        # Frames on a link are handled in order: once this answer is back, so is the Sync.
        await finished(portal.run("portal.instance", "get_offerings", timeout=5))
        assert len(slow.calls) == 1, [c.job.state for c in slow.calls]

        slow.gate.set()  # type: ignore[union-attr]
        one, two = await finished(asyncio.gather(first, second))
        assert one.result == two.result == '"u.p.portal:u:portal.p"'
        assert len(slow.calls) == 1


async def test_two_portals_asking_the_same_thing_through_one_provider_both_get_it() -> None:
    async with Network() as net:
        await net.start("portal1", AgentType.PORTAL)
        await net.start("portal2", AgentType.PORTAL)
        await net.start("provider", AgentType.PROVIDER, dials=["portal1", "portal2"])
        slow = Recorder(result=["a.b.c"], gate=asyncio.Event())
        await net.start(
            "instance",
            AgentType.INSTANCE,
            dials=["provider"],
            listen=False,
            before_start=lambda a: a.add_handler("get_offerings", slow),
        )
        traces = Traces(net["provider"])
        first = asyncio.create_task(
            net["portal1"].run("portal1.provider.instance", "get_offerings", timeout=10)
        )
        await eventually(lambda: len(slow.calls) == 1)
        second = asyncio.create_task(
            net["portal2"].run("portal2.provider.instance", "get_offerings", timeout=10)
        )
        await eventually(lambda: len(traces.of("provider", Action.RECEIVED)) == 2)
        slow.gate.set()  # type: ignore[union-attr]
        one, two = await finished(asyncio.gather(first, second), timeout=3)
        assert one.result == two.result
        assert len(slow.calls) == 1


# ------------------------------------------------------------------- queue / reconnect


async def test_a_job_for_a_peer_not_yet_connected_is_queued_then_delivered() -> None:
    async with Network() as net:
        portal = await net.start("portal", AgentType.PORTAL)
        traces = Traces(portal)
        instance = make_agent("instance", AgentType.INSTANCE)
        recorder = Recorder()
        instance.add_handler("add_user", recorder)
        link(portal, instance)  # known to the portal, but not running yet

        waiter = asyncio.create_task(portal.run("portal.instance", f"add_user {USER}"))
        queued = await traces.wait_for("portal", Action.QUEUED)
        assert queued.detail == "instance@default is not connected"
        board = portal.board(peer("instance"))
        assert [str(c.job.id) for c in board.queued()] == [queued.job_id]
        assert len(board) == 0  # a queued job leaves the board until it is sent

        await instance.start(listen=False)
        net.agents["instance"] = instance
        job = await finished(waiter)
        assert str(job.id) == queued.job_id
        assert job.result_value() == MAPPING
        assert len(recorder.calls) == 1
        assert board.queued() == ()
        assert board.get(job.id) == job


async def test_a_result_produced_while_the_link_is_down_arrives_after_reconnect() -> None:
    async with Network() as net:
        portal = await net.start("portal", AgentType.PORTAL)
        slow = Recorder(gate=asyncio.Event())
        instance = await net.start_instance(slow)
        traces = Traces(instance)
        waiter = asyncio.create_task(portal.run("portal.instance", f"add_user {USER}"))
        await eventually(lambda: len(slow.calls) == 1)

        instance.service.remove_server("portal")  # cut the link and stop redialling
        await eventually(lambda: not is_connected(portal, "instance"))
        slow.gate.set()  # type: ignore[union-attr]
        queued = await traces.wait_for("instance", Action.QUEUED)
        assert queued.peer == "portal@default"
        assert queued.state == "Complete"
        assert not waiter.done()

        instance.service.add_server(net.invites[("portal", "instance")])
        job = await finished(waiter)
        assert job.result_value() == MAPPING
        assert len(slow.calls) == 1
        assert instance.board(peer("portal")).queued() == ()


async def test_queued_identical_jobs_run_once_at_the_destination() -> None:
    async with Network() as net:
        portal = await net.start("portal", AgentType.PORTAL)
        traces = Traces(portal)
        instance = make_agent("instance", AgentType.INSTANCE)
        traces.watch(instance)
        slow = Recorder(gate=asyncio.Event())
        instance.add_handler("add_user", slow)
        link(portal, instance)

        first = asyncio.create_task(portal.run("portal.instance", f"add_user {USER}"))
        second = asyncio.create_task(portal.run("portal.instance", f"add_user {USER}"))
        # Queued jobs are off the board, so the second is not recognised as a duplicate yet.
        await eventually(lambda: len(traces.of("portal", Action.QUEUED)) == 2)

        await instance.start(listen=False)
        net.agents["instance"] = instance
        # Replayed in order; the second lands on the instance's board as a Duplicate.
        duplicate = await traces.wait_for("instance", Action.DUPLICATE)
        assert duplicate.state == "Duplicate"
        slow.gate.set()  # type: ignore[union-attr]
        one, two = await finished(asyncio.gather(first, second))
        assert str(two.id) == duplicate.job_id
        assert len(slow.calls) == 1
        assert one.result == two.result == '"u.p.portal:u:portal.p"'


# ----------------------------------------------------------------------- notifications


async def test_a_notification_travels_hop_by_hop_to_the_portal() -> None:
    async with Network() as net:
        portal, provider, _platform, instance = await net.chain()
        received: list[tuple[str, PeerInfo, Notification]] = []

        def collect(agent: Agent) -> None:
            async def handle(sender: PeerInfo, notification: Notification) -> None:
                received.append((agent.name, sender, notification))

            agent.on_notification(handle)

        for agent in net.agents.values():
            collect(agent)
        sent = Notification.parse(f"instance.platform.provider.portal user_added {USER}")
        await instance.notify(sent)
        await eventually(lambda: bool(received))
        await asyncio.sleep(0.05)
        [(where, sender, notification)] = received
        assert where == "portal"
        assert notification == sent
        assert sender == PeerInfo(peer("provider"), Link.DOWN, AgentType.PROVIDER)
        # Notifications are fire-and-forget: no board holds them.
        assert len(portal.board(peer("provider"))) == 0
        assert len(provider.board(peer("platform"))) == 0

        with pytest.raises(JobRefused):
            await instance.notify(Notification.parse(f"portal.instance user_added {USER}"))


async def test_an_instance_handler_runs_sub_jobs_on_its_account_agent() -> None:
    """A handler may start its own two-hop job while it serves one (notes §3.7)."""
    async with Network() as net:
        portal, _provider, _platform, instance = await net.chain(listen_last=True)
        account = await net.start("account", AgentType.ACCOUNT, dials=["instance"], listen=False)
        account.add_handler("add_user", Recorder())
        account.add_handler("is_protected_user", Recorder(result=False))

        @account.handler("remove_user")
        async def cannot(envelope: Envelope) -> object:
            raise JobRefused("the directory is read-only")

        @instance.handler("add_user")
        async def add_user(envelope: Envelope) -> UserMapping:
            sub = await instance.run("instance.account", str(envelope.job.instruction), timeout=5)
            value = sub.result_value()
            assert isinstance(value, UserMapping)
            return value

        @instance.handler("remove_user", "is_protected_user")
        async def pass_through(envelope: Envelope) -> Job:
            # A finished sub-job may be returned as is: its result passes through.
            return await instance.run("instance.account", str(envelope.job.instruction), timeout=5)

        job = await finished(portal.run(CHAIN_PATH, f"add_user {USER}", timeout=5))
        assert job.result_value() == MAPPING
        sub_jobs = account.board(peer("instance")).jobs()
        assert [(str(j.command), j.version) for j in sub_jobs] == [
            (f"instance.account add_user {USER}", 1002)
        ]

        protected = await finished(portal.run(CHAIN_PATH, f"is_protected_user {USER}", timeout=5))
        assert (protected.result_type, protected.result_value()) == ("bool", False)
        with pytest.raises(JobFailed, match=r"^the directory is read-only$") as failed:
            await finished(portal.run(CHAIN_PATH, f"remove_user {USER}", timeout=5))
        assert failed.value.job.version == 1002
