"""``datadog_logs`` end to end: the real worker and broker deliver to the strict fake
intake (``tests.support.receivers.datadog``) on 127.0.0.1.

The destination's URL is ``http://127.0.0.1:{port}``: accepted because the scenario's
settings allow 127.0.0.0/8 (``AUDITRELAY_ALLOW_PRIVATE_CIDRS``), the operator's
exception to Datadog's intake hosts (``auditrelay.wire.kinds.loopback``).

Sizes: an event is at most 64 KiB (``auditrelay.schemas.envelope.MAX_EVENT_BYTES``)
and the router cuts batches at 900 KiB (``auditrelay.agents.routing.MAX_BATCH_BYTES``),
so no batch of the pipeline reaches Datadog's 5 MB. The cut by bytes is therefore
shown here against the fake over real HTTP without the worker (100 events of 80 KB,
8 MB), and end to end with 100 events of the largest allowed size; a forced 413
shows the split-and-resend end to end.
"""

from __future__ import annotations

import ipaddress
import json
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from auditrelay.schemas.destinations import DestinationConfig
from auditrelay.schemas.envelope import MAX_EVENT_BYTES
from auditrelay.schemas.settings import Settings
from auditrelay.wire.client import DeliveryClient, DeliveryConfig
from auditrelay.wire.kinds.send import Attempter
from auditrelay.wire.secrets import SecretBox, generate_key
from tests.support.e2e import USER, emit
from tests.support.pipeline import (
    DestinationSpec,
    WorkerProcess,
    create_destinations,
    publish_outbox,
    read_records,
)
from tests.support.polling import wait_until
from tests.support.receivers.datadog import MAX_BYTES, MAX_ENTRIES, DatadogIntake
from tests.support.records import assert_secret_nowhere, record_headers, workspace_event_ids
from tests.support.servers import serve

KEY = "0123456789abcdef0123456789abcdef"
REVOKED = "the key Datadog accepts now is another one"
LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)


def _envelope(n: int, pad: int) -> dict[str, Any]:
    return {"specversion": "1.0", "id": f"aud_{n:04d}", "source": "https://app.example/workspaces/ws1",
            "type": "pro.atmos.auth.login_succeeded", "time": "2026-11-25T10:30:00.000Z",
            "datacontenttype": "application/json", "workspaceid": "ws1",
            "data": {"actor": {"id": "usr_1", "type": "user"},
                     "action": {"category": "auth", "action": "login_succeeded"},
                     "metadata": {"pad": "x" * pad}}}


@pytest.mark.asyncio
async def test_a_hundred_events_of_80_kb_are_cut_below_5_mb_and_all_taken() -> None:
    """Over real HTTP to the strict fake (which answers 413 above 5 MB), no worker."""
    intake = DatadogIntake(KEY)
    box = SecretBox(generate_key())
    events = [json.dumps(_envelope(n, 80_000)) for n in range(100)]
    body = ("[" + ",".join(events) + "]").encode()
    assert len(body) > 8_000_000
    with serve(intake) as base:
        config = DestinationConfig(
            id="dst_dd", workspace_id="ws1", name="dd", kind="datadog_logs",
            url_encrypted=box.encrypt(base), credentials_encrypted=box.encrypt(
                json.dumps({"api_key": KEY})), enabled=True, secret_encrypted=box.encrypt("x"),
            version=1, updated_at=datetime.now(UTC))
        async with DeliveryClient(DeliveryConfig(allow_private_cidrs=LOOPBACK)) as client:
            result = await Attempter(client, box, "9.9").send(
                config, body, "msg_big", 100, lambda: datetime.now(UTC))
    assert result.ok, result.error
    requests, logs = intake.received()
    assert len(requests) >= 2
    assert all(r.status == 202 for r in requests)
    assert max(r.size for r in requests) <= MAX_BYTES
    assert sorted(json.loads(log["message"])["id"] for log in logs) == \
        sorted(f"aud_{n:04d}" for n in range(100))


# -- through the worker --------------------------------------------------------------------


def _set_up(settings: Settings, stack: ExitStack, intake: DatadogIntake) -> str:
    """One workspace with a Datadog destination to ``intake``; its workspace id."""
    base = stack.enter_context(serve(intake))
    [ws], _ = create_destinations(settings, 1, [DestinationSpec(
        0, base, kind="datadog_logs", options={"service": "atmos", "ddtags": "env:test"},
        credentials={"api_key": KEY})])
    assert publish_outbox(settings) > 0
    return ws


def _emit(settings: Settings, ws: str, count: int, pad: int = 0) -> list[str]:
    return emit(settings, [ws], count, metadata=lambda n: {"n": n, "pad": "x" * pad} if pad
                else {"n": n})


def _taken_ids(intake: DatadogIntake) -> list[str]:
    return [log["audit"]["id"] for log in intake.received()[1]]


def _wait_taken(intake: DatadogIntake, ids: set[str], worker: WorkerProcess,
                timeout: float = 45) -> None:
    wait_until(lambda: ids <= set(_taken_ids(intake)), timeout,
               lambda: f"{len(ids - set(_taken_ids(intake)))} of {len(ids)} not taken"
               + worker.tail())


@pytest.mark.broker
@pytest.mark.slow
@pytest.mark.timeout(150)
def test_the_largest_events_arrive_as_logs_within_datadogs_limits(
        settings: Settings, tmp_path: Path) -> None:
    intake = DatadogIntake(KEY)
    with ExitStack() as stack:
        ws = _set_up(settings, stack, intake)
        worker = stack.enter_context(WorkerProcess(settings, tmp_path / "worker.log"))
        worker.wait_ready()
        ids = _emit(settings, ws, 100, pad=MAX_EVENT_BYTES - 1500)
        expected = workspace_event_ids(settings, ws)
        assert set(ids) <= expected  # and the destination's own self-audit events
        _wait_taken(intake, expected, worker, timeout=90)
    requests, logs = intake.received()
    assert all(r.status == 202 for r in requests), [r.status for r in requests]
    assert max(r.size for r in requests) <= MAX_BYTES
    assert max(r.entries for r in requests) <= MAX_ENTRIES
    assert all(r.headers["content-encoding"] == "gzip" for r in requests)
    big = [log for log in logs if log["audit"]["id"] in set(ids)]
    assert len({log["audit"]["id"] for log in big}) == 100
    for log in big:
        envelope = json.loads(log["message"])
        assert len(log["message"].encode()) > MAX_EVENT_BYTES - 1500
        assert envelope["id"] == log["audit"]["id"]
        assert (log["service"], log["ddtags"], log["ddsource"]) == ("atmos", "env:test",
                                                                   "auditrelay")
        assert log["usr"] == {"id": USER.id}
        assert log["audit"]["workspaceid"] == ws


@pytest.mark.broker
@pytest.mark.slow
@pytest.mark.timeout(170)
def test_a_refused_key_is_retried_413_splits_and_400_dead_letters(
        settings: Settings, tmp_path: Path) -> None:
    intake = DatadogIntake(REVOKED)  # the key is refused to begin with
    names = settings.topics
    with ExitStack() as stack:
        ws = _set_up(settings, stack, intake)
        worker = stack.enter_context(WorkerProcess(settings, tmp_path / "worker.log"))
        worker.wait_ready()

        # 403: retried, the status saying "API key rejected"; delivered once accepted.
        refused_ids = set(_emit(settings, ws, 5))
        statuses = read_records(settings.kafka_bootstrap, names.delivery_status, lambda s: any(
            "API key rejected" in (m.value() or b"").decode() for m in s), 40)
        assert not _taken_ids(intake)
        assert any(r.status == 403 for r in intake.received()[0])
        intake.api_key = KEY
        _wait_taken(intake, refused_ids, worker)

        # 413: the request is split in halves, resent at once, and all of it taken.
        quiet = len(intake.received()[0])
        intake.forced.append(413)
        split_ids = set(_emit(settings, ws, 6))
        _wait_taken(intake, split_ids, worker)
        after = intake.received()[0][quiet:]
        assert after[0].status == 413
        assert after[0].entries >= 2
        assert all(r.status == 202 for r in after[1:])
        assert max(r.entries for r in after[1:]) < after[0].entries

        # 400: the events are dead-lettered with Datadog's words; nothing is retried.
        intake.forced.append(400)
        rejected_ids = set(_emit(settings, ws, 3))
        dlq = read_records(settings.kafka_bootstrap, names.dlq, lambda s: len(s) >= 1, 40)
        read_records(settings.kafka_bootstrap, names.delivery_attempts,
                     lambda s: any(b'"dead_letter"' in (m.value() or b"") for m in s), 40)
    headers = record_headers(dlq[0])
    assert headers["ar_reason"] == "rejected_by_receiver"
    assert headers["ar_detail"].startswith("Datadog refused the logs as malformed (HTTP 400)")
    dead = {event["id"] for event in json.loads(dlq[0].value() or b"[]")}
    assert dead == rejected_ids
    assert not rejected_ids & set(_taken_ids(intake))
    assert len(_taken_ids(intake)) == len(set(_taken_ids(intake)))  # no duplicates
    latest = [json.loads(m.value() or b"{}") for m in statuses]
    assert any(s.get("last_error", "").startswith("API key rejected") for s in latest)
    assert_secret_nowhere(settings, KEY, worker)
