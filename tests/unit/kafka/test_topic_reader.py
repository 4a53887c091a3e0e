"""auditrelay.kafka.topic_reader without a broker: what is left to catch up."""

from __future__ import annotations

from auditrelay.kafka.topic_reader import CatchUp


def test_only_partitions_with_records_past_their_start_are_behind() -> None:
    progress = CatchUp.between("t", {0: 0, 1: 5, 2: 3, 3: 0}, {0: 4, 1: 5, 2: 2, 3: 0})
    assert progress.topic == "t"
    assert progress.behind == {0}  # 1 and 3 are empty, 2 starts past its end
    assert not progress.done


def test_a_start_not_given_is_the_first_offset() -> None:
    assert CatchUp.between("t", {}, {0: 1, 1: 0}).behind == {0}


def test_nothing_to_read_is_caught_up_at_once() -> None:
    assert CatchUp.between("t", {0: 7}, {0: 7}).done
    assert CatchUp("t", {}).done


def test_caught_up_once_each_partition_read_its_last_record_before_the_end() -> None:
    progress = CatchUp("t", {0: 3, 1: 2})
    progress.read(0, 1)
    progress.read(1, 1)  # offset 1 is the last before end 2
    assert progress.behind == {0}
    progress.read(0, 2)
    assert progress.done


def test_a_position_past_a_gap_at_the_end_also_counts() -> None:
    # The last records may be gone (compacted, or transaction markers): the position moves on.
    progress = CatchUp("t", {0: 10})
    progress.passed(0, 9)
    assert not progress.done
    progress.passed(0, 10)
    assert progress.done


def test_records_of_other_partitions_or_past_the_end_change_nothing() -> None:
    progress = CatchUp("t", {0: 3})
    progress.read(5, 100)
    assert progress.behind == {0}
    progress.read(0, 50)  # a record written after reading started
    assert progress.done
    progress.read(0, 51)
    assert progress.done
