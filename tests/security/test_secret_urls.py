"""A destination's URL can be a credential (Slack, Sumo Logic, Datadog): no log line
of ours or of a library carries its path or query."""

from __future__ import annotations

import logging

import pytest

from auditrelay.wire import client


@pytest.mark.parametrize("name", ["httpx", "httpcore", "httpcore.http11", "httpcore.connection"])
def test_the_http_libraries_never_log_below_warning(name: str) -> None:
    # Even where the process logs at DEBUG, request lines (with their URL) stay out.
    assert client.DeliveryClient  # the one client module is what sets the floor
    logging.getLogger().setLevel(logging.DEBUG)
    try:
        logger = logging.getLogger(name)
        assert not logger.isEnabledFor(logging.INFO)
        assert logger.isEnabledFor(logging.WARNING)
    finally:
        logging.getLogger().setLevel(logging.WARNING)
