"""The suite-wide guard of ``tests/unretrieved.py`` fails what it should, and only that."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

PLUGIN = Path(__file__).with_name("unretrieved.py")

INNER = """
import asyncio
import gc


def lose_one() -> None:
    async def fail() -> None:
        raise LookupError("nobody asked for me")

    loop = asyncio.new_event_loop()
    try:
        task = loop.create_task(fail())
        loop.run_until_complete(asyncio.sleep(0))
    finally:
        loop.close()
    del task
    gc.collect()


def test_quiet() -> None:
    assert True


def test_loses_a_task_exception() -> None:
    lose_one()


def test_retrieves_it() -> None:
    async def fail() -> None:
        raise LookupError("handled")

    async def main() -> None:
        task = asyncio.ensure_future(fail())
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())
"""


def test_a_test_that_loses_a_task_exception_fails_and_the_others_pass(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeconftest(PLUGIN.read_text(encoding="utf-8"))
    pytester.makepyfile(test_inner=INNER)

    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")

    result.assert_outcomes(passed=3, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_loses_a_task_exception*",
            "*1 asyncio exception(s) were never retrieved during this test*",
            "*LookupError: nobody asked for me*",
        ]
    )


def test_one_surfacing_only_at_the_end_fails_the_run(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(PLUGIN.read_text(encoding="utf-8"))
    pytester.makepyfile(
        test_late="""
import asyncio
import gc

KEPT = []


def test_keeps_a_failed_task_alive() -> None:
    async def fail() -> None:
        raise LookupError("found at the end")

    gc.disable()  # only the session's own collection may find it
    loop = asyncio.new_event_loop()
    task = loop.create_task(fail())
    loop.run_until_complete(asyncio.sleep(0))
    loop.close()
    # A cycle: only the collector at the session's end frees it.
    holder = [task]
    holder.append(holder)
    KEPT.append(holder)
    KEPT.clear()
"""
    )

    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")

    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        ["*unretrieved task exceptions*", "*LookupError: found at the end*"]
    )
