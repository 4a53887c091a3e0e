"""Alembic migrations of ``auditrelay.store.db``, run programmatically (no alembic.ini)."""

from __future__ import annotations

import threading
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine

HERE = Path(__file__).parent

#: Alembic's command API keeps its context in module globals: two threads of one
#: process migrating at once (a worker's archive and delivery stages opening their
#: engines) break each other's run (``KeyError: 'script'``).
_MIGRATING = threading.Lock()


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(HERE))
    # The engine travels as an attribute, not as a URL option: URLs may hold
    # passwords and '%' characters that configparser would mangle or log.
    config.attributes["engine"] = engine
    return config


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the database to ``revision`` (the newest by default)."""
    with _MIGRATING:
        command.upgrade(alembic_config(engine), revision)
