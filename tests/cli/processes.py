"""Run ``broadgauge`` as a real process and watch what it logs."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

BROADGAUGE = [sys.executable, "-m", "broadgauge"]


def run_broadgauge(
    *args: str, timeout: float = 30, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``broadgauge ARGS`` to the end; its exit status and its output, as text."""
    return subprocess.run(
        [*BROADGAUGE, *args], capture_output=True, text=True, timeout=timeout, env=env, check=False
    )


#: Ports already handed out in this test run.
_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A TCP port that was free a moment ago on loopback, and not handed out before.

    The kernel often offers the same free port twice in a row, so a test that asks for
    several ports before it binds any (a site's agents, configured first, started later)
    would otherwise give two agents one port.
    """
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port: int = probe.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


class Broadgauge:
    """A running ``broadgauge ...`` process whose stdout and stderr are collected live."""

    def __init__(
        self,
        *args: str,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        wrapper: Sequence[str] = (),
    ):
        """Start ``broadgauge ARGS``, behind ``wrapper`` if given (``ip netns exec NS``,
        which execs, so the process's pid is still the agent's)."""
        self.args = args
        self.process = subprocess.Popen(
            [*wrapper, *BROADGAUGE, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ if env is None else env),
            cwd=cwd,
        )
        self._lines: list[str] = []
        self._changed = threading.Condition()
        assert self.process.stdout is not None and self.process.stderr is not None
        self._readers = [
            threading.Thread(target=self._read, args=(stream,), daemon=True)
            for stream in (self.process.stdout, self.process.stderr)
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            with self._changed:
                self._lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def output(self) -> str:
        """Everything printed so far, stdout and stderr interleaved as read."""
        with self._changed:
            return "\n".join(self._lines)

    def wait_for(self, text: str, timeout: float = 15.0) -> None:
        """Wait until a line containing ``text`` appears; fail with the output otherwise."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not any(text in line for line in self._lines):
                left = deadline - time.monotonic()
                if left <= 0 or (self.process.poll() is not None and not self._alive_readers()):
                    raise AssertionError(
                        f"{text!r} never appeared from broadgauge {' '.join(self.args)}; "
                        f"exit {self.process.poll()}; output:\n" + "\n".join(self._lines)
                    )
                self._changed.wait(min(left, 0.1))

    def _alive_readers(self) -> bool:
        return any(reader.is_alive() for reader in self._readers)

    def finish(self, timeout: float = 15.0) -> int:
        """Wait for the process to end; its exit status (output fully read)."""
        status = self.process.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(timeout=5)
        return status

    def terminate(self, timeout: float = 15.0) -> int:
        """Send SIGTERM and wait; the exit status."""
        self.process.send_signal(signal.SIGTERM)
        return self.finish(timeout)

    def kill(self) -> None:
        """Make sure the process is gone (cleanup after a failed test)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
