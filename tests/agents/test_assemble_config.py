"""Settings read when an agent is put together: timers, and what a filesystem agent refuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from broadgauge.agents.assemble import assemble
from broadgauge.jobs.agent_type import AgentType
from broadgauge.runtime.agent import Agent
from broadgauge.runtime.config import AgentConfig
from broadgauge.wire import ConfigError, ServiceConfig, Timers

#: A filesystem agent's config file with nothing but its service.
CONFIG = AgentConfig(AgentType.FILESYSTEM, ServiceConfig.create("filesystem", port=0), {}).dumps()


def test_a_timers_table_changes_only_the_timers_it_names() -> None:
    config = AgentConfig.loads(CONFIG + "\n[timers]\nreconnect_max = 30\nkeepalive = 10.5\n")
    assert config.timers() == Timers(reconnect_max=30.0, keepalive=10.5)
    assert AgentConfig.loads(CONFIG).timers() == Timers()
    # Kept when the config is saved again.
    assert "[timers]" in config.dumps()


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("reconect_max = 30", "unknown keys ['reconect_max']"),
        ("keepalive = 0", "timers.keepalive must be a number of seconds > 0"),
        ("keepalive = true", "timers.keepalive must be a number of seconds > 0"),
        ('keepalive = "10"', "timers.keepalive must be a number of seconds > 0"),
        ("reconnect_initial = 90", "reconnect_initial must not exceed"),
    ],
)
def test_bad_timers_say_what_is_wrong(table: str, message: str) -> None:
    config = AgentConfig.loads(CONFIG + "\n[timers]\n" + table + "\n")
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        config.timers()


async def test_a_filesystem_agent_with_only_timers_still_gets_its_sandbox(tmp_path: Path) -> None:
    config = AgentConfig.loads(CONFIG + "\n[timers]\nreconnect_max = 30\n")
    agent = Agent(config, timers=config.timers())
    role = assemble(agent, tmp_path)
    assert role.filesystem is not None
    assert {v.name for v in role.filesystem.layout.volumes()} == {"home", "projects"}


def test_exec_prefix_is_refused_with_what_to_do_instead(tmp_path: Path) -> None:
    service = ServiceConfig.create("filesystem", port=0)
    config = AgentConfig(AgentType.FILESYSTEM, service, {"exec-prefix": "sudo"})
    with pytest.raises(ConfigError, match="exec-prefix is not supported; run the filesystem"):
        assemble(Agent(config), tmp_path)
