"""Standard Webhooks signing, checked with the official ``standardwebhooks`` package."""

from __future__ import annotations

import base64
import json
import re
import time
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from auditrelay.schemas.destinations import DestinationConfig
from auditrelay.schemas.errors import InvalidInputError
from auditrelay.wire.signing import (
    CONTENT_TYPE,
    custom_headers,
    decode_secret,
    delivery_headers,
    generate_secret,
    new_batch_id,
    request_headers,
    sign,
)

BODY = json.dumps([{"specversion": "1.0", "id": "aud_1", "data": {"x": "é"}}]).encode()


def _signed_headers(secrets: list[str], body: bytes = BODY) -> dict[str, str]:
    msg_id = new_batch_id()
    timestamp = int(time.time())
    return delivery_headers(msg_id, timestamp, sign(secrets, msg_id, timestamp, body), "1.2.3")


def test_generated_secret_format() -> None:
    secret = generate_secret()
    assert re.fullmatch(r"whsec_[A-Za-z0-9+/]{43}=", secret)
    assert len(decode_secret(secret)) == 32
    assert generate_secret() != secret


def test_official_library_verifies_one_secret() -> None:
    secret = generate_secret()
    headers = _signed_headers([secret])
    Webhook(secret).verify(BODY, headers, json_parse=False)
    assert headers["webhook-signature"].startswith("v1,")
    assert " " not in headers["webhook-signature"]


def test_official_library_verifies_webhook_headers_alone() -> None:
    secret = generate_secret()
    headers = _signed_headers([secret])
    only_standard = {k: v for k, v in headers.items() if k.startswith("webhook-")}
    Webhook(secret).verify(BODY, only_standard, json_parse=False)


def test_after_rotation_both_secrets_verify() -> None:
    old, new = generate_secret(), generate_secret()
    headers = _signed_headers([new, old])
    assert len(headers["webhook-signature"].split(" ")) == 2
    Webhook(new).verify(BODY, headers, json_parse=False)
    Webhook(old).verify(BODY, headers, json_parse=False)
    with pytest.raises(WebhookVerificationError):
        Webhook(generate_secret()).verify(BODY, headers, json_parse=False)


def test_tampered_body_fails_verification() -> None:
    secret = generate_secret()
    headers = _signed_headers([secret])
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY + b" ", headers, json_parse=False)


def test_signature_matches_the_spec_by_hand() -> None:
    key = bytes(range(32))
    secret = "whsec_" + base64.b64encode(key).decode()
    import hashlib
    import hmac

    expected = base64.b64encode(
        hmac.new(key, b"msg_1.1700000000." + BODY, hashlib.sha256).digest()
    ).decode()
    assert sign([secret], "msg_1", 1700000000, BODY) == f"v1,{expected}"


def test_headers_in_both_forms() -> None:
    headers = delivery_headers("msg_01J", 1700000000, "v1,abc", "0.1.0")
    assert headers == {
        "X-Webhook-Id": "msg_01J",
        "X-Webhook-Timestamp": "1700000000",
        "X-Webhook-Signature": "v1,abc",
        "webhook-id": "msg_01J",
        "webhook-timestamp": "1700000000",
        "webhook-signature": "v1,abc",
        "User-Agent": "auditrelay/0.1.0",
        "Content-Type": CONTENT_TYPE,
    }
    assert CONTENT_TYPE == "application/cloudevents-batch+json"


def test_batch_ids_are_prefixed_ulids_and_sortable() -> None:
    first = new_batch_id()
    second = new_batch_id()
    assert re.fullmatch(r"msg_[0-9A-HJKMNP-TV-Z]{26}", first)
    assert first != second
    assert first[4:14] <= second[4:14]  # the 48-bit time prefix never goes backwards


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        ("sk_abc", "must start with whsec_"),
        ("whsec_not*base64!", "not valid base64"),
        ("whsec_" + base64.b64encode(b"short").decode(), "24 to 64 bytes"),
        ("whsec_" + base64.b64encode(bytes(65)).decode(), "24 to 64 bytes"),
    ],
)
def test_invalid_secrets_are_refused_without_echoing_them(secret: str, message: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        decode_secret(secret)
    assert message in str(info.value)
    assert secret.removeprefix("whsec_") not in str(info.value)
    assert info.value.field == "secret"


def test_sign_names_the_bad_secret_by_position() -> None:
    with pytest.raises(InvalidInputError, match=r"signing secret #2: secret must start"):
        sign([generate_secret(), "oops"], "msg_1", 1, b"[]")


@pytest.mark.parametrize(
    ("secrets", "msg_id", "timestamp", "message"),
    [
        ([], "msg_1", 1, "at least one signing secret"),
        (["whsec_x"], "", 1, "msg_id must be non-empty"),
        (["whsec_x"], "msg.1", 1, "contain no '.'"),
        (["whsec_x"], "msg_1", -1, "timestamp must be Unix seconds"),
    ],
)
def test_sign_refuses_bad_arguments(
    secrets: list[str], msg_id: str, timestamp: int, message: str
) -> None:
    with pytest.raises(InvalidInputError, match=re.escape(message)):
        sign(secrets, msg_id, timestamp, b"[]")


def test_sign_refuses_a_bare_string() -> None:
    with pytest.raises(TypeError, match="sequence of secrets"):
        sign(generate_secret(), "msg_1", 1, b"[]")



NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


class _Plain:
    """A box whose ciphertext is the plaintext behind ``sealed:``."""

    def decrypt(self, ciphertext: str) -> str:
        assert ciphertext.startswith("sealed:")
        return ciphertext.removeprefix("sealed:")


def _config(secret: str, previous: str | None = None,
            previous_expires: datetime | None = None) -> DestinationConfig:
    return DestinationConfig(
        id="dst_1", workspace_id="ws_1", name="siem", url="https://siem.example", enabled=True,
        headers_encrypted="sealed:" + json.dumps({"X-Tenant": "acme"}),
        secret_encrypted=f"sealed:{secret}",
        previous_secret_encrypted=f"sealed:{previous}" if previous else None,
        previous_secret_expires_at=previous_expires, version=2, updated_at=NOW)


def test_request_headers_are_custom_then_the_signed_delivery_headers() -> None:
    secret = generate_secret()
    headers = request_headers(_config(secret), _Plain(), "msg_01J", BODY, NOW, "1.2.3")
    stamp = int(NOW.timestamp())
    assert headers == {"X-Tenant": "acme", **delivery_headers(
        "msg_01J", stamp, sign([secret], "msg_01J", stamp, BODY), "1.2.3")}
    assert next(iter(headers)) == "X-Tenant"


def test_request_headers_verify_with_the_official_library() -> None:
    secret = generate_secret()
    headers = request_headers(_config(secret), _Plain(), new_batch_id(), BODY,
                              datetime.now(UTC), "1.2.3")
    Webhook(secret).verify(BODY, headers, json_parse=False)


def test_the_previous_secret_signs_only_during_the_overlap() -> None:
    old, new = generate_secret(), generate_secret()
    config = _config(new, old, NOW + timedelta(hours=1))
    during = request_headers(config, _Plain(), "msg_1", BODY, NOW, "1.2.3")
    assert during["webhook-signature"] == sign([new, old], "msg_1", int(NOW.timestamp()), BODY)
    later = NOW + timedelta(hours=1)
    after = request_headers(config, _Plain(), "msg_1", BODY, later, "1.2.3")
    assert after["webhook-signature"] == sign([new], "msg_1", int(later.timestamp()), BODY)


def test_custom_headers_must_be_a_json_object() -> None:
    assert custom_headers(None, _Plain()) == {}
    assert custom_headers('sealed:{"X-N": 1}', _Plain()) == {"X-N": "1"}
    with pytest.raises(ValueError, match="JSON object"):
        custom_headers('sealed:["X-N"]', _Plain())
