"""The worker's start-up choices that need no process: which workers yield the CPU."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from auditrelay.ops.runner import background_niceness
from auditrelay.schemas.settings import Settings


@pytest.mark.parametrize(("stages", "expected"), [
    (("archive",), 10),
    (("archive", "retention"), 10),
    (("router", "archive"), 0),
    (("delivery",), 0),
    (("router", "archive", "delivery", "retention"), 0),
])
def test_only_a_worker_of_background_stages_lowers_its_priority(
        stages: tuple[str, ...], expected: int) -> None:
    assert background_niceness(Settings(worker_stages=stages)) == expected


def test_the_background_niceness_is_a_setting_and_zero_turns_it_off() -> None:
    assert background_niceness(Settings(worker_stages=("archive",),
                                        worker_background_nice=3)) == 3
    assert background_niceness(Settings(worker_stages=("archive",),
                                        worker_background_nice=0)) == 0


@pytest.mark.parametrize("value", [-1, 20])
def test_a_niceness_outside_0_to_19_is_refused_by_name(value: int) -> None:
    with pytest.raises(ValidationError, match="worker_background_nice"):
        Settings(worker_background_nice=value)
