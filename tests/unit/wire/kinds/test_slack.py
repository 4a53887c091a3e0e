"""The ``slack`` kind: webhook URLs, the message of a batch, pace, and Slack's answers."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from auditrelay.schemas.destinations import DestinationConfig
from auditrelay.schemas.errors import InvalidInputError
from auditrelay.wire.client import Reply
from auditrelay.wire.kinds.base import Batch, KindOptions, Request, Target
from auditrelay.wire.kinds.send import Pacer
from auditrelay.wire.kinds.slack import MAX_BLOCKS, Slack
from tests.support.clock import ManualClock, ManualSleep
from tests.unit.wire.kinds.test_base import NOW

KIND = Slack()
HOOK = "https://hooks.slack.com/services/T0001/B0001/abcdefghijklmnopqrstuvwx"


def envelope(n: int, **data: Any) -> dict[str, Any]:
    return {"specversion": "1.0", "id": f"aud_{n:04d}",
            "source": "https://app.atmos.pro/workspaces/ws1",
            "type": "pro.atmos.permission.granted", "time": "2026-11-25T10:30:00.000Z",
            "workspaceid": "ws1",
            "data": {"actor": {"id": "usr_alice", "type": "user"},
                     "action": {"category": "permission", "action": "granted"},
                     "target": {"type": "team_member", "id": f"usr_{n}"}, **data}}


def batch_of(count: int) -> Batch:
    body = ("[" + ",".join(json.dumps(envelope(n)) for n in range(count)) + "]").encode()
    return Batch(body, "msg_01", "ws1", count)


def target(workspace_name: str = "Acme") -> Target:
    config = DestinationConfig(id="dst_1", workspace_id="ws1", workspace_name=workspace_name,
                               name="n", kind="slack", url_encrypted="v1:x", enabled=True,
                               secret_encrypted="v1:s", version=1, updated_at=NOW)
    return Target(config=config, url=HOOK, options=KindOptions(), credentials={},
                  custom_headers={}, secrets=lambda at: [], now=lambda: NOW, version="9.9")


def message(count: int, name: str = "Acme") -> dict[str, Any]:
    [request] = KIND.requests(batch_of(count), target(name), range(count))
    assert isinstance(request.headers, dict)
    assert request.headers["Content-Type"] == "application/json"
    assert "Content-Encoding" not in request.headers
    value: dict[str, Any] = json.loads(request.body)
    return value


# -- fields --------------------------------------------------------------------------------


def test_a_slack_webhook_url_is_accepted_as_is() -> None:
    assert KIND.check_url(HOOK) == HOOK


@pytest.mark.parametrize("url", [
    "https://hooks.slack.com/",
    "https://hooks.slack.com/services/",
    "https://hooks.slack.com/triggers/T1/123/abc",           # a workflow, not a webhook
    "https://hooks.slack.com/services/T1/B1/abc?x=1",
    "https://hooks.slack.com:8443/services/T1/B1/abc",
    "https://hooks.slack.com.evil.example/services/T1/B1/abc",
    "https://slack.com/services/T1/B1/abc",
    "https://93.184.216.34/services/T1/B1/abc",
])
def test_other_urls_are_refused_naming_url(url: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        KIND.check_url(url)
    assert caught.value.field == "url"
    assert "abc" not in str(caught.value)


def test_a_private_literal_the_operator_allowed_keeps_the_path_rule() -> None:
    assert KIND.check_url("http://127.0.0.1:9000/services/T1/B1/abc") == \
        "http://127.0.0.1:9000/services/T1/B1/abc"
    with pytest.raises(InvalidInputError):
        KIND.check_url("http://127.0.0.1:9000/hook")


def test_the_default_filter_is_what_a_person_reads_and_it_paces_one_a_second() -> None:
    assert KIND.default_categories == ("auth", "permission", "team_member", "billing")
    assert KIND.limits.min_interval_seconds == 1.0
    assert KIND.credentials.names == ()


# -- the message ---------------------------------------------------------------------------


def test_a_batch_is_one_message_headed_by_its_count_linked_to_the_workspace() -> None:
    value = message(12)
    header = "12 audit events in <https://app.atmos.pro/workspaces/ws1|Acme>"
    assert value["text"] == header
    blocks = value["blocks"]
    assert blocks[0] == {"type": "section", "text": {"type": "mrkdwn", "text": header}}
    assert len(blocks) == 13
    assert blocks[1]["text"]["text"] == (
        "*usr_alice* `permission.granted` on team_member `usr_0` at 2026-11-25 10:30:00 UTC")
    assert message(1)["text"].startswith("1 audit event in ")


def test_a_large_batch_shows_48_lines_and_counts_the_rest() -> None:
    value = message(85)
    blocks = value["blocks"]
    assert len(blocks) == MAX_BLOCKS
    assert blocks[-1] == {"type": "context",
                          "elements": [{"type": "mrkdwn", "text": "and 37 more"}]}
    lines = [b for b in blocks[1:-1] if b["type"] == "section"]
    assert len(lines) + 37 == 85
    assert message(49)["blocks"][-1]["type"] == "section"  # 1 + 49 blocks: all fit
    assert len(message(49)["blocks"]) == MAX_BLOCKS


def test_text_is_escaped_and_lines_stay_short() -> None:
    long_id = "usr_" + "x" * 2000
    body = json.dumps([envelope(0, actor={"id": "<b>&" + long_id, "type": "api_key"})])
    batch = Batch(body.encode(), "msg_01", "ws1", 1)
    [request] = KIND.requests(batch, target("R&D <team>"), range(1))
    value = json.loads(request.body)
    assert "|R&amp;D &lt;team&gt;>" in value["text"]
    line = value["blocks"][1]["text"]["text"]
    assert line.startswith("*&lt;b&gt;&amp;usr_xxx")
    assert len(line) <= 300
    assert not re.search(r"<(?!https://)", value["text"])


def test_a_workspace_without_a_name_is_named_by_its_id() -> None:
    assert message(2, name="")["text"].endswith("|ws1>")


# -- answers -------------------------------------------------------------------------------

REQUEST = Request(HOOK, b"{}", {}, (0,))


def _reply(status: int | None, body: bytes = b"", retry_after: float | None = None) -> Reply:
    return Reply(status, None if status else "ConnectError: refused", retry_after, body, 4)


def test_ok_is_delivered() -> None:
    assert KIND.read(_reply(200, b"ok"), REQUEST).outcome == "delivered"


@pytest.mark.parametrize(("status", "code", "words"), [
    (404, b"channel_not_found",
     "Slack says the webhook's channel does not exist any more (channel_not_found)"),
    (410, b"channel_is_archived",
     "Slack says the webhook's channel is archived (channel_is_archived)"),
    (403, b"action_prohibited",
     "Slack's workspace settings prohibit this webhook from posting (action_prohibited)"),
    (404, b"no_service", "Slack says the webhook was disabled or removed (no_service)"),
    (403, b"<html>", "Slack refused the webhook for good (HTTP 403)"),
])
def test_a_gone_channel_or_webhook_stops_the_destination(status: int, code: bytes,
                                                         words: str) -> None:
    verdict = KIND.read(_reply(status, code), REQUEST)
    assert (verdict.outcome, verdict.words) == ("stop", words)


def test_invalid_payload_is_dead_lettered() -> None:
    verdict = KIND.read(_reply(400, b"invalid_payload"), REQUEST)
    assert (verdict.outcome, verdict.words) == ("rejected",
                                                "Slack refused the message (invalid_payload)")


def test_429_waits_for_retry_after_and_5xx_is_retried() -> None:
    verdict = KIND.read(_reply(429, b"rate_limited", 30.0), REQUEST)
    assert (verdict.outcome, verdict.retry_after_seconds) == ("retry", 30.0)
    assert KIND.read(_reply(500, b"rollup_error"), REQUEST).words == \
        "Slack answered HTTP 500 (rollup_error)"
    assert KIND.read(_reply(None), REQUEST).outcome == "retry"


@pytest.mark.asyncio
async def test_the_pace_counts_from_the_reply_so_a_late_request_keeps_its_second() -> None:
    clock = ManualClock(100.0)
    sleep = ManualSleep(clock)
    slept = sleep.slept
    pacer = Pacer(clock=clock, sleep=sleep)
    await pacer.turn("dst_1", 1.0)
    clock.now += 0.4  # the request left late (a busy loop) and Slack took it now
    pacer.replied("dst_1", 1.0)
    await pacer.turn("dst_1", 1.0)
    assert clock.now == pytest.approx(101.4)  # a whole second after Slack took the first
    assert slept == [pytest.approx(1.0)]
    pacer.replied("dst_2", 0)  # no pace, nothing booked
    await pacer.turn("dst_2", 1.0)
    assert slept == [pytest.approx(1.0)]
