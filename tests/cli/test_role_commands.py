"""Example 3, the configuration half: ``broadgauge <role> init|client|server|encryption|...``.

Each test runs :func:`broadgauge.cli.main` in-process in a temporary HOME, XDG config
directory and working directory (invites land in the working directory).
"""

from __future__ import annotations

import io
import tomllib
from pathlib import Path

import pytest

from broadgauge.cli import main
from broadgauge.cli.roles import ROLES, default_config_path, default_data_dir
from broadgauge.jobs import AgentType
from broadgauge.runtime.config import AgentConfig
from broadgauge.wire import ConfigError, EnvironmentEncryption, Invite, SimpleEncryption


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh HOME with XDG dirs under it; the working directory is ``home/work``."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    return tmp_path


def config_of(home: Path, role: str) -> AgentConfig:
    return AgentConfig.load(home / "config" / "broadgauge" / f"{role}.toml")


def fails(capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    """``argv`` exits 1 with ``broadgauge: ...message...`` on stderr."""
    capsys.readouterr()
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("broadgauge: "), err
    assert message in err


# --- where configs live -------------------------------------------------------------------


def test_default_paths_follow_xdg_then_home() -> None:
    env = {"HOME": "/home/op", "XDG_CONFIG_HOME": "/etc/xdg-op", "XDG_DATA_HOME": "/srv/data"}
    assert default_config_path("portal", env) == Path("/etc/xdg-op/broadgauge/portal.toml")
    assert default_data_dir("portal", env) == Path("/srv/data/broadgauge/portal")
    bare = {"HOME": "/home/op"}
    assert default_config_path("bridge", bare) == Path("/home/op/.config/broadgauge/bridge.toml")
    assert default_data_dir("bridge", bare) == Path("/home/op/.local/share/broadgauge/bridge")
    relative = {"HOME": "/home/op", "XDG_CONFIG_HOME": "relative/dir"}  # ignored, as XDG says
    assert default_config_path("account", relative).parent == Path("/home/op/.config/broadgauge")


# --- init ---------------------------------------------------------------------------------

PORTS = {
    "portal": 8040,
    "provider": 8041,
    "bridge": 8044,
    "platform": 8045,
    "instance": 8046,
    "account": 8047,
    "scheduler": 8048,
    "filesystem": 8049,
}


@pytest.mark.parametrize("role", [role.name for role in ROLES])
def test_init_writes_the_roles_defaults(home: Path, role: str) -> None:
    assert main([role, "init"]) == 0
    path = home / "config" / "broadgauge" / f"{role}.toml"
    assert path.stat().st_mode & 0o777 == 0o600
    config = AgentConfig.load(path)
    assert config.agent is AgentType[role.upper()]
    service = config.service
    assert (service.name, service.ip, service.port) == (role, "127.0.0.1", PORTS[role])
    assert service.url == f"ws://127.0.0.1:{PORTS[role]}/"
    assert (service.clients, service.servers, service.encryption) == ((), (), None)
    # The file is OpenPortal's layout, including the required empty peer lists.
    document = tomllib.loads(path.read_text())
    assert document["service"]["clients"] == [] and document["service"]["servers"] == []


def test_init_refuses_to_overwrite_without_force(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["portal", "init"]) == 0
    fails(capsys, ["portal", "init", "-p", "9000"], "already exists; use --force")
    assert config_of(home, "portal").service.port == 8040
    argv = ["portal", "init", "-f", "-n", "web", "-i", "0.0.0.0", "-p", "9000"]
    argv += ["-u", "wss://portal.example.org"]
    assert main(argv) == 0
    service = config_of(home, "portal").service
    assert (service.name, service.ip, service.port) == ("web", "0.0.0.0", 9000)
    assert service.url == "wss://portal.example.org"


def test_init_on_all_interfaces_without_url_warns(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["provider", "init", "-i", "0.0.0.0"]) == 0
    assert "clients cannot dial; set it with --url" in capsys.readouterr().err


def test_config_option_works_on_every_subcommand(home: Path) -> None:
    other = home / "elsewhere" / "p.toml"
    invite = home / "inv.toml"
    assert main(["portal", "init", "-c", str(other)]) == 0
    assert not (home / "config").exists()
    assert main(["portal", "client", "-c", str(other), "--add", "x", "--ip", "10.0.0.1"]) == 0
    assert main(["portal", "client", "--config", str(other), "--rotate", "x"]) == 0
    assert main(["portal", "encryption", "-c", str(other), "--simple"]) == 0
    assert main(["portal", "secret", "-c", str(other), "-k", "s", "-v", "v"]) == 0
    assert main(["portal", "extra", "-c", str(other), "-k", "e", "-v", "v"]) == 0
    assert main(["provider", "init", "-c", str(home / "prov.toml")]) == 0
    assert main(["portal", "client", "-c", str(other), "-a", "prov", "-i", "::1"]) == 0
    Path("invite_prov_default.toml").rename(invite)
    assert main(["provider", "server", "-c", str(home / "prov.toml"), "--add", str(invite)]) == 0
    config = AgentConfig.load(other)
    assert [c.peer for c in config.service.clients] == ["x@default", "prov@default"]
    assert config.secret("s") == "v" and config.extra("e") == "v"
    assert AgentConfig.load(home / "prov.toml").service.server("portal") is not None


# --- clients ------------------------------------------------------------------------------


def test_client_add_writes_a_private_invite_and_the_matching_entry(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["portal", "init"]) == 0
    assert main(["portal", "client", "--add", "provider", "--ip", "10.0.0.0/24"]) == 0
    invite_file = home / "work" / "invite_provider_default.toml"
    assert invite_file.stat().st_mode & 0o777 == 0o600
    invite = Invite.load(invite_file)
    assert (invite.name, invite.url, invite.zone) == ("portal", "ws://127.0.0.1:8040/", "default")
    entry = config_of(home, "portal").service.client("provider")
    assert entry is not None
    assert (str(entry.ip), entry.zone) == ("10.0.0.0/24", "default")
    assert (entry.inner_key, entry.outer_key) == (invite.inner_key, invite.outer_key)

    assert main(["portal", "client", "-a", "lab", "-i", "10.1.1.1", "-z", "lab-zone"]) == 0
    assert (home / "work" / "invite_lab_lab-zone.toml").exists()
    custom = home / "handover" / "for-cluster.toml"
    assert main(["portal", "client", "-a", "c", "-i", "10.2.2.2", "--invitation", str(custom)]) == 0
    assert Invite.load(custom).name == "portal"

    capsys.readouterr()
    assert main(["portal", "client", "--list"]) == 0
    listed = capsys.readouterr().out
    assert listed.splitlines() == [
        "provider@default\t10.0.0.0/24",
        "lab@lab-zone\t10.1.1.1",
        "c@default\t10.2.2.2",
    ]
    assert invite.inner_key.to_table()["data"] not in listed


def test_client_add_refuses_a_duplicate_or_a_missing_ip(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["portal", "init"]) == 0
    fails(capsys, ["portal", "client", "--add", "p"], "needs --ip")
    fails(capsys, ["portal", "client", "--add", "p", "--ip", "nowhere"], "not an IP address")
    assert main(["portal", "client", "--add", "p", "--ip", "127.0.0.1"]) == 0
    before = config_of(home, "portal")
    fails(capsys, ["portal", "client", "--add", "p", "--ip", "127.0.0.2"], "use --rotate")
    assert config_of(home, "portal") == before


def test_client_rotate_and_remove(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["portal", "init"]) == 0
    assert main(["portal", "client", "--add", "p", "--ip", "127.0.0.1"]) == 0
    old = Invite.load("invite_p_default.toml")
    assert main(["portal", "client", "--rotate", "p"]) == 0
    new = Invite.load("rotate_p_default.toml")
    assert Path("rotate_p_default.toml").stat().st_mode & 0o777 == 0o600
    assert (new.name, new.url, new.zone) == (old.name, old.url, old.zone)
    assert new.inner_key != old.inner_key and new.outer_key != old.outer_key
    entry = config_of(home, "portal").service.client("p")
    assert entry is not None and (entry.inner_key, entry.outer_key) == (
        new.inner_key,
        new.outer_key,
    )
    fails(capsys, ["portal", "client", "--rotate", "q"], "no client called q")
    fails(capsys, ["portal", "client", "--remove", "q"], "no client called q")
    assert main(["portal", "client", "--remove", "p"]) == 0
    assert config_of(home, "portal").service.clients == ()


# --- servers ------------------------------------------------------------------------------


def test_server_add_rotate_remove(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["portal", "init"]) == 0
    assert main(["provider", "init"]) == 0
    assert main(["portal", "client", "--add", "provider", "--ip", "127.0.0.1"]) == 0
    fails(capsys, ["provider", "server", "--add", "nope.toml"], "cannot read invite")
    fails(
        capsys,
        ["provider", "server", "--add", "invite_provider_default.toml", "--zone", "other"],
        "does not match",
    )
    assert main(["provider", "server", "--add", "invite_provider_default.toml"]) == 0
    invite = Invite.load("invite_provider_default.toml")
    entry = config_of(home, "provider").service.server("portal")
    assert entry is not None
    assert (entry.url, entry.zone, entry.inner_key) == (invite.url, "default", invite.inner_key)
    fails(capsys, ["provider", "server", "--add", "invite_provider_default.toml"], "already exists")

    capsys.readouterr()
    assert main(["provider", "server", "--list"]) == 0
    listed = capsys.readouterr().out
    assert listed == "portal@default\tws://127.0.0.1:8040/\n"

    # A rotate file replaces the keys of the entry with the same name and zone, nothing else.
    assert main(["portal", "client", "--rotate", "provider"]) == 0
    rotated = Invite.load("rotate_provider_default.toml")
    moved = rotated.dumps().replace("ws://127.0.0.1:8040/", "ws://10.9.9.9:1/")
    Path("rotate_provider_default.toml").write_text(moved)
    assert main(["provider", "server", "--rotate", "rotate_provider_default.toml"]) == 0
    entry = config_of(home, "provider").service.server("portal")
    assert entry is not None
    assert (entry.inner_key, entry.outer_key) == (rotated.inner_key, rotated.outer_key)
    assert entry.url == "ws://127.0.0.1:8040/"

    assert main(["provider", "server", "--remove", "portal"]) == 0
    assert config_of(home, "provider").service.servers == ()
    fails(
        capsys,
        ["provider", "server", "--rotate", "rotate_provider_default.toml"],
        "no server portal@default to rotate",
    )
    fails(capsys, ["provider", "server", "--remove", "portal"], "no server called portal")


# --- secrets and extras -------------------------------------------------------------------


def test_secret_needs_an_encryption_scheme(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["account", "init"]) == 0
    fails(capsys, ["account", "secret", "-k", "pw", "-v", "x"], "set an encryption scheme")
    assert config_of(home, "account").extras == {}


def test_environment_secret_is_stored_encrypted(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["account", "init"]) == 0
    assert main(["account", "encryption", "--environment", "BG_TEST_PASSWORD"]) == 0
    assert config_of(home, "account").service.encryption == EnvironmentEncryption(
        "BG_TEST_PASSWORD"
    )
    monkeypatch.delenv("BG_TEST_PASSWORD", raising=False)
    fails(capsys, ["account", "secret", "-k", "pw", "-v", "x"], "BG_TEST_PASSWORD")

    monkeypatch.setenv("BG_TEST_PASSWORD", "correct horse")
    assert main(["account", "secret", "-k", "freeipa-password", "-v", "Secret123"]) == 0
    text = (home / "config" / "broadgauge" / "account.toml").read_text()
    assert "Secret123" not in text
    stored = tomllib.loads(text)["extras"]["freeipa-password"]
    assert len(stored) == 2 * (24 + len('"Secret123"') + 16)  # hex(nonce ‖ ciphertext ‖ tag)
    config = config_of(home, "account")
    assert config.secret("freeipa-password", {"BG_TEST_PASSWORD": "correct horse"}) == "Secret123"
    with pytest.raises(ConfigError, match="cannot decrypt"):
        config.secret("freeipa-password", {"BG_TEST_PASSWORD": "wrong"})


def test_simple_secret_extra_and_stdin(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["filesystem", "init"]) == 0
    assert main(["filesystem", "encryption", "--simple"]) == 0
    assert "only obfuscates" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO("from stdin\n"))
    assert main(["filesystem", "secret", "-k", "token", "-v", "-"]) == 0
    assert main(["filesystem", "extra", "-k", "exec-prefix", "-v", "sudo -n"]) == 0
    config = config_of(home, "filesystem")
    assert config.service.encryption == SimpleEncryption()
    assert config.secret("token") == "from stdin"
    assert config.extra("exec-prefix") == "sudo -n"
    assert "from stdin" not in (home / "config" / "broadgauge" / "filesystem.toml").read_text()
    # Changing the scheme afterwards is allowed, with a warning about existing secrets.
    assert main(["filesystem", "encryption", "-e", "FS_PASSWORD"]) == 0
    assert "can no longer be read" in capsys.readouterr().err


# --- errors -------------------------------------------------------------------------------


def test_missing_wrong_or_broken_configs_fail_clearly(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fails(capsys, ["instance", "client", "--list"], "create one with `broadgauge instance init`")
    fails(capsys, ["instance", "run"], "no config at")
    assert main(["portal", "init"]) == 0
    portal_config = str(home / "config" / "broadgauge" / "portal.toml")
    fails(capsys, ["provider", "server", "--list", "-c", portal_config], "Portal agent, not")
    broken = home / "broken.toml"
    broken.write_text("agent = 'Portal'\n[service\n")
    fails(capsys, ["portal", "client", "--list", "-c", str(broken)], "not valid TOML")


def test_a_usage_error_is_argparses(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["portal", "client", "--add", "a", "--remove", "b"])
    assert stopped.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
