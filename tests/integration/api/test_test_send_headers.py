"""A test send carries exactly the headers of a real delivery (contract section 2).

The API's ``POST .../test`` and the worker's ``Dispatcher`` (what the delivery and
retry agents send with) both reach the same HTTPS receiver; the header sets it
records must be the same, name for name.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from datetime import UTC, datetime
from importlib.metadata import version

from standardwebhooks.webhooks import Webhook

from auditrelay.agents.dispatch import Dispatcher
from auditrelay.schemas.batches import BatchMeta, batch_body
from auditrelay.store.mutations import config_of
from auditrelay.wire.client import DeliveryClient, DeliveryConfig, DeliveryResult
from auditrelay.wire.secrets import box_from_settings
from auditrelay.wire.signing import new_batch_id
from tests.integration.api.conftest import LOOPBACK, ApiServer, make_resolver
from tests.support.servers import Receiver

#: Every attempt carries these (contract section 2), custom headers besides.
CONTRACT_HEADERS = {"x-webhook-id", "x-webhook-timestamp", "x-webhook-signature",
                    "webhook-id", "webhook-timestamp", "webhook-signature", "user-agent",
                    "content-type"}


def test_a_test_send_carries_the_headers_of_a_real_delivery(
        delivering_api: ApiServer, receiver: Receiver, client_tls: ssl.SSLContext) -> None:
    api = delivering_api
    ws, token = api.create_workspace()
    dest = api.create_destination(ws, token, url=receiver.url,
                                  headers={"X-Tenant": "acme"})
    path = f"/v1/workspaces/{ws}/destinations/{dest['id']}"
    # After a rotation both sign with two secrets: the overlap is part of the parity.
    rotated = api.call("POST", path + "/rotate-secret", token)
    assert rotated.status_code == 200, rotated.text
    secrets = (dest["secret"], rotated.json()["secret"])

    tested = api.call("POST", path + "/test", token)
    assert tested.status_code == 200, tested.text
    assert tested.json()["delivered"] is True

    row = api.destination_row(dest["id"])
    assert row is not None
    body = batch_body([json.dumps({"id": "aud_parity"}).encode()])
    meta = BatchMeta(new_batch_id(), dest["id"], ws, 1, int(time.time() * 1000))

    async def deliver() -> DeliveryResult:
        async with DeliveryClient(DeliveryConfig(allow_private_cidrs=LOOPBACK),
                                  resolver=make_resolver(), ssl_context=client_tls) as client:
            dispatcher = Dispatcher(client, box_from_settings(api.settings),
                                    version("auditrelay"))
            return await dispatcher.send(config_of(row, forwarding=True), body, meta,
                                         lambda: datetime.now(UTC))

    assert asyncio.run(deliver()).ok

    requests = receiver.requests
    assert len(requests) == 2
    test_send, delivery = ({k.lower(): v for k, v in r.headers.items()} for r in requests)
    assert sorted(test_send) == sorted(delivery)
    assert CONTRACT_HEADERS | {"x-tenant"} <= set(delivery)
    for name in ("user-agent", "content-type", "x-tenant"):
        assert test_send[name] == delivery[name]
    assert delivery["user-agent"] == f"auditrelay/{version('auditrelay')}"
    assert delivery["webhook-id"] == meta.batch_id
    for got, headers in zip(requests, (test_send, delivery), strict=True):
        assert headers["webhook-signature"].count("v1,") == 2
        for secret in secrets:
            Webhook(secret).verify(got.body, headers)
