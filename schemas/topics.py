"""Kafka topic layout of contract section 4, declared once.

Pure data: names derive from the topic prefix setting, configurations from the
contract's retention rules. ``auditrelay.ops.topics`` creates them, agents subscribe to them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from auditrelay.schemas.errors import TopicError

DAY_MS = 24 * 60 * 60 * 1000

#: Retry tiers, one topic each, in the order of the contract's retry schedule.
RETRY_TIERS: tuple[str, ...] = ("10s", "1m", "5m", "30m", "2h", "5h", "10h")

_DELETE_7D: Mapping[str, str] = MappingProxyType(
    {"cleanup.policy": "delete", "retention.ms": str(7 * DAY_MS)}
)
_DELETE_30D: Mapping[str, str] = MappingProxyType(
    {"cleanup.policy": "delete", "retention.ms": str(30 * DAY_MS)}
)
_COMPACT: Mapping[str, str] = MappingProxyType({"cleanup.policy": "compact"})


@dataclass(frozen=True)
class TopicSpec:
    """One topic as the contract wants it."""

    name: str
    partitions: int
    config: Mapping[str, str] = field(default_factory=dict)
    key: str = ""
    content: str = ""
    #: Replicas of each partition; None: the broker's ``default.replication.factor``.
    replication_factor: int | None = None


@dataclass(frozen=True)
class Replication:
    """How many copies of each partition, and how many must have a write before it is
    acknowledged to an ``acks=all`` producer (``min.insync.replicas``)."""

    factor: int
    min_insync: int

    def describe(self, brokers: int) -> str:
        return (f"replication factor {self.factor}, min.insync.replicas {self.min_insync} "
                f"({brokers} broker{'s' if brokers != 1 else ''})")


def resolve_replication(brokers: int, factor: int | None = None,
                        min_insync: int | None = None) -> Replication:
    """The replication of new topics on a cluster of ``brokers`` brokers.

    Unset values default to 3 replicas with 2 in sync on three or more brokers (one
    broker may die and writes go on, none acknowledged is lost), 1 and 1 below; a
    default ``min_insync`` never exceeds the factor. A factor the cluster cannot
    place, or a minimum above the factor, is a ``TopicError``.
    """
    cluster = brokers >= 3
    factor = factor if factor is not None else (3 if cluster else 1)
    if min_insync is None:
        min_insync = min(2 if cluster else 1, factor)
    if factor > brokers:
        raise TopicError(f"replication factor {factor} needs {factor} brokers; the cluster has "
                         f"{brokers} (AUDITRELAY_TOPIC_REPLICATION_FACTOR)")
    if min_insync > factor:
        raise TopicError(f"min.insync.replicas {min_insync} exceeds the replication factor "
                         f"{factor}: no write could be acknowledged "
                         "(AUDITRELAY_TOPIC_MIN_INSYNC_REPLICAS)")
    return Replication(factor, min_insync)


def with_replication(specs: Iterable[TopicSpec], replication: Replication) -> list[TopicSpec]:
    """``specs`` with ``replication``'s factor and ``min.insync.replicas`` config."""
    return [replace(spec, replication_factor=replication.factor,
                    config={**spec.config, "min.insync.replicas": str(replication.min_insync)})
            for spec in specs]


@dataclass(frozen=True)
class TopicNames:
    """Every topic name of the contract, under one prefix (``audit.`` by default)."""

    prefix: str = "audit."

    @property
    def events(self) -> str:
        return f"{self.prefix}events"

    @property
    def destinations(self) -> str:
        return f"{self.prefix}destinations"

    @property
    def dlq(self) -> str:
        return f"{self.prefix}dlq"

    @property
    def delivery_status(self) -> str:
        return f"{self.prefix}delivery-status"

    @property
    def delivery_attempts(self) -> str:
        return f"{self.prefix}delivery-attempts"

    @property
    def deliveries(self) -> str:
        """Batches ready for delivery, keyed by destination id: one ordered stream each."""
        return f"{self.prefix}deliveries"

    @property
    def parked(self) -> str:
        """Batches of destinations that cannot take them now (an open circuit, a backlog),
        keyed by destination id, partitioned like ``deliveries`` (same partition, same
        worker): they leave the shared partition instead of holding it back."""
        return f"{self.prefix}parked"

    @property
    def legacy_destination_prefix(self) -> str:
        """The first design's topic per destination, ``audit.dest.{id}``: only
        ``auditrelay topics migrate`` reads those, to move what they still hold."""
        return f"{self.prefix}dest."

    def group_id(self, base: str) -> str:
        """Consumer group ``base`` for the default prefix; deployments (and tests) that
        share a cluster under other prefixes get groups of their own, so they never
        share offsets or rebalances."""
        return base if self.prefix == "audit." else f"{base}-{self.prefix.rstrip('.')}"

    # The consumer groups of the worker's stages, each read by its own consumers.

    @property
    def router_group(self) -> str:
        """The router's, over ``audit.events``."""
        return self.group_id("auditrelay-router")

    @property
    def archive_group(self) -> str:
        """The archive's, over ``audit.events`` (it sees every event whatever the router does)."""
        return self.group_id("auditrelay-archive")

    @property
    def delivery_group(self) -> str:
        """The delivery agent's, over ``deliveries`` and ``parked`` (co-partitioned)."""
        return self.group_id("auditrelay-delivery")

    @property
    def retry_group(self) -> str:
        """The retry agent's, over the retry tiers."""
        return self.group_id("auditrelay-retry")

    @property
    def app_group(self) -> str:
        """The Faust app's id and group, which only elects the leader (leader-only crontabs)."""
        return self.group_id("auditrelay")

    def owns(self, topic: str) -> bool:
        """Whether ``topic`` belongs to this prefix: its own topics, and the internal
        topics Faust names after the worker's app id (``auditrelay-...-__assignor-__leader``)."""
        return topic.startswith(self.prefix) or (
            self.prefix != "audit." and topic.startswith(f"{self.app_group}-"))

    def retry(self, tier: str) -> str:
        if tier not in RETRY_TIERS:
            raise ValueError(f"unknown retry tier {tier!r}; known: {', '.join(RETRY_TIERS)}")
        return f"{self.prefix}retry.{tier}"


def static_topic_specs(names: TopicNames, partitions: int,
                       delivery_partitions: int | None = None) -> list[TopicSpec]:
    """Every topic of the contract, with its config; none depends on the destinations.

    ``partitions`` bounds the parallelism of the keyed topics; the compacted
    destination-config topic has one partition because every worker reads all of it.
    ``deliveries`` and ``parked`` have ``delivery_partitions`` each (``partitions`` if
    not given): the same count, so that a destination's partition is the same in both.
    """
    delivery_partitions = delivery_partitions or partitions
    specs = [
        TopicSpec(names.events, partitions, _DELETE_7D, "workspace id",
                  "envelopes from producers"),
        TopicSpec(names.destinations, 1, _COMPACT, "destination id",
                  "destination config (secrets encrypted), tombstone on delete"),
        TopicSpec(names.dlq, partitions, _DELETE_30D, "destination id",
                  "batches that exhausted retries, and malformed input with a reason"),
        TopicSpec(names.delivery_status, partitions, _COMPACT, "destination id",
                  "latest status of a destination"),
        TopicSpec(names.delivery_attempts, partitions, _DELETE_7D, "destination id",
                  "one record per attempt"),
        TopicSpec(names.deliveries, delivery_partitions, _DELETE_7D, "destination id",
                  "batches ready for delivery: one ordered stream per destination"),
        TopicSpec(names.parked, delivery_partitions, _DELETE_7D, "destination id",
                  "batches of a destination that cannot take them now, in order"),
    ]
    specs += [
        TopicSpec(names.retry(tier), partitions, _DELETE_7D, "destination id",
                  f"failed batches waiting for the {tier} retry")
        for tier in RETRY_TIERS
    ]
    return specs
