"""Where the local PostgreSQL keeps its cluster: reachability by the server's user."""

from __future__ import annotations

import os
import pwd
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from auditrelay.ops.postgres_local import (
    SHARED_ROOT,
    abandoned,
    can_enter,
    first_unreachable,
    remove_abandoned,
    server_home,
    shared_folder_name,
)

UID, GID = 4242, 4343


def info(uid: int, gid: int, mode: int) -> os.stat_result:
    return os.stat_result((stat.S_IFDIR | mode, 0, 0, 0, uid, gid, 0, 0, 0, 0))


@pytest.mark.parametrize(("owner", "group", "mode", "expected"), [
    (UID, 0, 0o700, True),        # its own private directory
    (0, 0, 0o700, False),         # root's private directory: mktemp -d, /root
    (0, GID, 0o710, True),        # a group it belongs to may enter
    (0, GID, 0o700, False),
    (0, 0, 0o711, True),          # others may traverse
    (0, 0, 0o755, True),
    (UID, 0, 0o077, False),       # the owner bits alone count for the owner
])
def test_can_enter_reads_the_owner_group_and_other_bits(
        owner: int, group: int, mode: int, expected: bool) -> None:
    assert can_enter(info(owner, group, mode), UID, {GID}) is expected


def test_root_may_enter_anything() -> None:
    assert can_enter(info(1, 1, 0o000), 0, {0})


def nobody() -> pwd.struct_passwd:
    return pwd.getpwnam("nobody")


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory anyone may enter (pytest's own tmp_path sits in a private one)."""
    with tempfile.TemporaryDirectory() as folder:
        os.chmod(folder, 0o755)  # noqa: S103 - the point: a directory anyone may enter
        path = Path(folder)
        for parent in path.parents:
            if not can_enter(parent.stat(), nobody().pw_uid, {nobody().pw_gid}):
                pytest.skip(f"{parent} is private on this machine")
        yield path


def test_the_first_private_parent_is_named(open_dir: Path) -> None:
    private = open_dir / "private"
    private.mkdir(mode=0o700)
    target = private / "checkout" / "var" / "postgres"
    assert first_unreachable(target, nobody()) == private


def test_a_path_open_all_the_way_is_reachable(open_dir: Path) -> None:
    assert first_unreachable(open_dir / "not" / "made" / "yet", nobody()) is None


def test_shared_folder_names_differ_per_checkout_and_stay_readable() -> None:
    first = shared_folder_name(Path("/root/work/auditrelay/var/postgres"))
    second = shared_folder_name(Path("/root/other/auditrelay/var/postgres"))
    assert first != second
    assert first.startswith("root-work-auditrelay-var-")
    assert shared_folder_name(Path("/root/work/auditrelay/var/postgres")) == first


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands the server to another user")
def test_as_root_a_private_checkout_is_moved_under_the_shared_root(tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o700)
    preferred = tmp_path / "clone" / "var" / "postgres"
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("no postgres system user yet")
    assert server_home(preferred).parent == SHARED_ROOT


# -- the shared folders of deleted checkouts ----------------------------------------------


def cluster_of(root: Path, name: str, var: Path | None, *, running: bool = False) -> Path:
    """A folder under ``root`` as ``up`` leaves it: its owner file (unless ``var`` is None)
    and, when ``running``, a postmaster.pid naming a live process (this one)."""
    home = root / name
    (home / "data").mkdir(parents=True)
    if var is not None:
        (home / "owner").write_text(f"{var / 'postgres'}\n")
    if running:
        (home / "data" / "postmaster.pid").write_text(f"{os.getpid()}\n/data\n")
    return home


def test_only_stopped_clusters_of_vanished_checkouts_are_abandoned(tmp_path: Path) -> None:
    root, checkouts = tmp_path / "shared", tmp_path / "checkouts"
    (checkouts / "alive" / "var").mkdir(parents=True)
    gone = checkouts / "deleted" / "var"
    alive = cluster_of(root, "alive", checkouts / "alive" / "var")
    deleted = cluster_of(root, "deleted", gone)
    still_running = cluster_of(root, "running", gone, running=True)
    unowned = cluster_of(root, "unowned", None)
    dead_pid = cluster_of(root, "stale-pid", gone)
    (dead_pid / "data" / "postmaster.pid").write_text("999999999\n")

    assert abandoned(root) == [deleted, dead_pid]
    assert remove_abandoned(root, keep=dead_pid) == [deleted]
    assert not deleted.exists()
    assert all(p.exists() for p in (alive, still_running, unowned, dead_pid))


def test_no_shared_root_means_nothing_abandoned(tmp_path: Path) -> None:
    assert abandoned(tmp_path / "absent") == []
