"""auditrelay.store.migrations: concurrent migrations within one process."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sqlalchemy import create_engine, inspect

from auditrelay.store.migrations import migrate


def test_threads_of_one_process_migrate_their_databases_at_the_same_time(
        tmp_path: Path) -> None:
    engines = [create_engine(f"sqlite:///{tmp_path}/db{n}.sqlite") for n in range(6)]
    try:
        with ThreadPoolExecutor(len(engines)) as pool:
            list(pool.map(migrate, engines))  # re-raises the first failure
        for engine in engines:
            assert "archived_events" in inspect(engine).get_table_names()
    finally:
        for engine in engines:
            engine.dispose()
