"""Identifier formats and the monotonic ULID source."""

from __future__ import annotations

import threading

import pytest
from ulid import ULID

from auditrelay.schemas.ids import (
    UlidSource,
    is_event_id,
    is_workspace_id,
    new_event_id,
    new_workspace_id,
)


def test_ulid_source_encodes_like_the_reference_implementation() -> None:
    source = UlidSource()
    for ms in (0, 1, 1_795_635_666_013, (1 << 48) - 1):
        got_ms, text = source.new(ms)
        reference = ULID.from_str(text)
        assert got_ms == ms
        assert reference.milliseconds == ms
        assert str(reference) == text


def test_ids_are_strictly_increasing_within_one_millisecond_and_when_clock_steps_back() -> None:
    source = UlidSource()
    ids = [source.new(1_000)[1] for _ in range(3000)] + [source.new(999)[1] for _ in range(10)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert int(ULID.from_str(ids[1]).to_uuid()) == int(ULID.from_str(ids[0]).to_uuid()) + 1


def test_ids_stay_unique_across_threads() -> None:
    source = UlidSource()
    out: list[str] = []

    def work() -> None:
        out.extend(source.new(5)[1] for _ in range(2000))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(out)) == 8000


def test_new_ids_have_their_formats() -> None:
    assert is_event_id(new_event_id())
    workspace = new_workspace_id()
    assert is_workspace_id(workspace)
    assert len(workspace) == 3 + 26


@pytest.mark.parametrize("value", [
    "aud_01JD7Q0Z8N6Y0F3X5KQ2M1V9RT", "aud_7ZZZZZZZZZZZZZZZZZZZZZZZZZ",
    "aud_019ade2c-4e1a-7b3c-9d4e-5f60718293a4",  # UUIDv7, canonical
    "aud_019ade2c-4e1a-7b3c-bd4e-5f60718293a4",  # variant 10 with b
])
def test_valid_event_ids(value: str) -> None:
    assert is_event_id(value)


@pytest.mark.parametrize("value", [
    "01JD7Q0Z8N6Y0F3X5KQ2M1V9RT",  # no prefix
    "aud_01jd7q0z8n6y0f3x5kq2m1v9rt",  # lower case
    "aud_81JD7Q0Z8N6Y0F3X5KQ2M1V9RT",  # beyond 128 bits
    "aud_01JD7Q0Z8N6Y0F3X5KQ2M1V9RI",  # I is not Crockford
    "aud_01JD7Q0Z8N6Y0F3X5KQ2M1V9R",  # 25 characters
    "aud_019ade2c-4e1a-4b3c-9d4e-5f60718293a4",  # UUIDv4, not time-sortable
    "aud_019ADE2C-4E1A-7B3C-9D4E-5F60718293A4",  # upper case: not canonical
    "aud_019ade2c-4e1a-7b3c-cd4e-5f60718293a4",  # variant 110
    "aud_019ade2c4e1a7b3c9d4e5f60718293a4",  # no hyphens
    None,
])
def test_invalid_event_ids(value: object) -> None:
    assert not is_event_id(value)


@pytest.mark.parametrize("value", ["ws_xyz", "ws_target1", "ws_" + "a" * 40])
def test_valid_workspace_ids(value: str) -> None:
    assert is_workspace_id(value)


@pytest.mark.parametrize("value", [
    "ws_", "ws_XYZ", "ws_a-b", "ws_a_b", "xyz", "WS_abc", "ws_" + "a" * 41, "ws_é", 7,
    "ws_abc\n",
])
def test_invalid_workspace_ids(value: object) -> None:
    assert not is_workspace_id(value)
