"""The slurmrestd engine on the test stack, for every scheduler test module that runs it."""

from __future__ import annotations

from collections.abc import Callable

from broadgauge.agents.scheduler.accounting import NodeFactors
from broadgauge.agents.scheduler.commands import SlurmCommands
from broadgauge.agents.scheduler.rest import SlurmRestClient
from broadgauge.agents.scheduler.slurmrestd import SlurmRestScheduler
from tests.backends.slurm import REST_USER, SlurmStack


def rest_scheduler(
    stack: SlurmStack,
    *,
    node: NodeFactors | None = None,
    audit: Callable[[str], None] | None = None,
    cluster: str | None = "",
    sacctmgr: bool = True,
) -> SlurmRestScheduler:
    """The slurmrestd engine on ``stack`` as its admin user (``cluster=""``: the stack's)."""
    client = SlurmRestClient(
        stack.rest_server, user=REST_USER, token_command=stack.token_command, token_lifespan=300
    )
    return SlurmRestScheduler(
        client,
        cluster=stack.cluster if cluster == "" else cluster,
        default_node=node or NodeFactors(cpus=stack.cpus, mem=stack.mem_mb),
        audit=audit,
        sacctmgr=SlurmCommands(command_prefix=stack.command_prefix, env=stack.env)
        if sacctmgr
        else None,
    )
