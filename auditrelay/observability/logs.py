"""Log output of the worker and the API: human text, or one JSON object per line.

``AUDITRELAY_LOG_FORMAT=json`` is meant for production log collectors. Each line
holds ``time`` (UTC, RFC 3339 with milliseconds), ``level``, ``logger`` and
``message``, an ``exception`` when there is one, and the ids a call passed with
``extra=`` (``event_id``, ``batch_id``, ``destination_id``, ``workspace_id``, and
``outcome``, ``tier``, ``attempt``, ``status_code``), so that a batch or a
destination can be followed through every stage. Only those names are copied
from ``extra``: anything else a library attaches to a record stays out of the
logs. Log calls never pass secrets, header values or bodies.

Only entry points configure logging (``auditrelay.ops.runner`` for the worker, through
Faust's ``logging_config``; ``auditrelay.ops.api_cmd`` for the API); library code only logs.
"""

from __future__ import annotations

import json
import logging
import logging.config
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final

from auditrelay.schemas.batches import BatchMeta
from auditrelay.schemas.settings import Settings

__all__ = ["FIELDS", "JsonFormatter", "RepeatFilter", "batch_ids", "configure_logging",
           "install_repeat_filter", "logging_config"]

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


class RepeatFilter(logging.Filter):
    """Lets one of identical lines through per ``window`` seconds, then says how many it held.

    While a broker is down, the Kafka clients log the same reconnect failure many
    times a second (thousands of lines in a 30 s outage); one line per window says
    the same. Lines are identical when logger, level and formatted message are: the
    failures of two destinations differ, so both stay visible.
    """

    def __init__(self, window: float = 10.0, *, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = 10_000) -> None:
        super().__init__()
        self._window = window
        self._clock = clock
        self._max_keys = max_keys
        self._seen: dict[tuple[str, int, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, record.getMessage())
        now = self._clock()
        first, held = self._seen.get(key, (-self._window - 1.0, 0))
        if now - first < self._window:
            self._seen[key] = (first, held + 1)
            return False
        if len(self._seen) >= self._max_keys:
            self._forget_old(now)
            if len(self._seen) >= self._max_keys:
                # All recent: forgetting them costs a few repeats, where scanning
                # them again at every new line cost a full pass per record.
                self._seen.clear()
        self._seen[key] = (now, 0)
        if held:
            record.msg = f"{record.getMessage()} ({held} identical lines held back)"
            record.args = None
        return True

    def _forget_old(self, now: float) -> None:
        self._seen = {k: v for k, v in self._seen.items() if now - v[0] < self._window}


def install_repeat_filter(logger: logging.Logger | None = None, window: float = 10.0) -> None:
    """Add one shared ``RepeatFilter`` to every handler of ``logger`` (the root by default)."""
    target = logger or logging.getLogger()
    repeat = RepeatFilter(window)
    for handler in target.handlers:
        if not any(isinstance(f, RepeatFilter) for f in handler.filters):
            handler.addFilter(repeat)


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
    install_repeat_filter()
