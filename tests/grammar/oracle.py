"""Client for :mod:`tests.grammar.oracle_worker` with crash detection and restart."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_WORKER = Path(__file__).with_name("oracle_worker.py")


@dataclass(frozen=True)
class Answer:
    """One oracle answer: a value, an error message, or a crash (process abort)."""

    value: Any = None
    error: str | None = None
    crashed: bool = False

    @property
    def ok(self) -> bool:
        """True when the oracle accepted the input."""
        return self.error is None and not self.crashed


class Oracle:
    """A restartable subprocess running the official ``openportal`` wheel."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[str] | None = None
        self.crashes = 0
        self.calls = 0

    def _start(self) -> subprocess.Popen[str]:
        if self._proc is None or self._proc.poll() is not None:
            self._proc = subprocess.Popen(
                [sys.executable, str(_WORKER)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                encoding="utf-8",
            )
        return self._proc

    def ask(self, request: dict[str, Any]) -> Answer:
        """Send one request; a dead worker yields ``Answer(crashed=True)``."""
        self.calls += 1
        proc = self._start()
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(json.dumps(request) + "\n")
            proc.stdin.flush()
            line = proc.stdout.readline()
        except (BrokenPipeError, OSError):
            line = ""
        if not line:
            proc.wait()
            self._proc = None
            self.crashes += 1
            return Answer(crashed=True)
        reply = json.loads(line)
        if "err" in reply:
            return Answer(error=reply["err"])
        return Answer(value=reply["ok"])

    def instruction(self, text: str) -> Answer:
        """``str(openportal.Instruction(text))``."""
        return self.ask({"op": "instruction", "text": text})

    def command(self, text: str) -> Answer:
        """The canonical ``command`` of a Job deserialised with ``text``."""
        return self.ask({"op": "command", "text": text})

    def decode(self, result: str | None, result_type: str) -> Answer:
        """Decode a Complete job's result with the wheel and re-encode it."""
        return self.ask({"op": "decode", "result": result, "result_type": result_type})

    def encode(self, kind: str, json_text: str) -> Answer:
        """Build a wheel value of ``kind`` from JSON and encode it as a result."""
        return self.ask({"op": "encode", "kind": kind, "json": json_text})

    def merge(self, base: str, other: str) -> Answer:
        """``AwardDetails.merge`` of two AwardDetails JSON texts."""
        return self.ask({"op": "merge", "base": base, "other": other})

    def notification(self, text: str) -> Answer:
        """``str(openportal.Notification.parse(text))``."""
        return self.ask({"op": "notification", "text": text})

    def notification_json(self, text: str) -> Answer:
        """``Notification.from_json(text).to_json()``."""
        return self.ask({"op": "notification_json", "text": text})

    def close(self) -> None:
        """Stop the worker."""
        if self._proc is not None and self._proc.poll() is None:
            assert self._proc.stdin is not None
            self._proc.stdin.close()
            self._proc.wait(timeout=10)
        self._proc = None
