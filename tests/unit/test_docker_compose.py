"""docker-compose.yml and Dockerfile, checked as far as a machine without Docker allows.

There is no Docker engine (nor compose plugin) here, so the file is parsed and its
structure checked: the services the README promises, KRaft settings, settings
names that really exist, and CLI commands that really exist.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import yaml

from auditrelay.ops.cli import cli
from auditrelay.schemas.settings import DEFAULT_KAFKA_VERSION, Settings

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def test_services_are_all_there() -> None:
    assert set(_compose()["services"]) == {"kafka", "postgres", "topics", "migrate", "worker",
                                           "api"}


def test_kafka_is_the_official_image_in_kraft_mode_at_our_version() -> None:
    kafka = _compose()["services"]["kafka"]
    assert kafka["image"] == f"apache/kafka:{DEFAULT_KAFKA_VERSION}"
    env = kafka["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == "1@kafka:9093"
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert "healthcheck" in kafka


def test_our_services_build_from_the_dockerfile_with_known_settings() -> None:
    services = _compose()["services"]
    known = {f"AUDITRELAY_{name.upper()}" for name in Settings.model_fields}
    for name in ("topics", "migrate", "worker", "api"):
        service = services[name]
        assert service["build"] == "."
        unknown = set(service["environment"]) - known
        assert not unknown, f"{name}: no such settings {unknown}"
        assert service["environment"]["AUDITRELAY_KAFKA_BOOTSTRAP"] == "kafka:9092"
    for name in ("worker", "api"):
        for one_shot in ("topics", "migrate"):
            assert services[name]["depends_on"][one_shot]["condition"] == (
                "service_completed_successfully"), (name, one_shot)
    # Migrated by the one-shot service only, with the API's image and settings.
    assert services["migrate"]["environment"] == services["api"]["environment"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["migrate"]["restart"] == "no"
    assert services["migrate"]["command"] == ["db", "upgrade"]


def test_service_commands_are_cli_commands() -> None:
    group = cli
    ctx = click.Context(group)
    for name in ("topics", "migrate", "worker", "api"):
        argv = _compose()["services"][name]["command"]
        command = group.get_command(ctx, argv[0])
        assert command is not None, f"{name}: no CLI command {argv[0]!r}"
        if isinstance(command, click.Group) and len(argv) > 1:
            assert command.get_command(ctx, argv[1]) is not None


def test_dockerfile_installs_the_project_and_runs_the_cli() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert text.startswith("# ")
    assert "FROM python:3.11" in text
    assert 'ENTRYPOINT ["auditrelay"]' in text
    assert "USER auditrelay" in text
    for package in ("agents", "schemas", "producer", "ops", "api"):
        assert f"COPY {package} ./{package}" in text
