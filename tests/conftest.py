"""Fixtures shared by the whole suite.

The real back ends (a slapd, a Slurm accounting stack) are session fixtures registered here,
once, so that every test module that asks for one shares the same running service.  Each
skips with its reason when its programs are missing, and fails instead when ``CI=true``.

``tests.unretrieved`` fails any test, and the run, in which asyncio reports a task exception
that was never retrieved.
"""

pytest_plugins = ["tests.backends.slapd", "tests.backends.slurm", "tests.unretrieved"]
