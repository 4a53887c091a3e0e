"""A PostgreSQL server of the project's own, on 127.0.0.1, from Debian's packages.

``LocalPostgres.up()`` installs ``postgresql`` from Debian when missing, creates a
cluster under ``var/postgres``, starts it on 127.0.0.1 (port setting, 5433 by
default so it never collides with Debian's own cluster on 5432) and creates the
``auditrelay`` database. Authentication is ``trust`` on loopback: this server is
for development and tests on one machine, never for production.

As root, the server runs as the ``postgres`` system user (it refuses to run as
root), who must be able to reach its data directory. A checkout inside a private
directory (mode 700: ``/root``, most homes, anything ``mktemp -d`` made) is not
reachable, so the cluster then lives under ``/var/lib/auditrelay/postgres/``, in a
folder named after the checkout's ``var`` path (several checkouts never share one).
``auditrelay postgres status`` says where. Such a folder names its checkout's ``var``
folder in an ``owner`` file; ``up`` deletes the folders whose ``var`` folder is gone and
whose server is not running (a deleted clone's cluster, which would have been deleted
with it had it lived inside).
"""

from __future__ import annotations

import grp
import hashlib
import os
import pwd
import re
import shutil
import stat
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from auditrelay.ops.system import apt_install, run_checked
from auditrelay.schemas.errors import ProvisioningError
from auditrelay.schemas.settings import Settings

_SYSTEM_USER = "postgres"
_DATABASE = "auditrelay"
#: Where clusters live whose checkout the server user cannot reach: root-owned, traversable.
SHARED_ROOT = Path("/var/lib/auditrelay/postgres")
#: In a folder under SHARED_ROOT: the ``var/postgres`` path of the checkout it serves.
_OWNER_FILE = "owner"


@dataclass(frozen=True)
class LocalPostgres:
    port: int
    home: Path

    #: The checkout's own ``var/postgres``, where the cluster lives when it can.
    preferred: Path | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalPostgres:
        preferred = (settings.var_dir / "postgres").resolve()
        return cls(port=settings.postgres_port, home=server_home(preferred),
                   preferred=preferred)

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def socket_dir(self) -> Path:
        return self.home / "run"

    @property
    def log_path(self) -> Path:
        return self.home / "server.log"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://{_SYSTEM_USER}@127.0.0.1:{self.port}/{_DATABASE}"

    @contextmanager
    def temporary_database(self, prefix: str) -> Iterator[str]:
        """The SQLAlchemy URL of a new, empty database, dropped when the block ends."""
        import psycopg
        from psycopg import sql

        admin = f"postgresql://{_SYSTEM_USER}@127.0.0.1:{self.port}/postgres"
        name = f"{prefix}_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            yield f"postgresql+psycopg://{_SYSTEM_USER}@127.0.0.1:{self.port}/{name}"
        finally:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                             .format(sql.Identifier(name)))

    def up(self) -> bool:
        """Start the server unless it runs; True when this call started it."""
        bin_dir = ensure_installed()
        if self.running():
            return False
        self._prepare(bin_dir)
        _as_postgres([str(bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_path),
                      "-w", "-t", "60", "-o",
                      f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1",
                      "start"], "start PostgreSQL")
        self._create_database(bin_dir)
        return True

    def down(self) -> bool:
        if not self.running():
            return False
        bin_dir = ensure_installed()
        _as_postgres([str(bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w",
                      "stop"], "stop PostgreSQL")
        return True

    def running(self) -> bool:
        pid_file = self.data_dir / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().split("\n", 1)[0])
            os.kill(pid, 0)
        except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
            return False
        return True

    def _prepare(self, bin_dir: Path) -> None:
        if os.geteuid() == 0:
            user = pwd.getpwnam(_SYSTEM_USER)
            if self.home.parent == SHARED_ROOT:
                for folder in (SHARED_ROOT.parent, SHARED_ROOT):
                    folder.mkdir(exist_ok=True)
                    folder.chmod(0o755)  # whatever the umask: the server user walks through
                remove_abandoned(SHARED_ROOT, keep=self.home)
            blocked = first_unreachable(self.home, user)
            if blocked is not None:
                raise ProvisioningError(
                    f"PostgreSQL cannot start: the '{_SYSTEM_USER}' system user cannot enter "
                    f"{blocked}, a parent of its data directory {self.data_dir}; make it "
                    f"traversable (chmod o+x {blocked}) or set AUDITRELAY_VAR_DIR elsewhere")
            for path in (self.home, self.socket_dir):
                path.mkdir(parents=True, exist_ok=True)
                os.chown(path, user.pw_uid, user.pw_gid)
            if self.home.parent == SHARED_ROOT and self.preferred is not None:
                self.preferred.parent.mkdir(parents=True, exist_ok=True)
                (self.home / _OWNER_FILE).write_text(f"{self.preferred}\n")
        else:
            self.socket_dir.mkdir(parents=True, exist_ok=True)
        if (self.data_dir / "PG_VERSION").exists():
            return
        _as_postgres([str(bin_dir / "initdb"), "-D", str(self.data_dir), "-U", _SYSTEM_USER,
                      "--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8"], "initdb")

    def _create_database(self, bin_dir: Path) -> None:
        psql = [str(bin_dir / "psql"), "-h", "127.0.0.1", "-p", str(self.port),
                "-U", _SYSTEM_USER, "-d", "postgres", "-tAc"]
        # _DATABASE is a constant identifier, never input.
        listed = run_checked([*psql, "SELECT datname FROM pg_database"], "list databases")
        if _DATABASE not in listed.split():
            run_checked([*psql, f"CREATE DATABASE {_DATABASE}"], "create the auditrelay database")


def server_home(preferred: Path) -> Path:
    """``preferred`` when the server's user can reach it, else a folder under ``SHARED_ROOT``.

    Only root hands the server to another user; anyone else runs it as themselves.
    """
    if os.geteuid() != 0:
        return preferred
    try:
        user = pwd.getpwnam(_SYSTEM_USER)
    except KeyError:  # not installed yet: ``up`` installs it, and asks again next time
        return preferred
    if first_unreachable(preferred, user) is None:
        return preferred
    return SHARED_ROOT / shared_folder_name(preferred)


def shared_folder_name(preferred: Path) -> str:
    """A readable, collision-free folder name for the cluster of one checkout."""
    readable = re.sub(r"[^A-Za-z0-9]+", "-", str(preferred.parent)).strip("-")[-40:]
    digest = hashlib.sha256(str(preferred).encode()).hexdigest()[:12]
    return f"{readable}-{digest}"


def abandoned(root: Path) -> list[Path]:
    """The folders under ``root`` whose checkout's ``var`` folder is gone and whose server
    does not run. A folder without an ``owner`` file (made before there was one, or
    being made) is never among them: nothing says whose it is."""
    if not root.is_dir():
        return []
    found = []
    for home in sorted(p for p in root.iterdir() if p.is_dir()):
        try:
            preferred = Path((home / _OWNER_FILE).read_text().strip())
        except (FileNotFoundError, NotADirectoryError, UnicodeDecodeError):
            continue
        if preferred.is_absolute() and not preferred.parent.exists() \
                and not LocalPostgres(port=0, home=home).running():
            found.append(home)
    return found


def remove_abandoned(root: Path, *, keep: Path) -> list[Path]:
    """Delete :func:`abandoned` folders but ``keep``; returns those deleted."""
    removed = [home for home in abandoned(root) if home != keep]
    for home in removed:
        shutil.rmtree(home, ignore_errors=True)
    return removed


def first_unreachable(path: Path, user: pwd.struct_passwd) -> Path | None:
    """The first existing ancestor of ``path`` (itself included) ``user`` cannot enter."""
    groups = {user.pw_gid, *(g.gr_gid for g in _groups_of(user.pw_name))}
    for folder in [*reversed(path.parents), path]:
        try:
            info = folder.stat()
        except FileNotFoundError:
            return None  # created later, by us, for that user
        if not can_enter(info, user.pw_uid, groups):
            return folder
    return None


def can_enter(info: os.stat_result, uid: int, groups: set[int]) -> bool:
    """Whether a user may traverse a directory with these owner and mode bits."""
    if uid == 0:
        return True
    if info.st_uid == uid:
        return bool(info.st_mode & stat.S_IXUSR)
    if info.st_gid in groups:
        return bool(info.st_mode & stat.S_IXGRP)
    return bool(info.st_mode & stat.S_IXOTH)


def _groups_of(name: str) -> list[grp.struct_group]:
    return [g for g in grp.getgrall() if name in g.gr_mem]


def ensure_installed() -> Path:
    """The server binaries' folder, installing Debian's postgresql when missing."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    if not found:
        apt_install(["postgresql"])
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    if not found:
        raise ProvisioningError("postgresql installed, but no pg_ctl under /usr/lib/postgresql")
    return found[-1].parent


def _as_postgres(argv: list[str], what: str) -> None:
    if os.geteuid() == 0:
        argv = ["runuser", "-u", _SYSTEM_USER, "--", *argv]
    run_checked(argv, what)
