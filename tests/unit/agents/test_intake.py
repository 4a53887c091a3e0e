from __future__ import annotations

from collections import Counter

from agents.intake import event_type, summary


def test_event_type_reads_the_ce_type_header() -> None:
    assert event_type([("ce_id", b"aud_1"), ("ce_type", b"pro.atmos.auth.login")]) == (
        "pro.atmos.auth.login")
    assert event_type({"ce_type": b"pro.atmos.billing.paid"}) == "pro.atmos.billing.paid"


def test_event_type_without_the_header() -> None:
    assert event_type(None) == "(no ce_type header)"
    assert event_type([("ce_type", b"")]) == "(no ce_type header)"


def test_summary_names_total_rate_and_busiest_types() -> None:
    counts = Counter({"a": 30, "b": 60, "c": 10})
    assert summary(counts, 10.0, top=2) == "intake: 100 events in 10 s (10.0/s); b=60, a=30"
