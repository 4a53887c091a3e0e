"""The settings of one test: ``make_settings``.

Every integration test that builds ``Settings`` builds them here, so that each gets
the same isolation: its own topic prefix (its topics and consumer groups are its
own), runtime state and SQLite database under its ``tmp_path``, and a fresh key for
secrets at rest. What a test tunes (timings, partitions, allow-lists) it passes as
overrides, in full view at the call site.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from auditrelay.schemas.settings import Settings
from auditrelay.wire.secrets import generate_key

__all__ = ["make_settings"]


def make_settings(tmp_path: Path, bootstrap: str, prefix: str, **overrides: Any) -> Settings:
    """Settings for a test: ``prefix`` topics on ``bootstrap``, state under ``tmp_path``.

    The database is ``tmp_path/auditrelay.db`` and a new ``secret_key`` is made unless
    ``overrides`` say otherwise (``secret_key=None`` keeps the development key file
    in ``tmp_path``, as a deployment without the variable would).
    """
    values: dict[str, Any] = {
        "kafka_bootstrap": bootstrap, "topic_prefix": prefix, "var_dir": tmp_path,
        "database_url": f"sqlite:///{tmp_path / 'auditrelay.db'}",
        "secret_key": generate_key(), **overrides}
    return Settings(**values)
