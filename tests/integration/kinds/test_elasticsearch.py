"""The ``elasticsearch`` kind against the strict fake ``_bulk`` receiver
(``tests.support.receivers.elasticsearch``), over real loopback HTTP.

First the kind and the fake alone, through the real ``DeliveryClient`` and ``Attempter``
(no broker): what the fake enforces, and what each of its answers leads to. Then end
to end, the worker as a real subprocess on the real broker (as in
``tests/integration/test_pipeline_e2e.py``): 10 000 events with a ``kill -9`` in the
middle end as exactly 10 000 documents (redeliveries are 409s, counted as delivered);
busy items are sent again alone; mapping errors are dead-lettered with the reason;
no credential appears in the worker's log or in any record.
"""

from __future__ import annotations

import base64
import ipaddress
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka import Message

from auditrelay.kafka.topic_reader import read_topic
from auditrelay.schemas.batches import REASON_REJECTED
from auditrelay.schemas.destinations import DestinationConfig
from auditrelay.schemas.settings import Settings
from auditrelay.wire.client import DeliveryClient, DeliveryConfig, DeliveryResult
from auditrelay.wire.kinds.elasticsearch import FILTER_PATH
from auditrelay.wire.kinds.send import Attempter
from auditrelay.wire.secrets import SecretBox, generate_key
from tests.support.e2e import KINDS, Emitter, emit
from tests.support.pipeline import (
    DestinationSpec,
    WorkerProcess,
    create_destinations,
    publish_outbox,
)
from tests.support.polling import wait_quiet, wait_until
from tests.support.receivers.elasticsearch import FakeElasticsearch
from tests.support.records import record_headers, workspace_event_ids
from tests.support.servers import serve

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)
NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
#: What the end-to-end destinations are filtered on: the emitted events, not the
#: self-audit ones (so that the index holds exactly what the test emitted).
EMITTED_TYPES = tuple(sorted({f"pro.atmos.{category}.*" for category, _ in KINDS}))


# -- the kind and the fake, no broker --------------------------------------------------------


def envelopes(n: int, start: int = 0, **metadata: Any) -> bytes:
    return json.dumps([
        {"specversion": "1.0", "id": f"aud_{i:04d}", "source": "https://x/workspaces/ws1",
         "type": "pro.atmos.auth.login_succeeded", "time": "2026-11-25T10:30:00.000Z",
         "workspaceid": "ws1", "datacontenttype": "application/json",
         "data": {"actor": {"id": "usr_1", "type": "user"}, "metadata": {"n": i, **metadata}}}
        for i in range(start, start + n)]).encode()


class Sender:
    """The worker's way of sending: ``Attempter`` over the real client, to ``url``."""

    def __init__(self, url: str, credentials: dict[str, str], index: str = "audit") -> None:
        self.box = SecretBox(generate_key())
        self.config = DestinationConfig(
            id="dst_es", workspace_id="ws1", name="es", kind="elasticsearch",
            url_encrypted=self.box.encrypt(url), enabled=True,
            secret_encrypted=self.box.encrypt("whsec_unused"),
            version=1, updated_at=NOW, options={"index": index},
            credentials_encrypted=self.box.encrypt(json.dumps(credentials)))

    async def send(self, body: bytes, batch_id: str = "msg_1") -> DeliveryResult:
        config = DeliveryConfig(allow_private_cidrs=LOOPBACK)
        async with DeliveryClient(config) as client:
            attempter = Attempter(client, self.box, "9.9")
            return await attempter.send(self.config, body, batch_id, len(json.loads(body)),
                                        lambda: NOW)


@pytest.fixture
def fake() -> FakeElasticsearch:
    return FakeElasticsearch(username="auditrelay", password="pw-never-logged")


@pytest.fixture
def es_url(fake: FakeElasticsearch) -> Iterator[str]:
    with serve(fake) as url:
        yield url


def ids(result_body: bytes) -> list[str]:
    return [event["id"] for event in json.loads(result_body)]


@pytest.mark.asyncio
async def test_a_batch_becomes_documents_and_sending_it_again_changes_nothing(
        fake: FakeElasticsearch, es_url: str) -> None:
    sender = Sender(es_url, {"api_key": fake.encoded_api_key})
    first = await sender.send(envelopes(3))
    assert (first.ok, first.status_code, first.error) == (True, 200, None)
    assert sorted(fake.documents("audit")) == ["aud_0000", "aud_0001", "aud_0002"]
    document = fake.documents("audit")["aud_0001"]
    assert document["@timestamp"] == "2026-11-25T10:30:00.000Z"
    assert document["data"]["metadata"] == {"n": 1}
    again = await sender.send(envelopes(3))
    assert (again.ok, again.pending, again.rejected) == (True, None, None)
    assert fake.count("audit") == 3
    assert fake.conflicts == 3
    request = fake.snapshot()[-1]
    assert request.path == f"/_bulk?filter_path={FILTER_PATH}"
    assert request.headers["authorization"] == f"ApiKey {fake.encoded_api_key}"
    assert request.headers["content-type"] == "application/x-ndjson"
    assert request.headers["x-webhook-id"] == "msg_1"


@pytest.mark.asyncio
async def test_basic_auth_and_an_api_key_given_as_id_and_key(fake: FakeElasticsearch,
                                                             es_url: str) -> None:
    basic = await Sender(es_url, {"username": "auditrelay", "password": "pw-never-logged"},
                         ).send(envelopes(1))
    assert basic.ok
    pair = f"{fake.api_key_id}:{fake.api_key_secret}"
    raw_key = await Sender(es_url, {"api_key": pair}).send(envelopes(1, start=1))
    assert raw_key.ok
    assert fake.count("audit") == 2


@pytest.mark.asyncio
async def test_wrong_credentials_are_retried_with_words(fake: FakeElasticsearch,
                                                        es_url: str) -> None:
    result = await Sender(es_url, {"username": "auditrelay", "password": "wrong-pw"},
                          ).send(envelopes(2))
    assert not result.ok
    assert result.status_code == 401
    assert result.error == "Elasticsearch rejected the credentials (HTTP 401)"
    assert result.pending is None  # the whole batch waits
    assert result.rejected is None
    assert fake.count("audit") == 0


@pytest.mark.asyncio
async def test_busy_items_are_pending_alone_and_mapping_errors_refused(
        fake: FakeElasticsearch, es_url: str) -> None:
    fake.busy = lambda doc_id, tries: doc_id in ("aud_0002", "aud_0005") and tries == 0
    fake.mapping_error_field = "data.metadata.bad"
    body = json.dumps([*json.loads(envelopes(6)), *json.loads(envelopes(1, 6, bad="x"))])
    result = await Sender(es_url, {"api_key": fake.encoded_api_key}).send(body.encode())
    assert not result.ok
    assert result.pending is not None
    assert ids(result.pending.body) == ["aud_0002", "aud_0005"]
    assert result.rejected is not None
    assert ids(result.rejected.body) == ["aud_0006"]
    assert "document_parsing_exception" in result.rejected.detail
    assert "failed to parse field [data.metadata.bad]" in result.rejected.detail
    assert result.error is not None
    assert result.error.startswith("Elasticsearch took 4 of 7 events")
    assert sorted(fake.documents("audit")) == ["aud_0000", "aud_0001", "aud_0003", "aud_0004"]
    # The pending part, sent again alone, arrives.
    retried = await Sender(es_url, {"api_key": fake.encoded_api_key}).send(result.pending.body)
    assert retried.ok
    assert fake.count("audit") == 6
    last = fake.snapshot()[-1].body.split(b"\n")[:-1:2]
    assert [json.loads(line)["create"]["_id"] for line in last] == ["aud_0002", "aud_0005"]


@pytest.mark.asyncio
async def test_a_missing_index_without_automatic_creation_waits_with_words(
        fake: FakeElasticsearch, es_url: str) -> None:
    fake.auto_create = False
    result = await Sender(es_url, {"api_key": fake.encoded_api_key}).send(envelopes(2))
    assert not result.ok
    assert result.error is not None
    assert "Elasticsearch has no such index and does not create it automatically" in result.error
    assert "no such index [audit]" in result.error
    fake.create_index("audit")
    assert (await Sender(es_url, {"api_key": fake.encoded_api_key}).send(envelopes(2))).ok
    assert fake.count("audit") == 2


@pytest.mark.asyncio
async def test_a_data_stream_gets_its_timestamp(es_url: str, fake: FakeElasticsearch) -> None:
    fake.data_streams.add("logs-auditrelay-default")
    result = await Sender(es_url, {"api_key": fake.encoded_api_key},
                          index="logs-auditrelay-default").send(envelopes(2))
    assert result.ok, result.error
    assert fake.count("logs-auditrelay-default") == 2


@pytest.mark.asyncio
async def test_whole_request_429_503_and_413(fake: FakeElasticsearch, es_url: str) -> None:
    sender = Sender(es_url, {"api_key": fake.encoded_api_key})
    fake.fail_next(429, retry_after=7)
    busy = await sender.send(envelopes(2))
    assert (busy.ok, busy.status_code, busy.retry_after_seconds) == (False, 429, 7.0)
    assert busy.error == ("Elasticsearch is overloaded (HTTP 429 es_rejected_execution_exception:"
                          " rejected execution of coordinating operation [coordinating_and_"
                          "primary_bytes=0, replica_bytes=0, all_bytes=0, coordinating_operatio"
                          "n_bytes=52428800, max_coordinating_and_primary_bytes=53687091])")
    fake.fail_next(503)
    down = await sender.send(envelopes(2))
    assert (down.ok, down.status_code) == (False, 503)
    assert down.error == ("Elasticsearch did not handle the request (HTTP 503 "
                          "master_not_discovered_exception)")
    # Too large: halves are sent at once, each under the limit, and all arrive.
    fake.max_content_length = 1500
    split = await sender.send(envelopes(4))
    assert split.ok, split.error
    assert fake.count("audit") == 4
    statuses = [r.answer.status for r in fake.snapshot()[-3:]]
    assert statuses == [413, 200, 200]


def test_the_fake_is_strict(fake: FakeElasticsearch, es_url: str) -> None:
    auth = {"Authorization": f"ApiKey {fake.encoded_api_key}"}
    ndjson = {"Content-Type": "application/x-ndjson", **auth}
    line = b'{"create":{"_index":"audit","_id":"a1"}}\n{"n":1}'
    with httpx.Client(base_url=es_url) as client:
        unterminated = client.post("/_bulk", content=line, headers=ndjson)
        assert unterminated.status_code == 400
        assert unterminated.json()["error"]["type"] == "illegal_argument_exception"
        assert "terminated by a newline" in unterminated.json()["error"]["reason"]
        anonymous = client.post("/_bulk", content=line + b"\n",
                                headers={"Content-Type": "application/x-ndjson"})
        assert anonymous.status_code == 401
        assert anonymous.headers["www-authenticate"].startswith("ApiKey")
        assert anonymous.json()["error"]["type"] == "security_exception"
        wrong_key = base64.b64encode(b"id:nope").decode()
        assert client.post("/_bulk", content=line + b"\n", headers={
            **ndjson, "Authorization": f"ApiKey {wrong_key}"}).status_code == 401
        assert client.post("/_bulk", content=line + b"\n",
                           headers={**auth, "Content-Type": "text/plain"}).status_code == 406
        no_source = client.post("/_bulk", content=b'{"create":{"_index":"audit"}}\n',
                                headers=ndjson)
        assert no_source.status_code == 400
        crlf = client.post("/_bulk", content=line.replace(b"\n", b"\r\n") + b"\r\n",
                           headers=ndjson)
        assert crlf.status_code == 200
        assert crlf.json()["items"][0]["create"]["status"] == 201
        again = client.post(f"/_bulk?filter_path={FILTER_PATH}", content=line + b"\n" +
                            b'{"create":{"_index":"Bad","_id":"a2"}}\n{"n":2}\n', headers=ndjson)
        assert again.json() == {"errors": True, "items": [
            {"create": {"status": 409, "error": {
                "type": "version_conflict_engine_exception",
                "reason": "[a1]: version conflict, document already exists (current version "
                          "[1])"}}},
            {"create": {"status": 400, "error": {
                "type": "invalid_index_name_exception",
                "reason": "Invalid index name [Bad], must be lowercase"}}}]}
        unfiltered = client.post("/_bulk", content=b'{"create":{"_index":"audit","_id":"a3"}}'
                                 b'\n{"n":3}\n', headers=ndjson).json()
        assert unfiltered["errors"] is False
        assert unfiltered["items"][0]["create"]["result"] == "created"
        assert "took" in unfiltered
    assert sorted(fake.documents("audit")) == ["a1", "a3"]


# -- end to end: worker and broker ------------------------------------------------------------

CREDENTIALS = {"username": "auditrelay", "password": "pw-never-logged-e2e"}


def e2e_fake() -> FakeElasticsearch:
    """A fake cluster that knows the end-to-end destinations' user."""
    return FakeElasticsearch(username=CREDENTIALS["username"], password=CREDENTIALS["password"])


def es_destination(settings: Settings, stack: ExitStack, fake: FakeElasticsearch,
                   ) -> tuple[str, str]:
    """``fake`` served (until ``stack`` closes), a workspace and an elasticsearch
    destination of it to ``fake``'s index ``audit``; published. Their ids."""
    workspace_ids, [dest] = create_destinations(settings, 1, [DestinationSpec(
        0, stack.enter_context(serve(fake)), EMITTED_TYPES, kind="elasticsearch",
        options={"index": "audit"}, credentials=CREDENTIALS)])
    assert publish_outbox(settings) > 0
    return workspace_ids[0], dest.id


def secrets_in(texts: Sequence[str | bytes]) -> list[str]:
    """Which credential forms appear in ``texts``."""
    basic = base64.b64encode(
        f"{CREDENTIALS['username']}:{CREDENTIALS['password']}".encode()).decode()
    found = []
    for secret in (CREDENTIALS["password"], basic):
        if any(secret in (t.decode(errors="replace") if isinstance(t, bytes) else t)
               for t in texts):
            found.append(secret[:4] + "...")
    return found


def record_texts(messages: Sequence[Message]) -> list[str]:
    texts = []
    for m in messages:
        texts.append((m.value() or b"").decode(errors="replace"))
        texts.extend(f"{k}={v}" for k, v in record_headers(m).items())
    return texts


@pytest.mark.slow
@pytest.mark.broker
@pytest.mark.timeout(180)
def test_ten_thousand_events_and_a_kill_9_end_as_exactly_ten_thousand_documents(
        settings: Settings, tmp_path: Path) -> None:
    fake = e2e_fake()
    log = tmp_path / "worker.log"
    with ExitStack() as stack:
        workspace_id, _ = es_destination(settings, stack, fake)
        first = stack.enter_context(WorkerProcess(settings, log))
        first.wait_ready()
        emitter = Emitter(settings, [workspace_id], 10_000, per_second=2_500)
        emitter.start()
        wait_until(lambda: fake.count("audit") >= 1_000, 60,
                   lambda: f"no documents before the kill: {fake.count('audit')}" + first.tail())
        first.kill()
        at_kill = fake.count("audit")
        emitted = emitter.result(60)
        assert at_kill < 10_000, "the kill came too late"

        second = stack.enter_context(WorkerProcess(settings, log))
        second.wait_ready()
        wait_until(lambda: fake.count("audit") >= 10_000, 90,
                   lambda: f"{fake.count('audit')} documents" + second.tail())
        # Quiet for a while: nothing more arrives (a late duplicate would be a 409).
        wait_quiet(lambda: len(fake.snapshot()), 1.5, what="the fake kept receiving")
        assert second.alive(), second.tail()
        output = second.output()

    documents = fake.documents("audit")
    assert len(emitted) == 10_000
    assert len(documents) == 10_000
    assert set(documents) == set(emitted) == workspace_event_ids(settings, workspace_id,
                                                                 EMITTED_TYPES)
    assert all(doc["id"] == doc_id for doc_id, doc in documents.items())
    sent_items = sum(r.body.count(b'{"create":') for r in fake.snapshot())
    assert sent_items == 10_000 + fake.conflicts
    assert secrets_in([output]) == []
    print(f"killed at {at_kill} documents; {fake.conflicts} redelivered items answered 409; "
          f"{len(fake.snapshot())} bulk requests")


@pytest.mark.slow
@pytest.mark.broker
@pytest.mark.timeout(180)
def test_mapping_errors_are_dead_lettered_with_the_reason_and_the_rest_delivered(
        settings: Settings, tmp_path: Path) -> None:
    fake = e2e_fake()
    fake.mapping_error_field = "data.metadata.bad"
    with ExitStack() as stack:
        workspace_id, dest_id = es_destination(settings, stack, fake)
        worker = stack.enter_context(WorkerProcess(settings, tmp_path / "worker.log"))
        worker.wait_ready()
        def metadata(n: int) -> dict[str, Any]:
            return {"n": n, "bad": "not a number"} if n % 40 == 7 else {"n": n}

        planned = emit(settings, [workspace_id], 400, metadata=metadata)
        bad = {planned[n] for n in range(400) if n % 40 == 7}
        good = set(planned) - bad
        wait_until(lambda: set(fake.documents("audit")) >= good, 60,
                   lambda: f"{len(good - set(fake.documents('audit')))} missing" + worker.tail())
        dlq: list[Message] = []

        def dead_lettered() -> bool:
            dlq[:] = read_topic(settings.kafka_bootstrap, settings.topics.dlq, timeout=10)
            return sum(len(json.loads(m.value() or b"[]")) for m in dlq) >= len(bad)

        wait_until(dead_lettered, 60, lambda: f"dead letters: {len(dlq)}" + worker.tail(),
                   interval=0.5)
        output = worker.output()

    assert set(fake.documents("audit")) == good
    assert fake.rejected_mapping >= len(bad)
    dead = [event["id"] for m in dlq for event in json.loads(m.value() or b"[]")]
    assert sorted(dead) == sorted(bad)
    for m in dlq:
        headers = record_headers(m)
        assert headers["ar_reason"] == REASON_REJECTED
        assert headers["ar_destination_id"] == dest_id
        assert "document_parsing_exception" in headers["ar_detail"]
        assert "failed to parse field [data.metadata.bad]" in headers["ar_detail"]
    attempts = read_topic(settings.kafka_bootstrap, settings.topics.delivery_attempts)
    statuses = read_topic(settings.kafka_bootstrap, settings.topics.delivery_status)
    assert attempts
    assert statuses
    assert secrets_in([output, *record_texts(dlq), *record_texts(attempts),
                       *record_texts(statuses)]) == []


@pytest.mark.slow
@pytest.mark.broker
@pytest.mark.timeout(180)
def test_per_item_429s_are_sent_again_alone_and_all_arrive(settings: Settings,
                                                           tmp_path: Path) -> None:
    fake = e2e_fake()
    with ExitStack() as stack:
        workspace_id, _ = es_destination(settings, stack, fake)
        # Every 9th event of the stream, by its position in the first request carrying it:
        # refused as busy on its first try.
        seen: dict[str, int] = {}

        def busy(doc_id: str, tries: int) -> bool:
            position = seen.setdefault(doc_id, len(seen))
            return tries == 0 and position % 9 == 4

        fake.busy = busy
        worker = stack.enter_context(WorkerProcess(settings, tmp_path / "worker.log"))
        worker.wait_ready()
        emitted = emit(settings, [workspace_id], 300)
        wait_until(lambda: set(fake.documents("audit")) >= set(emitted), 60,
                   lambda: f"{fake.count('audit')} of 300 documents" + worker.tail())
        attempts = read_topic(settings.kafka_bootstrap, settings.topics.delivery_attempts)

    assert fake.count("audit") == 300
    assert fake.rejected_busy >= 300 // 9
    # A batch id sent twice: the second time only with the items refused as busy.
    requests = fake.snapshot()
    by_batch: dict[str, list[list[str]]] = {}
    for request in requests:
        sent = [json.loads(line)["create"]["_id"] for line in request.body.split(b"\n")[:-1:2]]
        by_batch.setdefault(request.headers["x-webhook-id"], []).append(sent)
    retried = {batch: sends for batch, sends in by_batch.items() if len(sends) > 1}
    assert retried
    for sends in retried.values():
        first, second = sends[0], sends[1]
        refused = [i for i in first if seen[i] % 9 == 4]
        assert second == refused, (first, second)
    words = [json.loads(m.value() or b"{}").get("error") or "" for m in attempts]
    assert any("to send again" in w and "es_rejected_execution_exception" in w for w in words)


@pytest.mark.slow
@pytest.mark.broker
@pytest.mark.timeout(180)
def test_refused_credentials_and_a_busy_cluster_show_in_words_then_everything_arrives(
        settings: Settings, tmp_path: Path) -> None:
    fake = e2e_fake()
    fake.status_all = 401  # as if the password had been changed on the cluster
    with ExitStack() as stack:
        workspace_id, dest_id = es_destination(settings, stack, fake)
        worker = stack.enter_context(WorkerProcess(settings, tmp_path / "worker.log"))
        worker.wait_ready()
        emitted = emit(settings, [workspace_id], 50)
        statuses: list[dict[str, Any]] = []

        def status_says(words: str) -> Callable[[], bool]:
            def check() -> bool:
                statuses[:] = [json.loads(m.value() or b"{}") for m in read_topic(
                    settings.kafka_bootstrap, settings.topics.delivery_status, timeout=10)]
                return any(s.get("destination_id") == dest_id and s.get("state") == "failing"
                           and s.get("last_error") == words for s in statuses)
            return check

        wait_until(status_says("Elasticsearch rejected the credentials (HTTP 401)"), 60,
                   lambda: f"statuses: {statuses[-3:]}" + worker.tail(), interval=0.5)
        fake.status_all = None
        fake.fail_next(429, times=2, retry_after=1)
        wait_until(lambda: set(fake.documents("audit")) >= set(emitted), 60,
                   lambda: f"{fake.count('audit')} of 50 documents" + worker.tail())
        attempts = read_topic(settings.kafka_bootstrap, settings.topics.delivery_attempts)
        output = worker.output()

    assert fake.count("audit") == 50
    words = {json.loads(m.value() or b"{}").get("error") for m in attempts}
    assert "Elasticsearch rejected the credentials (HTTP 401)" in words
    assert any(w and w.startswith("Elasticsearch is overloaded (HTTP 429 "
                                  "es_rejected_execution_exception") for w in words)
    assert secrets_in([output, *record_texts(attempts)]) == []
