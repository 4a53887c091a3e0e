"""librdkafka's log lines, through ``logging``, without a fresh broker's normal start-up.

A freshly started broker answers "Coordinator load in progress" (or "not
coordinator") for a few seconds while it loads its internal topics; librdkafka
logs that at WARNING and retries by itself. Nothing there is for the operator
to act on, so those lines are kept only where DEBUG is on.
"""

from __future__ import annotations

import logging
from typing import Final

__all__ = ["librdkafka_logger"]

_WARMING_UP: Final = ("Coordinator load in progress", "Coordinator not available",
                      "Not coordinator")


class _WarmingUpFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.levelno < logging.WARNING or not any(s in message for s in _WARMING_UP):
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


_FILTER: Final = _WarmingUpFilter()


def librdkafka_logger(name: str) -> logging.Logger:
    """The logger to hand librdkafka clients as ``logger``, with the filter above."""
    logger = logging.getLogger(name)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
    return logger
