"""How the outbox publisher cuts its pending entries into steps (``outbox.steps``).

Each step costs one call per kind (one ``create_topics``, one flush, one
``delete_topics``): a burst of destinations is published in a few round trips,
not one per topic. What must not change: records keep their order, a topic is
made before any record that follows it, and nothing crosses a deletion.
"""

from __future__ import annotations

from auditrelay.store.outbox import CREATE_TOPIC, DELETE_TOPIC, RECORD, _Pending, _spec, steps


def entry(id_: int, kind: str, topic: str = "t") -> _Pending:
    return _Pending(id_, kind, topic, None, None, None)


def shape(cut: list[list[_Pending]]) -> list[list[int]]:
    return [[e.id for e in step] for step in cut]


def test_a_burst_of_creations_is_one_step_whatever_records_sit_between() -> None:
    pending = [entry(1, CREATE_TOPIC, "a"), entry(2, RECORD), entry(3, RECORD),
               entry(4, CREATE_TOPIC, "b"), entry(5, RECORD), entry(6, RECORD)]

    assert shape(steps(pending)) == [[1, 2, 3, 4, 5, 6]]


def test_deletions_cut_the_entries_and_consecutive_ones_go_together() -> None:
    pending = [entry(1, CREATE_TOPIC, "a"), entry(2, RECORD), entry(3, DELETE_TOPIC, "a"),
               entry(4, DELETE_TOPIC, "b"), entry(5, RECORD), entry(6, CREATE_TOPIC, "a")]

    cut = steps(pending)

    assert shape(cut) == [[1, 2], [3, 4], [5, 6]]
    # A creation never moves across a deletion (it may be of the same topic).
    assert [e.kind for e in cut[1]] == [DELETE_TOPIC, DELETE_TOPIC]


def test_every_entry_is_in_exactly_one_step_in_id_order() -> None:
    kinds = [RECORD, DELETE_TOPIC, CREATE_TOPIC, RECORD, DELETE_TOPIC, RECORD, CREATE_TOPIC]
    pending = [entry(n, kind, f"t{n}") for n, kind in enumerate(kinds, 1)]

    flat = [e.id for step in steps(pending) for e in step]

    assert flat == list(range(1, len(kinds) + 1))
    assert steps([]) == []


def test_a_creation_entry_gives_back_the_topic_spec_it_was_enqueued_with() -> None:
    stored = _Pending(1, CREATE_TOPIC, "audit.dest.dst_1", b"3", None,
                      [["retention.ms", "604800000"], ["cleanup.policy", "delete"]])

    spec = _spec(stored)

    assert (spec.name, spec.partitions) == ("audit.dest.dst_1", 3)
    assert dict(spec.config) == {"retention.ms": "604800000", "cleanup.policy": "delete"}
