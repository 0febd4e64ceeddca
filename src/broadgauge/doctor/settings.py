"""What the back-end checks share: an agent's settings, and the two checks every role uses.

:class:`Context` reads ``[extras]`` as :mod:`broadgauge.agents.assemble` does and words the
command that sets one; :func:`embedded_file` checks where an embedded back end keeps its
SQLite file; :func:`command_found` checks that a command a back end runs is on ``PATH``.
"""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path

from broadgauge.doctor import probes
from broadgauge.doctor.findings import Finding, fail, ok
from broadgauge.doctor.judge import q, role_command
from broadgauge.runtime.config import AgentConfig


class Context:
    """One agent's config, where it lives, and the probes' timeout."""

    def __init__(
        self,
        agent: str,
        config: AgentConfig,
        path: Path,
        data: Path,
        *,
        timeout: float,
        base: Path | None = None,
    ) -> None:
        self.agent = agent
        self.config = config
        self.path = path  # the config file, named in every fix
        self.data = data
        self.timeout = timeout
        self.base = base  # where the agent runs: relative paths in its config start there
        self.role = role_command(config)

    def extra(self, key: str, default: str | None = None) -> str | None:
        """The ``[extras]`` setting ``key``, or ``default``."""
        return self.config.extra(key, default)

    def where(self, text: str | Path) -> Path:
        """A path from the config, as the agent (running in :attr:`base`) reads it."""
        path = Path(text)
        return path if path.is_absolute() or self.base is None else self.base / path

    def set_extra(self, key: str, value: str = "VALUE") -> str:
        """The command that sets ``[extras] key``."""
        return f"{self.role} extra -c {q(self.path)} -k {key} -v {value}"

    def missing(self, check: str, key: str, what: str, example: str = "VALUE") -> Finding:
        """A failure for a setting the back end needs and the config lacks."""
        return fail(
            check,
            self.agent,
            f"[extras] {key} is not set: {what}",
            self.set_extra(key, example),
        )


def embedded_file(check: str, agent: str, file: Path, key: str, ctx: Context) -> Finding:
    """An embedded back end's SQLite file: writable, or creatable where it should be."""
    folder = probes.path_state(file.parent)
    mine = file.parent == ctx.data or ctx.data in file.parents
    if folder.exists and folder.writable:
        state = probes.path_state(file)
        if state.exists and not state.writable:
            return fail(
                check, agent, f"{file} is not writable by this user", f"chown AGENT_USER {q(file)}"
            )
        return ok(check, agent, f"{file} can be written")
    if not folder.exists and (folder.ancestor_writable or mine):
        # Under the data directory the data.dir finding already says how to create it.
        return ok(check, agent, f"{file} will be created when the agent starts")
    return fail(
        check,
        agent,
        f"{file} cannot be written: {folder.path if folder.exists else folder.ancestor} is not "
        "writable by this user",
        f"give the agent's user that folder, or {ctx.set_extra(key, 'PATH')}",
    )


def command_found(ctx: Context, check: str, command: object, where: str) -> Finding:
    """A command a back end runs (given as a string in the config) must be on ``PATH``."""
    argv = shlex.split(command) if isinstance(command, str) else []
    if not argv or shutil.which(argv[0]) is None:
        return fail(
            check,
            ctx.agent,
            f"{where}: command {command!r} was not found on PATH",
            f"install it on this host, or give its full path in {where} of {q(ctx.path)}",
        )
    return ok(check, ctx.agent, f"{where}: {argv[0]} found at {shutil.which(argv[0])}")
