from __future__ import annotations

from datetime import UTC, datetime, timedelta

from auditrelay.ops.status_cmd import age, rows, table, until
from auditrelay.schemas.destinations import DestinationConfig
from auditrelay.schemas.status import DestinationStatus

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def test_age_and_until() -> None:
    assert age(None, NOW) == "never"
    assert age(NOW - timedelta(seconds=2), NOW) == "just now"
    assert age(NOW - timedelta(seconds=42), NOW) == "42s ago"
    assert age(NOW - timedelta(minutes=2, seconds=5), NOW) == "2m ago"
    assert age(NOW - timedelta(hours=5), NOW) == "5h ago"
    assert age(NOW - timedelta(days=3, hours=1), NOW) == "3d ago"
    assert until(None, NOW) == "-"
    assert until(NOW - timedelta(seconds=1), NOW) == "due"
    assert until(NOW + timedelta(seconds=30), NOW) == "in 30s"
    assert until(NOW + timedelta(minutes=30), NOW) == "in 30m"


def _config(dest: str, enabled: bool = True, reason: str | None = None) -> DestinationConfig:
    return DestinationConfig(id=dest, workspace_id="ws_a", name=f"name-{dest}",
                             url="https://x.example.com/", enabled=enabled,
                             disabled_reason=reason, secret_encrypted="v1:x", version=1,
                             updated_at=NOW)


def test_rows_join_status_and_config() -> None:
    statuses = {
        "dst_1": DestinationStatus(destination_id="dst_1", workspace_id="ws_a", state="failing",
                                   last_delivery_at=NOW - timedelta(days=3),
                                   last_delivery_ok=False, consecutive_failures=4,
                                   next_attempt_at=NOW + timedelta(seconds=50),
                                   last_error="HTTP 503", updated_at=NOW),
        "dst_gone": DestinationStatus(destination_id="dst_gone", workspace_id="ws_b", state="ok",
                                      last_delivery_at=NOW, last_delivery_ok=True, updated_at=NOW),
    }
    configs = {"dst_1": _config("dst_1"), "dst_2": _config("dst_2", False, "gone")}
    out = rows(statuses, configs, NOW)
    assert out == [
        ("dst_1", "name-dst_1", "ws_a", "failing", "3d ago (failed)", "4", "in 50s", "HTTP 503"),
        ("dst_2", "name-dst_2", "ws_a", "disabled (gone)", "never", "0", "-", ""),
        ("dst_gone", "(deleted)", "ws_b", "ok", "just now", "0", "-", ""),
    ]
    text = table(out).splitlines()
    assert text[0].startswith("DESTINATION  NAME")
    assert len(text) == 4
