from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from pydantic import ValidationError

from auditrelay.schemas.settings import Settings


def test_defaults_match_the_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("AUDITRELAY_KAFKA_BOOTSTRAP", "AUDITRELAY_DATABASE_URL",
                "AUDITRELAY_TOPIC_PREFIX", "AUDITRELAY_ALLOW_PRIVATE_CIDRS",
                "AUDITRELAY_KAFKA_PORT", "AUDITRELAY_VAR_DIR"):
        monkeypatch.delenv(var, raising=False)
    settings = Settings()
    assert settings.kafka_bootstrap == "127.0.0.1:9092"
    assert settings.database_url == f"sqlite:///{Path('var/auditrelay.db').resolve()}"
    assert settings.admin_token is None
    assert settings.allow_private_cidrs == ()
    assert settings.topic_prefix == "audit."
    assert settings.batch_window_seconds == 1.0
    assert settings.topics.events == "audit.events"


def test_environment_is_read_with_the_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUDITRELAY_KAFKA_BOOTSTRAP", "10.1.1.1:9092,10.1.1.2:9092")
    monkeypatch.setenv("AUDITRELAY_ALLOW_PRIVATE_CIDRS", "127.0.0.0/8, ::1/128")
    monkeypatch.setenv("AUDITRELAY_ADMIN_TOKEN", "adm-secret-value")
    monkeypatch.setenv("AUDITRELAY_BATCH_WINDOW_SECONDS", "0.25")
    settings = Settings()
    assert settings.kafka_bootstrap == "10.1.1.1:9092,10.1.1.2:9092"
    assert settings.allow_private_cidrs == (ipaddress.ip_network("127.0.0.0/8"),
                                            ipaddress.ip_network("::1/128"))
    assert settings.batch_window_seconds == 0.25
    assert settings.admin_token is not None
    assert settings.admin_token.get_secret_value() == "adm-secret-value"
    assert "adm-secret-value" not in repr(settings)


def test_bootstrap_follows_the_local_port_when_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AUDITRELAY_KAFKA_BOOTSTRAP", raising=False)
    assert Settings(kafka_port=19092, kafka_controller_port=19093).kafka_bootstrap == (
        "127.0.0.1:19092")


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(ValidationError):
        settings.topic_prefix = "other."  # type: ignore[misc]


@pytest.mark.parametrize(("field", "value", "needle"), [
    ("allow_private_cidrs", "not-a-network", "allow_private_cidrs"),
    ("batch_window_seconds", "0", "batch_window_seconds"),
    ("kafka_heap_mb", "4096", "kafka_heap_mb"),
    ("log_level", "LOUD", "log_level"),
])
def test_bad_values_name_the_setting(monkeypatch: pytest.MonkeyPatch, field: str, value: str,
                                     needle: str) -> None:
    monkeypatch.setenv(f"AUDITRELAY_{field.upper()}", value)
    with pytest.raises(ValidationError, match=needle):
        Settings()


def test_ports_must_differ() -> None:
    with pytest.raises(ValidationError, match="must differ"):
        Settings(kafka_port=9092, kafka_controller_port=9092)


def test_empty_secrets_mean_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUDITRELAY_ADMIN_TOKEN", "")
    monkeypatch.setenv("AUDITRELAY_SECRET_KEY", "")
    settings = Settings()
    assert settings.admin_token is None
    assert settings.secret_key is None


def test_worker_stages(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().worker_stages == ("router", "archive", "delivery", "retention")
    monkeypatch.setenv("AUDITRELAY_WORKER_STAGES", "delivery, router")
    assert Settings().worker_stages == ("router", "delivery")
    monkeypatch.setenv("AUDITRELAY_WORKER_STAGES", "router,courier")
    with pytest.raises(ValidationError, match="unknown stage"):
        Settings()
    monkeypatch.setenv("AUDITRELAY_WORKER_STAGES", "retention,delivery")
    with pytest.raises(ValidationError, match="retention runs only beside router or archive"):
        Settings()
