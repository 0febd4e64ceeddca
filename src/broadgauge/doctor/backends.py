"""Back ends reachable from an agent's settings, as :mod:`broadgauge.agents.assemble` reads them.

Account agents: the local directory's folder writable, or an LDAP bind, or FreeIPA answering.
Filesystem agents: every volume root existing and writable, the quota engines' commands
(``lfs`` for Lustre, ``setquota``/``repquota``) found, or the sandbox writable.  Scheduler
agents: ``sacctmgr -n list cluster`` working, slurmrestd answering, or the ledger writable.
Routing agents: their ``planner-rules`` file readable.  The data directory itself is checked
by :func:`data_dir`; it is the one thing here that ``--fix`` may create.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from broadgauge.agents.assemble import VOLUME_TABLES, read_planner_rules
from broadgauge.agents.filesystem.layout import LayoutError, parse_layout
from broadgauge.doctor import probes
from broadgauge.doctor.findings import Finding, Repair, fail, ok, warn
from broadgauge.doctor.judge import q
from broadgauge.doctor.schedulers import scheduler
from broadgauge.doctor.settings import Context, command_found, embedded_file
from broadgauge.jobs.agent_type import AgentType
from broadgauge.wire import ConfigError

#: The mode ``broadgauge <role> run`` gives the data directory (boards name users).
DATA_MODE = 0o700


def data_dir(agent: str, data: Path) -> Finding:
    """The agent's data directory: there (or creatable), writable, private."""
    state = probes.path_state(data)
    if not state.exists:
        if state.ancestor_writable:
            return warn(
                "data.dir",
                agent,
                f"data directory {data} does not exist yet (the agent creates it when it starts)",
                f"mkdir -p -m 700 {q(data)}",
                Repair("mkdir", data, DATA_MODE),
            )
        return fail(
            "data.dir",
            agent,
            f"data directory {data} does not exist and cannot be created: {state.ancestor} is "
            "not writable by this user",
            f"as root: install -d -m 700 -o AGENT_USER {q(data)}",
        )
    if not state.is_dir:
        return fail(
            "data.dir",
            agent,
            f"data directory {data} is not a directory",
            "choose another --data-dir",
        )
    if not state.writable:
        return fail(
            "data.dir",
            agent,
            f"data directory {data} is not writable by this user",
            f"run the agent as the directory's owner, or `chown -R AGENT_USER {q(data)}`",
        )
    if state.mode is not None and state.mode & 0o077:
        return warn(
            "data.dir",
            agent,
            f"data directory {data} has mode {state.mode:04o}: other users can read its boards",
            f"chmod 700 {q(data)}",
            Repair("chmod", data, DATA_MODE),
        )
    return ok("data.dir", agent, f"data directory {data} is writable and private")


def backends(ctx: Context) -> list[Finding]:
    """Every back end the agent's config names, checked from this host."""
    checks: dict[AgentType, Callable[[Context], list[Finding]]] = {
        AgentType.ACCOUNT: _accounts,
        AgentType.FILESYSTEM: _filesystem,
        AgentType.SCHEDULER: scheduler,
    }
    findings = _planner_rules(ctx)
    if ctx.config.agent in checks:
        findings.extend(checks[ctx.config.agent](ctx))
    return findings


def _planner_rules(ctx: Context) -> list[Finding]:
    rules = ctx.extra("planner-rules")
    if rules is None:
        return []
    try:
        read_planner_rules(ctx.where(rules))
    except ConfigError as exc:
        return [
            fail(
                "backend.planner-rules",
                ctx.agent,
                str(exc),
                f"correct the file, or {ctx.set_extra('planner-rules', 'PATH')}",
            )
        ]
    return [ok("backend.planner-rules", ctx.agent, f"planner rules {rules} read")]


# --- accounts ------------------------------------------------------------------------------


def _accounts(ctx: Context) -> list[Finding]:
    backend = ctx.extra("account-backend", "local") or "local"
    if backend == "local":
        file = ctx.where(ctx.extra("directory") or ctx.data / "directory.sqlite3")
        return [embedded_file("backend.local", ctx.agent, file, "directory", ctx)]
    if backend == "ldap":
        return _ldap(ctx)
    if backend == "freeipa":
        return _freeipa(ctx)
    return [
        fail(
            "backend.account",
            ctx.agent,
            f"[extras] account-backend is {backend!r}; it must be local, ldap or freeipa",
            ctx.set_extra("account-backend", "local"),
        )
    ]


def _secret(ctx: Context, check: str, key: str) -> tuple[str | None, Finding | None]:
    try:
        return ctx.config.secret(key), None
    except ConfigError as exc:
        return None, fail(
            check,
            ctx.agent,
            f"secret {key} cannot be read: {exc}",
            f"{ctx.role} secret -c {q(ctx.path)} -k {key} -v -   (then type it)",
        )


def _ldap(ctx: Context) -> list[Finding]:
    needed = {"ldap-url": "ldap://HOST", "ldap-bind-dn": "DN", "ldap-base-dn": "DN"}
    missing = [
        ctx.missing("backend.ldap", k, "the LDAP back end needs it", v)
        for k, v in needed.items()
        if not ctx.extra(k)
    ]
    if missing:
        return missing
    password, problem = _secret(ctx, "backend.ldap", "ldap-password")
    if problem is not None:
        return [problem]
    url, dn = str(ctx.extra("ldap-url")), str(ctx.extra("ldap-bind-dn"))
    error = probes.ldap_bind(url, dn, password or "", ctx.timeout)
    if error is not None:
        return [
            fail(
                "backend.ldap",
                ctx.agent,
                f"cannot bind to LDAP at {url} as {dn}: {error}",
                "start the LDAP server (slapd) or correct the url: "
                f"{ctx.set_extra('ldap-url', 'ldap://HOST')}; check ldap-bind-dn and the "
                "ldap-password secret",
            )
        ]
    return [ok("backend.ldap", ctx.agent, f"bound to LDAP at {url} as {dn}")]


def _freeipa(ctx: Context) -> list[Finding]:
    servers = [s.strip() for s in (ctx.extra("freeipa-server") or "").split(",") if s.strip()]
    if not servers:
        return [
            ctx.missing(
                "backend.freeipa", "freeipa-server", "the FreeIPA back end needs it", "https://HOST"
            )
        ]
    _, problem = _secret(ctx, "backend.freeipa", "freeipa-password")
    findings = [problem] if problem is not None else []
    for server in servers:
        status, error = probes.http_answers(server, ctx.timeout)
        if status is None:
            findings.append(
                fail(
                    "backend.freeipa",
                    ctx.agent,
                    f"FreeIPA at {server} does not answer: {error}",
                    f"start it, or correct {ctx.set_extra('freeipa-server', 'https://HOST')}",
                )
            )
        else:
            findings.append(
                ok("backend.freeipa", ctx.agent, f"FreeIPA at {server} answers (HTTP {status})")
            )
    return findings


# --- filesystems ---------------------------------------------------------------------------


def _filesystem(ctx: Context) -> list[Finding]:
    findings: list[Finding] = []
    if ctx.extra("exec-prefix"):
        findings.append(
            fail(
                "backend.filesystem",
                ctx.agent,
                "[extras] exec-prefix is set: the filesystem agent refuses it at start",
                f"remove exec-prefix from [extras] in {q(ctx.path)} and run the agent as root",
            )
        )
    resolver = ctx.extra("id-resolver", "nss") or "nss"
    if resolver.startswith("directory:"):
        directory = ctx.where(resolver.removeprefix("directory:"))
        if not directory.exists():
            findings.append(
                warn(
                    "backend.id-resolver",
                    ctx.agent,
                    f"id-resolver reads {directory}, which does not exist yet (the local account "
                    "agent creates it when it starts; it must be on this host)",
                    f"start the account agent, or {ctx.set_extra('id-resolver', 'directory:PATH')}",
                )
            )
    elif resolver != "nss":
        findings.append(
            fail(
                "backend.id-resolver",
                ctx.agent,
                f"[extras] id-resolver is {resolver!r}; it must be nss or directory:<path>",
                ctx.set_extra("id-resolver", "directory:PATH"),
            )
        )
    if not any(table in ctx.config.other for table in VOLUME_TABLES):
        sandbox = ctx.where(ctx.extra("sandbox") or ctx.data / "sandbox")
        findings.append(
            embedded_file("backend.sandbox", ctx.agent, sandbox / "quotas.sqlite", "sandbox", ctx)
        )
        return findings
    try:
        layout = parse_layout(ctx.config.other)
    except LayoutError as exc:
        return [
            *findings,
            fail(
                "backend.volumes",
                ctx.agent,
                f"volume tables: {exc}",
                f"correct the volume tables in {q(ctx.path)} (docs/operators/roles.md)",
            ),
        ]
    for volume in layout.volumes():
        for root in volume.roots:
            findings.append(_root(ctx, volume.kind, volume.name, ctx.where(str(root.root))))
    for name, spec in layout.quota_engines.items():
        findings.extend(_engine(ctx, name, spec.type, spec.options))
    return findings


def _root(ctx: Context, kind: str, volume: str, root: Path) -> Finding:
    state = probes.path_state(root)
    what = f"root {root} of {kind} volume {volume}"
    if not state.exists:
        return fail(
            "backend.roots",
            ctx.agent,
            f"{what} does not exist",
            f"mkdir -p {q(root)} (as root; set its owner and mode)",
        )
    if not state.is_dir:
        return fail(
            "backend.roots",
            ctx.agent,
            f"{what} is not a directory",
            f"correct the roots of {kind}_volumes.{volume} in {q(ctx.path)}",
        )
    if not state.writable:
        return fail(
            "backend.roots",
            ctx.agent,
            f"{what} is not writable by this user: the agent cannot make directories there",
            "run the filesystem agent as root (or with CAP_DAC_OVERRIDE, CAP_CHOWN, CAP_FOWNER)",
        )
    return ok("backend.roots", ctx.agent, f"{what} exists and is writable")


def _engine(ctx: Context, name: str, kind: str, options: object) -> list[Finding]:
    assert isinstance(options, dict)
    where = f"[quota_engines.{name}]"
    if kind == "lustre":
        return [
            command_found(
                ctx, "backend.lfs", options.get("lfs_command", "lfs"), f"{where} lfs_command"
            )
        ]
    if kind == "linux":
        return [
            command_found(ctx, "backend.quota", options.get(tool, tool), f"{where} {tool}")
            for tool in ("setquota", "repquota")
        ]
    if kind in ("ledger", "fake"):
        if "database" in options:
            file = ctx.where(str(options["database"]))
        elif "quota_dir" in options:
            file = ctx.where(str(options["quota_dir"])) / "quotas.sqlite"
        else:
            file = ctx.data / "quotas.sqlite"
        return [embedded_file("backend.quota", ctx.agent, file, "database", ctx)]
    return [
        fail(
            "backend.quota",
            ctx.agent,
            f"{where} type {kind!r} is not supported",
            f"use ledger, linux or lustre in {where} of {q(ctx.path)}",
        )
    ]
