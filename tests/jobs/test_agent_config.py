"""The agent config file: type, service, extras, encrypted secrets, unknown tables kept."""

from __future__ import annotations

from dataclasses import replace

import pytest

from broadgauge.jobs import AgentType
from broadgauge.runtime.config import AgentConfig
from broadgauge.wire import ConfigError, EnvironmentEncryption, ServiceConfig, SimpleEncryption

REFERENCE_STYLE = """
agent = "Filesystem"

[service]
name = "filesystem"
url = "ws://localhost:8047"
ip = "127.0.0.1"
port = 8047
servers = []
clients = []

[service.encryption.Simple]

[user_volumes.home]
roots = ["/home"]
is_home = true

[extras]
exec-prefix = "sudo"
"""


def test_reference_style_config_loads_and_keeps_unknown_tables(tmp_path) -> None:  # type: ignore[no-untyped-def]
    config = AgentConfig.loads(REFERENCE_STYLE)
    assert config.agent is AgentType.FILESYSTEM
    assert config.service.name == "filesystem"
    assert config.extra("exec-prefix") == "sudo"
    assert config.other == {"user_volumes": {"home": {"roots": ["/home"], "is_home": True}}}
    path = tmp_path / "filesystem.toml"
    config.save(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert AgentConfig.load(path) == config


def test_secrets_are_encrypted_and_need_the_right_password() -> None:
    service = ServiceConfig.create("account")
    config = AgentConfig(AgentType.ACCOUNT, service)
    with pytest.raises(ConfigError, match="encryption scheme"):
        config.with_secret("password", "hunter2")
    scheme = EnvironmentEncryption("BG_TEST_PASSWORD")
    config = AgentConfig(AgentType.ACCOUNT, replace(service, encryption=scheme))
    stored = config.with_secret("password", "hunter2", {"BG_TEST_PASSWORD": "right"})
    assert "hunter2" not in stored.dumps()
    assert stored.secret("password", {"BG_TEST_PASSWORD": "right"}) == "hunter2"
    with pytest.raises(ConfigError, match="wrong password"):
        stored.secret("password", {"BG_TEST_PASSWORD": "wrong"})
    with pytest.raises(ConfigError, match="BG_TEST_PASSWORD"):
        stored.secret("password", {})
    with pytest.raises(ConfigError, match="no secret called"):
        stored.secret("missing", {"BG_TEST_PASSWORD": "right"})


def test_simple_scheme_uses_the_service_name() -> None:
    service = ServiceConfig.create("account")
    config = AgentConfig(
        AgentType.ACCOUNT,
        replace(service, encryption=SimpleEncryption()),
    )
    assert config.with_secret("k", "v").secret("k") == "v"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[service]\nname='x'", "agent"),
        ('agent = "Wizard"\n[service]\nname="x"', "unknown variant"),
        ('agent = "Portal"', r"\[service\]"),
        (REFERENCE_STYLE.replace('exec-prefix = "sudo"', "exec-prefix = 3"), "extras"),
        ("agent = [", "not valid TOML"),
    ],
)
def test_bad_configs_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        AgentConfig.loads(text)
