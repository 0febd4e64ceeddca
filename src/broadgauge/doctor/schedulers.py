"""Scheduler back ends: ``sacctmgr -n list cluster`` working, slurmrestd answering, or the
ledger writable, as :mod:`broadgauge.agents.assemble` chooses among them."""

from __future__ import annotations

import json
import shlex

from broadgauge.doctor import probes
from broadgauge.doctor.findings import Finding, fail, ok, warn
from broadgauge.doctor.settings import Context, command_found, embedded_file


def scheduler(ctx: Context) -> list[Finding]:
    rest = bool(ctx.extra("slurm-server"))
    backend = ctx.extra("scheduler-backend") or ("slurmrestd" if rest else "ledger")
    if backend == "ledger":
        file = ctx.where(ctx.extra("ledger") or ctx.data / "scheduler.sqlite3")
        return [embedded_file("backend.ledger", ctx.agent, file, "ledger", ctx)]
    if backend not in ("slurm", "slurmrestd"):
        return [
            fail(
                "backend.scheduler",
                ctx.agent,
                f"[extras] scheduler-backend is {backend!r}; "
                "it must be ledger, slurm or slurmrestd",
                ctx.set_extra("scheduler-backend", "ledger"),
            )
        ]
    findings = _default_node(ctx)
    if backend == "slurmrestd" or rest:
        findings.extend(_slurmrestd(ctx))
        # slurmrestd may fail to store one limit; sacctmgr does it then, so it is only a warning.
        sacctmgr = _sacctmgr(ctx, shlex.split(ctx.extra("sacctmgr", "sacctmgr") or "sacctmgr"))
        if sacctmgr.status.value == "fail":
            sacctmgr = warn(
                sacctmgr.check,
                sacctmgr.agent,
                sacctmgr.message + " (slurmrestd needs it for one limit only)",
                sacctmgr.fix,
            )
        findings.append(sacctmgr)
        return findings
    findings.append(_sacctmgr(ctx, ["sacctmgr"]))
    return findings


def _default_node(ctx: Context) -> list[Finding]:
    text = ctx.extra("slurm-default-node")
    if text is None:
        return [
            ctx.missing(
                "backend.slurm",
                "slurm-default-node",
                "limits cannot be turned into GrpTRESMins",
                '\'{"cpus": 128, "mem": 256000}\'',
            )
        ]
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        return [
            fail(
                "backend.slurm",
                ctx.agent,
                f"[extras] slurm-default-node {text!r} is not a JSON object",
                ctx.set_extra("slurm-default-node", '\'{"cpus": 128, "mem": 256000}\''),
            )
        ]
    return []


def _sacctmgr(ctx: Context, sacctmgr: list[str]) -> Finding:
    prefix = shlex.split(ctx.extra("command-prefix", "") or "")
    conf = ctx.extra("slurm-conf")
    argv = [*prefix, *sacctmgr, "-n", "list", "cluster", "format=cluster"]
    shown = " ".join(argv)
    run = probes.run_command(argv, {"SLURM_CONF": conf} if conf else None, ctx.timeout * 3)
    if not run.found:
        return fail(
            "backend.sacctmgr",
            ctx.agent,
            f"`{argv[0]}` was not found on PATH, so `{shown}` cannot run",
            "install Slurm's client commands on this host "
            "(or set [extras] command-prefix / sacctmgr)",
        )
    if run.code != 0:
        return fail(
            "backend.sacctmgr",
            ctx.agent,
            f"`{shown}` failed ({'no exit' if run.code is None else f'exit {run.code}'}): "
            f"{run.output}",
            "check that slurmdbd is running and that SLURM_CONF ([extras] slurm-conf) is right",
        )
    clusters = run.output.split()
    cluster = ctx.extra("slurm-cluster")
    if cluster and cluster not in clusters:
        return warn(
            "backend.sacctmgr",
            ctx.agent,
            f"`{shown}` works but lists no cluster {cluster} "
            f"(it lists: {', '.join(clusters) or 'none'})",
            ctx.set_extra("slurm-cluster", "NAME"),
        )
    return ok(
        "backend.sacctmgr",
        ctx.agent,
        f"`{shown}` works (clusters: {', '.join(clusters) or 'none'})",
    )


def _slurmrestd(ctx: Context) -> list[Finding]:
    server = ctx.extra("slurm-server")
    if not server:
        return [
            ctx.missing(
                "backend.slurmrestd",
                "slurm-server",
                "the slurmrestd back end needs it",
                "http://HOST:6820",
            )
        ]
    findings = [
        ctx.missing("backend.slurmrestd", key, "the slurmrestd back end needs it", example)
        for key, example in (("slurm-user", "USER"), ("token-command", "'scontrol token'"))
        if not ctx.extra(key)
    ]
    command = ctx.extra("token-command")
    if command:
        findings.append(command_found(ctx, "backend.slurmrestd", command, "[extras] token-command"))
    if not server.startswith(("http://", "https://", "unix:")):
        findings.append(
            fail(
                "backend.slurmrestd",
                ctx.agent,
                f"slurm-server {server!r} is not http(s)://host:port or unix:/path",
                ctx.set_extra("slurm-server", "http://HOST:6820"),
            )
        )
        return findings
    status, error = probes.http_answers(server, ctx.timeout)
    if status is None:
        findings.append(
            fail(
                "backend.slurmrestd",
                ctx.agent,
                f"slurmrestd at {server} does not answer: {error}",
                f"start slurmrestd, or correct {ctx.set_extra('slurm-server', 'http://HOST:6820')}",
            )
        )
    else:
        findings.append(
            ok(
                "backend.slurmrestd",
                ctx.agent,
                f"slurmrestd at {server} answers (HTTP {status} without a token)",
            )
        )
    return findings
