"""`pip install auditrelay` alone: what a service embeds to emit, and nothing more.

The wheel is built from this checkout and installed into a fresh virtual
environment without extras; there, one event is emitted to the real broker
with neither Faust, FastAPI nor SQLAlchemy present, and this test reads it back.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from confluent_kafka import Consumer

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
CARD_FOLDERS = ("agents", "api", "ops", "producer", "schemas")

EMIT = """
import importlib.util, json, sys, sysconfig
from pathlib import Path
absent = [m for m in ("faust", "fastapi", "sqlalchemy", "httpx", "aiokafka", "alembic")
          if importlib.util.find_spec(m) is not None]
from auditrelay.producer import Actor, AuditProducer, ProducerConfig
site = Path(sysconfig.get_paths()["purelib"])
with AuditProducer(ProducerConfig(bootstrap_servers=sys.argv[1], topic=sys.argv[2])) as producer:
    event = producer.emit("ws_bare", "workspace", "created",
                          actor=Actor(id="usr_bare", type="user"),
                          target={"type": "workspace", "id": "ws_bare"})
    producer.flush(30)
print(json.dumps({"id": event.id, "present": absent,
                  "top_level": sorted(p.name for p in site.iterdir())}))
"""


def run(argv: list[str], **kwargs: object) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=600,
                            **kwargs)  # type: ignore[call-overload]
    assert result.returncode == 0, f"{argv}:\n{result.stdout}\n{result.stderr}"
    return str(result.stdout)


def test_the_bare_package_emits_an_event_without_the_worker_or_api_libraries(
        tmp_path: Path, kafka_bootstrap: str, topic: str, group_id: str) -> None:
    source = tmp_path / "source"  # a copy: building in the checkout would leave build/ there
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "auditrelay", source / "auditrelay",
                    ignore=shutil.ignore_patterns("__pycache__"))
    run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir",
         str(tmp_path / "dist"), str(source)])
    (wheel,) = (tmp_path / "dist").glob("auditrelay-*.whl")
    venv.create(tmp_path / "venv", with_pip=True)
    python = str(tmp_path / "venv" / "bin" / "python")
    run([python, "-m", "pip", "install", "--quiet", str(wheel)])

    report = json.loads(run([python, "-c", EMIT, kafka_bootstrap, topic], cwd=tmp_path))

    assert report["present"] == [], f"the bare install brought {report['present']}"
    assert "auditrelay" in report["top_level"]
    leaked = sorted(set(CARD_FOLDERS) & set(report["top_level"]))
    assert not leaked, f"generic top-level packages installed: {leaked}"
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group_id,
                         "auto.offset.reset": "earliest"})
    try:
        consumer.subscribe([topic])
        msg = None
        for _ in range(60):  # polls of up to 1 s each
            msg = consumer.poll(1.0)
            if msg is not None and msg.error() is None:
                break
        assert msg is not None, "the event never reached the broker"
        assert msg.error() is None, msg.error()
        assert json.loads(msg.value() or b"{}")["id"] == report["id"]
        assert msg.key() == b"ws_bare"
    finally:
        consumer.close()
