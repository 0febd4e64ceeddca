"""Give an :class:`Agent` its role: the business module for its type, with its backend.

Which backend a leaf agent uses is set in the config's ``[extras]`` (all strings):

account agents
    ``account-backend`` = ``local`` (default: a SQLite directory at ``directory``, default
    ``<data dir>/directory.sqlite3``), ``ldap`` (``ldap-url``, ``ldap-bind-dn``,
    ``ldap-base-dn``, secret ``ldap-password``, ``ldap-timeout`` in seconds per request,
    default 10) or ``freeipa`` (``freeipa-server``,
    comma-separated; ``freeipa-user``; secret ``freeipa-password``).
    ``protected-users``: comma-separated Unix names never to touch.
filesystem agents
    the ``[user_volumes]``/``[project_volumes]``/``[quota_engines]`` tables, or, if there
    are none, a sandbox folder at ``sandbox`` (default ``<data dir>/sandbox``).
    ``id-resolver`` = ``nss`` (default) or ``directory:<path to a local account directory>``.
    ``delete-on-remove`` = ``true`` to delete (not recycle) a removed user's files.
    ``chown`` = ``auto`` (default: set owners when running as root), ``true`` or ``false``.
scheduler agents
    ``scheduler-backend`` = ``ledger`` (default: ``<data dir>/scheduler.sqlite3``),
    ``slurm`` (``slurm-default-node``, a JSON object such as ``{"cpus": 128, "mem": 256000}``
    used to turn limits into GrpTRESMins; ``slurm-cluster``, ``parent-account``,
    ``slurm-conf``, ``command-prefix``) or ``slurmrestd``, which is also chosen, as in
    OpenPortal, whenever ``slurm-server`` is set (``slurm-server`` =
    ``http(s)://host:port`` or ``unix:/path``; ``slurm-user``, ``token-command``,
    ``token-lifespan`` (default 1800, at least 10), ``slurm-default-node``, ``slurm-cluster``,
    ``parent-account``; ``sacctmgr``, ``slurm-conf`` and ``command-prefix`` for the one
    limit Slurm 22.05's slurmrestd may fail to store).
instance agents
    ``service`` = ``cluster`` (default: account, filesystem and scheduler agents below it) or
    ``notebooks`` (a JupyterHub: ``jupyterhub-url`` and the secret ``jupyterhub-token``, or,
    with no URL, the embedded stand-in at ``embedded-hub``, default
    ``<data dir>/notebooks.sqlite3``, answering as ``notebook-url``; server sessions are
    kept at ``notebook-ledger``, default ``<data dir>/notebook-sessions.sqlite3``;
    ``notebook-accounts`` = ``agent`` to make hub users through the site's account agent;
    ``spawn-timeout`` in seconds, default 120).
provider, platform and instance agents
    ``planner-rules``: a planner TOML (``[site]`` and ``[[rules]]``) to publish to the
    network planner (see ``docs/operators/planner.md``).
bridge agents
    ``planner-config``: a network planner TOML; the planner is served beside the bridge.
"""

from __future__ import annotations

import math
import os
import shlex
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from broadgauge.agents.accounts._common import Directory
from broadgauge.agents.accounts.agent import serve_accounts
from broadgauge.agents.accounts.backend import AccountBackend
from broadgauge.agents.accounts.freeipa import FreeIpaDirectory
from broadgauge.agents.accounts.ldap import LdapDirectory
from broadgauge.agents.accounts.local import LocalDirectory
from broadgauge.agents.filesystem.agent import (
    FilesystemRole,
    build_engines,
    default_volumes,
)
from broadgauge.agents.filesystem.ids import DirectoryResolver, IdResolver, NssResolver
from broadgauge.agents.filesystem.layout import parse_layout
from broadgauge.agents.instance import Instance
from broadgauge.agents.notebook.backend import NotebookBackend
from broadgauge.agents.notebook.embedded import EmbeddedHub
from broadgauge.agents.notebook.jupyterhub import JupyterHubBackend
from broadgauge.agents.notebook.rules import NotebookInstance
from broadgauge.agents.notebook.sessions import SessionLedger
from broadgauge.agents.portal import Portal
from broadgauge.agents.scheduler.agent import serve_scheduler
from broadgauge.agents.scheduler.backend import SchedulerBackend, SchedulerError
from broadgauge.agents.scheduler.commands import SlurmCommands
from broadgauge.agents.scheduler.ledger import LedgerScheduler
from broadgauge.agents.scheduler.rest import SlurmRestClient
from broadgauge.agents.scheduler.slurm import NodeFactors, SlurmScheduler
from broadgauge.agents.scheduler.slurmrestd import SlurmRestScheduler
from broadgauge.jobs.agent_type import AgentType
from broadgauge.jobs.errors import ProtocolError
from broadgauge.jobs.published import DOCUMENT_TABLES, check_document
from broadgauge.runtime.agent import Agent
from broadgauge.wire import ConfigError

#: The top-level tables that describe a filesystem agent's volumes (OpenPortal's layout).
VOLUME_TABLES = ("user_volumes", "project_volumes", "quota_engines")


class Attachment(Protocol):
    """Something a layer above attaches to an agent and runs with it (the bridge's HTTP API)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


#: Builds the bridge role; passed in from above, because the bridge sits above agents.
AttachBridge = Callable[[Agent], Attachment]
#: Builds the network planner beside a bridge (when its ``planner-config`` extra is set).
AttachPlanner = Callable[[Agent], Attachment]


@dataclass
class Role:
    """What was attached to an agent, so callers (the demo, tests) can reach it."""

    agent: Agent
    portal: Portal | None = None
    instance: Instance | None = None
    notebooks: NotebookInstance | None = None
    accounts: AccountBackend | None = None
    filesystem: FilesystemRole | None = None
    scheduler: SchedulerBackend | None = None
    closers: list[AccountBackend | SchedulerBackend | NotebookBackend | SessionLedger] = field(
        default_factory=list
    )
    bridge: Attachment | None = None
    planner: Attachment | None = None

    async def start(self) -> None:
        """Start what runs beside the agent (call after the agent has started)."""
        if self.bridge is not None:
            await self.bridge.start()
        if self.planner is not None:
            await self.planner.start()

    async def stop(self) -> None:
        """Stop what :meth:`start` started (idempotent)."""
        if self.planner is not None:
            await self.planner.stop()
        if self.bridge is not None:
            await self.bridge.stop()

    async def close(self) -> None:
        """Release the backends' connections."""
        for backend in self.closers:
            await backend.close()


def assemble(
    agent: Agent,
    data_dir: str | Path,
    *,
    bridge: AttachBridge | None = None,
    planner: AttachPlanner | None = None,
) -> Role:
    """Register the business rules for ``agent``'s type; return what was built.

    ``bridge`` attaches the HTTP API to a ``Bridge`` agent (without it a bridge only routes);
    ``planner`` attaches the network planner to a bridge whose ``planner-config`` is set.
    Any routing agent publishes the planner rules its ``planner-rules`` extra names.
    """
    data = Path(data_dir)
    role = Role(agent)
    kind = agent.agent_type
    rules_file = agent.config.extra("planner-rules")
    if rules_file is not None:
        if kind not in (AgentType.PROVIDER, AgentType.PLATFORM, AgentType.INSTANCE):
            raise ConfigError(f"{agent.name}: {kind.display} agents cannot publish planner rules")
        agent.planner_rules.publish(read_planner_rules(rules_file))
    if kind is AgentType.PORTAL:
        role.portal = Portal(agent)
    elif kind is AgentType.INSTANCE:
        service = _extra(agent, "service", "cluster")
        if service == "cluster":
            role.instance = Instance(agent)
        elif service == "notebooks":
            role.notebooks = _notebooks(agent, data, role)
        else:
            raise ConfigError(
                f"{agent.name}: service must be cluster or notebooks, not {service!r}"
            )
    elif kind is AgentType.ACCOUNT:
        role.accounts = _account_backend(agent, data)
        role.closers.append(role.accounts)
        if isinstance(role.accounts, Directory):
            # A change running in a worker thread is audited before the audit log closes.
            agent.before_close(role.accounts.settle)
        serve_accounts(agent, role.accounts)
    elif kind is AgentType.FILESYSTEM:
        role.filesystem = _filesystem(agent, data)
    elif kind is AgentType.SCHEDULER:
        role.scheduler = _scheduler_backend(agent, data)
        role.closers.append(role.scheduler)
        if isinstance(role.scheduler, SlurmScheduler | SlurmRestScheduler):
            # A batched change still running is recorded before the audit log closes.
            agent.before_close(role.scheduler.settle)
        serve_scheduler(agent, role.scheduler)
    elif kind is AgentType.BRIDGE:
        if bridge is not None:
            role.bridge = bridge(agent)
        if planner is not None and agent.config.extra("planner-config") is not None:
            seat_planner(role, planner(agent))
    # Providers and platforms only route.
    return role


def seat_planner(role: Role, planner: Attachment) -> None:
    """Give a bridge's role its network planner, and introduce the planner to the bridge
    (whose operator console shows the planner's answers and logs in through its OIDC
    provider).  Duck-typed: the agents layer knows neither the bridge nor the planner."""
    role.planner = planner
    introduce = getattr(role.bridge, "beside", None)
    if callable(introduce):
        introduce(planner)


def read_planner_rules(path: str | Path) -> dict[str, object]:
    """The document to publish from a planner TOML: its ``[service]``, ``[site]``, ``[[rules]]``.

    A file a standalone ``broadgauge planner serve`` reads can be published unchanged; its
    ``[auth]`` stays behind, because the network planner that evaluates the rules has its own.
    """
    try:
        with open(path, "rb") as handle:
            document = tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"planner-rules {path}: {exc}") from exc
    kept = {k: v for k, v in document.items() if k in DOCUMENT_TABLES}
    try:
        return check_document(kept, f"planner-rules {path}")
    except ProtocolError as exc:
        raise ConfigError(str(exc)) from exc


def _extra(agent: Agent, key: str, default: str | None = None) -> str:
    value = agent.config.extra(key, default)
    if value is None:
        raise ConfigError(f"{agent.name}: set [extras] {key}")
    return value


def _seconds(agent: Agent, key: str, default: str) -> float:
    """The extra ``key``: a number of seconds greater than zero."""
    text = _extra(agent, key, default)
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0  # refused just below, naming the text as given
    if not (math.isfinite(seconds) and seconds > 0):
        raise ConfigError(f"{agent.name}: {key} must be a number of seconds > 0, not {text!r}")
    return seconds


def _names(text: str) -> frozenset[str]:
    return frozenset(name.strip() for name in text.split(",") if name.strip())


def _account_backend(agent: Agent, data: Path) -> AccountBackend:
    backend = _extra(agent, "account-backend", "local")
    protected = _names(_extra(agent, "protected-users", ""))
    audit = agent.audit_operation
    if backend == "local":
        path = _extra(agent, "directory", str(data / "directory.sqlite3"))
        return LocalDirectory(path, protected=protected, audit=audit)
    if backend == "ldap":
        return LdapDirectory(
            _extra(agent, "ldap-url"),
            _extra(agent, "ldap-bind-dn"),
            agent.config.secret("ldap-password"),
            _extra(agent, "ldap-base-dn"),
            protected=protected,
            audit=audit,
            timeout=_seconds(agent, "ldap-timeout", "10"),
        )
    if backend == "freeipa":
        return FreeIpaDirectory(
            [s.strip() for s in _extra(agent, "freeipa-server").split(",") if s.strip()],
            _extra(agent, "freeipa-user", "admin"),
            agent.config.secret("freeipa-password"),
            protected=protected,
            audit=audit,
        )
    raise ConfigError(f"{agent.name}: unknown account-backend {backend!r}")


def _filesystem(agent: Agent, data: Path) -> FilesystemRole:
    if agent.config.extra("exec-prefix"):
        # OpenPortal runs mkdir/chown/mv through this prefix (e.g. sudo) on paths; we act
        # through directory descriptors that never follow a symlink, which a command cannot.
        raise ConfigError(
            f"{agent.name}: exec-prefix is not supported; run the filesystem agent as root "
            "(or with CAP_CHOWN, CAP_FOWNER and CAP_DAC_OVERRIDE) and remove the setting"
        )
    resolver_spec = _extra(agent, "id-resolver", "nss")
    resolver: IdResolver
    if resolver_spec == "nss":
        resolver = NssResolver()
    elif resolver_spec.startswith("directory:"):
        resolver = DirectoryResolver(resolver_spec.removeprefix("directory:"))
    else:
        raise ConfigError(f"{agent.name}: id-resolver must be nss or directory:<path>")
    if any(table in agent.config.other for table in VOLUME_TABLES):
        layout = parse_layout(agent.config.other)
    else:
        layout = default_volumes(_extra(agent, "sandbox", str(data / "sandbox")))
    return FilesystemRole(
        agent,
        layout,
        resolver,
        build_engines(layout, data, resolver),
        delete_on_remove=_extra(agent, "delete-on-remove", "false").lower() == "true",
        audit=agent.audit_operation,
        chown=_chown(agent),
    )


def _chown(agent: Agent) -> bool:
    setting = _extra(agent, "chown", "auto").lower()
    if setting == "auto":
        # Changing ownership needs root; a sandbox run by a user keeps its own.
        return os.geteuid() == 0
    if setting in ("true", "false"):
        return setting == "true"
    raise ConfigError(f"{agent.name}: chown must be auto, true or false")


def _scheduler_backend(agent: Agent, data: Path) -> SchedulerBackend:
    # OpenPortal's slurm agent talks to slurmrestd whenever slurm-server is set.
    rest = bool(agent.config.extra("slurm-server"))
    backend = _extra(agent, "scheduler-backend", "slurmrestd" if rest else "ledger")
    if backend == "slurmrestd" or (backend == "slurm" and rest):
        return _slurmrestd_backend(agent)
    if backend == "ledger":
        path = _extra(agent, "ledger", str(data / "scheduler.sqlite3"))
        return LedgerScheduler(path, audit=agent.audit_operation)
    if backend == "slurm":
        conf = agent.config.extra("slurm-conf")
        return SlurmScheduler(
            cluster=agent.config.extra("slurm-cluster"),
            default_node=NodeFactors.from_json(_extra(agent, "slurm-default-node")),
            parent_account=_extra(agent, "parent-account", "root"),
            command_prefix=shlex.split(_extra(agent, "command-prefix", "")),
            env={"SLURM_CONF": conf} if conf else None,
            audit=agent.audit_operation,
        )
    raise ConfigError(f"{agent.name}: unknown scheduler-backend {backend!r}")


def _slurmrestd_backend(agent: Agent) -> SlurmRestScheduler:
    lifespan_text = _extra(agent, "token-lifespan", "1800")
    try:
        lifespan = int(lifespan_text)
    except ValueError:
        raise ConfigError(
            f"{agent.name}: token-lifespan must be a whole number of seconds, not {lifespan_text!r}"
        ) from None
    conf = agent.config.extra("slurm-conf")
    sacctmgr = shlex.split(_extra(agent, "sacctmgr", "sacctmgr"))
    try:
        client = SlurmRestClient(
            _extra(agent, "slurm-server"),
            user=_extra(agent, "slurm-user"),
            token_command=_extra(agent, "token-command"),
            token_lifespan=max(10, lifespan),  # OpenPortal raises it to 10 as well
            max_requests=int(_extra(agent, "max-slurm-runners", "5")),
        )
        node = NodeFactors.from_json(_extra(agent, "slurm-default-node"))
    except (SchedulerError, ValueError) as exc:
        raise ConfigError(f"{agent.name}: {exc}") from None
    return SlurmRestScheduler(
        client,
        cluster=agent.config.extra("slurm-cluster"),
        default_node=node,
        parent_account=_extra(agent, "parent-account", "root"),
        audit=agent.audit_operation,
        sacctmgr=SlurmCommands(
            command_prefix=shlex.split(_extra(agent, "command-prefix", "")),
            env={"SLURM_CONF": conf} if conf else None,
            commands={"sacctmgr": sacctmgr},
        ),
    )


def _notebooks(agent: Agent, data: Path, role: Role) -> NotebookInstance:
    timeout_text = _extra(agent, "spawn-timeout", "120")
    try:
        spawn_timeout = float(timeout_text)
    except ValueError:
        raise ConfigError(
            f"{agent.name}: spawn-timeout must be a number of seconds, not {timeout_text!r}"
        ) from None
    url = agent.config.extra("jupyterhub-url")
    backend = _extra(agent, "notebook-backend", "jupyterhub" if url else "embedded")
    hub: NotebookBackend
    if backend == "jupyterhub":
        hub = JupyterHubBackend(
            _extra(agent, "jupyterhub-url"),
            agent.config.secret("jupyterhub-token"),
            spawn_timeout=spawn_timeout,
            audit=agent.audit_operation,
        )
    elif backend == "embedded":
        hub = EmbeddedHub(
            _extra(agent, "embedded-hub", str(data / "notebooks.sqlite3")),
            url=_extra(agent, "notebook-url", "http://127.0.0.1:8000/"),
            audit=agent.audit_operation,
        )
    else:
        raise ConfigError(f"{agent.name}: notebook-backend must be jupyterhub or embedded")
    accounts = _extra(agent, "notebook-accounts", "none")
    if accounts not in ("none", "agent"):
        raise ConfigError(f"{agent.name}: notebook-accounts must be none or agent")
    ledger = SessionLedger(
        _extra(agent, "notebook-ledger", str(data / "notebook-sessions.sqlite3"))
    )
    role.closers += [hub, ledger]
    return NotebookInstance(agent, hub, ledger, accounts=accounts == "agent")
