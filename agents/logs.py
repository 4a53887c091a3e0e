"""Log output of the worker and the API: human text, or one JSON object per line.

``AUDITRELAY_LOG_FORMAT=json`` is meant for production log collectors. Each line
holds ``time`` (UTC, RFC 3339 with milliseconds), ``level``, ``logger`` and
``message``, an ``exception`` when there is one, and the ids a call passed with
``extra=`` (``event_id``, ``batch_id``, ``destination_id``, ``workspace_id``, and
``outcome``, ``tier``, ``attempt``, ``status_code``), so that a batch or a
destination can be followed through every stage. Only those names are copied
from ``extra``: anything else a library attaches to a record stays out of the
logs. Log calls never pass secrets, header values or bodies.

Only entry points configure logging (``ops.runner`` for the worker, through
Faust's ``logging_config``; ``ops.api_cmd`` for the API); library code only logs.
"""

from __future__ import annotations

import json
import logging
import logging.config
from datetime import UTC, datetime
from typing import Any, Final

from schemas.batches import BatchMeta
from schemas.settings import Settings

__all__ = ["FIELDS", "JsonFormatter", "batch_ids", "configure_logging", "logging_config"]

#: The ``extra=`` names that JSON lines carry.
FIELDS: Final = ("event_id", "batch_id", "destination_id", "workspace_id", "outcome", "tier",
                 "attempt", "status_code")
TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines in messages are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        # default=str: an id given as some other object still gives a line, not an error.
        return json.dumps(entry, default=str, ensure_ascii=False)


def batch_ids(meta: BatchMeta) -> dict[str, str]:
    """The ``extra=`` of a log call about one batch."""
    return {"batch_id": meta.batch_id, "destination_id": meta.destination_id,
            "workspace_id": meta.workspace_id}


def logging_config(settings: Settings) -> dict[str, Any] | None:
    """A ``logging.config.dictConfig`` for ``settings``; None means the caller's default
    (Faust's coloured lines, or ``TEXT_FORMAT``)."""
    if settings.log_format != "json":
        return None
    return {
        "version": 1,
        # Loggers created at import time (every module's ``log``) must keep working.
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {"default": {"class": "logging.StreamHandler", "formatter": "json",
                                 "stream": "ext://sys.stderr", "level": settings.log_level}},
        "root": {"level": settings.log_level, "handlers": ["default"]},
    }


def configure_logging(settings: Settings) -> None:
    """Configure the root logger of a process that is not a Faust worker (the API)."""
    config = logging_config(settings)
    if config is None:
        logging.basicConfig(level=settings.log_level, format=TEXT_FORMAT)
    else:
        logging.config.dictConfig(config)
