"""``POST .../test``: a signed CloudEvents batch to a real HTTPS receiver on loopback.

The receiver's trustme certificate is for a made-up name that the test resolver
maps to 127.0.0.1 (allowed through ``allow_private_cidrs``); the app's delivery
client trusts the test CA through ``create_app(..., ssl_context=...)``. Signatures
are verified with the official ``standardwebhooks`` package.
"""

from __future__ import annotations

import json

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from auditrelay.wire.signing import generate_secret
from tests.integration.api.conftest import LOOPBACK, ApiServer, MakeApi, error_of
from tests.support.servers import Receiver


def _test(api: ApiServer, ws: str, token: str, dest: str) -> dict[str, object]:
    response = api.call("POST", f"/v1/workspaces/{ws}/destinations/{dest}/test", token)
    assert response.status_code == 200, response.text
    result: dict[str, object] = response.json()
    assert set(result) == {"delivered", "status_code", "latency_ms", "error", "message"}
    return result


def test_a_test_delivery_is_one_signed_cloudevents_batch(
        delivering_api: ApiServer, receiver: Receiver) -> None:
    api = delivering_api
    ws, token = api.create_workspace()
    dest = api.create_destination(ws, token, url=receiver.url + "?channel=audit",
                                  headers={"X-Tenant": "acme"})

    result = _test(api, ws, token, dest["id"])
    assert result["delivered"] is True
    assert result["status_code"] == 200
    assert result["error"] is None
    assert result["message"] == "the receiver accepted the event"
    assert isinstance(result["latency_ms"], int)
    assert 0 <= result["latency_ms"] < 15_000

    assert len(receiver.requests) == 1
    got = receiver.requests[0]
    assert got.path == "/ingest?channel=audit"
    headers = {k.lower(): v for k, v in got.headers.items()}
    assert headers["content-type"] == "application/cloudevents-batch+json"
    assert headers["user-agent"].startswith("auditrelay/")
    assert headers["x-tenant"] == "acme"
    assert headers["webhook-id"].startswith("msg_")
    assert headers["x-webhook-id"] == headers["webhook-id"]
    assert headers["x-webhook-timestamp"] == headers["webhook-timestamp"]
    assert headers["x-webhook-signature"] == headers["webhook-signature"]
    assert headers["webhook-signature"].count("v1,") == 1

    batch = Webhook(dest["secret"]).verify(got.body, headers)
    assert isinstance(batch, list)
    assert len(batch) == 1
    event = batch[0]
    assert event["specversion"] == "1.0"
    assert event["type"] == "pro.atmos.webhook.test_sent"
    assert event["workspaceid"] == ws
    assert event["id"].startswith("aud_")
    assert event["data"]["target"] == {"type": "destination", "id": dest["id"]}
    # Any other secret fails: the check above could fail.
    with pytest.raises(WebhookVerificationError):
        Webhook(generate_secret()).verify(got.body, headers)


def test_a_receiver_answering_500_is_reported_not_delivered(
        delivering_api: ApiServer, receiver: Receiver) -> None:
    api = delivering_api
    ws, token = api.create_workspace()
    dest = api.create_destination(ws, token, url=receiver.url)
    receiver.status = 500
    result = _test(api, ws, token, dest["id"])
    assert result["delivered"] is False
    assert result["status_code"] == 500
    assert result["error"] == "HTTP 500"
    assert len(receiver.requests) == 1


def test_an_unreachable_receiver_is_reported_with_an_error(
        delivering_api: ApiServer, receiver: Receiver) -> None:
    api = delivering_api
    ws, token = api.create_workspace()
    dest = api.create_destination(ws, token, url=receiver.url)
    receiver.stop()  # the port is closed now: connection refused on loopback
    result = _test(api, ws, token, dest["id"])
    assert result["delivered"] is False
    assert result["status_code"] is None
    assert isinstance(result["error"], str)
    assert result["error"]
    assert receiver.url not in result["error"]


def test_after_rotation_deliveries_carry_both_signatures(
        delivering_api: ApiServer, receiver: Receiver) -> None:
    api = delivering_api
    ws, token = api.create_workspace()
    dest = api.create_destination(ws, token, url=receiver.url)
    old = dest["secret"]
    response = api.call("POST", f"/v1/workspaces/{ws}/destinations/{dest['id']}/rotate-secret",
                        token)
    assert response.status_code == 200, response.text
    assert set(response.json()) == {"secret"}
    new = response.json()["secret"]
    assert new.startswith("whsec_")
    assert new != old

    assert _test(api, ws, token, dest["id"])["delivered"] is True
    got = receiver.requests[-1]
    headers = {k.lower(): v for k, v in got.headers.items()}
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new):
        batch = Webhook(secret).verify(got.body, headers)
        assert batch[0]["type"] == "pro.atmos.webhook.test_sent"
    with pytest.raises(WebhookVerificationError):
        Webhook(generate_secret()).verify(got.body, headers)
    # The body is exactly the signed bytes: a JSON array of envelopes.
    assert json.loads(got.body)[0]["id"] == batch[0]["id"]


def test_the_receiver_certificate_must_be_trusted(make_api: MakeApi,
                                                   receiver: Receiver) -> None:
    """Without the test CA the production default (system trust store) refuses the receiver."""
    api = make_api(settings={"allow_private_cidrs": LOOPBACK})
    ws, token = api.create_workspace()
    dest = api.create_destination(ws, token, url=receiver.url)
    result = _test(api, ws, token, dest["id"])
    assert result["delivered"] is False
    assert result["status_code"] is None
    assert "certificate" in str(result["error"]).lower()
    assert receiver.requests == []


def test_testing_a_missing_destination_is_404(delivering_api: ApiServer) -> None:
    ws, token = delivering_api.create_workspace()
    response = delivering_api.call("POST", f"/v1/workspaces/{ws}/destinations/dst_nope/test",
                                   token)
    assert response.status_code == 404
    assert "dst_nope" in error_of(response)["message"]
