"""A helper process that answers JSON requests: one per line on stdin, one per line on stdout.

The harness's helpers inside the namespaces (the portal-software driver, the latency proxies)
are such processes.  Every request carries an ``id``; the answer with that ``id`` completes
the request's future, in whatever order answers come.  Any other line (stdout or stderr) is
kept as the process's log, for diagnostics.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

#: Lines longer than this end the reader (a Job is a few kilobytes).
LINE_LIMIT = 4 * 1024 * 1024


class ChildError(RuntimeError):
    """The helper process failed, exited, or answered with an error."""


class JsonChild:
    """A running helper process and the requests waiting for its answers."""

    def __init__(self, name: str, process: asyncio.subprocess.Process) -> None:
        self.name = name
        self.process = process
        self.lines: list[str] = []
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._seen = asyncio.Condition()
        assert process.stdout is not None and process.stderr is not None
        self._readers = [
            asyncio.create_task(self._read(process.stdout, answers=True)),
            asyncio.create_task(self._read(process.stderr, answers=False)),
        ]

    @classmethod
    async def start(
        cls,
        name: str,
        command: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: Path,
        ready: str,
        timeout: float,
    ) -> JsonChild:
        """Start ``command`` and wait until it prints a line containing ``ready``."""
        process = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=dict(env),
            cwd=cwd,
            limit=LINE_LIMIT,
        )
        child = cls(name, process)
        try:
            await child.wait_for(ready, timeout)
        except BaseException:
            await child.stop()
            raise
        return child

    @property
    def pid(self) -> int:
        """The process id (``ip netns exec`` execs, so this is the helper itself)."""
        return self.process.pid

    @property
    def output(self) -> str:
        """Everything it logged so far (answers excluded)."""
        return "\n".join(self.lines)

    async def _read(self, stream: asyncio.StreamReader, *, answers: bool) -> None:
        while line := await stream.readline():
            text = line.decode(errors="replace").rstrip("\n")
            answer = self._answer(text) if answers else None
            if answer is None:
                async with self._seen:
                    self.lines.append(text)
                    self._seen.notify_all()
                continue
            future = self._waiting.pop(answer["id"], None)
            if future is not None and not future.done():
                future.set_result(answer)
        # The process closed its output: nobody will answer what is still waiting.
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(ChildError(f"{self.name} exited:\n{self.output}"))
        self._waiting.clear()
        async with self._seen:
            self._seen.notify_all()

    @staticmethod
    def _answer(text: str) -> dict[str, Any] | None:
        if not text.startswith("{"):
            return None
        try:
            value = json.loads(text)
        except ValueError:
            return None
        return value if isinstance(value, dict) and isinstance(value.get("id"), int) else None

    async def wait_for(self, text: str, timeout: float) -> None:
        """Wait until a logged line contains ``text``; :class:`ChildError` otherwise."""
        try:
            async with asyncio.timeout(timeout), self._seen:
                await self._seen.wait_for(
                    lambda: (
                        any(text in line for line in self.lines)
                        or all(reader.done() for reader in self._readers)
                    )
                )
        except TimeoutError:
            raise ChildError(f"{text!r} never came from {self.name}:\n{self.output}") from None
        if not any(text in line for line in self.lines):
            raise ChildError(f"{self.name} exited before {text!r}:\n{self.output}")

    async def request(self, answer_timeout: float, /, **fields: Any) -> dict[str, Any]:
        """Send one request; its answer (:class:`ChildError` if it says ``error``)."""
        stdin = self.process.stdin
        if stdin is None or self.process.returncode is not None:
            raise ChildError(f"{self.name} is not running:\n{self.output}")
        request_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        stdin.write(json.dumps({"id": request_id, **fields}).encode() + b"\n")
        try:
            await stdin.drain()
            async with asyncio.timeout(answer_timeout):
                answer = await future
        except TimeoutError:
            raise ChildError(
                f"{self.name} did not answer {fields} in {answer_timeout:g} s"
            ) from None
        finally:
            self._waiting.pop(request_id, None)
        if "error" in answer:
            raise ChildError(f"{self.name}: {answer['error']}")
        return answer

    async def stop(self, timeout: float = 10.0) -> int:
        """Close its stdin (it exits when stdin ends), SIGKILL it if it does not; its status."""
        if self.process.stdin is not None and not self.process.stdin.is_closing():
            self.process.stdin.close()
        try:
            async with asyncio.timeout(timeout):
                status = await self.process.wait()
        except TimeoutError:
            self.kill()
            status = await self.process.wait()
        await asyncio.gather(*self._readers, return_exceptions=True)
        return status

    def kill(self) -> None:
        """SIGKILL it, by its pid, if it is still running."""
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):  # it has just exited by itself
                os.kill(self.process.pid, signal.SIGKILL)
