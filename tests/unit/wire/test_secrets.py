"""Encryption at rest: round trips, key rotation, typed failures, the dev key file."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from auditrelay.schemas.errors import AuditRelayError, ConfigurationError, SecretDecryptError
from auditrelay.wire.secrets import (
    DEV_KEY_FILENAME,
    SecretBox,
    generate_key,
    load_or_create_dev_key,
)
from auditrelay.wire.signing import generate_secret


def test_round_trip_is_versioned_and_randomised() -> None:
    box = SecretBox(generate_key())
    secret = generate_secret()
    first, second = box.encrypt(secret), box.encrypt(secret)
    assert first.startswith("v1:")
    assert first != second
    assert secret not in first
    assert box.decrypt(first) == secret
    assert box.decrypt(second) == secret


def test_unicode_round_trip() -> None:
    box = SecretBox(generate_key())
    assert box.decrypt(box.encrypt("clé, ключ, 鍵")) == "clé, ключ, 鍵"


def test_wrong_key_raises_typed_error_without_leaking() -> None:
    secret = generate_secret()
    key, other = generate_key(), generate_key()
    ciphertext = SecretBox(key).encrypt(secret)
    with pytest.raises(SecretDecryptError) as info:
        SecretBox(other).decrypt(ciphertext)
    message = str(info.value)
    assert "wrong secret key" in message
    for leak in (secret, key, other, ciphertext[3:]):
        assert leak not in message
    assert isinstance(info.value, AuditRelayError)


@pytest.mark.parametrize("value", ["", "plain", "v2:abc", "v1:", "v1:not-a-token", "v1:é"])
def test_garbage_raises_typed_error(value: str) -> None:
    with pytest.raises(SecretDecryptError):
        SecretBox(generate_key()).decrypt(value)


def test_tampered_ciphertext_is_refused() -> None:
    box = SecretBox(generate_key())
    token = box.encrypt("x")
    flipped = token[:-5] + ("A" if token[-5] != "A" else "B") + token[-4:]
    with pytest.raises(SecretDecryptError):
        box.decrypt(flipped)


def test_rotation_with_previous_keys() -> None:
    old_key, new_key = generate_key(), generate_key()
    old_box = SecretBox(old_key)
    stored = old_box.encrypt("value")
    rotated_box = SecretBox(new_key, previous_keys=[old_key])
    assert rotated_box.decrypt(stored) == "value"
    rewritten = rotated_box.rotate(stored)
    assert SecretBox(new_key).decrypt(rewritten) == "value"
    with pytest.raises(SecretDecryptError):
        old_box.decrypt(rewritten)


def test_repr_hides_keys() -> None:
    key = generate_key()
    box = SecretBox(key, previous_keys=[generate_key()])
    assert key not in repr(box)
    assert repr(box) == "SecretBox(<2 key(s) hidden>)"


@pytest.mark.parametrize("key", ["", "short", "x" * 44, "not base64 at all!!!"])
def test_invalid_key_is_a_configuration_error(key: str) -> None:
    with pytest.raises(ConfigurationError, match="url-safe base64 of 32 bytes") as info:
        SecretBox(key)
    if key:
        assert key not in str(info.value)


def test_dev_key_is_created_once_with_0600(tmp_path: Path) -> None:
    var = tmp_path / "var"
    key, created = load_or_create_dev_key(var)
    assert created
    path = var / DEV_KEY_FILENAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again, created_again = load_or_create_dev_key(var)
    assert (again, created_again) == (key, False)
    box = SecretBox(key)
    assert box.decrypt(box.encrypt("x")) == "x"
    assert [p.name for p in var.iterdir()] == [DEV_KEY_FILENAME]


def test_dev_key_permissions_are_tightened(tmp_path: Path) -> None:
    key, _ = load_or_create_dev_key(tmp_path)
    path = tmp_path / DEV_KEY_FILENAME
    os.chmod(path, 0o644)
    assert load_or_create_dev_key(tmp_path) == (key, False)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_corrupt_dev_key_file_is_a_configuration_error(tmp_path: Path) -> None:
    (tmp_path / DEV_KEY_FILENAME).write_text("garbage\n")
    with pytest.raises(ConfigurationError, match="does not hold a valid secret key") as info:
        load_or_create_dev_key(tmp_path)
    assert "garbage" not in str(info.value)


def test_concurrent_creation_agrees_on_one_key(tmp_path: Path) -> None:
    results: list[tuple[str, bool]] = []
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        results.append(load_or_create_dev_key(tmp_path))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert len(results) == 8
    assert len({key for key, _ in results}) == 1
    assert sum(created for _, created in results) == 1
