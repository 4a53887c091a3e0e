"""The bench receivers' bookkeeping: counts, duplicates and latency from emit stamps."""

from __future__ import annotations

import json

from auditrelay.ops.bench_receiver import (
    Store,
    complete,
    path_report,
    percentile,
    receipts,
    report,
)


def body(*events: tuple[str, float]) -> bytes:
    return json.dumps([{"specversion": "1.0", "id": event_id, "data": {
        "metadata": {"t": f"{stamp:.6f}", "pad": "x"}}} for event_id, stamp in events],
        separators=(",", ":")).encode()


def test_latency_is_first_receipt_minus_emit_and_duplicates_count_apart() -> None:
    store = Store()
    store.add(101.0, 1, body(("aud_A", 100.0), ("aud_B", 100.5)))
    store.add(103.0, 2, body(("aud_B", 100.5), ("aud_C", 102.0)))  # aud_B again

    assert store.stats()["events"] == 4
    got = report(store)

    assert got["unique"] == 3
    assert got["duplicates"] == 1
    assert got["per_port"] == {"1": 2, "2": 2}
    assert (got["first_receipt"], got["last_receipt"]) == (101.0, 103.0)
    # aud_A 1.0 s, aud_B 0.5 s (its first copy), aud_C 1.0 s
    assert got["latency"]["p50"] == 1.0
    assert got["latency"]["max"] == 1.0


def test_events_emitted_before_since_are_left_out() -> None:
    store = Store()
    # A warm-up event redelivered after the reset, in the same batch as a run's event.
    store.add(12.0, 1, body(("aud_WARM", 5.0), ("aud_RUN", 11.5)))

    got = report(store, since=10.0)

    assert (got["unique"], got["duplicates"], got["stamped"]) == (1, 0, 1)
    assert got["latency"]["p50"] == 0.5


def test_reset_forgets_the_warm_up() -> None:
    store = Store()
    store.add(1.0, 1, body(("aud_A", 0.5)))
    store.reset()
    assert store.stats() == {"events": 0, "batches": 0, "last": None}
    assert report(store)["unique"] == 0


def test_nearest_rank_percentile() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.50) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 1.0) == 100.0
    assert percentile([7.0], 0.99) == 7.0


def test_paths_count_the_bench_events_only_and_report_their_latency() -> None:
    store = Store()
    self_audit = b'[{"specversion":"1.0","id":"aud_S","data":{"metadata":{}}}]'
    store.add(1.0, 1, self_audit, b"/d/0")
    store.add(2.0, 1, body(("aud_A", 1.5), ("aud_B", 1.0)), b"/d/0")
    store.add(3.0, 1, body(("aud_A", 1.5)), b"/d/1")
    store.add(4.0, 2, body(("aud_C", 3.0)), b"/s/2")

    healthy = complete(store, b"/d/", 1)
    assert (healthy["paths"], healthy["complete"], healthy["events"]) == (2, 2, 3)
    assert (healthy["done_at"], healthy["first"]) == (3.0, 1.0)
    assert complete(store, b"/d/", 2)["complete"] == 1
    # Only what arrived at 3.0 or later: /d/1's one event.
    late = complete(store, b"/d/", 1, after=3.0)
    assert (late["paths"], late["complete"], late["done_at"]) == (1, 1, 3.0)

    got = path_report(store, since=1.2, prefix=b"/d/")
    assert got["paths"] == {"/d/0": [1, 0.5], "/d/1": [1, 1.5]}  # aud_B emitted before 1.2
    assert got["latency"]["max"] == 1.5


def test_envelopes_carried_as_json_strings_are_counted_too() -> None:
    store = Store()
    envelope = '{"specversion":"1.0","id":"aud_019ade2c-4e1a-7b3c-9d4e-5f60718293a4",' \
               '"data":{"metadata":{"t":"100.000000"}}}'
    body = json.dumps([{"message": envelope, "ddsource": "auditrelay",
                         "audit": {"id": "aud_019ade2c-4e1a-7b3c-9d4e-5f60718293a4",
                                   "metadata": {"t": "90.000000"}}}]).encode()
    store.add(100.5, 1, body)
    assert store.events == 1
    assert store.paths[b"/"][0] == 1  # the stamp of the envelope, not the attribute's
    assert report(store)["unique"] == 1
    assert report(store)["latency"]["max"] == 0.5


def test_receipts_give_emit_and_first_receipt_per_path_and_event() -> None:
    store = Store()
    store.add(2.0, 1, body(("aud_A", 1.5), ("aud_OLD", 0.5)), b"/d/0")
    store.add(3.0, 1, body(("aud_A", 1.5)), b"/d/0")  # a copy: its first receipt counts
    store.add(4.0, 1, body(("aud_A", 1.5)), b"/d/1")  # another destination's copy
    store.add(5.0, 2, body(("aud_B", 4.0)), b"/s/2")

    assert receipts(store, 1.0, b"/d/") == {"/d/0": [[1.5, 2.0]], "/d/1": [[1.5, 4.0]]}
    assert receipts(store, 0.0, b"/")["/d/0"] == [[1.5, 2.0], [0.5, 2.0]]
