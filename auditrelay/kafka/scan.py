"""What a group's partitions hold beyond its committed offsets, read by key.

The delivery stage's new owner of an ``audit.parked`` partition must know which
destinations have parked batches there before it attempts any of their new
batches (``auditrelay.agents.delivery``). ``last_offsets_by_key`` reads, with a
consumer of its own outside the group, each partition from the group's
committed offset (the beginning if none) up to its end at the time of the call,
and keeps only each key's last offset: memory grows with the keys, not with the
backlog.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError as AIOKafkaError

from auditrelay.kafka.clients import started_through_cancellation
from auditrelay.schemas.errors import BrokerUnavailableError

__all__ = ["last_offsets_by_key"]

log = logging.getLogger(__name__)

_FETCH_TIMEOUT_MS = 500


async def last_offsets_by_key(group: AIOKafkaConsumer, bootstrap: str,
                              partitions: Collection[TopicPartition], *,
                              timeout: float = 60.0) -> dict[tuple[int, bytes | None], int]:
    """(partition, key) -> offset of the key's last record beyond ``group``'s commits.

    Raises ``BrokerUnavailableError`` if the partitions cannot be read to their end
    within ``timeout`` seconds.
    """
    try:
        ranges = await _unread_ranges(group, partitions)
    except AIOKafkaError as exc:
        raise BrokerUnavailableError(f"cannot read committed or end offsets: {exc}") from exc
    if not ranges:
        return {}
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                              enable_auto_commit=False, client_id="auditrelay-parked-scan")
    found: dict[tuple[int, bytes | None], int] = {}
    try:
        await started_through_cancellation(reader.start())
        reader.assign(list(ranges))
        for tp, (start, _) in ranges.items():
            reader.seek(tp, start)
        deadline = time.monotonic() + timeout
        while ranges:
            if time.monotonic() > deadline:
                raise BrokerUnavailableError(
                    f"parked partitions not read to their end in {timeout:.0f} s")
            fetched = await reader.getmany(timeout_ms=_FETCH_TIMEOUT_MS)
            for tp, records in fetched.items():
                end = ranges[tp][1]
                for record in records:
                    if record.offset < end:
                        found[tp.partition, record.key] = record.offset
            for tp in [tp for tp, (_, end) in ranges.items() if await reader.position(tp) >= end]:
                del ranges[tp]
                reader.pause(tp)
    except AIOKafkaError as exc:
        raise BrokerUnavailableError(f"cannot read parked partitions: {exc}") from exc
    finally:
        await reader.stop()
    return found


async def _unread_ranges(group: AIOKafkaConsumer, partitions: Collection[TopicPartition],
                         ) -> dict[TopicPartition, tuple[int, int]]:
    tps = list(partitions)
    if not tps:
        return {}
    ends = await group.end_offsets(tps)
    committed = {tp: await group.committed(tp) for tp in tps}
    never = [tp for tp in tps if committed[tp] is None]
    beginnings = await group.beginning_offsets(never) if never else {}
    ranges: dict[TopicPartition, tuple[int, int]] = {}
    for tp in tps:
        start = committed[tp]
        if start is None:
            start = beginnings[tp]
        if start < ends[tp]:
            ranges[tp] = (start, ends[tp])
    return ranges
