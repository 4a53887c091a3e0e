"""`auditrelay run --demo`: broker, topics, worker, API and demo in the foreground; Ctrl-C stops
all it started, and the start prints no warning a newcomer cannot act on."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from auditrelay.ops.kafka_local import LocalKafka, broker_answers
from auditrelay.schemas.settings import Settings
from tests.support.polling import wait_until
from tests.support.servers import free_port


@pytest.mark.slow
def test_run_starts_everything_and_ctrl_c_stops_everything(kafka_bootstrap: str,
                                                           tmp_path: Path) -> None:
    shared = Settings()
    api_port, demo_port = free_port(), free_port()
    env = {**os.environ, "AUDITRELAY_VAR_DIR": str(tmp_path), "AUDITRELAY_KAFKA_PORT": "19592",
           "AUDITRELAY_KAFKA_CONTROLLER_PORT": "19593", "AUDITRELAY_KAFKA_HEAP_MB": "256",
           "AUDITRELAY_CACHE_DIR": str(shared.cache_dir.resolve()),
           "AUDITRELAY_TOPIC_PARTITIONS": "1", "AUDITRELAY_API_PORT": str(api_port)}
    env.pop("AUDITRELAY_KAFKA_BOOTSTRAP", None)
    env.pop("AUDITRELAY_SECRET_KEY", None)
    broker = LocalKafka.from_settings(Settings(var_dir=tmp_path, kafka_port=19592,
                                               kafka_controller_port=19593,
                                               cache_dir=shared.cache_dir))
    proc = subprocess.Popen([sys.executable, "-m", "auditrelay.ops", "run", "--demo", "--demo-port",
                             str(demo_port)], env=env, text=True, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines: list[str] = []
    delivered = threading.Event()

    def _read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("[receiver]") and "signature ok" in line:
                delivered.set()

    reader = threading.Thread(target=_read, daemon=True)
    reader.start()
    try:
        started = time.monotonic()
        assert delivered.wait(timeout=90), "".join(lines)
        assert broker.status().running
        assert any("topic created   audit.events" in line for line in lines)
        answers: list[httpx.Response] = []

        def api_answers() -> bool:
            try:
                answers.append(httpx.get(f"http://127.0.0.1:{api_port}/healthz", timeout=2))
            except httpx.TransportError:
                return False
            return True

        wait_until(api_answers, 60, lambda: "".join(lines[-30:]), interval=0.2)
        assert answers[-1].json() == {"status": "ok"}
        # Let the first 10 s pass: a fresh broker's coordinator loads meanwhile.
        time.sleep(max(0.0, started + 10 - time.monotonic()))  # a span to watch, not a wait
        # The one warning a newcomer can act on, once for the whole run, and no other.
        key_warnings = [line for line in lines if "AUDITRELAY_SECRET_KEY is not set" in line]
        assert len(key_warnings) == 1, "".join(lines)
        others = [line for line in lines if line not in key_warnings
                  and any(word in line for word in ("WARNING", "ERROR", "GETPID", "Traceback"))]
        assert not others, "".join(lines)

        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
        reader.join(timeout=10)
        output = "".join(lines)
        assert "[run] stopping" in output
        assert "[run] broker stopped" in output
        assert not broker.status().running
        wait_until(lambda: not broker_answers(broker.bootstrap, timeout=0.5), 10,
                   "the broker still answers", interval=0.2)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # its children too, or they outlive the test
            proc.wait()
        reader.join(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
        broker.down()
