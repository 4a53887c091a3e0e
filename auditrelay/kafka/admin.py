"""Kafka admin operations shared by the API, the agents and the CLI.

Idempotent by design: creating a topic that exists and deleting one that does
not both succeed, so a retried outbox entry or resync never fails on its own
earlier success. confluent-kafka errors become ``TopicError`` here.
"""

from __future__ import annotations

from collections.abc import Sequence

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from auditrelay.kafka.topic_reader import read_topic
from auditrelay.schemas.errors import BrokerUnavailableError, TopicError
from auditrelay.schemas.topics import Replication, TopicSpec, resolve_replication

_TIMEOUT = 30.0


def admin_client(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})


def describe_configs(admin: AdminClient, names: Sequence[str]) -> dict[str, dict[str, str]]:
    if not names:
        return {}
    resources = [ConfigResource(ConfigResource.Type.TOPIC, name) for name in names]
    try:
        futures = admin.describe_configs(resources, request_timeout=_TIMEOUT)
        return {res.name: {k: str(v.value) for k, v in fut.result().items()}
                for res, fut in futures.items()}
    except KafkaException as exc:
        raise TopicError(f"cannot read topic configs: {exc}") from exc


def broker_count(admin: AdminClient) -> int:
    """How many brokers the cluster's metadata lists."""
    try:
        return len(admin.list_topics(timeout=_TIMEOUT).brokers)
    except KafkaException as exc:
        raise BrokerUnavailableError(f"cannot read the cluster's metadata: {exc}") from exc


def cluster_replication(admin: AdminClient, factor: int | None = None,
                        min_insync: int | None = None) -> tuple[Replication, int]:
    """The replication of new topics (settings ``topic_replication_factor`` and
    ``topic_min_insync_replicas``, defaults from the broker count), and that count."""
    brokers = broker_count(admin)
    return resolve_replication(brokers, factor, min_insync), brokers


def partitions_of(admin: AdminClient, topic: str) -> list[int]:
    """The partition ids of ``topic``; TopicError if it does not exist."""
    try:
        meta = admin.list_topics(topic, timeout=_TIMEOUT).topics.get(topic)
    except KafkaException as exc:
        raise TopicError(f"cannot read the metadata of {topic}: {exc}") from exc
    if meta is None or meta.error is not None or not meta.partitions:
        raise TopicError(f"topic {topic} does not exist; run `auditrelay topics ensure`")
    return sorted(meta.partitions)


def create_topics(admin: AdminClient, specs: Sequence[TopicSpec]) -> list[str]:
    """Create topics, treating 'already exists' as success; returns those created now."""
    if not specs:
        return []
    # -1: the broker's default.replication.factor (3 on the local cluster, 1 alone).
    new = [NewTopic(s.name, num_partitions=s.partitions,
                    replication_factor=s.replication_factor or -1, config=dict(s.config))
           for s in specs]
    created = []
    for name, future in admin.create_topics(new, request_timeout=_TIMEOUT).items():
        try:
            future.result()
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                raise TopicError(f"cannot create topic {name}: {exc.args[0].str()}") from exc
    return created


def delete_topics(admin: AdminClient, names: Sequence[str]) -> None:
    """Delete topics, treating 'unknown topic' as success."""
    if not names:
        return
    for name, future in admin.delete_topics(list(names), request_timeout=_TIMEOUT).items():
        try:
            future.result()
        except KafkaException as exc:
            if exc.args[0].name() != "UNKNOWN_TOPIC_OR_PART":
                raise TopicError(f"cannot delete topic {name}: {exc.args[0].str()}") from exc


def read_compacted(bootstrap: str, topic: str, timeout: float = 30.0) -> dict[str, bytes | None]:
    """The latest value per key of ``topic``, read from the start to the current end.

    No consumer group offsets are committed: this is a snapshot read. A key whose
    latest record is a tombstone maps to None.
    """
    return {(msg.key() or b"").decode(): msg.value()
            for msg in read_topic(bootstrap, topic, timeout=timeout)}
