"""`auditrelay kafka up|down|status` on this machine, with a real broker."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from auditrelay.kafka.admin import admin_client, create_topics
from auditrelay.ops import kafka_local
from auditrelay.ops.kafka_local import LocalKafka, broker_answers
from auditrelay.schemas.settings import Settings
from auditrelay.schemas.topics import TopicSpec

_CLI = [sys.executable, "-m", "auditrelay.ops"]


def _broker_pids(config_path: Path) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"kafka.Kafka" in args and str(config_path).encode() in args:
            pids.append(int(proc.name))
    return pids


def test_second_up_never_starts_a_second_broker(kafka_bootstrap: str) -> None:
    shared = LocalKafka.from_settings(Settings())
    if not shared.status().running:
        pytest.skip("the session broker was not started by this checkout")
    before = _broker_pids(shared.config_path)
    out = subprocess.run([*_CLI, "kafka", "up"], capture_output=True, text=True, timeout=120,
                         check=True)
    assert out.stdout.strip() == kafka_bootstrap
    assert "already running" in out.stderr
    assert _broker_pids(shared.config_path) == before == [shared.status().pid]


def test_status_reports_the_running_broker(kafka_bootstrap: str) -> None:
    out = subprocess.run([*_CLI, "kafka", "status"], capture_output=True, text=True, timeout=60,
                         check=False)
    if LocalKafka.from_settings(Settings()).status().running:
        assert out.returncode == 0
        assert f"bootstrap {kafka_bootstrap}" in out.stdout
    else:  # the session reuses a broker this checkout did not start
        assert out.returncode == 3
        assert out.stdout.strip() == "not running"


def test_kcat_lists_exactly_one_broker(kafka_bootstrap: str) -> None:
    kcat = shutil.which("kcat") or shutil.which("kafkacat")
    if kcat is None:
        pytest.fail("kcat is missing: `make test` installs it from Debian (package kcat)")
    out = subprocess.run([kcat, "-L", "-b", kafka_bootstrap], capture_output=True, text=True,
                         timeout=30, check=True)
    assert " 1 brokers:" in out.stdout
    assert f"broker 1 at {kafka_bootstrap}" in out.stdout


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[LocalKafka]:
    """A second broker on other ports, with its own data, sharing the jar cache."""
    shared = LocalKafka.from_settings(Settings())
    broker = LocalKafka(version=shared.version, port=19392, controller_port=19393, heap_mb=256,
                        home=tmp_path / "kafka", cache=shared.cache, start_timeout=90.0)
    yield broker
    broker.down()


@pytest.mark.slow
def test_down_leaves_no_process_and_up_reuses_the_data(private_broker: LocalKafka) -> None:
    assert private_broker.up() is True
    meta = (private_broker.data_dir / "meta.properties").read_text()
    create_topics(admin_client(private_broker.bootstrap), [TopicSpec("survives.restart", 1)])

    assert private_broker.down() is True
    assert _broker_pids(private_broker.config_path) == []
    assert not broker_answers(private_broker.bootstrap, timeout=1.0)
    assert private_broker.down() is False

    assert private_broker.up() is True
    assert (private_broker.data_dir / "meta.properties").read_text() == meta
    topics = admin_client(private_broker.bootstrap).list_topics(timeout=10).topics
    assert "survives.restart" in topics
    assert len(_broker_pids(private_broker.config_path)) == 1


@pytest.mark.slow
def test_a_cluster_id_starting_with_a_dash_formats(private_broker: LocalKafka,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # One random id in 64 starts with "-"; the storage tool must not take it for an option.
    monkeypatch.setattr(kafka_local, "new_cluster_id", lambda: "-AbCdEfGhIjKlMnOpQrStU")
    assert private_broker.up() is True
    assert "cluster.id=-AbCdEfGhIjKlMnOpQrStU" in (
        private_broker.data_dir / "meta.properties").read_text()


@pytest.mark.slow
def test_up_refuses_a_port_held_by_another_broker(kafka_bootstrap: str, tmp_path: Path) -> None:
    shared = LocalKafka.from_settings(Settings())
    host, port = kafka_bootstrap.rsplit(":", 1)
    assert host == "127.0.0.1"
    stranger = LocalKafka(version=shared.version, port=int(port), controller_port=19394,
                          heap_mb=256, home=tmp_path / "other", cache=shared.cache,
                          start_timeout=10.0)
    from auditrelay.schemas.errors import ProvisioningError

    with pytest.raises(ProvisioningError, match="another Kafka broker already listens"):
        stranger.up()
    assert not stranger.pid_path.exists()


@pytest.mark.slow
def test_worker_starts_and_stops_cleanly(kafka_bootstrap: str, tmp_path: Path) -> None:
    env = {**os.environ, "AUDITRELAY_KAFKA_BOOTSTRAP": kafka_bootstrap,
           "AUDITRELAY_VAR_DIR": str(tmp_path)}
    # Migrations are a step of their own: the worker only checks the schema.
    upgraded = subprocess.run([*_CLI, "db", "upgrade"], env=env, capture_output=True, text=True,
                              timeout=120, check=False)
    assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
    proc = subprocess.Popen([*_CLI, "worker"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "Worker ready" in line:
                break
        assert any("Worker ready" in line for line in lines), "".join(lines[-20:])
        proc.terminate()
        rest, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, rest[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
