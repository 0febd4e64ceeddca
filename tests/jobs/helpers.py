"""Builders and hypothesis strategies shared by the jobs tests."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

from hypothesis import strategies as st

from broadgauge.grammar import Command, Destination
from broadgauge.jobs import Job, Status
from broadgauge.jobs.job import TIMESTAMP_MAX, TIMESTAMP_MIN, VERSION_MAX

#: A fixed "now" (2024-06-03T07:33:20Z) so tests never read the clock.
T0 = 1_717_400_000


def job(
    command: str = "portal.provider.clusters.cluster add_user alice.proj.portal",
    *,
    state: Status = Status.PENDING,
    version: int | None = None,
    created: int = T0,
    changed: int | None = None,
    lifetime: int = 120,
    result: str | None = None,
    result_type: str | None = None,
    job_id: uuid.UUID | None = None,
) -> Job:
    """A job in any state, built directly (bypassing transitions)."""
    base = Job.parse(command, now=created, lifetime=lifetime, job_id=job_id)
    default_version = {Status.CREATED: 1, Status.PENDING: 2}.get(state, 3)
    return dataclasses.replace(
        base,
        state=state,
        version=default_version if version is None else version,
        changed=created if changed is None else changed,
        result=result,
        result_type=result_type,
    )


# ---------------------------------------------------------------- strategies

_NAME_ALPHABET = st.sampled_from("abcdefghijklmnopqrstuvwxyzABCXYZ0123456789_-")
names = st.text(_NAME_ALPHABET, min_size=1, max_size=8)
agent_lists = st.lists(names, min_size=2, max_size=5)
destinations = agent_lists.map(lambda agents: Destination.parse(".".join(agents)))


@st.composite
def command_texts(draw: st.DrawFn) -> str:
    """Well-formed job commands in canonical form (safe for the official wheel)."""
    dest = draw(destinations)
    user = f"{draw(names)}.{draw(names)}.{draw(names)}"
    project = f"{draw(names)}.{draw(names)}"
    portal = draw(names)
    instruction = draw(
        st.sampled_from(
            [
                f"add_user {user}",
                f"remove_user {user}",
                f"is_protected_user {user}",
                f"add_project {project}",
                f"get_users {project}",
                f"get_projects {portal}",
                f"set_project_quota {project} scratch 100.00 GB",
                f"set_limit {project} 36000",
                f"get_usage_report {project} 2024-01-01:2024-01-31",
                f"submit {dest} add_user {user}",
                "get_offerings",
            ]
        )
    )
    return f"{dest} {instruction}"


commands = command_texts().map(Command.parse)
timestamps = st.integers(TIMESTAMP_MIN, TIMESTAMP_MAX)
versions = st.one_of(st.integers(0, 5000), st.integers(0, VERSION_MAX))
texts = st.text(max_size=40)  # hypothesis never generates lone surrogates


@st.composite
def jobs(draw: st.DrawFn, states: st.SearchStrategy[Status] | None = None) -> Job:
    """Any wire-valid job, every field drawn independently."""
    forwarded = draw(st.none() | destinations)
    return Job(
        id=draw(st.uuids()),
        created=draw(timestamps),
        changed=draw(timestamps),
        expires=draw(timestamps),
        version=draw(versions),
        command=draw(commands),
        state=draw(states if states is not None else st.sampled_from(list(Status))),
        result=draw(st.none() | texts),
        result_type=draw(st.none() | texts),
        forwarded_for=forwarded,
    )


def json_values(max_leaves: int = 12) -> st.SearchStrategy[Any]:
    """Arbitrary JSON values (for fuzzing decoders)."""
    scalars = (
        st.none()
        | st.booleans()
        | st.integers(-(2**70), 2**70)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=12)
    )
    return st.recursive(
        scalars,
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(st.text(max_size=10), children, max_size=4)
        ),
        max_leaves=max_leaves,
    )
