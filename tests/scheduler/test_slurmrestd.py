"""The slurmrestd engine: parity with sacctmgr on the real stack, and bad answers from slurmrestd.

The shared behaviour suite (``test_backends.py``) also runs through this engine.  Here:

* the same scenario through the sacctmgr engine and the slurmrestd engine leaves identical
  accounts, associations, defaults and limits in slurmdbd (read back with ``sacctmgr``);
* what only the real slurmrestd can show: pending jobs cancelled through ``/slurm``, running
  jobs blocking a removal, the token fetched with the stack's ``scontrol token``;
* a slurmrestd that is down, answers 401 or 500, sends malformed JSON or an ``errors`` array,
  or speaks another API version: each is a :class:`SchedulerError` naming the cause (through
  an ``httpx.MockTransport``), and the token appears in no error and no log line;
* the token: fetched with ``username=`` and ``lifespan=`` appended, refreshed before its
  lifespan runs out (with a fake clock), and once after a 401;
* the agent's config: the reference's keys choose this engine, missing ones are named.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from broadgauge.agents.assemble import assemble
from broadgauge.agents.scheduler.accounting import NodeFactors
from broadgauge.agents.scheduler.backend import SchedulerBackend, SchedulerError
from broadgauge.agents.scheduler.batches import UserAdds
from broadgauge.agents.scheduler.rest import SlurmRestClient, token_argv
from broadgauge.agents.scheduler.slurm import SlurmScheduler
from broadgauge.agents.scheduler.slurmrestd import (
    RestAdder,
    SlurmRestScheduler,
    tres_from_rest,
    tres_to_rest,
)
from broadgauge.grammar import ProjectIdentifier, ProjectMapping, Usage, UserIdentifier, UserMapping
from broadgauge.jobs.agent_type import AgentType
from broadgauge.runtime.agent import Agent
from broadgauge.runtime.config import AgentConfig
from broadgauge.wire import ConfigError, ServiceConfig
from tests.backends.slurm import SlurmStack
from tests.scheduler.rest_support import rest_scheduler

TOKEN = "eyJhbGciOiJIUzI1NiJ9.c2VjcmV0LXRva2Vu.SIGNATURE-never-shown"


def mapping(name: str) -> ProjectMapping:
    return ProjectMapping(ProjectIdentifier(name, "portal"), f"portal.{name}")


def member(project: ProjectMapping, username: str, local: str | None = None) -> UserMapping:
    ident = UserIdentifier(username, project.project.project, "portal")
    return UserMapping(ident, local or f"{username}.{ident.project}", project.local_group)


# ---- parity on the real stack -----------------------------------------------------------


async def scenario(scheduler: SchedulerBackend, tag: str) -> list[str]:
    """One site's life: two projects, users in one or both, limits set and cleared, removals.

    Returns the names it used, for :func:`snapshot`.
    """
    first, second = mapping(f"pa{tag}"), mapping(f"pb{tag}")
    fred, jane = member(first, "fred"), member(first, "jane")
    sam_first, sam_second = member(first, "sam", f"sam{tag}"), member(second, "sam", f"sam{tag}")
    await scheduler.add_project(first)
    await scheduler.add_user(fred)
    await scheduler.add_user(jane)
    await scheduler.add_user(sam_first)
    await scheduler.add_user(sam_second)  # now sam's default
    assert await scheduler.set_limit(first, Usage(7200)) == Usage(7200)
    assert await scheduler.set_limit(second, Usage(3600)) == Usage(3600)
    assert await scheduler.set_limit(second, Usage(0)) == Usage(0)
    await scheduler.remove_user(jane)  # her last association: the user goes too
    await scheduler.remove_user(sam_second)  # sam's default goes back to the first project
    await scheduler.remove_project(first)
    return [first.local_group, second.local_group, fred.local_user, jane.local_user, f"sam{tag}"]


def snapshot(stack: SlurmStack, names: list[str], tag: str) -> list[str]:
    """Accounts, associations, users and limits of ``names`` as sacctmgr shows them."""
    accounts, users = ",".join(names[:2]), ",".join(names[2:])
    queries = [
        ["list", "account", "withassoc", "where", f"name={accounts}",
         "format=Account,Descr,Org,Cluster,ParentName,User,GrpTRESMins,DefaultQOS,QOS,Share"],
        ["list", "assoc", "where", f"account={accounts}",
         "format=Cluster,Account,User,Partition,ParentName,GrpTRESMins,GrpTRES,MaxJobs,QOS"],
        ["list", "user", "withassoc", "where", f"name={users}",
         "format=User,DefaultAccount,Admin,Cluster,Account"],
    ]  # fmt: skip
    lines = []
    for query in queries:
        out = stack.run("sacctmgr", "-P", "-n", *query).stdout
        lines += sorted(out.replace(tag, "<tag>").splitlines())
    return lines


async def test_both_engines_leave_identical_associations_and_limits(slurm_rest: SlurmStack) -> None:
    node = NodeFactors(cpus=slurm_rest.cpus, mem=slurm_rest.mem_mb, gpus=1, billing=2)
    sacctmgr = SlurmScheduler(
        cluster=slurm_rest.cluster,
        default_node=node,
        command_prefix=slurm_rest.command_prefix,
        env=slurm_rest.env,
    )
    rest = rest_scheduler(slurm_rest, node=node)
    base = uuid.uuid4().hex[:6]
    results = []
    for engine, scheduler in (("c", sacctmgr), ("r", rest)):
        tag = f"{engine}{base}"
        names = await scenario(scheduler, tag)
        results.append(snapshot(slurm_rest, names, tag))
    await rest.close()
    assert results[0] == results[1]
    # And the snapshot is about something: the accounts, sam and fred, and the limit.
    text = "\n".join(results[1])
    assert "pa<tag>|account for openportal project pa<tag>.portal|openportal" in text
    assert f"cpu={slurm_rest.cpus * 120}" in text and "gres/gpu=120" in text
    assert "sam<tag>|portal.pa<tag>|" in text and "jane" not in text


async def test_a_pending_job_is_cancelled_through_slurmrestd(slurm_rest: SlurmStack) -> None:
    rest = rest_scheduler(slurm_rest)
    proj = mapping(f"q{uuid.uuid4().hex[:8]}")
    root = member(proj, "root", "root")
    await rest.add_user(root)
    job = slurm_rest.submit(proj.local_group, "sleep 1", "--begin=now+1hour")
    await rest.remove_project(proj)  # cancels, keeps the association

    async def cancelled() -> bool:
        # slurmctld tells slurmdbd a moment later: sacct may still say PENDING.
        state = slurm_rest.run("sacct", "-P", "-n", "-X", "-j", job, "--format=State").stdout
        return state.startswith("CANCELLED")

    await eventually(cancelled, "sacct never showed the job cancelled")
    assoc = slurm_rest.run(
        "sacctmgr", "-P", "-n", "list", "assoc", "where", f"account={proj.local_group}",
        "format=User",
    ).stdout.split()  # fmt: skip
    assert assoc == ["root"]
    await rest.close()


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Wait until ``check()`` is true (Slurm acts a little later than it answers)."""
    deadline = time.monotonic() + 30.0
    while not await check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.3)


async def test_running_jobs_block_the_removal_until_they_end(slurm_rest: SlurmStack) -> None:
    rest = rest_scheduler(slurm_rest)
    proj = mapping(f"j{uuid.uuid4().hex[:8]}")
    root = member(proj, "root", "root")
    await rest.add_user(root)
    job = slurm_rest.submit(proj.local_group, "sleep 30")

    async def running() -> bool:
        return slurm_rest.run("squeue", "-h", "-j", job, "-o", "%T").stdout.strip() == "RUNNING"

    await eventually(running, "the job never started")
    with pytest.raises(SchedulerError, match="still has running jobs"):
        await rest.remove_user(root)
    slurm_rest.run("scancel", job)

    async def removed() -> bool:
        try:
            await rest.remove_user(root)
        except SchedulerError as exc:
            assert "still has running jobs" in str(exc)
            return False
        return True

    await eventually(removed, "the association stayed blocked after the job ended")
    users = slurm_rest.run(
        "sacctmgr", "-P", "-n", "list", "assoc", "where", f"account={proj.local_group}",
        "format=User",
    ).stdout.split()  # fmt: skip
    assert users == []
    await rest.close()


async def test_the_cluster_is_found_and_a_wrong_token_command_is_named(
    slurm_rest: SlurmStack,
) -> None:
    rest = rest_scheduler(slurm_rest, cluster=None)
    assert await rest.cluster() == slurm_rest.cluster
    await rest.close()
    client = SlurmRestClient(
        slurm_rest.rest_server, user="slurm", token_command="/nonexistent/scontrol token"
    )
    broken = SlurmRestScheduler(client, cluster=None, default_node=NodeFactors(cpus=1))
    with pytest.raises(SchedulerError, match="cannot run token-command `/nonexistent/scontrol"):
        await broken.add_project(mapping("x"))
    await broken.close()


async def test_users_added_to_one_account_together_share_requests(
    slurm_rest: SlurmStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    posts: list[tuple[str, list[str]]] = []
    real_request = SlurmRestClient.request

    async def request(self: SlurmRestClient, method: str, path: str, *args: Any, **kw: Any) -> Any:
        if method == "POST":
            body = kw["body"]
            items = body.get("users") or body.get("associations") or []
            posts.append((path.rsplit("/", 1)[-1], [i.get("name") or i.get("user") for i in items]))
        return await real_request(self, method, path, *args, **kw)

    monkeypatch.setattr(SlurmRestClient, "request", request)
    audit: list[str] = []
    rest = rest_scheduler(slurm_rest, audit=audit.append)
    proj = mapping(f"s{uuid.uuid4().hex[:8]}")
    await rest.add_project(proj)
    users = [member(proj, f"u{i}") for i in range(8)]
    await asyncio.gather(*(rest.add_user(user) for user in users))
    await rest.close()

    associations = slurm_rest.run(
        "sacctmgr", "-P", "-n", "list", "user", "withassoc", "where",
        f"name={','.join(user.local_user for user in users)}", "format=User,DefaultAccount,Account",
    ).stdout.split()  # fmt: skip
    assert sorted(associations) == sorted(
        f"{user.local_user}|{proj.local_group}|{proj.local_group}" for user in users
    )
    user_posts = [names for what, names in posts if what == "associations" and names != [None]]
    assert sorted(name for names in user_posts for name in names) == sorted(
        user.local_user for user in users
    )  # each user named once
    assert len(user_posts) < len(users)
    assert sorted(line for line in audit if "added user" in line) == sorted(
        f"slurm {slurm_rest.cluster}: added user {user.local_user} to account {proj.local_group}"
        for user in users
    )


# ---- bad answers (a mock slurmrestd) ----------------------------------------------------

SPEC = {
    "info": {"version": "0.0.38"},
    "paths": {"/slurm/v0.0.38/ping": {}, "/slurmdb/v0.0.38/clusters": {}},
}


def token_script(tmp_path: Path, tokens: list[str] | None = None) -> tuple[str, Path]:
    """A token command printing ``SLURM_JWT=<TOKEN>-<n>``; it logs its arguments to a file."""
    calls = tmp_path / "calls"
    script = tmp_path / "token.py"
    script.write_text(
        "import sys, pathlib\n"
        f"log = pathlib.Path({str(calls)!r})\n"
        "n = len(log.read_text().splitlines()) if log.exists() else 0\n"
        "log.open('a').write(' '.join(sys.argv[1:]) + '\\n')\n"
        f"print(f'SLURM_JWT={TOKEN}-{{n}}')\n"
    )
    return f"{sys.executable} {script}", calls


Handler = Callable[[httpx.Request], httpx.Response]


def mock_client(
    tmp_path: Path, handler: Handler, command: str | None = None, **client: object
) -> SlurmRestClient:
    """A client of a mock slurmrestd answering with ``handler``, its token from a script."""
    command = command or token_script(tmp_path)[0]
    return SlurmRestClient(
        "http://127.0.0.1:6820",
        user="svc",
        token_command=command,
        transport=httpx.MockTransport(handler),
        **client,  # type: ignore[arg-type]
    )


def mock_engine(tmp_path: Path, handler: Handler, **client: object) -> SlurmRestScheduler:
    """The engine on a mock slurmrestd that serves the spec, then ``handler``."""

    def serve(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/openapi.json":
            return httpx.Response(200, json=SPEC)
        return handler(request)

    rest = mock_client(tmp_path, serve, **client)
    return SlurmRestScheduler(rest, cluster="c", default_node=NodeFactors(cpus=1))


def no_token(text: str) -> None:
    assert TOKEN not in text and "SIGNATURE" not in text


@pytest.mark.parametrize(
    ("response", "cause"),
    [
        (httpx.Response(500, text="<html>Internal Server Error</html>"),
         r"HTTP 500 with a body that is not a JSON object \(malformed JSON\)"),
        (httpx.Response(500, json={"errors": [{"description": "database is down",
                                               "error_number": 7000}]}),
         r"failed \(HTTP 500\): database is down \(7000\)"),
        (httpx.Response(200, text='{"accounts": [{"name": '), r"HTTP 200 .*malformed JSON"),
        (httpx.Response(200, json=["not", "an", "object"]), "not a JSON object"),
        (httpx.Response(200, json={"errors": [{"error": "Unable to add", "error_number": 9}]}),
         r"failed \(HTTP 200\): Unable to add \(9\)"),
        (httpx.Response(200, json={"errors": "broken"}), "'errors' is not a list"),
        (httpx.Response(200, json={"accounts": "nope"}), "'accounts' is not a list"),
        (httpx.Response(404, json={}), "HTTP 404 Not Found"),
    ],
)  # fmt: skip
async def test_a_bad_answer_is_an_error_naming_its_cause(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    response: httpx.Response,
    cause: str,
) -> None:
    engine = mock_engine(tmp_path, lambda request: response)
    with caplog.at_level(logging.DEBUG), pytest.raises(SchedulerError, match=cause) as raised:
        await engine.add_project(mapping("bad"))
    where = "slurmrestd GET /slurmdb/v0.0.38/account/portal.bad"
    assert str(raised.value).startswith(where if "not a list" not in cause else "slurmrestd")
    no_token(str(raised.value))
    no_token(caplog.text)
    await engine.close()


async def test_a_slurmrestd_that_is_down_is_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    command, _ = token_script(tmp_path)
    client = SlurmRestClient(
        f"unix:{tmp_path / 'no-such.socket'}", user="svc", token_command=command
    )
    engine = SlurmRestScheduler(client, cluster="c", default_node=NodeFactors(cpus=1))
    with caplog.at_level(logging.DEBUG), pytest.raises(SchedulerError) as raised:
        await engine.add_user(member(mapping("down"), "fred"))
    assert f"slurmrestd at unix:{tmp_path / 'no-such.socket'} is unreachable" in str(raised.value)
    assert "ConnectError" in str(raised.value)
    no_token(str(raised.value))
    no_token(caplog.text)
    await engine.close()


async def test_a_timeout_is_named(tmp_path: Path) -> None:
    def hang(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    engine = mock_engine(tmp_path, hang, timeout=2.5)
    with pytest.raises(SchedulerError, match=r"did not answer GET .* within 2\.5 s"):
        await engine.get_limit(mapping("slow"))
    await engine.close()


async def test_401_fetches_one_new_token_then_gives_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[str] = []

    def refuse(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["X-SLURM-USER-TOKEN"])
        return httpx.Response(401, text="Authentication failure")

    engine = mock_engine(tmp_path, refuse)
    with caplog.at_level(logging.DEBUG), pytest.raises(SchedulerError) as raised:
        await engine.remove_project(mapping("auth"))
    assert "refused the token of Slurm user svc" in str(raised.value)
    assert "401 Unauthorized" in str(raised.value)
    assert seen == [f"{TOKEN}-0", f"{TOKEN}-1"]  # a fresh token was tried once
    no_token(str(raised.value))
    no_token(caplog.text)
    await engine.close()


async def test_401_then_success_carries_on_with_the_new_token(tmp_path: Path) -> None:
    seen: list[str] = []

    def once(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["X-SLURM-USER-TOKEN"])
        if len(seen) == 1:
            return httpx.Response(401)
        return httpx.Response(500, json={"errors": [{"error_number": 9003}], "accounts": []})

    engine = mock_engine(tmp_path, once)
    await engine.remove_project(mapping("gone"))  # "Nothing found": nothing to cancel
    assert seen == [f"{TOKEN}-0", f"{TOKEN}-1"]
    await engine.close()


async def test_another_api_version_is_refused_naming_what_is_offered(tmp_path: Path) -> None:
    def newer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"paths": {"/slurm/v0.0.40/ping": {}}})

    client = mock_client(tmp_path, newer)
    with pytest.raises(SchedulerError, match=r"does not serve openapi/v0.0.38.*offers v0.0.40"):
        await client.request("GET", "/slurm/v0.0.38/ping")
    await client.close()


# ---- the token ----------------------------------------------------------------------------


def test_the_token_command_gets_username_and_lifespan_as_in_the_reference() -> None:
    assert token_argv("scontrol token", "svc", 600, "root") == [
        "scontrol", "token", "username=svc", "lifespan=600",
    ]  # fmt: skip
    assert token_argv("'/opt/slurm bin/scontrol' token", "svc", 60, "svc") == [
        "/opt/slurm bin/scontrol", "token", "lifespan=60",
    ]  # fmt: skip
    with pytest.raises(SchedulerError, match="token-command is empty"):
        token_argv("  ", "svc", 60, "root")


async def test_the_token_is_refreshed_before_its_lifespan_runs_out(tmp_path: Path) -> None:
    now = [1000.0]
    seen: list[str] = []

    def record(request: httpx.Request) -> httpx.Response:
        assert request.headers["X-SLURM-USER-NAME"] == "svc"
        if request.url.path == "/openapi.json":
            return httpx.Response(200, json=SPEC)
        seen.append(request.headers["X-SLURM-USER-TOKEN"])
        return httpx.Response(200, json={"pings": []})

    command, calls = token_script(tmp_path)
    client = mock_client(tmp_path, record, command, token_lifespan=60, clock=lambda: now[0])
    await client.request("GET", "/slurm/v0.0.38/ping")  # spec + ping with token 0
    now[0] += 49  # 11 s left: still good
    await client.request("GET", "/slurm/v0.0.38/ping")
    now[0] += 2  # 9 s left: within the 10 s margin, so a new one first
    await client.request("GET", "/slurm/v0.0.38/ping")
    assert seen == [f"{TOKEN}-0"] * 2 + [f"{TOKEN}-1"]
    assert calls.read_text().splitlines() == ["username=svc lifespan=60"] * 2
    assert "SIGNATURE" not in repr(client.__dict__)
    await client.close()


async def test_a_failing_token_command_shows_its_stderr_never_its_stdout(tmp_path: Path) -> None:
    script = tmp_path / "bad.py"
    script.write_text(
        f"import sys\nprint('SLURM_JWT={TOKEN}')\nprint('scontrol: no', file=sys.stderr)\n"
        "sys.exit(1)\n"
    )
    client = SlurmRestClient(
        "http://127.0.0.1:6820", user="svc", token_command=f"{sys.executable} {script}"
    )
    with pytest.raises(SchedulerError, match=r"failed \(exit 1\): scontrol: no") as raised:
        await client.request("GET", "/slurm/v0.0.38/ping")
    no_token(str(raised.value))
    script.write_text("print('no token here')\n")
    with pytest.raises(SchedulerError, match="printed no NAME=TOKEN word"):
        await client.request("GET", "/slurm/v0.0.38/ping")
    await client.close()


def test_tres_lists_convert_both_ways() -> None:
    assert tres_to_rest("cpu=120,gres/gpu=60,mem=-1") == [
        {"type": "cpu", "count": 120},
        {"type": "gres", "name": "gpu", "count": 60},
        {"type": "mem", "count": -1},
    ]
    assert tres_from_rest(
        [{"type": "gres", "name": "gpu", "count": 2}, {"type": "mem", "name": None, "count": 5},
         {"type": "energy", "count": None}, "junk"]
    ) == {"gres/gpu": 2, "mem": 5}  # fmt: skip


# ---- the agent's config -------------------------------------------------------------------


def scheduler_agent(extras: dict[str, str]) -> Agent:
    service = ServiceConfig.create("scheduler", port=0)
    return Agent(AgentConfig(AgentType.SCHEDULER, service, extras))


REFERENCE = {
    "slurm-server": "http://127.0.0.1:6820",
    "slurm-user": "svc",
    "token-command": "scontrol token",
    "slurm-default-node": json.dumps({"cpus": 4}),
}


async def test_the_reference_keys_choose_slurmrestd(tmp_path: Path) -> None:
    role = assemble(scheduler_agent(REFERENCE), tmp_path)
    assert isinstance(role.scheduler, SlurmRestScheduler)
    await role.close()
    explicit = {**REFERENCE, "scheduler-backend": "slurmrestd", "token-lifespan": "5"}
    role = assemble(scheduler_agent(explicit), tmp_path)
    assert isinstance(role.scheduler, SlurmRestScheduler)
    await role.close()


@pytest.mark.parametrize(
    ("drop", "change", "message"),
    [
        ("slurm-user", {}, r"set \[extras\] slurm-user"),
        ("token-command", {}, r"set \[extras\] token-command"),
        ("slurm-default-node", {}, r"set \[extras\] slurm-default-node"),
        ("", {"scheduler-backend": "slurmrestd", "slurm-server": ""}, "slurm-server"),
        ("", {"token-lifespan": "half an hour"}, "token-lifespan must be a whole number"),
        ("", {"slurm-server": "ftp://x"}, "slurm-server must be http://host:port"),
    ],
)
def test_missing_or_bad_keys_are_refused_naming_the_key(
    tmp_path: Path, drop: str, change: dict[str, str], message: str
) -> None:
    extras = {k: v for k, v in {**REFERENCE, **change}.items() if k != drop}
    with pytest.raises(ConfigError, match=message):
        assemble(scheduler_agent(extras), tmp_path)


async def test_a_request_for_several_users_that_fails_is_made_again_for_each(
    tmp_path: Path,
) -> None:
    """slurmdbd refuses a request naming one bad user whole: the others are still added,
    and only the bad one gets the error."""
    posted: list[list[str]] = []
    gate = asyncio.Event()

    async def serve(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/openapi.json":
            return httpx.Response(200, json=SPEC)
        body = json.loads(request.content)
        if "associations" in body:
            names = [item["user"] for item in body["associations"]]
            posted.append(names)
            if names == ["first"]:
                await gate.wait()  # the others queue behind this change meanwhile
            if "bad" in names:
                return httpx.Response(400, json={"errors": [{"error": "Unspecified error"}]})
        return httpx.Response(200, json={"errors": []})

    client = mock_client(tmp_path, serve)
    adds = UserAdds(RestAdder(client))
    first = asyncio.create_task(adds.add("first", "proj", "c"))
    while not posted:
        await asyncio.sleep(0.01)
    rest = [asyncio.create_task(adds.add(name, "proj", "c")) for name in ("a", "bad", "b")]
    await asyncio.sleep(0.05)
    gate.set()
    outcomes = await asyncio.gather(first, *rest, return_exceptions=True)
    await client.close()

    assert posted == [["first"], ["a", "bad", "b"], ["a"], ["bad"], ["b"]]
    assert outcomes[:2] == [True, True] and outcomes[3] is True
    assert isinstance(outcomes[2], SchedulerError) and "HTTP 400" in str(outcomes[2])
