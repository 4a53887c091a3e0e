"""Log output of the worker and the API: human text, or one JSON object per line.

``AUDITRELAY_LOG_FORMAT=json`` is meant for production log collectors. Each line
holds ``time`` (UTC, RFC 3339 with milliseconds), ``level``, ``logger`` and
``message``, an ``exception`` when there is one, and the ids a call passed with
``extra=`` (``event_id``, ``batch_id``, ``destination_id``, ``workspace_id``, and
``outcome``, ``tier``, ``attempt``, ``status_code``), so that a batch or a
destination can be followed through every stage. Only those names are copied
from ``extra``: anything else a library attaches to a record stays out of the
logs. Log calls never pass secrets, header values or bodies.

Two filters keep the output small (``install_log_filters``): ``RebalanceFilter``
demotes the Kafka libraries' per-partition rebalance lines to DEBUG (the consumer
says one line of counts instead), and ``RepeatFilter`` holds back identical lines.

Only entry points configure logging (``auditrelay.ops.runner`` for the worker, through
Faust's ``logging_config``; ``auditrelay.ops.api_cmd`` for the API); library code only logs.
"""

from __future__ import annotations

import json
import logging
import logging.config
import time
from collections.abc import Callable, Iterable, Mapping, Set
from datetime import UTC, datetime
from typing import Any, Final

from auditrelay.schemas.batches import BatchMeta
from auditrelay.schemas.settings import Settings

__all__ = ["FIELDS", "JsonFormatter", "RebalanceFilter", "RepeatFilter", "batch_ids",
           "configure_logging", "install_log_filters", "install_repeat_filter", "logging_config"]

#: The ``extra=`` names that JSON lines carry.
FIELDS: Final = ("event_id", "batch_id", "destination_id", "workspace_id", "outcome", "tier",
                 "attempt", "status_code")
TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_HELD_BACK: Final = "%s (%d identical lines held back)"
#: Where ``RepeatFilter`` notes its verdict on a record.
_VERDICT: Final = "_auditrelay_repeat_verdict"
#: Where ``RebalanceFilter`` notes that it demoted a record.
_DEMOTED: Final = "_auditrelay_demoted"
#: Loggers whose every INFO line is about a rebalance (joining, syncing, what was
#: assigned and revoked, which topics the subscription matched).
REBALANCE_LOGGERS: Final = ("aiokafka.consumer.group_coordinator",
                            "aiokafka.consumer.subscription_state")
#: Libraries whose INFO lines may carry whole partition or topic sets.
_KAFKA_LIBRARIES: Final = ("aiokafka", "faust")


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
        # One record reaches this filter once per handler that shares it: the first
        # verdict stands, or the second handler would drop the line as a repeat.
        verdict = record.__dict__.get(_VERDICT)
        if isinstance(verdict, bool):
            return verdict
        verdict = self._judge(record)
        record.__dict__[_VERDICT] = verdict
        return verdict

    def _judge(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            # Arguments that do not fit the message: the handler reports that as the
            # stdlib does (``Handler.handleError``); raising here would fail the caller.
            return True
        key = (record.name, record.levelno, message)
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
            # The formatted message goes in as an argument, never into ``msg``: a ``%``
            # in it stays literal, and formatters that apply ``msg % args`` whatever the
            # args (mode's turns ``None`` into ``(None,)``) format it exactly once.
            record.msg = _HELD_BACK
            record.args = (message, held)
        return True

    def _forget_old(self, now: float) -> None:
        self._seen = {k: v for k, v in self._seen.items() if now - v[0] < self._window}


class RebalanceFilter(logging.Filter):
    """Demotes the Kafka libraries' per-rebalance INFO lines to DEBUG.

    aiokafka logs every assigned and revoked partition and every subscribed topic
    at each rebalance, and Faust's log formatter turns such sets into tables of one
    line per partition: with thousands of partitions, a million lines in ten
    minutes. Demoted are the INFO lines of ``REBALANCE_LOGGERS``, and any INFO line
    of aiokafka or Faust whose arguments hold a collection or a multi-line text (a
    table). ``auditrelay.kafka.clients.RebalanceSummary`` says the same in one line.
    A demoted line still shows when its logger is enabled for DEBUG; warnings and
    errors are never touched.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.__dict__.get(_DEMOTED):
            if record.levelno != logging.INFO or not _is_rebalance_chatter(record):
                return True
            # Noted on the record: a second handler must not take it for a DEBUG line
            # of the library's own.
            record.__dict__[_DEMOTED] = True
            record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


def _is_rebalance_chatter(record: logging.LogRecord) -> bool:
    name = record.name
    if any(name == logger or name.startswith(f"{logger}.") for logger in REBALANCE_LOGGERS):
        return True
    if not any(name == lib or name.startswith(f"{lib}.") for lib in _KAFKA_LIBRARIES):
        return False
    args = record.args
    if isinstance(args, Mapping):
        # The stdlib unpacks a lone mapping argument into ``args``: without ``%(name)s``
        # keys in the message, the mapping is the argument (a partition map, say).
        values: Iterable[object] = args.values() if "%(" in str(record.msg) else (args,)
    else:  # a tuple, as the stdlib makes it; anything else is not looked into
        values = args if isinstance(args, tuple) else ()
    return any(isinstance(value, Set | Mapping | list) or (isinstance(value, str) and "\n" in value)
               for value in values)


def install_repeat_filter(logger: logging.Logger | None = None, window: float = 10.0) -> None:
    """Add one shared ``RepeatFilter`` to every handler of ``logger`` (the root by default)."""
    target = logger or logging.getLogger()
    repeat = RepeatFilter(window)
    for handler in target.handlers:
        if not any(isinstance(f, RepeatFilter) for f in handler.filters):
            handler.addFilter(repeat)


def install_log_filters(logger: logging.Logger | None = None, window: float = 10.0) -> None:
    """``install_repeat_filter``, and a ``RebalanceFilter`` before it on the same handlers."""
    target = logger or logging.getLogger()
    demote = RebalanceFilter()
    for handler in target.handlers:
        if not any(isinstance(f, RebalanceFilter) for f in handler.filters):
            # First: a line demoted away is not counted as a repeat.
            handler.filters.insert(0, demote)
    install_repeat_filter(target, window)


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
    install_log_filters()
