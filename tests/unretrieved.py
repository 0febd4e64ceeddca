"""A pytest plugin: any "exception was never retrieved" asyncio logs fails the run.

asyncio logs "Task exception was never retrieved" (or "Future ...") when a task that failed
is garbage collected without anyone having looked at its exception: an error that nobody
handled, and that the caller was never told about.  The suite must not leave any.

A handler on the ``asyncio`` logger collects those records.  Each test's teardown fails the
test that was running when one appeared (most are logged at once: a finished task is freed as
soon as the last reference to it goes); at the end of the session a garbage collection
brings out the late ones, which fail the run with their tracebacks.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator

import pytest

MARKER = "exception was never retrieved"


class Unretrieved(logging.Handler):
    """Keeps every asyncio record that reports an exception nobody retrieved."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []
        self.reported = 0
        #: Those logged between tests (attributed to none): reported at the session's end.
        self.between: list[str] = []
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        """Keep ``record`` if it is one of asyncio's unretrieved-exception reports."""
        if MARKER in record.getMessage():
            self.records.append(record)

    def take_new(self) -> list[str]:
        """The formatted records not reported yet (tracebacks included)."""
        new = self.records[self.reported :]
        self.reported = len(self.records)
        return [self.format(record) for record in new]


_HANDLER = Unretrieved()


def pytest_configure(config: pytest.Config) -> None:
    """Watch the asyncio logger for the whole session."""
    logging.getLogger("asyncio").addHandler(_HANDLER)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Stop watching."""
    logging.getLogger("asyncio").removeHandler(_HANDLER)


@pytest.fixture(autouse=True)
def _no_unretrieved_task_exceptions() -> Iterator[None]:
    """Fail the test during which an unretrieved task exception was logged."""
    # One logged between tests belongs to no test: the end of the session reports it.
    _HANDLER.between += _HANDLER.take_new()
    yield
    found = _HANDLER.take_new()
    if found:
        pytest.fail(
            f"{len(found)} asyncio exception(s) were never retrieved during this test:\n\n"
            + "\n\n".join(found),
            pytrace=False,
        )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Collect garbage so late reports come out; any not yet reported fails the run."""
    gc.collect()
    late = _HANDLER.between + _HANDLER.take_new()
    if not late:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    text = "\n\n".join(late)
    message = f"{len(late)} asyncio exception(s) were never retrieved outside any test:\n{text}"
    if reporter is not None:
        reporter.write_sep("=", "unretrieved task exceptions", red=True)
        reporter.write_line(message)
    else:
        print(message)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
