"""``auditrelay dlq list|replay``: what is in the dead-letter topic, and sending it again.

``list`` reads the whole topic (a snapshot, no consumer group). ``replay
--destination ID`` puts that destination's dead-lettered batches back on
``audit.deliveries``, keyed by its id, with a fresh attempt count, each exactly
once: a consumer group per destination remembers how far replay got, so running
it twice replays nothing twice. Malformed input is listed but never replayed
(there is no destination).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import click
from confluent_kafka import Consumer, KafkaException, Producer

from auditrelay.kafka.admin import read_compacted
from auditrelay.kafka.topic_reader import read_to_end
from auditrelay.schemas.batches import HEADER_PREFIX, REASON_MALFORMED, BatchMeta, Headers
from auditrelay.schemas.errors import KafkaError
from auditrelay.schemas.settings import Settings

_POLL = 1.0


@dataclass(frozen=True)
class DeadLetter:
    partition: int
    offset: int
    timestamp_ms: int
    key: str
    value: bytes
    raw_headers: Headers

    @property
    def headers(self) -> dict[str, str]:
        """The ``ar_*`` headers without their prefix, as text."""
        out = {}
        for key, value in self.raw_headers:
            if key.startswith(HEADER_PREFIX):
                text = value.decode(errors="replace") if isinstance(value, bytes) else value
                out[key[len(HEADER_PREFIX):]] = text or ""
        return out

    @property
    def reason(self) -> str:
        return self.headers.get("reason", "(none)")

    def line(self) -> str:
        when = datetime.fromtimestamp(self.timestamp_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        detail = self.headers.get("detail", "")
        return (f"{self.partition}:{self.offset:<8} {when}  {self.key or '-':<30} "
                f"{self.headers.get('batch_id', '-'):<30} {self.headers.get('events', '-'):>4}  "
                f"{self.reason}{': ' + detail if detail else ''}")


def dead_letters(consumer: Consumer, topic: str, *, from_beginning: bool,
                 timeout: float = 30.0) -> Iterator[DeadLetter]:
    """The records up to the end offsets that exist now, then stop; without
    ``from_beginning``, from where the consumer's group committed."""
    for msg in read_to_end(consumer, topic, timeout=timeout, from_committed=not from_beginning,
                           poll_seconds=_POLL):
        raw = msg.headers() or []
        yield DeadLetter(msg.partition() or 0, msg.offset() or 0, msg.timestamp()[1],
                         (msg.key() or b"").decode(), msg.value() or b"",
                         list(raw.items() if isinstance(raw, dict) else raw))


@click.group()
def dlq() -> None:
    """The dead-letter topic: batches that exhausted retries, and malformed input."""


@dlq.command("list")
@click.option("--destination", default=None, help="Only this destination's records.")
@click.pass_obj
def dlq_list(settings: Settings, destination: str | None) -> None:
    """Every dead-lettered record: position, time, destination, batch, events, reason."""
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap,
                         "group.id": "auditrelay-dlq-list", "enable.auto.commit": False})
    count = 0
    try:
        for letter in dead_letters(consumer, settings.topics.dlq, from_beginning=True):
            if destination is None or letter.key == destination:
                click.echo(letter.line())
                count += 1
    except KafkaException as exc:
        raise KafkaError(f"cannot read {settings.topics.dlq}: {exc}") from exc
    finally:
        consumer.close()
    click.echo(f"{count} record(s)", err=True)


@dlq.command("replay")
@click.option("--destination", required=True, help="The destination whose batches to resend.")
@click.pass_obj
def dlq_replay(settings: Settings, destination: str) -> None:
    """Put the destination's dead-lettered batches back on the deliveries topic, each once."""
    names = settings.topics
    # Delivery dead-letters the batches of a destination it has no config for (a
    # deleted one): replaying them would only send them straight back here.
    if read_compacted(settings.kafka_bootstrap, names.destinations).get(destination) is None:
        raise click.ClickException(
            f"{destination} has no config on {names.destinations}: is it a destination that "
            "still exists? (`auditrelay destinations resync` republishes missing configs)")
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap,
                         "group.id": f"auditrelay-dlq-replay-{destination}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap,
                         "enable.idempotence": True, "acks": "all",
                         # The router's (aiokafka's) partitioner, Java's: replayed batches
                         # go to the partition of the destination's other batches.
                         "partitioner": "murmur2_random"})
    replayed = consumed = 0
    try:
        for letter in dead_letters(consumer, names.dlq, from_beginning=False):
            consumed += 1
            if letter.key != destination or letter.reason == REASON_MALFORMED:
                continue
            meta = BatchMeta.from_headers(letter.raw_headers)
            fresh = BatchMeta(meta.batch_id, meta.destination_id, meta.workspace_id, meta.events,
                              meta.first_event_ms)
            producer.produce(names.deliveries, key=destination.encode(),
                             value=letter.value, headers=list(fresh.headers()))
            replayed += 1
        if producer.flush(30) != 0:
            raise KafkaError("replayed batches were not all confirmed; nothing committed")
        if consumed:
            consumer.commit(asynchronous=False)
    except KafkaException as exc:
        raise KafkaError(f"cannot replay from {names.dlq}: {exc}") from exc
    finally:
        consumer.close()
    click.echo(f"replayed {replayed} batch(es) to {names.deliveries} (key {destination})")
