"""``splunk_hec`` end to end: the real producer, broker and worker (a subprocess), and the
strict fake HEC (``tests.support.receivers.splunk_hec``) on loopback.

What a Splunk admin would see: every event of the workspace indexed as a HEC object
(time, indexed fields, index, the envelope as ``event``), none lost through a token
Splunk refuses (retried, the status says "token rejected", delivered once the token
works again), a busy HEC (503 code 9 with ``Retry-After``), indexer acknowledgement
(waited for; withheld, the batch is sent again); an event HEC refuses as invalid is
dead-lettered (``rejected_by_receiver``) with HEC's words while the others arrive;
the token is in no log line, attempt, status, dead letter or config record.
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Message

from auditrelay.kafka.topic_reader import read_topic
from auditrelay.schemas.batches import REASON_REJECTED
from auditrelay.schemas.settings import Settings
from tests.support.e2e import emit
from tests.support.pipeline import (
    DestinationSpec,
    WorkerProcess,
    create_destinations,
    publish_outbox,
)
from tests.support.polling import wait_until
from tests.support.receivers.splunk_hec import SplunkHecFake
from tests.support.records import (
    assert_secret_nowhere,
    attempts,
    record_headers,
    statuses,
    wait_for_records,
    workspace_event_ids,
)
from tests.support.servers import serve

pytestmark = [pytest.mark.slow, pytest.mark.broker, pytest.mark.timeout(180)]

TOKEN = "9f3c2b1a-7d6e-4f5a-8b9c-0d1e2f3a4b5c"


def envelope_seconds(envelope: dict[str, Any]) -> float:
    return round(datetime.fromisoformat(envelope["time"]).timestamp(), 3)


# -- tests ---------------------------------------------------------------------------------


def test_events_arrive_as_hec_objects_through_a_refused_token_busy_hec_and_acks(
        settings: Settings, tmp_path: Path) -> None:
    plain = SplunkHecFake(set(), indexes={"audit"})  # the token is not known yet
    acked = SplunkHecFake(set(), ack=True)
    acked.ack_after = 1
    with ExitStack() as stack:
        plain_url = stack.enter_context(serve(plain))
        acked_url = stack.enter_context(serve(acked))
        workspace_ids, created = create_destinations(settings, 1, [
            DestinationSpec(0, plain_url, kind="splunk_hec", name="splunk",
                            options={"index": "audit", "source": "auditrelay", "gzip": True},
                            credentials={"token": TOKEN}),
            DestinationSpec(0, acked_url, kind="splunk_hec", name="splunk-ack",
                            options={"ack": True}, credentials={"token": TOKEN})])
        assert publish_outbox(settings) > 0
        dest_ids = {d.id for d in created}
        worker = stack.enter_context(WorkerProcess(settings, tmp_path / "worker.log"))
        worker.wait_ready()
        emit(settings, workspace_ids, 300)

        # Splunk refuses the token: retried, and the status says so in words.
        wait_for_records(settings, statuses, lambda found: dest_ids <= {
            s.destination_id for s in found if s.state == "failing"
            and "token rejected by Splunk HEC" in (s.last_error or "")}, 60,
            "no status said the token was rejected", worker)
        assert plain.indexed == []
        assert acked.indexed == []

        # The owner fixes the token in Splunk; HEC is busy for two requests first.
        with plain.lock:
            plain.tokens.add(TOKEN)
            plain.busy = 2
        with acked.lock:
            acked.tokens.add(TOKEN)
        expected = workspace_event_ids(settings, workspace_ids[0])
        assert len(expected) > 300
        wait_until(lambda: expected <= plain.event_ids() and expected <= acked.event_ids(),
                   90, lambda: f"missing {len(expected - plain.event_ids())} and "
                   f"{len(expected - acked.event_ids())}" + worker.tail(), interval=0.5)
        assert worker.alive(), worker.tail()
        attempts_seen = wait_for_records(settings, attempts, lambda found: any(
            a.outcome == "retry" and "Splunk HEC is busy" in (a.error or "") for a in found),
            20, "no attempt said HEC was busy", worker)
        assert_secret_nowhere(settings, TOKEN, worker)

    # Nothing foreign, nothing lost; a repeat is the same event.
    assert plain.event_ids() == expected
    assert acked.event_ids() == expected
    for fake in (plain, acked):
        copies: dict[str, dict[str, Any]] = {}
        for hec_object in fake.indexed:
            first = copies.setdefault(hec_object["event"]["id"], hec_object)
            assert first["event"] == hec_object["event"]
    # The HEC objects: time from the envelope, indexed fields, the options.
    for hec_object in plain.indexed:
        envelope = hec_object["event"]
        assert hec_object["time"] == envelope_seconds(envelope)
        assert hec_object["fields"] == {
            "type": envelope["type"], "category": envelope["type"].split(".")[-2],
            "workspace": workspace_ids[0]}
        assert (hec_object["index"], hec_object["source"], hec_object["sourcetype"]) == (
            "audit", "auditrelay", "_json")
        assert envelope["specversion"] == "1.0"
    accepted = [e for e in plain.snapshot() if e.answer.status == 200]
    assert {e.headers["content-encoding"] for e in accepted} == {"gzip"}
    assert {e.headers["authorization"] for e in accepted} == {f"Splunk {TOKEN}"}
    assert all(e.headers["x-webhook-id"].startswith("msg_") for e in accepted)
    refused = [json.loads(e.answer.body) for e in plain.snapshot() if e.answer.status != 200]
    assert {"text": "Invalid token", "code": 4} in refused
    assert {"text": "Server is busy", "code": 9} in refused
    # Acknowledged: every event request was followed by ack queries on its channel.
    sent = acked.snapshot()
    channels = {e.headers["x-splunk-request-channel"] for e in sent}
    assert len(channels) == 1
    polls = [e for e in sent if e.path == "/services/collector/ack"]
    assert len(polls) >= 2 * len([e for e in sent if e.path.endswith("/event")
                                  and e.answer.status == 200])
    assert "fields" in plain.indexed[0]
    assert any(a.status_code == 403 for a in attempts_seen)


def test_an_event_hec_refuses_is_dead_lettered_and_withheld_acks_are_sent_again(
        settings: Settings, tmp_path: Path) -> None:
    bad = {7, 23}
    strict = SplunkHecFake({TOKEN})
    strict.refuse = lambda event: event.get("data", {}).get("metadata", {}).get("n") in bad
    withholding = SplunkHecFake({TOKEN}, ack=True)
    withholding.withhold_acks = True
    with ExitStack() as stack:
        strict_url = stack.enter_context(serve(strict))
        withholding_url = stack.enter_context(serve(withholding))
        workspace_ids, created = create_destinations(settings, 1, [
            DestinationSpec(0, strict_url, kind="splunk_hec", name="splunk",
                            credentials={"token": TOKEN}),
            DestinationSpec(0, withholding_url, kind="splunk_hec", name="splunk-ack",
                            options={"ack": True}, credentials={"token": TOKEN})])
        assert publish_outbox(settings) > 0
        worker = stack.enter_context(WorkerProcess(settings, tmp_path / "worker.log"))
        worker.wait_ready()
        emit(settings, workspace_ids, 40)
        expected = workspace_event_ids(settings, workspace_ids[0])

        # The refused events are dead-lettered with HEC's words, the others indexed.
        def dead_letters(settings: Settings) -> list[Message]:
            return [m for m in read_topic(settings.kafka_bootstrap, settings.topics.dlq)
                    if record_headers(m).get("ar_destination_id") == created[0].id]

        dlq = wait_for_records(settings, dead_letters, lambda found: sum(
            len(json.loads(m.value() or b"[]")) for m in found) >= len(bad), 60,
            "the refused events were not dead-lettered", worker)
        refused = [e for m in dlq for e in json.loads(m.value() or b"[]")]
        assert sorted(e["data"]["metadata"]["n"] for e in refused) == sorted(bad)
        assert {record_headers(m).get("ar_reason") for m in dlq} == {REASON_REJECTED}
        assert {record_headers(m).get("ar_detail") for m in dlq} == {
            "Splunk HEC refused the event: Invalid data format (HTTP 400, code 6)"}
        refused_ids = {e["id"] for e in refused}
        wait_until(lambda: expected - refused_ids <= strict.event_ids(), 60,
                   lambda: f"missing {len(expected - refused_ids - strict.event_ids())}"
                   + worker.tail(), interval=0.5)
        assert not strict.event_ids() & refused_ids

        # Acks withheld: after 10 s the batch is sent again; once HEC acks, delivered.
        wait_for_records(settings, attempts, lambda found: any(
            a.destination_id == created[1].id and a.outcome == "retry"
            and "did not confirm indexing within 10 s" in (a.error or "") for a in found),
            60, "no attempt said the acknowledgement never came", worker)
        with withholding.lock:
            withholding.withhold_acks = False
        wait_for_records(settings, statuses, lambda found: any(
            s.destination_id == created[1].id and s.state == "ok" and s.last_delivery_ok
            for s in found), 60, "the acknowledged destination never recovered", worker)
        assert expected <= withholding.event_ids()
        sent_again = [e.headers["x-webhook-id"] for e in withholding.snapshot()
                      if e.path.endswith("/event")]
        assert len(sent_again) > len(set(sent_again))  # a batch id sent twice
        assert worker.alive(), worker.tail()
        assert_secret_nowhere(settings, TOKEN, worker)
