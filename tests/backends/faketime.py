"""libfaketime for one process: its clock runs ahead of everyone else's.

:func:`faketime_env` is the environment ``faketime -f OFFSET`` gives the program it runs, to
set on an agent's own process (the ``faketime`` command forks and waits, so the pid a test
would signal would be faketime's, not the agent's).  Debian's ``faketime`` package; under
``CI=true`` its absence is a failure, elsewhere the test is skipped.
"""

from __future__ import annotations

import shutil
import subprocess

from tests.backends.oidc import skip_or_fail


def faketime_env(offset: str) -> dict[str, str]:
    """``LD_PRELOAD`` and ``FAKETIME`` for a clock ``offset`` ahead (``+5m``, ``+300s``)."""
    command = shutil.which("faketime")
    if command is None:
        skip_or_fail("faketime is not installed (apt-get install faketime)")
        raise AssertionError("unreachable")
    shown = subprocess.run(
        [command, "-f", offset, "env"], capture_output=True, text=True, check=True
    ).stdout
    values = dict(line.split("=", 1) for line in shown.splitlines() if "=" in line)
    return {key: values[key] for key in ("LD_PRELOAD", "FAKETIME")}
