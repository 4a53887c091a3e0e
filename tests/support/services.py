"""Servers a test session shares across its pytest-xdist workers: started once, stopped once.

``make test`` runs the suite in two worker processes (``-n 2``), and each runs the
session fixtures itself. So the first worker that needs the broker (or PostgreSQL)
starts it under a file lock, the others find it answering, and none stops it:
the controlling process does, when the session ends, if this session started it
(a server that already ran before the session is left running). Without xdist the
one process plays both parts.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["SESSION_DIR_ENV", "begin_session", "end_session", "start_once"]

#: Set by the controlling process before the workers start; they inherit it.
SESSION_DIR_ENV = "PYTEST_AUDITRELAY_SESSION_DIR"


def begin_session() -> None:
    """In the controlling process: the folder where workers note what they started."""
    if SESSION_DIR_ENV not in os.environ:
        os.environ[SESSION_DIR_ENV] = tempfile.mkdtemp(prefix="auditrelay-tests-")


def _session_dir() -> Path:
    begin_session()  # a worker run without the plugin (pytest -p no:xdist) is its own controller
    return Path(os.environ[SESSION_DIR_ENV])


@contextmanager
def _locked(name: str) -> Iterator[None]:
    with (_session_dir() / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def start_once(name: str, up: Callable[[], bool]) -> None:
    """Run ``up`` (True when it started the server) once per server across the workers."""
    with _locked(name):
        if up():
            (_session_dir() / f"{name}.started").touch()


def end_session(stops: dict[str, Callable[[], object]]) -> None:
    """In the controlling process: stop what the session started, then forget the folder."""
    folder = os.environ.pop(SESSION_DIR_ENV, None)
    if folder is None:
        return
    for name, stop in stops.items():
        if (Path(folder) / f"{name}.started").exists():
            stop()
    for entry in Path(folder).iterdir():
        entry.unlink()
    Path(folder).rmdir()
