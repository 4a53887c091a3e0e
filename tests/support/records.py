"""What the worker wrote on the broker, read by end-to-end tests: a record's headers,
the destinations' statuses and delivery attempts, waiting until records say something,
and the check that a secret is in none of them nor in the worker's log."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import Message

from auditrelay.kafka.topic_reader import read_topic
from auditrelay.schemas.settings import Settings
from auditrelay.schemas.status import DeliveryAttempt, DestinationStatus
from tests.support.pipeline import WorkerProcess, event_ids_on
from tests.support.polling import wait_until

__all__ = ["assert_secret_nowhere", "attempts", "record_headers", "statuses",
           "wait_for_records", "workspace_event_ids"]


def record_headers(message: Message) -> dict[str, str]:
    """A record's headers as text (the last of a repeated name)."""
    pairs: Any = message.headers() or []  # the stubs type values loosely
    return {str(name): bytes(value or b"").decode(errors="replace") for name, value in pairs}


def workspace_event_ids(settings: Settings, workspace_id: str,
                        types: Sequence[str] = ()) -> set[str]:
    """The ids on ``audit.events`` of ``workspace_id`` (self-audit events included), only
    of types matching one of the globs ``types`` when given."""
    return {ce_id for ce_id, ce_type, ws in event_ids_on(settings.kafka_bootstrap,
                                                         settings.topics.events)
            if ws == workspace_id
            and (not types or any(fnmatch.fnmatchcase(ce_type, glob) for glob in types))}


def statuses(settings: Settings) -> list[DestinationStatus]:
    return [DestinationStatus.model_validate_json(m.value() or b"")
            for m in read_topic(settings.kafka_bootstrap, settings.topics.delivery_status)]


def attempts(settings: Settings) -> list[DeliveryAttempt]:
    return [DeliveryAttempt.model_validate_json(m.value() or b"")
            for m in read_topic(settings.kafka_bootstrap, settings.topics.delivery_attempts)]


def wait_for_records(settings: Settings, read: Callable[[Settings], list[Any]],
                     holds: Callable[[list[Any]], bool], timeout: float, what: str,
                     worker: WorkerProcess) -> list[Any]:
    """``read(settings)`` again and again until ``holds`` of it; the last read."""
    found: list[Any] = []

    def check() -> bool:
        found[:] = read(settings)
        return holds(found)

    wait_until(check, timeout, lambda: what + worker.tail(), interval=0.5)
    return found


def assert_secret_nowhere(settings: Settings, secret: str, worker: WorkerProcess,
                          more: Sequence[str] = ()) -> None:
    """``secret`` is in no worker log line and no record of the topics a status, an
    attempt, a dead letter or a destination's config travels on (and ``more``)."""
    assert secret not in worker.output()
    names = settings.topics
    for topic in (names.delivery_status, names.delivery_attempts, names.dlq,
                  names.destinations, *more):
        for message in read_topic(settings.kafka_bootstrap, topic):
            assert secret.encode() not in (message.value() or b""), topic
            assert all(secret not in value for value in record_headers(message).values()), \
                topic
