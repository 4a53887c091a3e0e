"""Metrics after a known workload: a real worker and a real API, scraped over HTTP.

``python -m auditrelay.ops api`` and ``python -m auditrelay.ops worker`` run as subprocesses under a
topic prefix of their own, with JSON logs and the offsets collector reading
every second. One workspace has two destinations for ``pro.atmos.auth.*``: one
receiver on 127.0.0.1 answers 200, the other 503. Batches hold one event each,
so the counts are exact. The retry schedule is one minute, so the failed batch
stays in the first retry tier (and the circuit keeps the rest of that
destination's batches in its topic) for the whole test.

Workload: ``N`` auth events of the workspace, one event of a workspace nobody
forwards, one malformed record, plus the self-audit events the API publishes
when it creates the workspace and destinations.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest
from confluent_kafka import Producer, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec
from prometheus_client.parser import text_string_to_metric_families

from auditrelay.observability.collector import Groups
from auditrelay.ops.topics import ensure_topics
from auditrelay.producer import Actor, AuditProducer, ProducerConfig
from auditrelay.schemas.settings import Settings
from tests.support.cleanup import topics_cleaned_up
from tests.support.pipeline import DestinationSpec, create_destinations, worker_env
from tests.support.polling import wait_until
from tests.support.servers import Receiver, free_port, serve
from tests.support.settings import make_settings

pytestmark = pytest.mark.slow

N = 3
USER = Actor(id="usr_1", type="user")
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


# -- processes and scraping ----------------------------------------------------------------


@dataclass
class Child:
    """``python -m auditrelay.ops ARGS`` with ``env``; output in ``log``; SIGTERM (then SIGKILL)
    on stop."""

    args: list[str]
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    _out: IO[bytes] | None = field(default=None, repr=False)

    def start(self) -> Child:
        self._out = self.log.open("wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "auditrelay.ops", *self.args],
                                     env=self.env,
                                     stdout=self._out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return f"\n--- last lines of {self.log.name} ---\n" + "\n".join(
            text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self._out is not None:
            self._out.close()


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (loopback http)
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def scrape(url: str) -> Samples:
    status, text = get(url)
    assert status == 200, f"{url}: HTTP {status}"
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def answers(url: str) -> bool:
    try:
        return get(url)[0] == 200
    except OSError:  # not listening yet
        return False


def mismatches(samples: Samples, expected: Mapping[tuple[str, frozenset[tuple[str, str]]],
                                                   float | None]) -> dict[str, Any]:
    """What differs from ``expected``, where None is a series that must be absent."""
    return {f"{name}{dict(labels)}": (samples.get((name, labels)), want)
            for (name, labels), want in expected.items() if samples.get((name, labels)) != want}


def series(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset(labels.items())


# -- the environment -----------------------------------------------------------------------


@pytest.fixture
def settings(kafka_bootstrap: str, unique_name: str, tmp_path: Path) -> Settings:
    return make_settings(tmp_path, kafka_bootstrap, f"test.{unique_name}.",
                         topic_partitions=2, allow_private_cidrs="127.0.0.0/8",
                         retry_schedule_seconds="60", retry_jitter=0,
                         batch_max_events=1,
                         metrics_port=free_port(), metrics_interval_seconds=1,
                         log_format="json")


@pytest.fixture
def env(settings: Settings) -> dict[str, str]:
    env = worker_env(settings)
    for name in ("batch_max_events", "metrics_port", "metrics_interval_seconds", "log_format"):
        env[f"AUDITRELAY_{name.upper()}"] = str(getattr(settings, name))
    return env


@pytest.fixture
def topics(settings: Settings, kafka_admin: AdminClient) -> Iterator[None]:
    with topics_cleaned_up(kafka_admin, settings.topics):
        ensure_topics(settings)
        yield


def events_on_topic(admin: AdminClient, settings: Settings) -> int:
    topic = settings.topics.events
    partitions = admin.list_topics(topic, timeout=10).topics[topic].partitions
    # The topic is new: it starts at offset 0, so its end offsets count its records.
    latest = OffsetSpec.latest()  # type: ignore[no-untyped-call]
    futures = admin.list_offsets({TopicPartition(topic, p): latest for p in partitions})
    return sum(f.result().offset for f in futures.values())


def produce_workload(settings: Settings, workspace_id: str) -> None:
    with AuditProducer(ProducerConfig.from_settings(settings)) as producer:
        for _ in range(N):
            producer.emit(workspace_id, "auth", "login_succeeded", actor=USER)
        producer.emit("ws_nobody", "auth", "login_succeeded", actor=USER)
        producer.flush(30)
    raw = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    raw.produce(settings.topics.events, key=workspace_id.encode(), value=b"not an event",
                headers=[("ce_id", b"not-an-id")])
    assert raw.flush(30) == 0


# -- the test ------------------------------------------------------------------------------


@pytest.mark.usefixtures("topics")
def test_worker_and_api_metrics_after_a_known_workload(
        settings: Settings, env: dict[str, str], kafka_admin: AdminClient,
        tmp_path: Path) -> None:
    healthy, failing = Receiver(), Receiver(status=503)
    api_port = free_port()
    api_url = f"http://127.0.0.1:{api_port}"
    worker_url = f"http://127.0.0.1:{settings.metrics_port}/metrics"
    with serve(healthy) as ok_url, serve(failing) as bad_url:
        (workspace,), (ok_dest, bad_dest) = create_destinations(settings, 1, [
            DestinationSpec(0, ok_url + "/hook", ("pro.atmos.auth.*",)),
            DestinationSpec(0, bad_url + "/hook", ("pro.atmos.auth.*",))])
        api = Child(["api", "--port", str(api_port)], env, tmp_path / "api.log").start()
        worker = Child(["worker"], env, tmp_path / "worker.log")
        try:
            # The API's outbox publisher creates the topics and publishes the configs.
            wait_until(lambda: answers(api_url + "/healthz"), 60,
                       lambda: "the API did not answer" + api.tail())
            wait_until(lambda: value(scrape(api_url + "/metrics"),
                                     "auditrelay_outbox_backlog") == 0, 60,
                       lambda: "the API did not publish its outbox" + api.tail())
            # Scrapes are counted once answered: this one reports those before it.
            scrapes = 1 + (value(scrape(api_url + "/metrics"), "auditrelay_api_requests_total",
                                 method="GET", route="/metrics", status="200") or 0.0)
            worker.start()
            wait_until(lambda: answers(worker_url), 60,
                       lambda: "no worker metrics endpoint" + worker.tail())
            produce_workload(settings, workspace)
            total = events_on_topic(kafka_admin, settings)
            samples = _settled_worker_metrics(worker, worker_url, settings, total,
                                              ok_dest.id, bad_dest.id)
            _check_api_metrics(api_url, workspace, scrapes)
            assert len(healthy.requests) == N
            assert len(failing.requests) == 1  # the circuit holds the rest back
        finally:
            worker.stop()
            api.stop()
    _check_worker_samples(samples, total, ok_dest.id, bad_dest.id)
    assert settings.secret_key is not None
    _check_json_logs(worker.log, bad_dest.id,
                     [settings.secret_key.get_secret_value(), ok_dest.secret, bad_dest.secret])


def _settled_worker_metrics(worker: Child, url: str, settings: Settings, total: int,
                            ok_id: str, bad_id: str) -> Samples:
    """The worker's samples once the workload is through and the gauges have caught up."""
    groups = Groups.of(settings.topics)
    expected = {
        series("auditrelay_deliveries_total", destination=ok_id, outcome="delivered"): N,
        series("auditrelay_deliveries_total", destination=bad_id, outcome="retry"): 1,
        # Nothing of the healthy destination waits: it has no backlog series at all.
        series("auditrelay_destination_backlog", destination=ok_id): None,
        # The first batch went to a retry tier; the circuit keeps the others waiting.
        series("auditrelay_destination_backlog", destination=bad_id): N - 1,
        series("auditrelay_retry_tier_size", tier="10s"): 1,
        series("auditrelay_retry_tier_size", tier="1m"): 0,
        series("auditrelay_dead_letters"): 1,
        # Two destinations, both enabled: every disabled reason is shown, at 0.
        series("auditrelay_destinations", state="enabled", reason=""): 2,
        series("auditrelay_destinations", state="disabled", reason="manual"): 0,
        series("auditrelay_destinations", state="disabled", reason="gone"): 0,
        series("auditrelay_destinations", state="disabled", reason="failing"): 0,
        series("auditrelay_consumer_lag", group=groups.router,
               topic=settings.topics.events): 0,
        series("auditrelay_consumer_lag", group=groups.archive,
               topic=settings.topics.events): 0,
        series("auditrelay_consumer_lag", group=groups.retry,
               topic=settings.topics.retry("10s")): 1,
    }
    # The delivery group reads deliveries and parked: a series each. The failing
    # destination's held batches wait in one or the other (parked once its circuit
    # moved them there): together they are its backlog.
    delivery_lag = [series("auditrelay_consumer_lag", group=groups.delivery, topic=topic)
                    for topic in (settings.topics.deliveries, settings.topics.parked)]
    latest: Samples = {}

    def lag_shown() -> list[float | None]:
        return [latest.get(s) for s in delivery_lag]

    def settled() -> bool:
        nonlocal latest
        assert worker.alive(), "the worker exited" + worker.tail()
        latest = scrape(url)
        read = sum(v for (name, _), v in latest.items() if name == "auditrelay_events_in_total")
        lags = lag_shown()
        return (read == total and not mismatches(latest, expected)
                and None not in lags and sum(v or 0 for v in lags) == N - 1)

    wait_until(settled, 90, lambda: f"worker metrics did not settle: events read "
               f"{sum(v for (n, _), v in latest.items() if n == 'auditrelay_events_in_total')} "
               f"of {total}; {mismatches(latest, expected)}; delivery lag on deliveries, "
               f"parked {lag_shown()} (want {N - 1} together)" + worker.tail())
    return latest


def _check_worker_samples(samples: Samples, total: int, ok_id: str, bad_id: str) -> None:
    def val(name: str, **labels: str) -> float | None:
        return value(samples, name, **labels)

    assert val("auditrelay_events_in_total", outcome="routed") == N
    assert val("auditrelay_events_in_total", outcome="malformed") == 1
    # Everything else on the topic: the other workspace's event and the self-audit events.
    assert val("auditrelay_events_in_total", outcome="unmatched") == total - N - 1
    # N batches of one event to each of the two destinations.
    assert val("auditrelay_batches_out_total") == 2 * N
    assert val("auditrelay_batched_events_total") == 2 * N
    assert val("auditrelay_deliveries_total", destination=ok_id, outcome="retry") is None
    assert val("auditrelay_dead_lettered_total", reason="malformed_event") == 1
    assert val("auditrelay_delivery_latency_seconds_count") == N
    assert (val("auditrelay_delivery_latency_seconds_bucket", le="+Inf") or 0) == N
    assert 0 < (val("auditrelay_delivery_latency_seconds_sum") or 0) < N * 60
    assert val("auditrelay_delivery_request_seconds_count") == N + 1  # and the 503
    assert val("auditrelay_destination_oldest_undelivered_age_seconds", destination=ok_id) is None
    age = val("auditrelay_destination_oldest_undelivered_age_seconds", destination=bad_id)
    assert age is not None
    assert 0 < age < 120
    assert (val("auditrelay_offsets_collect_errors_total") or 0) == 0
    # The loop of the stages beats (docs/metrics.md): set by the Faust app's task.
    assert (val("auditrelay_worker_heartbeat_timestamp_seconds") or 0) > 0


def _check_api_metrics(api_url: str, workspace: str, metrics_scrapes: float) -> None:
    for _ in range(2):
        assert get(api_url + "/healthz")[0] == 200
    assert get(f"{api_url}/v1/workspaces/{workspace}/destinations")[0] == 401  # no token
    assert get(api_url + "/no/such/path")[0] == 404
    samples = scrape(api_url + "/metrics")

    def requests(route: str, status: str) -> float | None:
        return value(samples, "auditrelay_api_requests_total", method="GET", route=route,
                     status=status)

    assert requests("/healthz", "200") == 3  # the wait's one success and the two above
    assert requests("/v1/workspaces/{ws}/destinations", "401") == 1  # the template, not the id
    assert requests("unmatched", "404") == 1
    assert requests("/metrics", "200") == metrics_scrapes  # this scrape is not counted yet
    assert value(samples, "auditrelay_outbox_backlog") == 0
    assert value(samples, "auditrelay_api_request_duration_seconds_count", method="GET",
                 route="/v1/workspaces/{ws}/destinations") == 1
    # The API's endpoint shows the API's series only.
    assert not any(name.startswith("auditrelay_deliveries") for name, _ in samples)


def _check_json_logs(log: Path, bad_id: str, secrets: list[str]) -> None:
    """Every line of the worker is a JSON object; the retried batch's line carries its ids."""
    text = log.read_text()
    assert not [secret for secret in secrets if secret in text]
    lines = [line for line in text.splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]
    assert all({"time", "level", "logger", "message"} <= r.keys() for r in records)
    retried = [r for r in records if r.get("destination_id") == bad_id
               and r.get("outcome") == "retry"]
    assert len(retried) == 1, [r for r in records if "batch_id" in r]
    assert retried[0]["batch_id"].startswith("msg_")
    assert retried[0]["workspace_id"].startswith("ws_")
    assert retried[0]["status_code"] == 503
