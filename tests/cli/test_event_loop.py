"""The event loop an agent runs on: asyncio's own, or uvloop from the ``fast`` extra."""

from __future__ import annotations

import asyncio
import sys
import warnings

import pytest

from broadgauge.runtime.loop import EventLoopUnavailable, run


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_asyncio_is_the_default() -> None:
    assert run(_loop_module()).startswith("asyncio")


def test_uvloop_runs_the_coroutine_on_a_uvloop_loop() -> None:
    assert run(_loop_module(), "uvloop") == "uvloop"


def test_without_uvloop_the_error_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # as if not installed: import fails
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the coroutine is closed, not left un-awaited
        with pytest.raises(EventLoopUnavailable, match=r"pip install 'broadgauge\[fast\]'"):
            run(_loop_module(), "uvloop")


def test_an_unknown_loop_is_refused_by_name() -> None:
    with pytest.raises(EventLoopUnavailable, match="unknown event loop 'trio'"):
        run(_loop_module(), "trio")
