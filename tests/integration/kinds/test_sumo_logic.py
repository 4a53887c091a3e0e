"""``sumo_logic`` end to end: the real producer, broker and worker (a subprocess), and the
strict fake HTTP source (``tests.support.receivers.sumo_logic``) on loopback.

What a Sumo Logic user would see: every event of the workspace as one log line
(the envelope), gzip-compressed, with the source category, name and host given as
options; throttling (429 with ``Retry-After``) and an unavailable service (503)
retried, nothing lost; a deleted source (401) retried with the status saying so,
until the owner puts the new source's URL on the destination; the URL's code (the
credential) in no log line, attempt, status, config record or API read.
"""

from __future__ import annotations

import gzip
import json
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from auditrelay.schemas.settings import Settings
from auditrelay.store.engine import Store, make_engine
from tests.support.e2e import emit
from tests.support.pipeline import (
    CreatedDestination,
    DestinationSpec,
    WorkerProcess,
    create_destinations,
    event_ids_on,
    public_resolver,
    publish_outbox,
)
from tests.support.polling import wait_until
from tests.support.receivers.sumo_logic import SOURCE_PATH, SumoLogicFake
from tests.support.records import (
    assert_secret_nowhere,
    attempts,
    statuses,
    wait_for_records,
    workspace_event_ids,
)
from tests.support.servers import serve

pytestmark = [pytest.mark.slow, pytest.mark.broker, pytest.mark.timeout(180)]


def event_ids(fake: SumoLogicFake) -> set[str]:
    return {str(json.loads(line)["id"]) for line in fake.lines()}


def sumo_destination(settings: Settings, base: str, code: str,
                     options: dict[str, Any] | None = None,
                     ) -> tuple[list[str], list[CreatedDestination]]:
    """A workspace and a sumo_logic destination of it to the source ``code`` of the
    fake at ``base``; published."""
    created = create_destinations(settings, 1, [DestinationSpec(
        0, f"{base}{SOURCE_PATH}{code}", kind="sumo_logic", name="sumo",
        options=options or {})])
    assert publish_outbox(settings) > 0
    return created


def new_url(settings: Settings, workspace_id: str, dest_id: str, url: str) -> str:
    """PATCH ``url`` onto the destination through the API's service layer (the running
    worker's outbox publisher publishes it); returns the destination as an API read
    shows it, as JSON."""
    from auditrelay.api.models import DestinationPatch
    from auditrelay.api.service import ADMIN_ACTOR, Service
    from auditrelay.store.db import Workspace
    from auditrelay.wire.secrets import box_from_settings

    store = Store(make_engine(settings.database_url))
    service = Service(settings, box_from_settings(settings), resolver=public_resolver)
    try:
        with store.transaction() as session:
            workspace = session.get(Workspace, workspace_id)
            assert workspace is not None
            dest = service.update_destination(session, workspace, dest_id,
                                              DestinationPatch(url=url), ADMIN_ACTOR)
            read = service.to_out(dest).model_dump_json()
    finally:
        store.dispose()
    return read


def test_events_arrive_as_gzipped_lines_through_throttling_and_outages(
        settings: Settings, tmp_path: Path) -> None:
    fake = SumoLogicFake()
    code = fake.new_source()
    with ExitStack() as stack:
        base = stack.enter_context(serve(fake))
        workspace_ids, created = sumo_destination(settings, base, code, {
            "category": "prod/atmos/audit", "source_name": "atmos", "source_host": "eu-1"})
        with fake.lock:
            fake.throttle = 2
        worker = stack.enter_context(WorkerProcess(settings, tmp_path / "worker.log"))
        worker.wait_ready()
        emit(settings, workspace_ids, 250)
        wait_for_records(settings, attempts, lambda found: any(
            a.outcome == "retry" and a.status_code == 429 and "throttling" in (a.error or "")
            for a in found), 60, "no attempt was throttled", worker)
        with fake.lock:
            fake.unavailable = 1
        expected = workspace_event_ids(settings, workspace_ids[0])
        assert len(expected) > 250
        wait_until(lambda: expected <= event_ids(fake), 90,
                   lambda: f"missing {len(expected - event_ids(fake))}" + worker.tail(),
                   interval=0.5)
        assert worker.alive(), worker.tail()
        assert_secret_nowhere(settings, code, worker)

    assert event_ids(fake) == expected
    copies: dict[str, bytes] = {}
    for line in fake.lines():
        event = json.loads(line)
        assert copies.setdefault(event["id"], line) == line  # a repeat is the same bytes
        assert event["specversion"] == "1.0"
        assert event["workspaceid"] == workspace_ids[0]
    assert {(m.category, m.name, m.host) for m in fake.messages} == {
        ("prod/atmos/audit", "atmos", "eu-1")}
    taken = [e for e in fake.snapshot() if e.answer.status == 200]
    for exchange in taken:
        assert exchange.headers["content-encoding"] == "gzip"
        assert exchange.headers["x-webhook-id"].startswith("msg_")
        lines = gzip.decompress(exchange.body).split(b"\n")
        assert lines[-1] == b""  # one envelope per line, each line ended
        assert all(json.loads(line)["id"] for line in lines[:-1])
    assert {e.answer.status for e in fake.snapshot()} == {200, 429, 503}
    assert created[0].secret is None or code not in created[0].secret


def test_a_deleted_source_is_retried_with_words_until_the_new_url_is_put_on(
        settings: Settings, tmp_path: Path) -> None:
    fake = SumoLogicFake()
    code = fake.new_source()
    with ExitStack() as stack:
        base = stack.enter_context(serve(fake))
        workspace_ids, created = sumo_destination(settings, base, code)
        fake.delete(code)  # the source is deleted in Sumo Logic
        worker = stack.enter_context(WorkerProcess(settings, tmp_path / "worker.log"))
        worker.wait_ready()
        emit(settings, workspace_ids, 60)

        wait_for_records(settings, statuses, lambda found: any(
            s.state == "failing" and "Sumo Logic does not know this HTTP source URL"
            in (s.last_error or "") for s in found), 60,
            "no status said the source is unknown", worker)
        assert fake.messages == []

        # The owner makes a new source and puts its URL on the destination.
        new_code = fake.new_source()
        read = new_url(settings, workspace_ids[0], created[0].id,
                       f"{base}{SOURCE_PATH}{new_code}")
        assert code not in read
        assert new_code not in read
        assert json.loads(read)["url"].endswith("/\u2026")
        # The change's own self-audit event goes to the destination too: wait for it.
        wait_until(lambda: any(kind.endswith(".webhook.updated") for _, kind, _ in event_ids_on(
            settings.kafka_bootstrap, settings.topics.events)), 30,
            lambda: "the update was not published" + worker.tail(), interval=0.5)
        expected = workspace_event_ids(settings, workspace_ids[0])
        wait_until(lambda: expected <= event_ids(fake), 90,
                   lambda: f"missing {len(expected - event_ids(fake))}" + worker.tail(),
                   interval=0.5)
        assert worker.alive(), worker.tail()
        for secret in (code, new_code):
            assert_secret_nowhere(settings, secret, worker)

    assert event_ids(fake) == expected
    refused = [e for e in fake.snapshot() if e.answer.status == 401]
    assert refused
    assert all(e.path.endswith(code) for e in refused)
