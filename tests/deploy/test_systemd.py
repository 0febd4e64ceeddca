"""The systemd units in deploy/systemd: one per role the command line knows, each running a
command line the CLI accepts, each accepted by ``systemd-analyze verify``, hardened alike,
and scored by ``systemd-analyze security`` (the scores themselves: bench/systemd_security.py).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import stat
import subprocess
from argparse import Namespace
from pathlib import Path

import pytest

from broadgauge.cli import build_parser
from broadgauge.cli.roles import ROLES
from tests.backends.oidc import skip_or_fail
from tests.deploy.systemd_units import (
    EXAMPLES,
    INSTALLED,
    UNITS,
    analysable_copy,
    environment,
    security,
    service,
    systemd_analyze,
    unit_files,
    verify,
)

ROLE_NAMES = [role.name for role in ROLES]
PLANNER_UNITS = {
    "broadgauge-planner.service": "serve",
    "broadgauge-aggregator.service": "aggregate",
}
TEMPLATE = UNITS / "broadgauge@.service"
FILESYSTEM = UNITS / "broadgauge-filesystem.service"
FILESYSTEM_CAPABILITIES = "CAP_CHOWN CAP_DAC_OVERRIDE CAP_FOWNER CAP_FSETID"

#: The hardening every unit carries (docs/operators/deploy.md, "Hardening").
SHARED: dict[str, list[str] | None] = {
    "Type": ["exec"],
    "Restart": ["on-failure"],
    "User": ["broadgauge"],
    "Group": ["broadgauge"],
    "UMask": ["0077"],
    "NoNewPrivileges": ["yes"],
    "ProtectSystem": ["strict"],
    "ProtectHome": ["yes"],
    "PrivateTmp": ["yes"],
    "PrivateDevices": ["yes"],
    "PrivateMounts": ["yes"],
    "PrivateUsers": ["yes"],
    "ProtectKernelTunables": ["yes"],
    "ProtectKernelModules": ["yes"],
    "ProtectKernelLogs": ["yes"],
    "ProtectControlGroups": ["yes"],
    "ProtectClock": ["yes"],
    "ProtectHostname": ["yes"],
    "ProtectProc": ["invisible"],
    "RestrictAddressFamilies": ["AF_UNIX AF_INET AF_INET6"],
    "RestrictNamespaces": ["yes"],
    "RestrictRealtime": ["yes"],
    "RestrictSUIDSGID": ["yes"],
    "RemoveIPC": ["yes"],
    "LockPersonality": ["yes"],
    "MemoryDenyWriteExecute": ["yes"],
    "SystemCallArchitectures": ["native"],
    "SystemCallErrorNumber": ["EPERM"],
    "SystemCallFilter": ["@system-service", "~@privileged @resources"],
    "CapabilityBoundingSet": [""],
    "AmbientCapabilities": [""],
}
#: Where a unit departs from SHARED, and why (each reason is also a comment in the unit).
EXCEPTIONS: dict[str, dict[str, list[str] | None]] = {
    # Capabilities on the host's users and uids; setgid project directories; fchown.
    "broadgauge-filesystem.service": {
        "PrivateUsers": None,
        "RestrictSUIDSGID": None,
        "SystemCallFilter": ["@system-service"],
        "CapabilityBoundingSet": [FILESYSTEM_CAPABILITIES],
        "AmbientCapabilities": [FILESYSTEM_CAPABILITIES],
    },
    # Runs Slurm's programs, which authenticate through munged.
    "broadgauge-scheduler.service": {"PrivateUsers": None, "SystemCallFilter": ["@system-service"]},
}
#: Checks of `systemd-analyze security` every unit must pass: what issue 14 asks of them.
REQUIRED_CHECKS = {
    "UserOrDynamicUser",
    "NoNewPrivileges",
    "ProtectSystem",
    "ProtectHome",
    "PrivateTmp",
    "PrivateDevices",
    "ProtectKernelTunables",
    "ProtectKernelModules",
    "ProtectKernelLogs",
    "ProtectControlGroups",
    "LockPersonality",
    "MemoryDenyWriteExecute",
    "RestrictAddressFamilies_AF_PACKET",
    "RestrictAddressFamilies_AF_NETLINK",
    "RestrictAddressFamilies_OTHER",
    "RestrictNamespaces_user",
    "RestrictNamespaces_mnt",
    "RestrictNamespaces_net",
    "SystemCallFilter_mount",
    "SystemCallFilter_module",
    "SystemCallFilter_raw_io",
}
#: The capability checks a unit fails because it grants those capabilities: none but these.
GRANTED = {
    "broadgauge-filesystem.service": {
        "CapabilityBoundingSet_CAP_CHOWN_FSETID_SETFCAP",
        "CapabilityBoundingSet_CAP_DAC_FOWNER_IPC_OWNER",
    }
}


@pytest.fixture
def analyze() -> str:
    program = systemd_analyze()
    if program is None:
        skip_or_fail("systemd-analyze is not installed (apt-get install systemd)")
    assert program is not None
    return program


def unit_ids(unit: Path) -> str:
    return unit.name


def command_line(unit: Path, instance: str | None = None, **env: str) -> Namespace:
    """The unit's ``ExecStart`` as the CLI parses it, with ``%i`` as ``instance`` and
    ``${VAR}`` from ``Environment=`` (``env`` overrides, as the unit's env file would)."""
    (line,) = service(unit)["ExecStart"]
    if instance is not None:
        line = line.replace("%i", instance)
    values = {**environment(unit), **env}
    if instance is not None:
        values = {name: value.replace("%i", instance) for name, value in values.items()}
    line = re.sub(r"\$\{(\w+)\}", lambda found: values[found.group(1)], line)
    program, *argv = shlex.split(line)
    assert program == INSTALLED, f"{unit.name} runs {program}, not {INSTALLED} (install.md)"
    return build_parser().parse_args(argv)


# --- one unit per role, each running what the CLI accepts --------------------------------


@pytest.mark.parametrize("role", ROLE_NAMES)
def test_every_role_has_a_unit_that_runs_it(role: str) -> None:
    unit = UNITS / f"broadgauge-{role}.service"
    assert unit.exists(), f"role {role} has no unit: add {unit.relative_to(UNITS.parents[1])}"

    args = command_line(unit)

    assert (args.command, args.action) == (role, "run")
    assert args.config == Path(f"/etc/broadgauge/{role}.toml")
    assert args.data_dir == Path(f"/var/lib/broadgauge/{role}")
    settings = service(unit)
    assert settings["StateDirectory"] == [f"broadgauge/{role}"]
    assert settings["ReadWritePaths"] == [f"/var/lib/broadgauge/{role}"]
    assert settings["SyslogIdentifier"] == [f"broadgauge-{role}"]


@pytest.mark.parametrize("role", ROLE_NAMES)
def test_the_template_runs_a_role_named_by_its_instance(role: str) -> None:
    args = command_line(TEMPLATE, role)

    assert (args.command, args.action) == (role, "run")
    assert args.config == Path(f"/etc/broadgauge/{role}.toml")
    assert args.data_dir == Path(f"/var/lib/broadgauge/{role}")


def test_the_template_runs_a_second_agent_of_a_role_from_its_env_file() -> None:
    args = command_line(TEMPLATE, "cluster2", BROADGAUGE_ROLE="instance")

    assert (args.command, args.action) == ("instance", "run")
    assert args.config == Path("/etc/broadgauge/cluster2.toml")
    assert args.data_dir == Path("/var/lib/broadgauge/cluster2")
    assert service(TEMPLATE)["StateDirectory"] == ["broadgauge/%i"]
    # The env file is read after Environment=, so it overrides the default role.
    settings = service(TEMPLATE)
    assert settings["EnvironmentFile"] == ["-/etc/broadgauge/%i.env"]


@pytest.mark.parametrize(("name", "action"), sorted(PLANNER_UNITS.items()))
def test_the_planner_units_run_the_planner(name: str, action: str) -> None:
    args = command_line(UNITS / name)

    assert (args.command, args.planner_action) == ("planner", action)
    assert args.config.parent == Path("/etc/broadgauge")
    assert args.host == "127.0.0.1"
    assert "ReadWritePaths" not in service(UNITS / name)  # it keeps nothing on disk


def test_no_unit_runs_something_the_cli_does_not_have() -> None:
    known = {f"broadgauge-{role}.service" for role in ROLE_NAMES} | set(PLANNER_UNITS)
    known.add(TEMPLATE.name)

    assert {unit.name for unit in unit_files()} == known


@pytest.mark.parametrize("unit", unit_files(), ids=unit_ids)
def test_every_unit_carries_the_shared_hardening(unit: Path) -> None:
    wanted = {**SHARED, **EXCEPTIONS.get(unit.name, {})}
    settings = service(unit)

    wrong = {
        key: (settings.get(key), value)
        for key, value in wanted.items()
        if settings.get(key) != value
    }

    assert not wrong, f"{unit.name}: setting: (found, wanted): {wrong}"


# --- systemd-analyze verify ----------------------------------------------------------------


@pytest.mark.parametrize("unit", unit_files(), ids=unit_ids)
def test_systemd_analyze_verify_accepts_the_unit(analyze: str, unit: Path, tmp_path: Path) -> None:
    checked = verify(analyze, analysable_copy(unit, tmp_path))

    # verify exits 0 on an unknown key or a value it cannot parse, and only says so: any
    # output at all is a problem.
    output = (checked.stdout + checked.stderr).strip()
    assert checked.returncode == 0, output
    assert output == ""


def test_verify_as_run_here_catches_a_misspelt_setting(analyze: str, tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    broken = source / "broadgauge-portal.service"
    text = (UNITS / broken.name).read_text()
    broken.write_text(text.replace("ProtectSystem=strict", "ProtectSytem=strict"))

    checked = verify(analyze, analysable_copy(broken, tmp_path))

    assert "Unknown key" in checked.stdout + checked.stderr


def test_the_filesystem_drop_in_example_verifies_and_grants_what_it_says(
    analyze: str, tmp_path: Path
) -> None:
    plain_dir, dropped_dir = tmp_path / "plain", tmp_path / "dropped"
    plain_dir.mkdir()
    dropped_dir.mkdir()
    example = EXAMPLES / "filesystem-volumes.conf"
    dropped = analysable_copy(FILESYSTEM, dropped_dir, drop_ins=[example])

    checked = verify(analyze, dropped)
    assert (checked.stdout + checked.stderr).strip() == ""
    added = (
        security(analyze, dropped).unprotected()
        - security(analyze, analysable_copy(FILESYSTEM, plain_dir)).unprotected()
    )

    # Merged with the unit's own capabilities, not replacing them; home directories opened.
    assert added == {"CapabilityBoundingSet_CAP_SYS_ADMIN", "ProtectHome"}


def test_the_template_with_its_filesystem_drop_in_is_confined_as_the_filesystem_unit(
    analyze: str, tmp_path: Path
) -> None:
    template_dir, unit_dir = tmp_path / "template", tmp_path / "unit"
    template_dir.mkdir()
    unit_dir.mkdir()
    example = EXAMPLES / "template-filesystem.conf"
    template = analysable_copy(TEMPLATE, template_dir, drop_ins=[example])

    checked = verify(analyze, template)
    assert (checked.stdout + checked.stderr).strip() == ""
    as_template = security(analyze, template)
    as_unit = security(analyze, analysable_copy(FILESYSTEM, unit_dir))

    assert as_template.unprotected() == as_unit.unprotected()
    assert as_template.score == as_unit.score


# --- systemd-analyze security ------------------------------------------------------------


@pytest.mark.parametrize("unit", unit_files(), ids=unit_ids)
def test_systemd_analyze_security_scores_the_unit(analyze: str, unit: Path, tmp_path: Path) -> None:
    copy = analysable_copy(unit, tmp_path)

    exposure = security(analyze, copy)

    assert exposure.unit == copy.name
    assert 0.0 <= exposure.score <= 10.0
    assert exposure.rating in {"OK", "MEDIUM", "EXPOSED", "UNSAFE"}
    unprotected = exposure.unprotected()
    assert not REQUIRED_CHECKS & unprotected, sorted(REQUIRED_CHECKS & unprotected)
    granted = {check for check in unprotected if check.startswith("CapabilityBoundingSet_")}
    assert granted == GRANTED.get(unit.name, set())


# --- the service account and the config folder ----------------------------------------------


def test_sysusers_and_tmpfiles_make_the_account_and_a_private_config_folder(
    tmp_path: Path,
) -> None:
    sysusers, tmpfiles = shutil.which("systemd-sysusers"), shutil.which("systemd-tmpfiles")
    if sysusers is None or tmpfiles is None:
        skip_or_fail("systemd-sysusers and systemd-tmpfiles are not installed (package systemd)")
    if os.geteuid() != 0:
        skip_or_fail("giving /etc/broadgauge to the service account needs root")
    assert sysusers is not None and tmpfiles is not None
    (tmp_path / "etc").mkdir()

    for argv in (
        [sysusers, f"--root={tmp_path}", str(UNITS / "broadgauge.sysusers")],
        [tmpfiles, f"--root={tmp_path}", "--create", str(UNITS / "broadgauge.tmpfiles")],
    ):
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr

    entries = [line.split(":") for line in (tmp_path / "etc" / "passwd").read_text().splitlines()]
    (account,) = [entry for entry in entries if entry[0] == "broadgauge"]
    assert account[5:] == ["/var/lib/broadgauge", "/usr/sbin/nologin"]
    folder = (tmp_path / "etc" / "broadgauge").stat()
    assert stat.S_IMODE(folder.st_mode) == 0o700
    assert (folder.st_uid, folder.st_gid) == (int(account[2]), int(account[3]))
