"""``broadgauge <role> ...``: the same subcommands for every agent role (notes §2.1).

Each role (portal, provider, platform, instance, account, filesystem, scheduler, bridge)
gets ``init``, ``client``, ``server``, ``encryption``, ``secret``, ``extra`` and ``run``.
They all work on one config file, by default ``$XDG_CONFIG_HOME/broadgauge/<role>.toml``
(``~/.config/broadgauge/<role>.toml``); ``-c/--config FILE`` picks another.

Peer changes go through a :class:`~broadgauge.wire.Service` that is never started, so the CLI
makes exactly the entries, keys and invites a running service would; the changed config is
then saved with :meth:`~broadgauge.runtime.config.AgentConfig.save` (mode 0600, atomic).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from broadgauge.jobs import AgentType
from broadgauge.runtime.config import AgentConfig
from broadgauge.runtime.logs import FORMATS, configure_logging
from broadgauge.runtime.loop import EVENT_LOOPS
from broadgauge.wire import (
    ConfigError,
    EnvironmentEncryption,
    Invite,
    Service,
    ServiceConfig,
    SimpleEncryption,
)


@dataclass(frozen=True)
class Role:
    """An agent role as the command line knows it."""

    name: str
    agent_type: AgentType
    port: int
    summary: str


ROLES: tuple[Role, ...] = (
    Role("portal", AgentType.PORTAL, 8040, "entry point of a user portal"),
    Role("provider", AgentType.PROVIDER, 8041, "an infrastructure provider (routes jobs)"),
    Role("platform", AgentType.PLATFORM, 8045, "a class of platforms, e.g. clusters"),
    Role("instance", AgentType.INSTANCE, 8046, "one instance of a platform, e.g. a cluster"),
    Role("account", AgentType.ACCOUNT, 8047, "user accounts of an instance"),
    Role("filesystem", AgentType.FILESYSTEM, 8049, "directories and quotas of an instance"),
    Role("scheduler", AgentType.SCHEDULER, 8048, "the batch scheduler of an instance"),
    Role("bridge", AgentType.BRIDGE, 8044, "the link between a web portal and its portal agent"),
)
ROLES_BY_NAME: dict[str, Role] = {role.name: role for role in ROLES}

DEFAULT_IP = "127.0.0.1"


# --- where things live ---------------------------------------------------------------------


def _xdg_dir(variable: str, fallback: tuple[str, ...], environ: Mapping[str, str]) -> Path:
    value = environ.get(variable, "")
    if value and os.path.isabs(value):  # the XDG spec says to ignore relative paths
        return Path(value)
    home = environ.get("HOME")
    return Path(home).joinpath(*fallback) if home else Path.home().joinpath(*fallback)


def default_config_path(role: str, environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_CONFIG_HOME/broadgauge/<role>.toml`` (``~/.config`` when unset)."""
    env = os.environ if environ is None else environ
    return _xdg_dir("XDG_CONFIG_HOME", (".config",), env) / "broadgauge" / f"{role}.toml"


def default_data_dir(role: str, environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_DATA_HOME/broadgauge/<role>/`` (``~/.local/share`` when unset)."""
    env = os.environ if environ is None else environ
    return _xdg_dir("XDG_DATA_HOME", (".local", "share"), env) / "broadgauge" / role


def invite_path(kind: str, name: str, zone: str) -> Path:
    """``./invite_<name>_<zone>.toml`` or ``./rotate_<name>_<zone>.toml`` (as OpenPortal)."""
    return Path(f"{kind}_{name}_{zone}.toml")


# --- the parser ----------------------------------------------------------------------------


def add_role_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add one command per role, each with the same subcommands."""
    for role in ROLES:
        _add_role(commands, role)


def _add_role(commands: argparse._SubParsersAction[argparse.ArgumentParser], role: Role) -> None:
    parser = commands.add_parser(
        role.name,
        help=f"{role.summary} ({role.agent_type.value} agent)",
        description=f"Configure and run a {role.name} agent (type {role.agent_type.value}).",
    )
    config = argparse.ArgumentParser(add_help=False)
    config.add_argument(
        "-c",
        "--config",
        type=Path,
        metavar="FILE",
        help=f"config file (default: {_display(default_config_path(role.name))})",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    init = actions.add_parser("init", parents=[config], help="write a new config with defaults")
    init.add_argument("-n", "--name", default=role.name, help=f"agent name (default {role.name})")
    init.add_argument(
        "-u", "--url", help="URL clients dial, put in invites (default ws://IP:PORT/)"
    )
    init.add_argument(
        "-i", "--ip", default=DEFAULT_IP, help=f"address to listen on (default {DEFAULT_IP})"
    )
    init.add_argument(
        "-p", "--port", type=int, default=role.port, help=f"port to listen on (default {role.port})"
    )
    init.add_argument(
        "-k",
        "--healthcheck-port",
        type=int,
        help="also answer GET /health on this port (no auth; for load balancers)",
    )
    init.add_argument("-f", "--force", action="store_true", help="overwrite an existing config")
    if role.agent_type is AgentType.BRIDGE:
        _add_bridge_options(init, actions, config)

    client = actions.add_parser(
        "client", parents=[config], help="manage the peers that connect to this agent"
    )
    what = client.add_mutually_exclusive_group(required=True)
    what.add_argument("-a", "--add", metavar="NAME", help="allow a new client; write its invite")
    # Short options as OpenPortal's: -r removes, -R rotates.
    what.add_argument("-R", "--rotate", metavar="NAME", help="give a client new keys")
    what.add_argument("-r", "--remove", metavar="NAME", help="forget a client")
    what.add_argument("-l", "--list", action="store_true", help="list clients (never keys)")
    client.add_argument(
        "-i", "--ip", metavar="IP_OR_CIDR", help="where the new client connects from (--add)"
    )
    client.add_argument("-z", "--zone", help="zone of the link (default: the config's zone)")
    client.add_argument(
        "--invitation",
        type=Path,
        metavar="PATH",
        help="where to write the invite (default ./invite_NAME_ZONE.toml, "
        "or ./rotate_NAME_ZONE.toml with --rotate)",
    )

    server = actions.add_parser(
        "server", parents=[config], help="manage the peers this agent connects to"
    )
    what = server.add_mutually_exclusive_group(required=True)
    what.add_argument("-a", "--add", type=Path, metavar="INVITE", help="trust a server's invite")
    what.add_argument(
        "-R", "--rotate", type=Path, metavar="INVITE", help="take new keys from a rotate file"
    )
    what.add_argument("-r", "--remove", metavar="NAME", help="forget a server")
    what.add_argument("-l", "--list", action="store_true", help="list servers (never keys)")
    server.add_argument("-z", "--zone", help="zone (--remove; with --add it must match the invite)")

    encryption = actions.add_parser(
        "encryption", parents=[config], help="choose how secrets are encrypted"
    )
    scheme = encryption.add_mutually_exclusive_group(required=True)
    scheme.add_argument(
        "-s",
        "--simple",
        action="store_true",
        help="key derived from the agent's name (obfuscation only)",
    )
    scheme.add_argument(
        "-e",
        "--environment",
        metavar="VAR",
        help="key derived from the value of environment variable VAR",
    )

    for name, help_text in (
        ("secret", "store an encrypted setting in [extras]"),
        ("extra", "store a plain setting in [extras]"),
    ):
        setting = actions.add_parser(name, parents=[config], help=help_text)
        setting.add_argument("-k", "--key", required=True, help="setting name")
        setting.add_argument(
            "-v", "--value", required=True, help="setting value ('-' reads one line from stdin)"
        )

    run = actions.add_parser("run", parents=[config], help="run the agent until SIGINT/SIGTERM")
    run.add_argument(
        "--data-dir",
        type=Path,
        metavar="DIR",
        help=f"where boards are kept (default: {_display(default_data_dir(role.name))})",
    )
    run.add_argument(
        "--event-loop",
        choices=EVENT_LOOPS,
        default="asyncio",
        help="event loop (uvloop needs: pip install 'broadgauge[fast]'; default: asyncio)",
    )
    metrics = run.add_mutually_exclusive_group()
    metrics.add_argument(
        "--metrics-listen",
        metavar="HOST:PORT",
        help="serve /metrics on this address (default: [metrics] listen, else the health port)",
    )
    metrics.add_argument(
        "--no-metrics", action="store_true", help="serve no /metrics ([metrics] enabled = false)"
    )


def _add_bridge_options(
    init: argparse.ArgumentParser,
    actions: argparse._SubParsersAction[argparse.ArgumentParser],
    config: argparse.ArgumentParser,
) -> None:
    """``init`` flags for the HTTP API, and ``bridge`` (short options as OpenPortal's)."""
    init.add_argument(
        "-r", "--bridge-url", default="http://localhost:3000", help="base URL clients call"
    )
    init.add_argument("-b", "--bridge-ip", default=DEFAULT_IP, help="HTTP API listen address")
    init.add_argument("-q", "--bridge-port", type=int, default=3000, help="HTTP API port")
    # No defaults: a made-up URL would be signalled (and fail) on every job, when leaving
    # them unset means "the portal software polls" (docs/operators/bridge.md).
    init.add_argument(
        "-s",
        "--signal-url",
        help="GET ?job_id=<uuid> for each job held for the portal software (default: none)",
    )
    init.add_argument(
        "-N",
        "--notification-url",
        help="GET ?notification_id=<uuid> for each notification (default: none)",
    )
    init.add_argument(
        "--trusted-proxy",
        action="append",
        default=[],
        metavar="IP_OR_CIDR",
        help="a proxy whose X-Forwarded-For names the client (repeatable)",
    )
    bridge = actions.add_parser(
        "bridge", parents=[config], help="write the client file, or regenerate the API key"
    )
    what = bridge.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--client-file",
        type=Path,
        metavar="FILE",
        help="write the file openportal.load_config reads (url and key)",
    )
    what.add_argument(
        "-r", "--regenerate", action="store_true", help="new API key (rewrite client files)"
    )
    from broadgauge.cli.console import add_console_user_command

    add_console_user_command(actions, config)


def _display(path: Path) -> str:
    home = str(Path.home())
    text = str(path)
    return "~" + text[len(home) :] if home != "/" and text.startswith(home + "/") else text


# --- running a subcommand ------------------------------------------------------------------

Out = Callable[[str], None]


def _print(text: str) -> None:
    print(text)


def _note(text: str) -> None:
    print(f"broadgauge: {text}", file=sys.stderr)


def run_role(args: argparse.Namespace) -> int:
    """Run ``broadgauge <role> <action>``; raise ConfigError/OSError for the caller to report."""
    role = ROLES_BY_NAME[args.command]
    path: Path = args.config or default_config_path(role.name)
    action: str = args.action
    if action == "init":
        return init(role, path, args)
    if action == "bridge":
        return bridge(load(role, path), path, args)
    if action == "console-user":
        from broadgauge.cli.console import console_user

        return console_user(load(role, path), path, args)
    if action == "run":
        from broadgauge.cli.run import run_agent

        config = _metrics_from(load(role, path), args)
        _log_format_from(config, args)
        data_dir = args.data_dir or default_data_dir(role.name)
        return run_agent(config, data_dir, event_loop=args.event_loop)
    config = load(role, path)
    changed = {
        "client": peers,
        "server": peers,
        "encryption": encryption,
        "secret": setting,
        "extra": setting,
    }[action](config, args, _print)
    if changed is not None:
        changed.save(path)
    return 0


def _log_format_from(config: AgentConfig, args: argparse.Namespace) -> None:
    """Use the config's ``[logging] format`` unless ``--log-format`` was given."""
    table = config.other.get("logging", {})
    wanted = table.get("format") if isinstance(table, dict) else None
    if wanted is None or getattr(args, "log_format", None) is not None:
        return
    if wanted not in FORMATS:
        raise ConfigError(f"[logging] format must be one of {', '.join(FORMATS)}, not {wanted!r}")
    configure_logging(logging.getLogger().level, wanted)


def _metrics_from(config: AgentConfig, args: argparse.Namespace) -> AgentConfig:
    """``config`` with ``--metrics-listen`` or ``--no-metrics`` put in its ``[metrics]``."""
    table = config.other.get("metrics", {})
    changed = dict(table) if isinstance(table, dict) else {}
    if getattr(args, "no_metrics", False):
        changed["enabled"] = False
    elif getattr(args, "metrics_listen", None):
        changed.update(enabled=True, listen=args.metrics_listen)
    else:
        return config
    return replace(config, other={**config.other, "metrics": changed})


def load(role: Role, path: Path) -> AgentConfig:
    """Read the config at ``path`` and check it is one for ``role``."""
    if not path.exists():
        raise ConfigError(f"no config at {path}; create one with `broadgauge {role.name} init`")
    config = AgentConfig.load(path)
    if config.agent is not role.agent_type:
        raise ConfigError(
            f"{path} is a config for a {config.agent.value} agent, not {role.agent_type.value}"
        )
    return config


def init(role: Role, path: Path, args: argparse.Namespace) -> int:
    """``init``: write a config with this role's defaults (refuse to overwrite without -f)."""
    if path.exists() and not args.force:
        raise ConfigError(f"{path} already exists; use --force to overwrite it")
    service = ServiceConfig.create(args.name, url=args.url, ip=args.ip, port=args.port)
    if args.healthcheck_port is not None:
        service = dataclasses.replace(service, healthcheck_port=args.healthcheck_port)
    config = AgentConfig(role.agent_type, service)
    if role.agent_type is AgentType.BRIDGE:
        from broadgauge.bridge import BridgeSettings
        from broadgauge.bridge.config import http_url_or_none

        for name in ("signal_url", "notification_url"):
            given = getattr(args, name)
            if given and http_url_or_none(given) is None:
                _note(f"{name} {given} is not http(s); it is left unset")
        config = BridgeSettings.generate(
            url=args.bridge_url,
            ip=args.bridge_ip,
            port=args.bridge_port,
            signal_url=http_url_or_none(args.signal_url),
            notification_url=http_url_or_none(args.notification_url),
            trusted_proxies=tuple(args.trusted_proxy),
        ).store(config)
    config.save(path)
    print(f"wrote {role.name} config to {path} (agent {service.name}, url {service.url})")
    if args.url is None and args.ip in ("0.0.0.0", "::"):
        _note(f"invites will name {service.url}, which clients cannot dial; set it with --url")
    return 0


def peers(config: AgentConfig, args: argparse.Namespace, out: Out) -> AgentConfig | None:
    """``client`` and ``server``: add, rotate, remove or list the peers that dial this agent
    (clients) or that it dials (servers)."""
    service_config = config.service
    if args.list:
        if args.action == "client":
            lines = [f"{known.peer}\t{known.ip}" for known in service_config.clients]
        else:
            lines = [f"{known.peer}\t{known.url}" for known in service_config.servers]
        for line in lines:
            out(line)
        return None
    service = Service(service_config)
    if args.remove is not None:
        if args.action == "client":
            service.remove_client(args.remove, args.zone)
        else:
            service.remove_server(args.remove, args.zone)
        out(f"removed {args.action} {args.remove}")
    elif args.action == "client":
        _add_or_rotate_client(config, args, out, service)
    else:
        _add_or_rotate_server(config, args, out, service)
    return replace(config, service=service.config)


def _add_or_rotate_client(
    config: AgentConfig, args: argparse.Namespace, out: Out, service: Service
) -> None:
    if args.add is not None:
        if args.ip is None:
            raise ConfigError("client --add needs --ip ADDRESS_OR_CIDR")
        zone = args.zone or config.service.zone
        if config.service.client(args.add, zone) is not None:
            raise ConfigError(
                f"client {args.add}@{zone} already exists; "
                "use --rotate to give it new keys, or --remove it first"
            )
        kind, name = "invite", args.add
        invite = service.add_client(name, args.ip, zone)
    else:
        if args.ip is not None:
            raise ConfigError("--ip is only for client --add")
        entry = config.service.client(args.rotate, args.zone)
        if entry is None:
            where = f"@{args.zone}" if args.zone else ""
            raise ConfigError(f"no client called {args.rotate}{where}")
        kind, name = "rotate", entry.name
        invite = service.rotate_client(entry.name, entry.zone)
    target: Path = args.invitation or invite_path(kind, name, invite.zone)
    invite.save(target)  # before the config: a failed write leaves the config unchanged
    out(f"wrote {kind} for {name}@{invite.zone} to {target} (it holds keys: hand it over safely)")


def _add_or_rotate_server(
    config: AgentConfig, args: argparse.Namespace, out: Out, service: Service
) -> None:
    if args.add is not None:
        invite = Invite.load(args.add)
        if args.zone is not None and args.zone != invite.zone:
            raise ConfigError(f"--zone {args.zone} does not match the invite's zone {invite.zone}")
        if config.service.server(invite.name, invite.zone) is not None:
            raise ConfigError(
                f"server {invite.name}@{invite.zone} already exists; "
                "use --rotate with its new invite, or --remove it first"
            )
        service.add_server(invite)
        out(f"added server {invite.name}@{invite.zone} at {invite.url}")
    else:
        invite = Invite.load(args.rotate)
        if args.zone is not None and args.zone != invite.zone:
            raise ConfigError(f"--zone {args.zone} does not match the file's zone {invite.zone}")
        entry = config.service.server(invite.name, invite.zone)
        if entry is None:
            raise ConfigError(
                f"no server {invite.name}@{invite.zone} to rotate; use --add for a new server"
            )
        # A rotation changes keys only; the server's address stays as configured.
        service.add_server(replace(invite, url=entry.url))
        out(f"new keys for server {invite.name}@{invite.zone}")


def encryption(config: AgentConfig, args: argparse.Namespace, out: Out) -> AgentConfig:
    """``encryption``: set the scheme that protects secrets."""
    if args.simple:
        scheme: SimpleEncryption | EnvironmentEncryption = SimpleEncryption()
        out("secrets will be encrypted with a key derived from the agent's name")
        _note("Simple encryption only obfuscates; prefer --environment VAR")
    else:
        if not args.environment:
            raise ConfigError("--environment needs the name of an environment variable")
        scheme = EnvironmentEncryption(args.environment)
        out(f"secrets will be encrypted with a key derived from ${args.environment}")
    if config.service.encryption not in (None, scheme):
        _note("secrets stored under the previous scheme can no longer be read; store them again")
    return replace(config, service=replace(config.service, encryption=scheme))


def setting(config: AgentConfig, args: argparse.Namespace, out: Out) -> AgentConfig:
    """``secret`` / ``extra``: store one ``[extras]`` value, encrypted or plain."""
    key: str = args.key
    if not key.strip():
        raise ConfigError("the setting name must not be empty")
    value: str = args.value
    if value == "-":
        value = sys.stdin.readline().rstrip("\r\n")
    if args.action == "secret":
        changed = config.with_secret(key, value)
        out(f"stored secret {key} (encrypted)")
    else:
        changed = config.with_extra(key, value)
        out(f"stored extra {key}")
    return changed


def bridge(config: AgentConfig, path: Path, args: argparse.Namespace) -> int:
    """``bridge``: write the client file, or give the HTTP API a new key."""
    from broadgauge.bridge import BridgeSettings

    settings = BridgeSettings.of(config)
    if args.regenerate:
        settings.with_new_key().store(config).save(path)
        print(f"new API key in {path}; write new client files with --client-file")
        return 0
    settings.client_file().save(args.client_file)
    print(f"wrote the client file for {settings.url} to {args.client_file} (it holds the key)")
    return 0
