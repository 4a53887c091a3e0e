"""The Faust app's group timing follows the one session-timeout setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from auditrelay.agents.app import ROUTER_BATCH_BYTES, create_app
from auditrelay.kafka.clients import heartbeat_seconds
from auditrelay.schemas.settings import Settings


@pytest.mark.parametrize(("session", "heartbeat"), [(6, 2.0), (10, 3.0), (45, 3.0)])
def test_heartbeat_is_a_third_of_the_session_at_most_3_s(session: float,
                                                         heartbeat: float) -> None:
    assert heartbeat_seconds(session) == heartbeat


def test_the_app_uses_the_session_timeout_setting(tmp_path: Path) -> None:
    settings = Settings(var_dir=tmp_path, consumer_session_timeout_seconds=7,
                        topic_prefix="unit.")
    app = create_app(settings, app_id="session-unit")
    assert app.conf.broker_session_timeout == 7
    assert app.conf.broker_heartbeat_interval == pytest.approx(7 / 3)


def test_a_session_timeout_below_the_brokers_minimum_is_refused() -> None:
    with pytest.raises(ValueError, match="consumer_session_timeout_seconds"):
        Settings(consumer_session_timeout_seconds=2)


def test_the_router_producer_waits_for_every_replica_without_idempotence(
        tmp_path: Path) -> None:
    settings = Settings(var_dir=tmp_path, topic_prefix="unit.")
    app = create_app(settings, app_id="producer-unit")
    producer = app.producer
    config = {**producer._settings_default(), **producer._settings_extra()}
    assert app.conf.producer_acks == -1
    assert config["acks"] == -1
    # aiokafka's idempotent producer dies on a refused sequence (auditrelay.kafka.clients).
    assert not config.get("enable_idempotence", False)
    assert app.conf.producer_max_batch_size == ROUTER_BATCH_BYTES
