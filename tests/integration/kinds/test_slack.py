"""``slack`` end to end: the real worker and broker post to the strict fake Slack
(``tests.support.receivers.slack``) on 127.0.0.1.

Webhook URLs are ``http://127.0.0.1:{port}/services/T.../B.../secret``: accepted
because the scenario's settings allow 127.0.0.0/8 (``AUDITRELAY_ALLOW_PRIVATE_CIDRS``),
the operator's exception to ``hooks.slack.com`` (``auditrelay.wire.kinds.loopback``).
The fake refuses a second message within a second of the last on the same webhook
(429 + ``Retry-After``), so the pace is checked by the receiver, not only counted.
"""

from __future__ import annotations

import itertools
import json
import re
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from auditrelay.producer import AuditProducer, ProducerConfig, Target
from auditrelay.schemas.settings import Settings
from auditrelay.store.db import Destination
from auditrelay.store.engine import Store, make_engine
from tests.support.e2e import USER
from tests.support.pipeline import (
    DestinationSpec,
    WorkerProcess,
    create_destinations,
    publish_outbox,
    read_records,
)
from tests.support.polling import wait_quiet, wait_until
from tests.support.receivers.slack import Message as Posted
from tests.support.receivers.slack import SlackHooks
from tests.support.records import assert_secret_nowhere, record_headers
from tests.support.servers import serve

pytestmark = [pytest.mark.broker, pytest.mark.slow]

SECRET = "xZ9secretPathPart"
#: The categories a Slack destination gets by default (``Slack.default_categories``).
PEOPLE = ("auth", "permission", "team_member", "billing")
#: An event type of each of them, and of one that is filtered out.
_TYPES = (("auth", "login_succeeded"), ("permission", "granted"), ("team_member", "joined"),
          ("billing", "subscription_updated"), ("workflow", "started"))
_COUNT = re.compile(r"^(\d+) audit events? in <[^|>]+/workspaces/(\w+)\|([^>]*)>$")
_MORE = re.compile(r"^and (\d+) more$")
_TARGET = re.compile(r" on user `(usr_t\d+)` ")


def hook(n: int) -> str:
    return f"/services/T0001/B000{n}/{SECRET}{n}"


def _set_up(settings: Settings, stack: ExitStack, hooks: SlackHooks, paths: list[str],
            ) -> tuple[str, list[str]]:
    base = stack.enter_context(serve(hooks))
    prefix = settings.event_type_prefix
    [ws], created = create_destinations(settings, 1, [
        DestinationSpec(0, base + path, tuple(f"{prefix}.{c}.*" for c in PEOPLE),
                        kind="slack", name=f"slack {n}") for n, path in enumerate(paths)])
    assert publish_outbox(settings) > 0
    return ws, [dest.id for dest in created]


def _emit(settings: Settings, ws: str, count: int, per_second: float | None = None,
          ) -> set[str]:
    """``count`` events, people's categories and ``workflow`` ones (filtered out) in
    turn, each with a target of its own; the people's targets' ids."""
    wanted: set[str] = set()
    started = time.monotonic()
    with AuditProducer(ProducerConfig.from_settings(settings, client_id="slack-e2e")) as producer:
        for n in range(count):
            category, action = _TYPES[n % len(_TYPES)]
            target_id = f"usr_t{n}"
            producer.emit(ws, category, action, actor=USER,
                          target=Target(type="user", id=target_id))
            if category != "workflow":
                wanted.add(target_id)
            if per_second is not None and n % 50 == 49:
                ahead = started + (n + 1) / per_second - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)  # pacing the stream, not waiting for a result
                producer.poll(0)
        producer.flush(60)
        assert producer.failed == 0
    return wanted


def _tally(messages: list[Posted], ws: str) -> tuple[int, list[str]]:
    """Events a webhook's messages account for (header counts), and the targets shown,
    checking that each message's lines and summary add up to its header."""
    total, shown = 0, []
    for message in messages:
        payload: dict[str, Any] = message.payload
        header = _COUNT.match(payload["text"])
        assert header is not None, payload["text"]
        count = int(header.group(1))
        assert (header.group(2), header.group(3)) == (ws, "ws0")
        lines = [b["text"]["text"] for b in payload["blocks"][1:] if b["type"] == "section"]
        more = [int(m.group(1)) for b in payload["blocks"] if b["type"] == "context"
                for m in [_MORE.match(b["elements"][0]["text"])] if m]
        assert len(lines) + sum(more) == count, payload
        for line in lines:
            found = _TARGET.search(line)
            assert found is not None, line
            shown.append(found.group(1))
        total += count
    return total, shown


@pytest.mark.timeout(150)
def test_a_thousand_events_in_ten_seconds_come_at_most_one_message_a_second(
        settings: Settings, tmp_path: Path) -> None:
    paths = [hook(1), hook(2)]
    hooks = SlackHooks(*paths)
    with ExitStack() as stack:
        ws, _ = _set_up(settings, stack, hooks, paths)
        worker = stack.enter_context(WorkerProcess(settings, tmp_path / "worker.log"))
        worker.wait_ready()
        started = time.monotonic()
        wanted = _emit(settings, ws, 1000, per_second=125)
        assert time.monotonic() - started < 10.5
        assert len(wanted) == 800

        def accounted() -> bool:
            return all(_tally(hooks.messages(path), ws)[0] >= len(wanted) for path in paths)

        wait_until(accounted, 90, lambda: "accounted for: "
                   f"{[_tally(hooks.messages(p), ws)[0] for p in paths]}" + worker.tail())
        # A duplicate or a late message would come now.
        wait_quiet(lambda: sum(len(hooks.state(path).requests) for path in paths), 2.5,
                   what="the webhooks kept receiving")
    for path in paths:
        state = hooks.state(path)
        first = state.requests[0][0]
        assert [status for _, status, _ in state.requests if status != 200] == [], [
            (round(at - first, 3), status) for at, status, _ in state.requests]
        moments = [m.at for m in state.messages]
        gaps = [later - earlier for earlier, later in itertools.pairwise(moments)]
        assert min(gaps) >= 1.0, gaps
        total, shown = _tally(state.messages, ws)
        assert total == len(wanted)  # every event once: shown or counted, none twice
        assert len(shown) == len(set(shown))
        assert set(shown) <= wanted
        assert len(state.messages) >= 10  # at most 100 events a batch
    assert SECRET not in worker.output()


@pytest.mark.timeout(120)
def test_a_gone_channel_disables_an_invalid_payload_dead_letters_429_waits(
        settings: Settings, tmp_path: Path) -> None:
    answers = {hook(1): (404, "channel_not_found"), hook(2): (410, "channel_is_archived"),
               hook(3): (403, "action_prohibited"), hook(4): (400, "invalid_payload")}
    busy = hook(5)
    hooks = SlackHooks(*answers, busy)
    for path, answer in answers.items():
        hooks.state(path).answer = answer
    hooks.state(busy).forced.append((429, "rate_limited"))
    names = settings.topics
    with ExitStack() as stack:
        ws, ids = _set_up(settings, stack, hooks, [*answers, busy])
        worker = stack.enter_context(WorkerProcess(settings, tmp_path / "worker.log"))
        worker.wait_ready()
        wanted = _emit(settings, ws, 4)
        wait_until(lambda: _tally(hooks.messages(busy), ws)[0] >= len(wanted), 60,
                   lambda: f"{hooks.state(busy).requests}" + worker.tail())
        statuses = read_records(settings.kafka_bootstrap, names.delivery_status, lambda s: sum(
            json.loads(m.value() or b"{}").get("state") == "disabled" for m in s) >= 3, 60)
        dlq = read_records(settings.kafka_bootstrap, names.dlq, lambda s: len(s) >= 4, 60)
        read_records(settings.kafka_bootstrap, names.delivery_attempts, lambda s: len(s) >= 4,
                     60)
    words = dict.fromkeys(ids, "")
    for record in statuses:
        status = json.loads(record.value() or b"{}")
        if status.get("state") == "disabled":
            words[(record.key() or b"").decode()] = status.get("last_error") or ""
    assert "channel does not exist any more (channel_not_found)" in words[ids[0]]
    assert "channel is archived (channel_is_archived)" in words[ids[1]]
    assert "prohibit this webhook from posting (action_prohibited)" in words[ids[2]]
    assert words[ids[3]] == ""  # an invalid payload does not disable the destination
    assert words[ids[4]] == ""
    # 429: sent again after Retry-After (and the retry tier), the whole message, once.
    [(first, refused, _), (again, taken, _)] = hooks.state(busy).requests
    assert (refused, taken) == (429, 200)
    assert again - first >= 1.0
    assert _tally(hooks.messages(busy), ws) == (len(wanted), sorted(
        wanted, key=lambda target: int(target.removeprefix("usr_t"))))
    reasons = {(record.key() or b"").decode(): record_headers(record) for record in dlq}
    for dest in ids[:3]:
        assert reasons[dest]["ar_reason"] == "destination_disabled"
    assert reasons[ids[3]]["ar_reason"] == "rejected_by_receiver"
    assert reasons[ids[3]]["ar_detail"] == "Slack refused the message (invalid_payload)"
    for path in list(answers)[:3]:
        assert len(hooks.state(path).requests) == 1  # nothing after the verdict
    store = Store(make_engine(settings.database_url))
    try:
        with store.transaction() as session:
            rows = {dest: session.get(Destination, dest) for dest in ids}
            assert [(row.enabled, row.disabled_reason) for row in rows.values()
                    if row is not None] == [(False, "gone")] * 3 + [(True, None)] * 2
    finally:
        store.dispose()
    assert_secret_nowhere(settings, SECRET, worker)
