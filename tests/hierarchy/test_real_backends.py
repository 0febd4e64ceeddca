"""The whole hierarchy on real back ends: an LDAP account agent on slapd, a Slurm scheduler.

The same network as ``broadgauge demo`` (bridge → portal → provider → platform → instance →
account, filesystem, scheduler), but the account agent keeps users in a real OpenLDAP and the
scheduler manages a real Slurm accounting stack (slurmdbd + MariaDB + munge, with slurmctld
and slurmd).  Instructions go in through the bridge exactly as portal software sends them,
and the test reads the results back from slapd and ``sacctmgr``, not from our own answers.
"""

from __future__ import annotations

import json
import shlex
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from ldap3 import Connection, Server

from broadgauge.demo import Network, start_network
from broadgauge.runtime.config import AgentConfig
from broadgauge.wire import SimpleEncryption
from tests.backends.slapd import Slapd
from tests.backends.slurm import SlurmStack

#: sacctmgr takes ~0.2-0.7 s a call and an add_user makes several; allow for a loaded host.
SLOW = 180.0


@pytest.fixture
async def network(tmp_path: Path, slapd: Slapd, slurm_stack: SlurmStack) -> AsyncIterator[Network]:
    base = f"ou=e2e{uuid.uuid4().hex[:10]},{slapd.suffix}"
    admin = Connection(Server(slapd.url), slapd.admin_dn, slapd.password, auto_bind=True)
    admin.add(base, ["organizationalUnit"], {"ou": base.split(",", maxsplit=1)[0][3:]})
    for ou in ("people", "groups"):
        admin.add(f"ou={ou},{base}", ["organizationalUnit"], {"ou": ou})

    def configure(name: str, config: AgentConfig) -> AgentConfig:
        if name == "account":
            service = replace(config.service, encryption=SimpleEncryption())
            config = replace(config, service=service)
            for key, value in {
                "account-backend": "ldap",
                "ldap-url": slapd.url,
                "ldap-bind-dn": slapd.admin_dn,
                "ldap-base-dn": base,
            }.items():
                config = config.with_extra(key, value)
            return config.with_secret("ldap-password", slapd.password)
        if name == "scheduler":
            for key, value in {
                "scheduler-backend": "slurm",
                "slurm-cluster": slurm_stack.cluster,
                "slurm-conf": str(slurm_stack.conf),
                "slurm-default-node": json.dumps({"cpus": slurm_stack.cpus}),
                "command-prefix": shlex.join(slurm_stack.command_prefix),
            }.items():
                config = config.with_extra(key, value)
            return config
        if name == "filesystem":
            # Users live in LDAP, which this host's NSS does not read: leave owners alone.
            return config.with_extra("chown", "false")
        return config

    started = await start_network(tmp_path, configure=configure)
    started.ldap = admin  # type: ignore[attr-defined]
    started.ldap_base = base  # type: ignore[attr-defined]
    try:
        yield started
    finally:
        await started.stop()
        admin.unbind()


def _ldap_user(network: Network, uid: str) -> dict[str, object] | None:
    conn: Connection = network.ldap  # type: ignore[attr-defined]
    conn.search(network.ldap_base, f"(uid={uid})", attributes=["*"])  # type: ignore[attr-defined]
    return dict(conn.response[0]["attributes"]) if conn.response else None


def _ldap_members(network: Network, group: str) -> list[str]:
    conn: Connection = network.ldap  # type: ignore[attr-defined]
    conn.search(
        network.ldap_base, f"(&(objectClass=posixGroup)(cn={group}))", attributes=["memberUid"]
    )  # type: ignore[attr-defined]
    return list(conn.response[0]["attributes"].get("memberUid", [])) if conn.response else []


def _associations(stack: SlurmStack, account: str) -> set[tuple[str, str]]:
    result = stack.run(
        "sacctmgr", "-n", "-P", "list", "assoc", f"account={account}", "format=account,user"
    )
    return {tuple(line.split("|")) for line in result.stdout.split() if line}  # type: ignore[misc]


async def test_add_and_remove_user_reach_slapd_and_slurm(
    network: Network, slurm_stack: SlurmStack
) -> None:
    project = f"p{uuid.uuid4().hex[:6]}"
    user = f"alice.{project}.portal"
    group = f"portal.{project}"
    local = f"alice.{project}"

    created = await network.submit(f"add_project {project}.portal", timeout=SLOW)
    assert created.result == json.dumps(f"{project}.portal:{group}")
    added = await network.submit(f"add_user {user}", timeout=SLOW)
    assert added.result_type == "UserMapping"
    assert added.result == json.dumps(f"{user}:{local}:{group}")

    entry = _ldap_user(network, local)
    assert entry is not None
    assert "posixAccount" in entry["objectClass"]  # type: ignore[operator]
    home = network.root / "filesystem" / "sandbox" / "home" / project / local
    assert entry["homeDirectory"] == str(home)
    assert home.is_dir()
    assert local in _ldap_members(network, group)
    assert (group, local) in _associations(slurm_stack, group)

    # Idempotent: the same instruction again changes nothing.
    uid = entry["uidNumber"]
    again = await network.submit(f"add_user {user}", timeout=SLOW)
    assert again.result == added.result
    assert _ldap_user(network, local)["uidNumber"] == uid  # type: ignore[index]

    limit = await network.submit(f"set_limit {project}.portal 10 hours", timeout=SLOW)
    assert json.loads(limit.result or "{}") == {"seconds": 36000}
    shown = slurm_stack.run(
        "sacctmgr", "-n", "-P", "list", "assoc", f"account={group}", "format=user,grptresmins"
    ).stdout
    # 10 hours of the default node, in CPU-minutes: 600 per CPU of the node.
    assert f"cpu={600 * slurm_stack.cpus}" in shown

    removed = await network.submit(f"remove_user {user}", timeout=SLOW)
    assert removed.result == added.result
    assert (group, local) not in _associations(slurm_stack, group)
    after = _ldap_user(network, local)
    assert after is not None and after["uidNumber"] == uid  # kept for a later re-add
    assert after.get("shadowExpire")  # disabled
    assert local not in _ldap_members(network, group)
    assert not home.exists()  # recycled beside it
