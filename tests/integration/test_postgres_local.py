"""``auditrelay postgres up`` from a private checkout and from a normal one.

As root the server runs as the ``postgres`` system user, who cannot enter a
mode-700 directory: the cluster of a checkout inside one must live elsewhere,
and both kinds of checkout must reach a working database.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from auditrelay.ops.postgres_local import SHARED_ROOT, LocalPostgres, shared_folder_name
from auditrelay.schemas.settings import Settings
from tests.support.servers import free_port

pytestmark = pytest.mark.slow


@pytest.fixture
def private_checkout() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as folder:  # mode 700, like `mktemp -d`
        assert os.stat(folder).st_mode & 0o777 == 0o700
        yield Path(folder) / "clone"


@pytest.fixture
def open_checkout() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as folder:
        os.chmod(folder, 0o755)  # noqa: S103 - the point: a directory anyone may enter
        yield Path(folder) / "clone"


def provision_and_query(checkout: Path) -> LocalPostgres:
    server = LocalPostgres.from_settings(
        Settings(var_dir=checkout / "var", postgres_port=free_port()))
    try:
        assert server.up()
        with psycopg.connect(server.url.replace("+psycopg", "")) as conn:
            row = conn.execute("SELECT current_database(), 6 * 7").fetchone()
        assert row == ("auditrelay", 42)
        if server.home.parent == SHARED_ROOT:
            # Whose it is, so that `up` can delete it once that checkout is gone.
            owner = (server.home / "owner").read_text().strip()
            assert owner == str((checkout / "var" / "postgres").resolve())
    finally:
        server.down()
        if server.home.parent == SHARED_ROOT:
            shutil.rmtree(server.home, ignore_errors=True)
    assert not server.running()
    return server


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands the server to another user")
def test_a_checkout_in_a_private_directory_gets_a_working_database(
        private_checkout: Path) -> None:
    server = provision_and_query(private_checkout)
    # The postgres user could not have entered the checkout: the cluster lived outside it.
    assert server.home.parent == SHARED_ROOT
    # Named after the checkout (by the same rule, so that names holding "_" match too).
    assert server.home.name == shared_folder_name((private_checkout / "var" / "postgres")
                                                  .resolve())
    # Readable: the temporary folder's name, "_" and all, shows in it.
    assert re.sub(r"[^A-Za-z0-9]+", "-", private_checkout.parent.name) in server.home.name


def test_a_checkout_in_a_normal_directory_keeps_its_database_inside(open_checkout: Path) -> None:
    server = provision_and_query(open_checkout)
    assert server.home == (open_checkout / "var" / "postgres").resolve()
