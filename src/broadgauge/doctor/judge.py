"""Pure judgements: what a probe's answer means, in plain words, with the command that fixes it.

Nothing here touches a socket or a file; each function takes what a probe saw
(:mod:`broadgauge.doctor.probes`) or what a config says and returns findings, so every
message and every fix is tested without a network.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from broadgauge.doctor.findings import Finding, Repair, fail, ok, warn
from broadgauge.doctor.probes import Bind, Holder, HttpAnswer, split_ws_url
from broadgauge.runtime.audit import Verification
from broadgauge.runtime.config import AgentConfig
from broadgauge.wire import ServerEntry

#: Clock skew with a peer above which the doctor warns, and above which it fails (seconds).
SKEW_WARN = 5.0
SKEW_FAIL = 60.0


def role_command(config: AgentConfig) -> str:
    """``broadgauge <role>`` for this config's agent type."""
    return f"broadgauge {config.agent.display}"


def q(path: Path | str) -> str:
    """A path quoted for a shell command line."""
    return shlex.quote(str(path))


# --- the config file -----------------------------------------------------------------------


def config_mode(agent: str, path: Path, mode: int) -> Finding:
    """A config holds keys: only its owner may read it."""
    if mode & 0o077:
        return fail(
            "config.mode",
            agent,
            f"{path} has mode {mode:04o}: other users can read the keys it holds",
            f"chmod 600 {q(path)}",
            Repair("chmod", path, 0o600),
        )
    return ok("config.mode", agent, f"{path} has mode {mode:04o} (only its owner can read it)")


def config_url(agent: str, config: AgentConfig, path: Path) -> Finding | None:
    """Invites name ``service.url``: it must be an address a peer can dial."""
    try:
        _, host, _, _ = split_ws_url(config.service.url)
    except ValueError:
        return None  # the config loader already refused such a URL
    if host in ("0.0.0.0", "::", "[::]"):
        return fail(
            "config.url",
            agent,
            f"service.url {config.service.url} names {host}, which no peer can dial",
            f"set [service] url in {q(path)} to an address peers can reach "
            "(then hand out new invites)",
        )
    return None


# --- the agent's own port --------------------------------------------------------------------


def looks_like_agent(answer: HttpAnswer | None) -> bool:
    """Whether an upgrade without salts got a paddington agent's refusal (400 or 403)."""
    return answer is not None and answer.status in (400, 403)


def _config_in_command(command: str) -> str | None:
    """The ``-c``/``--config`` value of a ``broadgauge <role> run`` command line, if any."""
    words = command.split()
    for i, word in enumerate(words):
        if word in ("-c", "--config") and i + 1 < len(words):
            return words[i + 1]
        if word.startswith("--config="):
            return word.removeprefix("--config=")
    return None


def runs_config(holder: Holder | None, path: Path) -> bool | None:
    """Whether the process ``holder`` runs the agent of ``path`` (None: cannot tell).

    Only a ``broadgauge <role> run -c PATH`` command line says; an agent started another
    way (a script, a test) is recognised by its answer instead.
    """
    if holder is None or "broadgauge" not in holder.command:
        return None
    given = _config_in_command(holder.command)
    if given is None:
        return None
    where = Path(holder.cwd or ".") / given
    try:
        return where.resolve() == path.resolve()
    except OSError:
        return None


def own_port(
    agent: str,
    config: AgentConfig,
    path: Path,
    *,
    bind: Bind,
    answer: HttpAnswer | None,
    holder: Holder | None,
    locked: bool | None,
) -> Finding:
    """The agent's listen port: free (not running), listening (running), or held by another."""
    ip, port = config.service.ip, config.service.port
    where = f"port {port} (service.port) on {ip} (service.ip)"
    run = f"{role_command(config)} run -c {q(path)}"
    if port == 0 and not config.service.clients:
        return ok(
            "port.listen",
            agent,
            "service.port is 0 and no client dials this agent: it listens on any free port",
        )
    if port == 0:
        return warn(
            "port.listen",
            agent,
            "service.port is 0: the agent listens on any free port, so no invite can name it",
            f"set [service] port and url in {q(path)} to a fixed port",
        )
    if bind.state == "free":
        if locked:
            return warn(
                "port.listen",
                agent,
                f"{where} is free, yet an agent holds this data directory's lock: "
                "a running agent uses this data with another config",
                "stop the other agent, or give this one its own --data-dir",
            )
        return ok("port.listen", agent, f"{where} is free: the agent is not running (start: {run})")
    if bind.state == "in-use":
        same = runs_config(holder, path)
        if same or (same is None and looks_like_agent(answer)):
            note = " (it holds its data directory's lock)" if locked else ""
            return ok("port.listen", agent, f"{where} is listening: the agent is running{note}")
        who = f"process {holder.pid} ({holder.command})" if holder else "another process"
        what = f"another agent, {who}" if same is False else who
        return fail(
            "port.listen",
            agent,
            f"{where} is held by {what}, not by this agent",
            f"stop {who}, or give this agent a free port: edit [service] port and url in "
            f"{q(path)} and the url in each client's server entry",
        )
    if bind.state == "not-local":
        return fail(
            "port.listen",
            agent,
            f"service.ip {ip} is not an address of this machine: the agent cannot listen there",
            f"set [service] ip in {q(path)} to an address of this host, or 0.0.0.0",
        )
    if bind.state == "denied":
        return fail(
            "port.listen",
            agent,
            f"{where} may not be bound by this user ({bind.detail})",
            f"use a port above 1023 in [service] port of {q(path)}, or run the agent with "
            "CAP_NET_BIND_SERVICE",
        )
    return fail("port.listen", agent, f"{where} cannot be bound: {bind.detail}")


# --- peers and clocks --------------------------------------------------------------------------


def peer(
    agent: str,
    config: AgentConfig,
    path: Path,
    entry: ServerEntry,
    answer: HttpAnswer,
    *,
    here_is_host: bool,
) -> Finding:
    """One server this agent dials: reachable, and allowing this host's address.

    ``here_is_host``: the doctor runs on the dialling agent's host, so the address the
    server sees is the agent's own (single-config mode); otherwise a refused address is
    only a warning.
    """
    check = f"peer.{entry.name}"
    target = f"server {entry.peer} at {entry.url}"
    mend_url = (
        f"start the {entry.name} agent, check a firewall lets this host reach it, "
        f"or correct its url in the [[service.servers]] entry of {q(path)}"
    )
    if not answer.connected:
        return fail(check, agent, f"cannot reach {target}: {answer.error}", mend_url)
    if answer.status is None:
        return fail(
            check,
            agent,
            f"{target} accepts connections but gives no HTTP answer ({answer.error}): "
            "it is not an agent",
            mend_url,
        )
    if answer.status == 400:
        return ok(
            check,
            agent,
            f"{target} is reachable and admits this host's address (keys not sent)",
        )
    if answer.status == 403:
        message = (
            f"{target} is reachable but refuses this host's address: "
            "none of its clients is allowed from here"
        )
        fix = (
            f"on {entry.name}'s host, `client --list` must show {config.service.name} with this "
            f"host's address; if not, `client --remove {config.service.name}`, then "
            f"`client --add {config.service.name} --ip ADDRESS` and import the new invite here "
            f"with `{role_command(config)} server -c {q(path)} --rotate INVITE`"
        )
        if here_is_host:
            return fail(check, agent, message, fix)
        return warn(check, agent, message + " (if the doctor runs on the agent's host)", fix)
    if answer.status == 101:
        return warn(
            check,
            agent,
            f"{target} accepted an upgrade without salts: it is not a paddington agent",
            mend_url,
        )
    return warn(
        check,
        agent,
        f"{target} answers HTTP {answer.status} {answer.reason}: it does not answer as an agent",
        mend_url,
    )


def clock(agent: str, peer_name: str, answer: HttpAnswer) -> Finding | None:
    """The peer's clock against ours, from the ``Date`` of its answer (jobs expire by it)."""
    if answer.status is None:
        return None  # nothing answered: the peer finding says so
    check = f"clock.{peer_name}"
    if answer.date is None:
        return warn(check, agent, f"{peer_name} sent no Date header: its clock was not checked")
    # Date has whole seconds: the peer's time lies in [date, date + 1); take the middle.
    skew = answer.date + 0.5 - answer.received
    text = f"{peer_name}'s clock is {abs(skew):.0f} s {'ahead of' if skew > 0 else 'behind'} ours"
    fix = (
        f"synchronise the clocks of this host and {peer_name}'s host "
        "(e.g. `timedatectl set-ntp true`, or chrony); jobs expire by the clock"
    )
    if abs(skew) > SKEW_FAIL:
        return fail(check, agent, text, fix)
    if abs(skew) > SKEW_WARN:
        return warn(check, agent, text, fix)
    return ok(check, agent, f"clock in step with {peer_name} (within {SKEW_WARN:g} s)")


# --- the audit log ---------------------------------------------------------------------------


def audit(agent: str, path: Path, result: Verification | None) -> Finding:
    """The hash chain of the agent's audit log (``None``: there is no log yet)."""
    if result is None:
        return ok(
            "audit.log", agent, f"no audit log yet at {path} (the agent writes one when it runs)"
        )
    if result.ok:
        return ok("audit.log", agent, f"{path}: {result.entries} entries, chain intact")
    return fail(
        "audit.log",
        agent,
        f"{path}: the entry on line {result.first_bad_line} is broken: {result.reason} "
        f"({result.entries} entries before it are intact)",
        f"keep the file as evidence and find out what changed it (`broadgauge audit verify "
        f"{q(path)}` shows the same); to start a new chain, stop the agent and move the file aside",
    )
