"""Parsing the volume tables, their validation errors, and the paths they give."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from broadgauge.agents.filesystem.agent import FilesystemRole, build_engines
from broadgauge.agents.filesystem.ids import StaticResolver
from broadgauge.agents.filesystem.layout import (
    LayoutError,
    parse_layout,
    parse_mode,
    sanitize_subpath,
)
from broadgauge.grammar import ProjectMapping, QuotaLimit, UserMapping
from broadgauge.jobs import AgentType
from broadgauge.runtime.config import AgentConfig
from broadgauge.wire import ServiceConfig
from tests.jobs.agent_helpers import make_agent

USER = UserMapping.parse("alice.proj.portal:alice.proj:portal.proj")
PROJECT = ProjectMapping.parse("proj.portal:portal.proj")

#: A filesystem agent's config file: its service, then OpenPortal's volume tables.
CONFIG = (
    AgentConfig(AgentType.FILESYSTEM, ServiceConfig.create("filesystem", port=0), {}).dumps()
    + """
[quota_engines.home_quota]
type = "linux"
filesystem = "/dev/sda1"
setquota = "docker exec nfs setquota"

[user_volumes.home]
roots = ["/data/users"]
is_home = true
max_quota = "1TB"
default_quota = "100 GB"
quota_engine = "home_quota"

[user_volumes.scratch]
roots = ["/scratch/a", "/scratch/b"]
subpath = "{PROJECT}/{User}"
permissions = ["0700", "750"]

[project_volumes.projects]
roots = ["/data/projects", "/fast/projects"]
links = ["", "/work/{Project}"]
"""
)


def test_reads_the_openportal_tables_from_an_agent_config() -> None:
    config = AgentConfig.loads(CONFIG)
    layout = parse_layout(config.other)

    home = layout.home_volume()
    assert home.name == "home"
    assert home.max_quota == QuotaLimit.parse("1TB")
    assert home.default_quota == QuotaLimit.parse("100GB")
    assert str(home.user_dirs(USER)[0]) == "/data/users/proj/alice.proj"
    scratch = layout.user_volume("scratch")
    assert [r.mode for r in scratch.roots] == [0o700, 0o750]
    assert [str(p) for p in scratch.user_dirs(USER)] == [
        "/scratch/a/proj/alice.proj",
        "/scratch/b/proj/alice.proj",
    ]
    projects = layout.project_volume("projects")
    assert [r.mode for r in projects.roots] == [0o2770, 0o2770]
    assert [(str(d), str(link)) for d, link in projects.link_paths(PROJECT)] == [
        ("/fast/projects/proj", "/work/proj")
    ]
    assert layout.quota_engines["home_quota"].options["setquota"] == "docker exec nfs setquota"


def test_home_is_automatic_for_a_single_user_volume() -> None:
    layout = parse_layout({"user_volumes": {"u": {"roots": ["/u"]}}})
    assert layout.home_volume().name == "u"
    assert str(layout.home_volume().user_dirs(USER)[0]) == "/u/proj/alice.proj"
    assert [str(p) for p in layout.home_volume().project_dirs(PROJECT)] == ["/u/proj"]


def test_no_home_volume_is_a_clear_error() -> None:
    layout = parse_layout({"user_volumes": {"a": {"roots": ["/a"]}, "b": {"roots": ["/b"]}}})
    with pytest.raises(LayoutError, match="No user home volume configured"):
        layout.home_volume()


def test_placeholders_and_modes() -> None:
    assert sanitize_subpath("{PROJECT}/x/{UsEr}") == "{project}/x/{user}"
    assert parse_mode("755") == 0o755
    assert parse_mode(" 2770 ") == 0o2770
    with pytest.raises(LayoutError, match="not an octal mode"):
        parse_mode("0999")
    with pytest.raises(LayoutError, match="not an octal mode"):
        parse_mode("17777")


def user(**table: Any) -> dict[str, Any]:
    return {"user_volumes": {"v": {"roots": ["/r"], **table}}}


def project(**table: Any) -> dict[str, Any]:
    return {"project_volumes": {"v": {"roots": ["/r"], **table}}}


@pytest.mark.parametrize(
    ("tables", "message"),
    [
        ({"user_volumes": {"v": {}}}, r"\[user_volumes.v\] roots must be a list of strings"),
        (user(roots=[]), "must have at least one root directory"),
        (user(roots=["relative"]), "must be an absolute path"),
        (user(roots=["/"]), "'/' cannot be a root"),
        (user(roots=["/a/../etc"]), "may not contain '..'"),
        (user(subpath="{user}"), "must contain the {project} placeholder"),
        (user(subpath="{project}/../{user}"), "may not use '..'"),
        (user(permissions="rwx"), "not an octal mode"),
        (user(permissions=["0755", "0700"]), "1 roots but 2 permissions values"),
        (user(quota_engine="nope"), "references unknown quota engine: 'nope'"),
        (user(default_quota="2TB", max_quota="1TB"), "cannot be larger than max_quota"),
        (user(default_quota="unlimited", max_quota="1TB"), "cannot be larger than max_quota"),
        (user(max_quota="1024"), "Unknown unit"),
        (user(is_home="yes"), "is_home must be true or false"),
        (user(default_inode_limit=-1), "cannot be negative"),
        (user(colour="blue"), r"unknown key\(s\) colour"),
        (user(roots=["/a", "/b"], is_home=True), "must have exactly one root directory"),
        (project(subpath="{project}/{user}"), "cannot use {user}"),
        (project(links=["/w/{project}", ""]), "1 roots but 2 link values"),
        (project(links=["w/{project}"]), "must be an absolute path"),
        (project(links=["/w/static"]), "must use {project}"),
        (project(is_home=True), r"unknown key\(s\) is_home"),
        (
            {
                "user_volumes": {
                    "a": {"roots": ["/a"], "is_home": True},
                    "b": {"roots": ["/b"], "is_home": True},
                }
            },
            "Multiple user volumes have is_home=true",
        ),
        ({"quota_engines": {"q": {"type": "zfs"}}}, "type must be one of"),
        ({"quota_engines": []}, r"\[quota_engines\] must be a table"),
        ({"user_volumes": {"bad name": {"roots": ["/r"]}}}, "no spaces"),
    ],
)
def test_invalid_tables_are_refused_clearly(tables: dict[str, Any], message: str) -> None:
    with pytest.raises(LayoutError, match=message):
        parse_layout(tables)


@pytest.mark.parametrize(
    ("engine", "message"),
    [
        ({"type": "linux"}, "needs filesystem"),
        ({"type": "linux", "filesystem": "/dev/x", "timeout": 0}, "timeout must be"),
        ({"type": "lustre", "lfs_command": "/no/lfs"}, r"lfs_command: '/no/lfs' was not found"),
        ({"type": "ledger"}, "set database, or give the agent a data directory"),
        ({"type": "ledger", "database": "/x.sqlite", "max_entries": 0}, "max_entries"),
    ],
)
def test_engines_that_cannot_be_built(engine: dict[str, Any], message: str) -> None:
    layout = parse_layout({"quota_engines": {"q": engine}})
    with pytest.raises(LayoutError, match=message):
        build_engines(layout)


def test_fake_engine_becomes_a_ledger(tmp_path: Path) -> None:
    layout = parse_layout({"quota_engines": {"q": {"type": "fake", "quota_dir": str(tmp_path)}}})
    engines = build_engines(layout)
    assert (tmp_path / "quotas.sqlite").exists()
    assert type(engines["q"]).__name__ == "LedgerQuotaEngine"


def test_role_refuses_volumes_whose_engine_was_not_built() -> None:
    layout = parse_layout(
        {
            "quota_engines": {"q": {"type": "ledger"}},
            "user_volumes": {"v": {"roots": ["/r"], "quota_engine": "q"}},
        }
    )
    agent = make_agent("fs", AgentType.FILESYSTEM)
    with pytest.raises(LayoutError, match="uses quota engine 'q', which was not built"):
        FilesystemRole(agent, layout, StaticResolver({}, {}), {})


def test_flat_and_deep_user_subpaths() -> None:
    flat = parse_layout(user(subpath="{project}")).user_volume("v")
    assert flat.project_parts == flat.parts == ("{project}",)
    deep = parse_layout(user(subpath="/x//{project}/u/{user}/")).user_volume("v")
    assert deep.parts == ("x", "{project}", "u", "{user}")
    assert [str(p) for p in deep.project_dirs(PROJECT)] == ["/r/x/proj/u"]
    assert str(deep.quota_dir(USER)) == "/r/x/proj/u/alice.proj"
