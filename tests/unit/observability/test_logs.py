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


# -- RepeatFilter with records of every shape, through the formatters the worker uses -----


class Lines(logging.Handler):
    """Keeps what it emits; a formatting error goes where the stdlib sends it (counted)."""

    def __init__(self, formatter: logging.Formatter) -> None:
        super().__init__()
        self.setFormatter(formatter)
        self.lines: list[str] = []
        self.errors = 0

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record))
        except Exception:
            self.errors += 1


def formatters() -> list[logging.Formatter]:
    import io

    from mode.utils.logging import ExtensionFormatter

    # Faust's text lines (mode's formatter), the API's text lines, JSON lines.
    return [ExtensionFormatter(stream=io.StringIO(), fmt="%(message)s"),
            logging.Formatter("%(message)s"), JsonFormatter()]


def message_of(line: str) -> str:
    return str(json.loads(line)["message"]) if line.startswith("{") else line


#: (msg, args as given to the logger, the line the stdlib prints)
SHAPES: list[tuple[str, tuple[object, ...], str]] = [
    ("no args at all", (), "no args at all"),
    ("50% of nothing", (), "50% of nothing"),
    ("tuple %s and %d", ("args", 2), "tuple args and 2"),
    ("a %(kind)s dict", ({"kind": "single"},), "a single dict"),
    ("100%% of %s", ("this",), "100% of this"),
]


@pytest.mark.parametrize(("msg", "args", "expected"), SHAPES)
def test_repeat_filter_passes_every_shape_unchanged_then_counts_repeats(
        msg: str, args: tuple[object, ...], expected: str) -> None:
    from auditrelay.observability.logs import RepeatFilter

    now = [0.0]
    for formatter in formatters():
        now[0] = 0.0
        repeat = RepeatFilter(10.0, clock=lambda: now[0])
        handler = Lines(formatter)
        handler.addFilter(repeat)

        def log(handler: Lines = handler) -> None:
            handler.handle(logging.LogRecord("lib", logging.INFO, __file__, 1, msg, args, None))

        log()
        log()
        log()
        now[0] = 11.0
        log()
        assert handler.errors == 0
        assert [message_of(line) for line in handler.lines] == [
            expected, f"{expected} (2 identical lines held back)"], type(formatter)


def test_repeat_filter_never_raises_on_arguments_that_do_not_fit() -> None:
    from auditrelay.observability.logs import RepeatFilter

    for formatter in formatters():
        handler = Lines(formatter)
        handler.addFilter(RepeatFilter(10.0, clock=lambda: 0.0))
        for _ in range(3):
            for msg, args in (("no placeholder", ("extra",)), ("two %s %s", ("one",)),
                              ("%(missing)s", ({"other": 1},))):
                # Passed on to the handler, which reports it as it would without the filter.
                assert handler.filter(logging.LogRecord("lib", logging.INFO, __file__, 1,
                                                        msg, args, None))
        without = Lines(formatter)
        without.handle(logging.LogRecord("lib", logging.INFO, __file__, 1, "x", ("y",), None))
        assert without.errors == 1  # what the stdlib does with such a record anyway


def test_one_filter_shared_by_two_handlers_lets_both_print_the_line() -> None:
    from auditrelay.observability.logs import RepeatFilter

    repeat = RepeatFilter(10.0, clock=lambda: 0.0)
    first, second = Lines(logging.Formatter("%(message)s")), Lines(JsonFormatter())
    logger = logging.getLogger("tests.repeat.shared")
    logger.propagate = False
    for handler in (first, second):
        handler.addFilter(repeat)
        logger.addHandler(handler)
    try:
        logger.warning("broker %s down", "a")
        logger.warning("broker %s down", "a")
    finally:
        for handler in (first, second):
            logger.removeHandler(handler)
    assert first.lines == ["broker a down"]
    assert [message_of(line) for line in second.lines] == ["broker a down"]


# -- RebalanceFilter ----------------------------------------------------------------------


def test_rebalance_lines_of_the_kafka_libraries_are_demoted_and_warnings_stay() -> None:
    from aiokafka import TopicPartition

    from auditrelay.observability.logs import RebalanceFilter

    tps = {TopicPartition(f"audit.dest.d{n}", 0) for n in range(3)}
    demote = RebalanceFilter()

    def passes(name: str, level: int, msg: str, *args: object) -> bool:
        return demote.filter(logging.LogRecord(name, level, __file__, 1, msg, args, None))

    logging.getLogger("aiokafka").setLevel(logging.INFO)
    logging.getLogger("faust").setLevel(logging.INFO)
    try:
        coordinator = "aiokafka.consumer.group_coordinator"
        assert not passes(coordinator, logging.INFO, "Setting newly assigned partitions %s", tps)
        assert not passes(coordinator, logging.INFO, "(Re-)joining group %s", "g")
        assert not passes("aiokafka.consumer.subscription_state", logging.INFO,
                          "Updating subscribed topics to: %s", frozenset({"a", "b"}))
        assert not passes("faust.transport.consumer", logging.INFO, "Discarded %r", {tps.pop(): 1})
        assert not passes("faust.tables.recovery", logging.INFO, "Highwater:\n%s", "|a|\n|b|")
        # Warnings and errors of the same loggers, their short INFO lines, and ours stay.
        assert passes(coordinator, logging.WARNING, "Heartbeat failed: %s", tps)
        assert passes(coordinator, logging.ERROR, "Error syncing %s", "g")
        assert passes("faust.worker", logging.INFO, "Worker ready")
        assert passes("aiokafka.consumer.consumer", logging.INFO, "Subscribed to pattern %s", "p")
        assert passes("auditrelay.kafka.clients", logging.INFO, "assigned %s", tps)
        # At DEBUG they show, as DEBUG lines.
        logging.getLogger("aiokafka").setLevel(logging.DEBUG)
        record = logging.LogRecord(coordinator, logging.INFO, __file__, 1, "Joined %s", ("g",),
                                   None)
        assert demote.filter(record)
        assert (record.levelno, record.levelname) == (logging.DEBUG, "DEBUG")
        assert demote.filter(record)  # a second handler's look: the same verdict
    finally:
        logging.getLogger("aiokafka").setLevel(logging.NOTSET)
        logging.getLogger("faust").setLevel(logging.NOTSET)


def test_install_log_filters_puts_the_demotion_first_once() -> None:
    from auditrelay.observability.logs import RebalanceFilter, RepeatFilter, install_log_filters

    logger = logging.getLogger("tests.install.filters")
    handler = Lines(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    try:
        install_log_filters(logger)
        install_log_filters(logger)
        assert [type(f) for f in handler.filters] == [RebalanceFilter, RepeatFilter]
    finally:
        logger.removeHandler(handler)
