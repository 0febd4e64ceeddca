"""Shared fixtures: a filesystem role over real directories under ``tmp_path``.

The tests run as root (as the real agent does), so ownership is checked for real with
numbers no account on the machine has (23456 ...), supplied by a static resolver.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from broadgauge.agents.filesystem.agent import FilesystemRole, build_engines
from broadgauge.agents.filesystem.ids import StaticResolver
from broadgauge.agents.filesystem.layout import Layout, parse_layout
from broadgauge.grammar import UserMapping
from broadgauge.jobs import AgentType
from broadgauge.jobs.directions import Link
from broadgauge.jobs.job import Job
from broadgauge.runtime.agent import Envelope, JobRefused, PeerInfo
from broadgauge.wire import PeerId
from tests.jobs.agent_helpers import make_agent

UID = 23456
OTHER_UID = 23457
GID = 34567
USER = UserMapping.parse("alice.proj.portal:alice.proj:portal.proj")
OTHER = UserMapping.parse("bob.proj.portal:bob.proj:portal.proj")
PROJECT = USER.project_mapping
RESOLVER = StaticResolver({"alice.proj": UID, "bob.proj": OTHER_UID}, {"portal.proj": GID})

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="ownership checks need root")


def envelope(text: str, sender: str = "cluster") -> Envelope:
    """An envelope as the runtime hands it over: ``text`` sent by the instance above."""
    job = Job.parse(f"{sender}.filesystem {text}", now=time.time())
    return Envelope(
        "filesystem", PeerInfo(PeerId(sender, "default"), Link.UP, AgentType.INSTANCE), job
    )


def tables(root: Path, **extra: Any) -> dict[str, Any]:
    """A home volume (ledger quotas, 10 GB max), a two-root scratch volume, a project volume."""
    config: dict[str, Any] = {
        "quota_engines": {"ledger": {"type": "ledger", "database": str(root / "q.sqlite")}},
        "user_volumes": {
            "home": {
                "roots": [str(root / "home")],
                "is_home": True,
                "quota_engine": "ledger",
                "max_quota": "10GB",
            },
            "scratch": {"roots": [str(root / "scratch1"), str(root / "scratch2")]},
        },
        "project_volumes": {
            "projects": {"roots": [str(root / "projects")], "quota_engine": "ledger"}
        },
    }
    for key, value in extra.items():
        config[key] = value
    return config


@dataclass
class Sandbox:
    """A role over ``root`` with helpers to drive it and inspect the result."""

    root: Path
    role: FilesystemRole
    audit: list[str] = field(default_factory=list)

    async def run(self, text: str) -> object:
        """Dispatch ``text`` as if it came from the instance; returns the handler's value."""
        return await self.role.dispatch(envelope(text))

    async def assert_refused(self, text: str, match: str) -> None:
        """Dispatch ``text``, which must be refused with a message that ``match`` finds."""
        with pytest.raises(JobRefused, match=match):
            await self.run(text)

    def home(self, name: str = "alice.proj") -> Path:
        return self.root / "home" / "proj" / name


def make_sandbox(root: Path, layout: Layout | None = None, **options: Any) -> Sandbox:
    """Build the roots and a role over them."""
    for name in ("home", "scratch1", "scratch2", "projects"):
        (root / name).mkdir(parents=True, exist_ok=True)
    layout = layout if layout is not None else parse_layout(tables(root))
    audit: list[str] = []
    agent = make_agent("filesystem", AgentType.FILESYSTEM)
    role = FilesystemRole(
        agent, layout, RESOLVER, build_engines(layout), audit=audit.append, **options
    )
    return Sandbox(root, role, audit)


@pytest.fixture
def sandbox(tmp_path: Path) -> Sandbox:
    return make_sandbox(tmp_path / "fs")


@pytest.fixture
def strict_umask() -> Iterator[None]:
    """A umask that would strip every group and other bit, to prove modes are explicit."""
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)
