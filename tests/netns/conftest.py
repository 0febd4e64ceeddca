"""The fixture every network-namespace test takes: skip (fail on CI) where they cannot run."""

from __future__ import annotations

import functools

import pytest

from tests.backends.oidc import skip_or_fail
from tests.netns.namespaces import Hosts, NetnsError, missing_requirements


@functools.cache
def _why_not() -> str | None:
    """Why namespaces cannot be made here, or ``None`` (tried once per run)."""
    reason = missing_requirements()
    if reason is not None:
        return reason
    probe = Hosts(["probe"])
    try:
        probe.create()
    except NetnsError as exc:  # root in a container without CAP_SYS_ADMIN, say
        return f"cannot make network namespaces here: {exc}"
    finally:
        probe.delete()
    return None


@pytest.fixture
def netns() -> None:
    """Skip the test, or fail it under ``CI=true``, without root, ``ip`` or ``nft``."""
    reason = _why_not()
    if reason is not None:
        skip_or_fail(reason)
