"""JSON log lines: one object per line, the allowed ids, nothing else from ``extra``."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from auditrelay.observability.logs import FIELDS, JsonFormatter, batch_ids, logging_config
from auditrelay.schemas.batches import BatchMeta
from auditrelay.schemas.settings import Settings


def record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("auditrelay.agents.dispatch", logging.INFO, __file__, 1, message,
                            args, None)
    rec.__dict__.update(extra)
    return rec


def test_a_record_becomes_one_json_object_with_the_standard_fields() -> None:
    rec = record("batch %s of %s: retry", "msg_1", "dst_1")
    rec.created = 1_795_000_000.5
    line = JsonFormatter().format(rec)
    assert json.loads(line) == {"time": "2026-11-18T11:06:40.500Z", "level": "INFO",
                                "logger": "auditrelay.agents.dispatch",
                                "message": "batch msg_1 of dst_1: retry"}


def test_ids_passed_with_extra_are_fields_and_other_extras_stay_out() -> None:
    meta = BatchMeta("msg_1", "dst_1", "ws_1", 3, 1000)
    rec = record("x", **batch_ids(meta), outcome="retry", tier="10s", status_code=503,
                 event_id="aud_1", authorization="Bearer secret", body=b"[...]")
    entry = json.loads(JsonFormatter().format(rec))
    assert {k: entry[k] for k in FIELDS if k in entry} == {
        "batch_id": "msg_1", "destination_id": "dst_1", "workspace_id": "ws_1",
        "outcome": "retry", "tier": "10s", "status_code": 503, "event_id": "aud_1"}
    assert "authorization" not in entry
    assert "body" not in entry


def test_multi_line_messages_and_exceptions_stay_on_one_line() -> None:
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        rec = record("first\nsecond")
        rec.exc_info = sys.exc_info()
    line = JsonFormatter().format(rec)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == "first\nsecond"
    assert "ValueError: bad" in entry["exception"]


def test_an_id_of_another_type_still_gives_a_line() -> None:
    entry = json.loads(JsonFormatter().format(record("x", batch_id=object())))
    assert entry["batch_id"].startswith("<object object")


def test_text_is_the_default_and_json_a_root_handler_config() -> None:
    assert Settings().log_format == "text"
    assert logging_config(Settings()) is None
    config = logging_config(Settings(log_format="JSON", log_level="warning"))
    assert config is not None
    assert config["formatters"]["json"]["()"] is JsonFormatter
    assert config["root"] == {"level": "WARNING", "handlers": ["default"]}
    assert config["disable_existing_loggers"] is False


def test_an_unknown_log_format_is_refused() -> None:
    with pytest.raises(ValueError, match="log_format"):
        Settings(log_format="xml")


def test_repeat_filter_holds_identical_lines_and_counts_them() -> None:
    import logging

    from auditrelay.observability.logs import RepeatFilter

    now = [0.0]
    repeat = RepeatFilter(10.0, clock=lambda: now[0])

    def record(msg: str, *args: object, name: str = "aiokafka.conn") -> logging.LogRecord:
        return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, args, None)

    assert repeat.filter(record("Unable connect to %s", "127.0.0.1:9092"))
    assert not repeat.filter(record("Unable connect to %s", "127.0.0.1:9092"))
    assert not repeat.filter(record("Unable connect to %s", "127.0.0.1:9092"))
    # Another message, or another logger, is another line.
    assert repeat.filter(record("Unable connect to %s", "127.0.0.1:9093"))
    assert repeat.filter(record("Unable connect to %s", "127.0.0.1:9092", name="other"))
    now[0] = 10.5
    again = record("Unable connect to %s", "127.0.0.1:9092")
    assert repeat.filter(again)
    assert again.getMessage() == "Unable connect to 127.0.0.1:9092 (2 identical lines held back)"


def test_repeat_filter_stays_bounded_when_every_remembered_line_is_recent() -> None:
    import logging

    from auditrelay.observability.logs import RepeatFilter

    repeat = RepeatFilter(10.0, clock=lambda: 0.0, max_keys=4)
    for n in range(10):  # all distinct, all within the window
        assert repeat.filter(logging.LogRecord("x", logging.INFO, __file__, 1, f"line {n}",
                                               None, None))
        assert len(repeat._seen) <= 4
