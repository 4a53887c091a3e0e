"""``webhook``: any HTTPS endpoint, sent the contract's own format (section 2).

The body is the batch exactly as produced (a JSON array of CloudEvents envelopes,
``application/cloudevents-batch+json``), signed the Standard Webhooks way
(``auditrelay.wire.signing``) when the request is sent. With the option ``gzip`` the
body travels compressed (``Content-Encoding: gzip``); the signature still covers the
uncompressed body, which is what a receiver verifies after decoding.

Answers: 2xx delivered; 410 stops deliveries (the destination is disabled); anything
else, or no answer, is retried (``Retry-After`` honoured on 429 and 503).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import ClassVar

from auditrelay.wire.client import Reply, status_error
from auditrelay.wire.kinds.base import Batch, Kind, KindOptions, Request, Target, Verdict
from auditrelay.wire.signing import CONTENT_TYPE, decode_secret, delivery_headers, sign

__all__ = ["Webhook", "WebhookOptions"]


class WebhookOptions(KindOptions):
    #: Send the body gzip-compressed; the signature covers the uncompressed body.
    gzip: bool = False


class Webhook(Kind):
    name: ClassVar[str] = "webhook"
    label: ClassVar[str] = "Webhook"
    Options: ClassVar[type[KindOptions]] = WebhookOptions
    content_type: ClassVar[str] = CONTENT_TYPE

    def body(self, batch: Batch, target: Target, events: Sequence[int]) -> bytes:
        if len(events) == batch.count:
            return batch.body  # the whole batch: passed through untouched, never parsed
        return batch.part(events)

    def headers(self, target: Target, batch: Batch, body: bytes,
                ) -> Mapping[str, str] | Callable[[], Mapping[str, str]]:
        # Checked now, so that signing at the send cannot fail: a lost key or a broken
        # secret is reported before the request waits for a connection.
        for secret in target.secrets(target.now()):
            decode_secret(secret)
        custom = dict(target.custom_headers)

        def signed() -> Mapping[str, str]:
            now = target.now()
            timestamp = int(now.timestamp())
            signature = sign(target.secrets(now), batch.batch_id, timestamp, body)
            return {**custom,
                    **delivery_headers(batch.batch_id, timestamp, signature, target.version)}

        return signed

    def read(self, reply: Reply, request: Request) -> Verdict:
        if reply.status is None:
            return Verdict("retry", reply.error)
        if 200 <= reply.status < 300:
            return Verdict("delivered")
        words = status_error(reply.status)
        if reply.status == 410:
            return Verdict("stop", words)
        return Verdict("retry", words, retry_after_seconds=reply.retry_after_seconds)

    def accepted_words(self, events: int) -> str:
        return "the receiver accepted the event" if events == 1 else \
            f"the receiver accepted {events} events"

