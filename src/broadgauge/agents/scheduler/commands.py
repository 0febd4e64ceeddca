"""Running Slurm's client commands: ``sacctmgr``, ``sacct`` and ``scancel``.

Every command is an argument list run with :func:`asyncio.create_subprocess_exec` (never a
shell) behind an optional prefix (``nsenter --net=...``, ``ssh host``), with ``TZ=UTC``,
bounded by ``timeout``; on timeout its whole process group is killed.  At most
``max_runners`` run at once, but only one ``sacctmgr`` change: changes sent at once deadlock
in slurmdbd's database (22.05), some are lost although ``sacctmgr`` reports success, and
slurmdbd exits once a deadlock outlasts its retries (found by the chaos soak,
``tests/chaos``).  A ``sacctmgr`` change whose outcome means "already so" (rc 1 with
``already exists``, ``Nothing new added``, ``Nothing modified``, ``Nothing deleted``) counts
as success, so every change can be repeated.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable, Mapping, Sequence

from .backend import SchedulerError

__all__ = ["SlurmCommands"]

# sacctmgr says these (with rc=1) when the change is already in place.
_ALREADY = ("already exists", "nothing new added", "nothing modified", "nothing deleted")
# sacctmgr without a prompt ("-i"), "|"-separated ("-P") and without a header ("-n").
_SACCTMGR = ("-i", "-P", "-n")


async def run_once(
    argv: Sequence[str], shown: str, timeout: float, env: Mapping[str, str] | None = None
) -> tuple[int, bytes, bytes]:
    """Run ``argv`` with no input, in a session of its own: (exit code, stdout, stderr).

    Failing to start it, or its running past ``timeout`` seconds, is a
    :class:`SchedulerError` naming ``shown``.  On a timeout or a cancellation its whole
    process group is killed, so nothing is left running.
    """
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
    except OSError as exc:
        raise SchedulerError(f"cannot run {shown}: {exc}") from exc
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except BaseException as exc:  # timeout or cancellation: leave nothing running
        _kill_group(process)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(process.wait(), 2.0)
        if isinstance(exc, TimeoutError):
            raise SchedulerError(f"{shown} timed out after {timeout:g} s (killed)") from None
        raise
    return (process.returncode if process.returncode is not None else -1, out, err)


def _kill_group(process: asyncio.subprocess.Process) -> None:
    # The process leads its own session, so this also reaches anything it started
    # (a prefix such as `sh -c` or `ssh`), whose open pipes would otherwise hang wait().
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


class SlurmCommands:
    """Slurm's client commands, as one site runs them."""

    def __init__(
        self,
        *,
        command_prefix: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        timeout: float = 30.0,
        commands: Mapping[str, Sequence[str]] | None = None,
        max_runners: int = 5,
    ) -> None:
        """``commands`` overrides the ``sacctmgr``, ``sacct`` or ``scancel`` command lines."""
        self._prefix = list(command_prefix)
        self._env = dict(env or {})
        self._timeout = timeout
        self._commands = {name: [name] for name in ("sacctmgr", "sacct", "scancel")}
        self._commands.update({name: list(argv) for name, argv in (commands or {}).items()})
        self._runners = asyncio.Semaphore(max_runners)
        # One change at a time: concurrent ones deadlock in slurmdbd, which then loses some
        # (reporting success) or exits.
        self._changing = asyncio.Lock()

    async def sacctmgr(self, *args: str) -> str:
        """The output of a ``sacctmgr`` query: one ``|``-separated line per row."""
        return await self.run("sacctmgr", [*_SACCTMGR, *args])

    async def change(self, *args: str) -> bool:
        """Run a sacctmgr change; True if it changed something, False if it was already so."""
        return await self.change_when_due(lambda: args)

    async def change_when_due(self, arguments: Callable[[], Sequence[str]]) -> bool:
        """:meth:`change`, with its arguments asked of ``arguments()`` once it is its turn.

        Changes run one at a time, so one may wait for others; a caller that gathers work
        meanwhile (:class:`~.batches.UserAdds`) decides what to send only then.
        """
        async with self._changing:
            command = [*_SACCTMGR, *arguments()]
            code, _, text = await self._exec("sacctmgr", command)
        if code == 0:
            return True
        if code == 1 and any(phrase in text.lower() for phrase in _ALREADY):
            return False
        raise SchedulerError(f"`{self._shown('sacctmgr', command)}` failed (exit {code}): {text}")

    async def run(self, tool: str, args: Sequence[str]) -> str:
        """Run one command and return its stdout; any non-zero exit is an error."""
        code, stdout, text = await self._exec(tool, args)
        if code != 0:
            raise SchedulerError(f"`{self._shown(tool, args)}` failed (exit {code}): {text}")
        return stdout

    def _shown(self, tool: str, args: Sequence[str]) -> str:
        return " ".join([*self._commands[tool], *args])

    async def _exec(self, tool: str, args: Sequence[str]) -> tuple[int, str, str]:
        """Run one command: (exit code, stdout, stdout + stderr on one line, shortened)."""
        command = [*self._prefix, *self._commands[tool], *args]
        shown = f"`{self._shown(tool, args)}`"
        env = {**os.environ, **self._env, "TZ": "UTC"}
        async with self._runners:
            code, out, err = await run_once(command, shown, self._timeout, env)
        stdout = out.decode(errors="replace")
        text = " ".join(f"{stdout} {err.decode(errors='replace')}".split())
        return (code, stdout, text[:500])
