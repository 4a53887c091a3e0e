"""The ``webhook`` kind: the contract's own format, signed at the send, gzip optional."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook as Verifier

from auditrelay.schemas.errors import InvalidInputError
from auditrelay.wire.client import Reply
from auditrelay.wire.kinds.base import Batch, Request
from auditrelay.wire.kinds.webhook import Webhook, WebhookOptions
from auditrelay.wire.signing import CONTENT_TYPE, generate_secret
from tests.unit.wire.kinds.test_base import events_body, target

SECRET = generate_secret()


def signed_target(options: WebhookOptions | None = None, clock: list[datetime] | None = None,
                  ) -> object:
    moments = clock if clock is not None else [datetime.now(UTC)]
    base = target(options or WebhookOptions())
    return type(base)(config=base.config, url=base.url, options=base.options, credentials={},
                      custom_headers={"X-Tenant": "acme"}, secrets=lambda at: [SECRET],
                      now=lambda: moments[-1], version="9.9")


def test_the_whole_batch_goes_untouched_and_signed_when_sent() -> None:
    body = events_body(5, 5)
    moments = [datetime(2026, 12, 2, 12, 0, tzinfo=UTC)]
    batch = Batch(body, "msg_01", "ws1", 2)
    [request] = Webhook().requests(batch, signed_target(clock=moments), range(2))  # type: ignore[arg-type]
    assert request.body is body
    assert callable(request.headers)
    moments.append(datetime.now(UTC))  # the slot came later: the signature is of then
    headers = dict(request.headers())
    assert headers["webhook-timestamp"] == str(int(moments[-1].timestamp()))
    assert headers["Content-Type"] == CONTENT_TYPE
    assert headers["X-Tenant"] == "acme"
    lowered = {k.lower(): v for k, v in headers.items() if k.lower().startswith("webhook-")}
    assert Verifier(SECRET).verify(body, lowered) == json.loads(body)


def test_gzip_sends_compressed_and_signs_the_uncompressed_body() -> None:
    body = events_body(50, 50)
    batch = Batch(body, "msg_01", "ws1", 2)
    [request] = Webhook().requests(batch, signed_target(WebhookOptions(gzip=True)), range(2))  # type: ignore[arg-type]
    assert gzip.decompress(request.body) == body
    assert callable(request.headers)
    headers = dict(request.headers())
    assert headers["Content-Encoding"] == "gzip"
    lowered = {k.lower(): v for k, v in headers.items() if k.lower().startswith("webhook-")}
    assert Verifier(SECRET).verify(body, lowered) is not None


def test_a_broken_secret_is_reported_before_the_request_waits() -> None:
    base = target(WebhookOptions())
    broken = type(base)(config=base.config, url=base.url, options=base.options,
                        credentials={}, custom_headers={}, secrets=lambda at: ["whsec_bm9wZQ=="],
                        now=base.now, version="9.9")
    with pytest.raises(InvalidInputError, match="secret"):
        Webhook().requests(Batch(events_body(1), "msg_01", "ws1", 1), broken, range(1))


REQUEST = Request("https://rx.example", b"[]", {}, (0,))


@pytest.mark.parametrize(("reply", "outcome", "words"), [
    (Reply(200, None, None, b"", 3), "delivered", None),
    (Reply(204, None, None, b"", 3), "delivered", None),
    (Reply(410, None, None, b"", 3), "stop", "HTTP 410 Gone: the receiver asks to stop deliveries"),
    (Reply(500, None, None, b"", 3), "retry", "HTTP 500"),
    (Reply(302, None, None, b"", 3), "retry", "HTTP 302: redirect not followed"),
    (Reply(None, "ConnectError: refused", None, b"", 3), "retry", "ConnectError: refused"),
])
def test_answers_are_read_as_the_contract_says(reply: Reply, outcome: str,
                                               words: str | None) -> None:
    verdict = Webhook().read(reply, REQUEST)
    assert (verdict.outcome, verdict.words) == (outcome, words)


def test_retry_after_is_honoured() -> None:
    verdict = Webhook().read(Reply(429, None, 30.0, b"", 3), REQUEST)
    assert verdict.outcome == "retry"
    assert verdict.retry_after_seconds == 30.0
