"""The filesystem role over real directories: creation, ownership, idempotency, removal."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from .conftest import (
    GID,
    OTHER_UID,
    PROJECT,
    UID,
    USER,
    Sandbox,
    envelope,
    make_sandbox,
    needs_root,
)

pytestmark = needs_root

ADD_USER = f"add_local_user {USER}"
REMOVE_USER = f"remove_local_user {USER}"


def owner_mode(path: Path) -> tuple[int, int, int]:
    info = os.lstat(path)
    return info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)


def snapshot(root: Path) -> dict[str, tuple[int, int, int]]:
    """Every entry under ``root`` with its owner and mode (the ledger database excluded)."""
    found: dict[str, tuple[int, int, int]] = {}
    for here, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(here) / name
            if not name.startswith("q.sqlite"):
                found[str(path.relative_to(root))] = owner_mode(path)
    return found


# --- creation ------------------------------------------------------------------------------


async def test_add_local_project_creates_project_dirs(sandbox: Sandbox, strict_umask: None) -> None:
    assert await sandbox.run(f"add_local_project {PROJECT}") is None

    # Project volume: root-owned, project group, setgid 2770 despite the 077 umask.
    assert owner_mode(sandbox.root / "projects" / "proj") == (0, GID, 0o2770)
    # User volumes get their project-level directory, with the volume's mode.
    for root in ("home", "scratch1", "scratch2"):
        assert owner_mode(sandbox.root / root / "proj") == (0, GID, 0o755)


async def test_add_local_user_creates_owned_dirs(sandbox: Sandbox, strict_umask: None) -> None:
    assert await sandbox.run(ADD_USER) is None

    assert owner_mode(sandbox.home()) == (UID, GID, 0o755)
    for root in ("scratch1", "scratch2"):
        assert owner_mode(sandbox.root / root / "proj" / "alice.proj") == (UID, GID, 0o755)
    # The project came first, as in OpenPortal.
    assert owner_mode(sandbox.root / "projects" / "proj") == (0, GID, 0o2770)
    assert any("created" in line and "alice.proj" in line for line in sandbox.audit)


async def test_add_local_user_twice_changes_nothing(sandbox: Sandbox) -> None:
    await sandbox.run(ADD_USER)
    before = snapshot(sandbox.root)
    sandbox.audit.clear()

    await sandbox.run(ADD_USER)

    assert snapshot(sandbox.root) == before
    assert sandbox.audit == []


async def test_existing_dirs_get_owner_and_mode_corrected(sandbox: Sandbox) -> None:
    await sandbox.run(ADD_USER)
    os.chown(sandbox.home(), OTHER_UID, 0)
    os.chmod(sandbox.home(), 0o777)
    os.chmod(sandbox.root / "projects" / "proj", 0o755)

    await sandbox.run(ADD_USER)

    assert owner_mode(sandbox.home()) == (UID, GID, 0o755)
    assert owner_mode(sandbox.root / "projects" / "proj") == (0, GID, 0o2770)
    assert any("set owner" in line for line in sandbox.audit)


async def test_missing_intermediate_directories_are_created(tmp_path: Path) -> None:
    from broadgauge.agents.filesystem.layout import parse_layout

    root = tmp_path / "fs"
    (root / "home").mkdir(parents=True)
    layout = parse_layout(
        {
            "user_volumes": {
                "home": {"roots": [str(root / "home")], "subpath": "data/{PROJECT}/u/{User}"}
            }
        }
    )
    box = make_sandbox(root, layout)

    await box.run(ADD_USER)

    # Static components are plain intermediates; the project-level directory is the part
    # of the subpath before {user}.
    assert owner_mode(root / "home" / "data") == (0, 0, 0o755)
    assert owner_mode(root / "home" / "data" / "proj") == (0, 0, 0o755)
    assert owner_mode(root / "home" / "data" / "proj" / "u") == (0, GID, 0o755)
    assert owner_mode(root / "home" / "data" / "proj" / "u" / "alice.proj") == (UID, GID, 0o755)


async def test_without_chown_ownership_is_left_alone(tmp_path: Path) -> None:
    box = make_sandbox(tmp_path / "fs", chown=False)
    await box.run(ADD_USER)
    uid, gid, mode = owner_mode(box.home())
    assert (uid, gid, mode) == (os.geteuid(), os.getegid(), 0o755)


# --- paths -----------------------------------------------------------------------------------


async def test_dir_queries(sandbox: Sandbox) -> None:
    assert await sandbox.run(f"get_local_home_dir {USER}") == str(sandbox.home())
    assert await sandbox.run(f"get_local_user_dirs {USER}") == [
        str(sandbox.home()),
        str(sandbox.root / "scratch1" / "proj" / "alice.proj"),
        str(sandbox.root / "scratch2" / "proj" / "alice.proj"),
    ]
    assert await sandbox.run(f"get_local_project_dirs {PROJECT}") == [
        str(sandbox.root / "projects" / "proj")
    ]
    # Queries create nothing.
    assert not (sandbox.root / "home" / "proj").exists()


async def test_results_encode_as_openportal_types(sandbox: Sandbox) -> None:
    env = envelope(f"get_local_user_dirs {USER}")
    value = await sandbox.role.dispatch(env)
    assert (
        env.job.pending(now=time.time()).complete_with(value, now=time.time()).result_type
        == "Vec<String>"
    )
    env = envelope(f"add_local_user {USER}")
    value = await sandbox.role.dispatch(env)
    assert (
        env.job.pending(now=time.time()).complete_with(value, now=time.time()).result_type == "None"
    )


# --- removal ------------------------------------------------------------------------------


async def test_remove_recycles_and_re_add_restores(sandbox: Sandbox) -> None:
    await sandbox.run(ADD_USER)
    (sandbox.home() / "thesis.tex").write_text("chapter 1")

    await sandbox.run(REMOVE_USER)

    recycled = sandbox.root / "home" / "proj" / ".recycle" / "alice.proj"
    assert not sandbox.home().exists()
    assert (recycled / "thesis.tex").read_text() == "chapter 1"
    assert owner_mode(recycled.parent)[2] == 0o700  # other users cannot browse the bin

    await sandbox.run(ADD_USER)

    assert (sandbox.home() / "thesis.tex").read_text() == "chapter 1"
    assert owner_mode(sandbox.home()) == (UID, GID, 0o755)
    assert not recycled.exists()
    assert any("restored" in line for line in sandbox.audit)


async def test_remove_twice_keeps_the_older_recycled_copy(sandbox: Sandbox) -> None:
    await sandbox.run(ADD_USER)
    (sandbox.home() / "v1").write_text("1")
    await sandbox.run(REMOVE_USER)
    await sandbox.run(REMOVE_USER)  # already gone: nothing to do
    (sandbox.home()).mkdir()  # someone re-made it by hand
    (sandbox.home() / "v2").write_text("2")

    await sandbox.run(REMOVE_USER)

    bin_dir = sandbox.root / "home" / "proj" / ".recycle"
    assert (bin_dir / "alice.proj" / "v2").exists()
    older = [p for p in bin_dir.iterdir() if p.name.startswith("alice.proj.")]
    assert len(older) == 1
    assert (older[0] / "v1").exists()


async def test_delete_on_remove_is_opt_in(tmp_path: Path) -> None:
    box = make_sandbox(tmp_path / "fs", delete_on_remove=True)
    await box.run(ADD_USER)
    (box.home() / "data").write_text("x")

    await box.run(REMOVE_USER)

    assert not box.home().exists()
    assert not (box.root / "home" / "proj" / ".recycle").exists()
    assert any(line.startswith("deleted") for line in box.audit)


async def test_remove_local_project_recycles_everything(sandbox: Sandbox) -> None:
    await sandbox.run(ADD_USER)
    await sandbox.run(f"remove_local_project {PROJECT}")

    assert (sandbox.root / "projects" / ".recycle" / "proj").is_dir()
    assert (sandbox.root / "home" / ".recycle" / "proj" / "alice.proj").is_dir()
    assert not (sandbox.root / "projects" / "proj").exists()

    await sandbox.run(ADD_USER)
    assert owner_mode(sandbox.home()) == (UID, GID, 0o755)
    assert not (sandbox.root / "home" / ".recycle" / "proj").exists()


async def test_remove_of_unknown_user_is_a_no_op(sandbox: Sandbox) -> None:
    assert await sandbox.run(REMOVE_USER) is None
    assert await sandbox.run(f"remove_local_project {PROJECT}") is None
    assert sandbox.audit == []


# --- links -------------------------------------------------------------------------------


async def test_project_links_are_made_and_removed(tmp_path: Path) -> None:
    from broadgauge.agents.filesystem.layout import parse_layout

    root = tmp_path / "fs"
    (root / "projects").mkdir(parents=True)
    (root / "work").mkdir()
    layout = parse_layout(
        {
            "project_volumes": {
                "p": {
                    "roots": [str(root / "projects")],
                    "links": [str(root / "work" / "{project}")],
                }
            }
        }
    )
    box = make_sandbox(root, layout)

    await box.run(f"add_local_project {PROJECT}")
    await box.run(f"add_local_project {PROJECT}")
    link = root / "work" / "proj"
    assert os.readlink(link) == str(root / "projects" / "proj")

    await box.run(f"remove_local_project {PROJECT}")
    assert not link.is_symlink()


# --- escapes -------------------------------------------------------------------------------


async def test_symlink_at_user_path_is_refused_and_not_followed(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir(mode=0o700)
    os.chmod(outside, 0o700)
    before = owner_mode(outside)
    await sandbox.run(f"add_local_project {PROJECT}")
    sandbox.home().symlink_to(outside)

    await sandbox.assert_refused(ADD_USER, "symlink or not a directory")

    assert owner_mode(outside) == before
    assert sandbox.home().is_symlink()


async def test_symlink_as_project_component_is_refused(sandbox: Sandbox, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (sandbox.root / "home" / "proj").symlink_to(outside)

    await sandbox.assert_refused(ADD_USER, "refusing")

    assert list(outside.iterdir()) == []


async def test_symlink_at_user_path_is_not_removed_through(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("keep")
    await sandbox.run(f"add_local_project {PROJECT}")
    sandbox.home().symlink_to(outside)

    await sandbox.assert_refused(REMOVE_USER, "refusing to remove")
    box = make_sandbox(sandbox.root, delete_on_remove=True)
    await box.assert_refused(REMOVE_USER, "refusing to remove")

    assert (outside / "precious").read_text() == "keep"


@pytest.mark.parametrize(
    "mapping",
    [
        "alice.proj.portal:a/../../../etc:portal.proj",
        "alice.proj.portal:x/y:portal.proj",
        "alice.a/b.portal:alice.proj:portal.proj",
    ],
)
async def test_names_that_would_leave_the_root_are_refused(sandbox: Sandbox, mapping: str) -> None:
    await sandbox.assert_refused(f"add_local_user {mapping}", "'/' is not allowed")
    await sandbox.assert_refused(f"get_local_home_dir {mapping}", "'/' is not allowed")


async def test_missing_root_is_a_clear_error(tmp_path: Path) -> None:
    box = make_sandbox(tmp_path / "fs")
    os.rmdir(box.root / "projects")
    await box.assert_refused(ADD_USER, r"volume root .*projects does not exist")


async def test_unknown_names_are_a_clear_error(sandbox: Sandbox) -> None:
    await sandbox.assert_refused(
        "add_local_user carol.proj.portal:carol.proj:portal.proj",
        r"Could not find a user called carol\.proj",
    )
    await sandbox.assert_refused(
        "add_local_project x.portal:other.grp", r"Could not find a group called other\.grp"
    )


async def test_an_unknown_user_is_refused_before_anything_is_made(sandbox: Sandbox) -> None:
    # Its ids are looked up with the project's, in the same trip to the worker thread as
    # the project's directories: still first.
    await sandbox.assert_refused("add_local_user carol.proj.portal:carol.proj:portal.proj", "carol")

    assert not (sandbox.root / "projects" / "proj").exists()
    assert sandbox.audit == []


async def test_what_was_made_before_a_failure_is_audited(sandbox: Sandbox, tmp_path: Path) -> None:
    # The user's directories are made in one call on the worker thread; the last one fails.
    outside = tmp_path / "outside"
    outside.mkdir()
    await sandbox.run(f"add_local_project {PROJECT}")
    (sandbox.root / "scratch2" / "proj" / "alice.proj").symlink_to(outside)
    sandbox.audit.clear()

    await sandbox.assert_refused(ADD_USER, "symlink or not a directory")

    assert sandbox.home().is_dir()
    made = [line for line in sandbox.audit if line.startswith("created")]
    assert any(str(sandbox.home()) in line for line in made)
    assert any(str(sandbox.root / "scratch1" / "proj" / "alice.proj") in line for line in made)


async def test_other_instructions_are_refused(sandbox: Sandbox) -> None:
    await sandbox.assert_refused("get_local_limit p.portal:g", "Invalid instruction")
