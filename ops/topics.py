"""``auditrelay topics ensure``: the contract's topics exist, with the contract's configs.

Creation is idempotent. A topic that exists with other settings (fewer
partitions, another cleanup policy, retention or ``min.insync.replicas``) is
reported as drifted, and altered back with ``fix=True`` (partitions can only grow).
Every topic gets the replication the settings resolve to on this cluster
(``auditrelay.schemas.topics.resolve_replication``: 3 replicas, 2 in sync, on three
or more brokers); another replication factor is drift that ``fix`` leaves alone
(changing it is a partition reassignment, ``kafka-reassign-partitions``). ``audit.deliveries`` and
``audit.parked`` must have exactly ``delivery_partitions`` partitions: a destination's
batches are ordered by the partition its key hashes to, in both topics alike, so
another count (more or fewer) is drift that ``fix`` leaves alone, since changing it
would move destinations to other partitions with batches still queued on the old ones.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field

from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
)

from auditrelay.kafka.admin import (
    admin_client,
    cluster_replication,
    create_topics,
    describe_configs,
)
from auditrelay.schemas.errors import BrokerUnavailableError, TopicError
from auditrelay.schemas.settings import Settings
from auditrelay.schemas.topics import Replication, TopicSpec, static_topic_specs, with_replication

_TIMEOUT = 30.0

__all__ = ["EnsureReport", "admin_client", "ensure", "ensure_topics", "find_drift",
           "replication_of"]

#: The drift setting of a topic's replica count (not a topic config).
REPLICATION_FACTOR = "replication factor"
_REPLICATION_SETTINGS = (REPLICATION_FACTOR, "min.insync.replicas")


@dataclass(frozen=True)
class Drift:
    topic: str
    setting: str
    expected: str
    actual: str

    def __str__(self) -> str:
        # Replication comes from the settings (AUDITRELAY_TOPIC_*), not the contract.
        who = "the settings want" if self.setting in _REPLICATION_SETTINGS else "the contract wants"
        return f"{self.topic}: {self.setting} is {self.actual}, {who} {self.expected}"


@dataclass
class EnsureReport:
    created: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    drifted: list[Drift] = field(default_factory=list)
    fixed: list[Drift] = field(default_factory=list)
    #: What new topics got: ``Replication.describe``'s line.
    replication: str = ""

    def lines(self) -> list[str]:
        out = [f"replicas  {self.replication}"] if self.replication else []
        out += [f"created   {name}" for name in self.created]
        out += [f"ok        {name}" for name in self.unchanged]
        out += [f"fixed     {d}" for d in self.fixed]
        out += [f"DRIFTED   {d}" for d in self.drifted if d not in self.fixed]
        return out


def replication_of(admin: AdminClient, settings: Settings) -> tuple[Replication, int]:
    """The settings' replication resolved on the cluster behind ``admin``, and its size."""
    return cluster_replication(admin, settings.topic_replication_factor,
                               settings.topic_min_insync_replicas)


def ensure_topics(settings: Settings, *, fix: bool = False) -> EnsureReport:
    names = settings.topics
    admin = admin_client(settings.kafka_bootstrap)
    replication, brokers = replication_of(admin, settings)
    specs = with_replication(static_topic_specs(names, settings.topic_partitions,
                                                settings.delivery_partitions), replication)
    report = ensure(admin, specs, fix=fix, exact={names.deliveries, names.parked})
    report.replication = replication.describe(brokers)
    return report


def ensure(admin: AdminClient, specs: Sequence[TopicSpec], *, fix: bool = False,
           exact: Collection[str] = ()) -> EnsureReport:
    """Create missing topics, compare existing ones with their spec.

    The topics named in ``exact`` must have exactly their spec's partition count; a
    difference is reported and never altered, even with ``fix``.
    """
    report = EnsureReport()
    existing, replicas = _existing(admin)
    missing = [s for s in specs if s.name not in existing]
    report.created = create_topics(admin, missing)
    if missing:
        # The broker's metadata trails topic creation, and a topic that did not show
        # yet may have existed all along ("already exists"): wait until all are listed.
        existing, replicas = _wait_listed(admin, {s.name for s in missing})
    present = [s for s in specs if s.name in existing and s.name not in report.created]
    drifts = find_drift(present, existing, describe_configs(admin, [s.name for s in present]),
                        exact, replicas)
    report.drifted = drifts
    report.unchanged = [s.name for s in present if all(d.topic != s.name for d in drifts)]
    fixable = [d for d in drifts if not _fixed_partitions(d, exact)]
    if fix and fixable:
        fixing = [s for s in present if any(d.topic == s.name for d in fixable)]
        _fix(admin, fixing, existing, exact)
        report.fixed = fixable
    return report


def find_drift(specs: Iterable[TopicSpec], partitions: dict[str, int],
               configs: dict[str, dict[str, str]], exact: Collection[str] = (),
               replicas: dict[str, int] | None = None) -> list[Drift]:
    """Pure comparison of specs with what the broker reports.

    More partitions than a spec asks for is not drift, except for the topics in
    ``exact``, whose count must be the spec's. A spec with a replication factor
    drifts when ``replicas`` (the replica count of each topic's partitions, the
    smallest if they differ) says otherwise.
    """
    drifts = []
    for spec in specs:
        actual_parts = partitions.get(spec.name, 0)
        if actual_parts < spec.partitions or (
                spec.name in exact and actual_parts != spec.partitions):
            drifts.append(Drift(spec.name, "partitions", str(spec.partitions), str(actual_parts)))
        actual_replicas = (replicas or {}).get(spec.name)
        if (spec.replication_factor is not None and actual_replicas is not None
                and actual_replicas != spec.replication_factor):
            drifts.append(Drift(spec.name, REPLICATION_FACTOR, str(spec.replication_factor),
                                str(actual_replicas)))
        actual = configs.get(spec.name, {})
        for key, wanted in spec.config.items():
            if actual.get(key) != wanted:
                drifts.append(Drift(spec.name, key, wanted, actual.get(key, "(unset)")))
    return drifts


def _existing(admin: AdminClient) -> tuple[dict[str, int], dict[str, int]]:
    """Partitions of each topic, and the replicas of its least replicated partition."""
    try:
        meta = admin.list_topics(timeout=_TIMEOUT)
    except KafkaException as exc:
        raise BrokerUnavailableError(f"cannot list topics: {exc}") from exc
    return ({name: len(t.partitions) for name, t in meta.topics.items()},
            {name: min(len(p.replicas) for p in t.partitions.values())
             for name, t in meta.topics.items() if t.partitions})


def _existing_partitions(admin: AdminClient) -> dict[str, int]:
    return _existing(admin)[0]


def _wait_listed(admin: AdminClient, names: set[str]) -> tuple[dict[str, int], dict[str, int]]:
    deadline = time.monotonic() + _TIMEOUT
    while True:
        existing, replicas = _existing(admin)
        if names <= existing.keys():
            return existing, replicas
        if time.monotonic() > deadline:
            raise TopicError(f"topics not listed by the broker {_TIMEOUT:.0f} s after creation: "
                             f"{', '.join(sorted(names - existing.keys()))}")
        time.sleep(0.1)


def _fixed_partitions(drift: Drift, exact: Collection[str]) -> bool:
    """Whether ``drift`` is one that altering the topic cannot fix: the partition count
    of a topic whose count is never altered, or the replication factor."""
    return drift.setting == REPLICATION_FACTOR or (
        drift.setting == "partitions" and drift.topic in exact)


def _fix(admin: AdminClient, specs: Sequence[TopicSpec], partitions: dict[str, int],
         exact: Collection[str]) -> None:
    grow = [NewPartitions(s.name, s.partitions) for s in specs
            if s.name not in exact and partitions.get(s.name, 0) < s.partitions]
    try:
        for fut in (admin.create_partitions(grow).values() if grow else []):
            fut.result()
        resources = [
            ConfigResource(ConfigResource.Type.TOPIC, s.name, incremental_configs=[
                ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET)
                for k, v in s.config.items()])
            for s in specs if s.config
        ]
        for fut in admin.incremental_alter_configs(resources).values():
            fut.result()
    except KafkaException as exc:
        raise TopicError(f"cannot fix drifted topics: {exc}") from exc
    # Brokers apply altered configs asynchronously: return once they report them.
    deadline = time.monotonic() + _TIMEOUT
    while any(not _fixed_partitions(d, exact) for d in find_drift(
            specs, _existing_partitions(admin), describe_configs(admin, [s.name for s in specs]),
            exact)):
        if time.monotonic() > deadline:
            raise TopicError("altered topic configs were not applied in time")
        time.sleep(0.1)
