"""``broadgauge bridge console-user``: operator accounts of the bridge's web console.

The password is read without echo (or from standard input when it is not a terminal, for
scripts), and only its Argon2 hash is stored, in the config's ``[console] users`` table.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from broadgauge.runtime.config import AgentConfig
from broadgauge.wire import ConfigError

MIN_PASSWORD = 12


def add_console_user_command(
    actions: argparse._SubParsersAction[argparse.ArgumentParser],
    config: argparse.ArgumentParser,
) -> None:
    """Add ``console-user`` to the bridge's subcommands."""
    parser = actions.add_parser(
        "console-user", parents=[config], help="add or remove an operator of the web console"
    )
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--add", metavar="NAME", help="add NAME (or set a new password)")
    what.add_argument("--remove", metavar="NAME", help="remove NAME")
    what.add_argument("--list", action="store_true", help="list the operators")


def _read_password(name: str) -> str:
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass(f"password for {name}: ")
    if getpass.getpass("again: ") != first:
        raise ConfigError("the passwords differ; nothing changed")
    return first


def console_user(config: AgentConfig, path: Path, args: argparse.Namespace) -> int:
    """Run ``console-user``: change ``[console] users`` in the config at ``path``."""
    from broadgauge.bridge.console import ConsoleSettings, hash_password

    settings = ConsoleSettings.of(config)
    if args.list:
        for name in sorted(settings.users):
            print(name)
        return 0
    if args.remove:
        if args.remove not in settings.users:
            raise ConfigError(f"{args.remove} is not a console operator")
        settings.without_user(args.remove).store(config).save(path)
        print(f"removed console operator {args.remove} from {path} (restart the bridge)")
        return 0
    name = args.add
    if not name or len(name) > 128 or any(c.isspace() for c in name):
        raise ConfigError("an operator name is 1 to 128 characters, without spaces")
    password = _read_password(name)
    if len(password) < MIN_PASSWORD:
        raise ConfigError(f"the password must be at least {MIN_PASSWORD} characters")
    settings.with_user(name, hash_password(password)).store(config).save(path)
    print(f"console operator {name} stored in {path} (Argon2 hash; restart the bridge)")
    return 0
