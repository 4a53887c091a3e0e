"""A destination's URL can be a credential (Slack, Sumo Logic, Datadog): no log line
of ours or of a library carries its path or query, reads show it masked, and it is
stored and published encrypted.

The end-to-end test delivers (a real API, a real worker, the real broker) to
receivers at URLs whose path and query hold ``SECRETVALUE``, once successfully, once
to a receiver answering 500 and once to a closed port, with test sends too; then
every log, response, page, metric, database row and Kafka record of the run is
searched for it. Only what the receivers themselves got is left out.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import prometheus_client
import pytest
from confluent_kafka.admin import AdminClient
from sqlalchemy import MetaData, select

from auditrelay.kafka.topic_reader import read_topic
from auditrelay.observability import metrics
from auditrelay.ops.topics import ensure_topics
from auditrelay.schemas.destinations import DestinationConfig, url_hint, url_origin
from auditrelay.schemas.topics import TopicNames
from auditrelay.wire import client
from auditrelay.wire.secrets import SecretBox, generate_key
from auditrelay.wire.signing import destination_url
from tests.integration.api.conftest import ApiServer, running_api
from tests.integration.web.conftest import PAGE, csrf_of, sign_in
from tests.support.cleanup import topics_cleaned_up
from tests.support.pipeline import WorkerProcess
from tests.support.polling import wait_until
from tests.support.servers import Receiver, free_port, serve

SECRET = "SECRETVALUE"
#: Every receiver path starts so; only the receivers' own access lines carry it.
HOOK = f"/hook-{SECRET}"


@pytest.mark.parametrize("name", ["httpx", "httpcore", "httpcore.http11", "httpcore.connection",
                                  "aiohttp.client"])
def test_the_http_libraries_never_log_below_warning(name: str) -> None:
    # Even where the process logs at DEBUG, request lines (with their URL) stay out.
    assert client.DeliveryClient  # the one client module is what sets the floor
    logging.getLogger().setLevel(logging.DEBUG)
    try:
        logger = logging.getLogger(name)
        assert not logger.isEnabledFor(logging.INFO)
        assert logger.isEnabledFor(logging.WARNING)
    finally:
        logging.getLogger().setLevel(logging.WARNING)


@pytest.mark.parametrize(("url", "hint", "origin"), [
    ("https://hooks.slack.com/services/T0/B0/X", "https://hooks.slack.com/\u2026",
     "https://hooks.slack.com"),
    ("https://collectors.sumologic.com/receiver/v1/http/Zm9v",
     "https://collectors.sumologic.com/\u2026", "https://collectors.sumologic.com"),
    ("https://siem.example.com:8443/in?dd-api-key=k", "https://siem.example.com:8443/\u2026",
     "https://siem.example.com:8443"),
    ("https://siem.example.com?token=k", "https://siem.example.com/\u2026",
     "https://siem.example.com"),
    ("https://siem.example.com/", "https://siem.example.com", "https://siem.example.com"),
    ("HTTPS://u:p@SIEM.example.com/x", "https://siem.example.com/\u2026",
     "https://siem.example.com"),
    ("not a url SECRETVALUE", "\u2026", "\u2026"),
])
def test_a_url_is_shown_as_its_origin_at_most(url: str, hint: str, origin: str) -> None:
    assert (url_hint(url), url_origin(url)) == (hint, origin)


def test_a_library_error_naming_the_url_names_its_origin_only() -> None:
    url = f"https://siem.example.com/in/{SECRET}?token={SECRET}"
    exc = httpx.ConnectError(f"cannot reach {url} (path /in/{SECRET}?token={SECRET})")
    described = client._describe(exc, (url, url), fallback="connection failed")
    assert SECRET not in described
    assert "https://siem.example.com/\u2026" in described


def test_records_carry_the_url_encrypted_and_older_plaintext_ones_still_read() -> None:
    box = SecretBox(generate_key())
    url = f"https://hooks.slack.com/services/{SECRET}"
    fields = {"id": "dst_1", "workspace_id": "ws_1", "name": "s", "enabled": True,
              "secret_encrypted": "v1:s", "version": 1, "updated_at": "2026-01-01T00:00:00Z"}
    sealed = DestinationConfig.model_validate(
        {**fields, "url_encrypted": box.encrypt(url), "url_hint": url_hint(url)})
    assert SECRET not in sealed.model_dump_json()
    assert destination_url(sealed, box) == url
    legacy = DestinationConfig.model_validate({**fields, "url": url})
    assert destination_url(legacy, box) == url
    with pytest.raises(ValueError, match="url_encrypted"):
        DestinationConfig.model_validate(fields)


# -- end to end ----------------------------------------------------------------------------


@pytest.fixture
def receivers() -> Iterator[tuple[Receiver, str, Receiver, str]]:
    """One receiver answering 200 and one answering 500, with their base URLs."""
    good, bad = Receiver(), Receiver(status=500)
    with serve(good) as good_base, serve(bad) as bad_base:
        yield good, good_base, bad, bad_base


def test_a_secret_url_appears_in_no_log_response_page_metric_row_or_record(
        tmp_path: Path, kafka_bootstrap: str, kafka_admin: AdminClient, unique_name: str,
        receivers: tuple[Receiver, str, Receiver, str],
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    good, good_base, bad, bad_base = receivers
    prefix = f"test.{unique_name}."
    worker_metrics = free_port()
    seen: dict[str, str] = {}  # where -> text searched
    settings = {"allow_private_cidrs": "127.0.0.0/8", "topic_partitions": 1,
                "delivery_partitions": 1, "batch_window_seconds": 0.5,
                "consumer_session_timeout_seconds": 6, "retry_schedule_seconds": "2,4",
                "retry_jitter": 0, "log_level": "DEBUG"}
    urls = {"good": f"{good_base}{HOOK}/old?token={SECRET}",
            "bad": f"{bad_base}{HOOK}/in?token={SECRET}",
            "closed": f"http://127.0.0.1:{free_port()}{HOOK}/in?token={SECRET}"}

    (tmp_path / "var").mkdir()  # the worker's state lives there too
    with topics_cleaned_up(kafka_admin, TopicNames(prefix=prefix)), \
            running_api(f"sqlite:///{tmp_path / 'api.db'}", tmp_path / "var",
                        kafka=(kafka_bootstrap, prefix), settings=settings) as api:
        ensure_topics(api.settings)
        ws, token = api.create_workspace()
        base = f"/v1/workspaces/{ws}/destinations"
        ids = {}
        for name, url in urls.items():
            created = api.call("POST", base, token, json={"name": name, "url": url})
            assert created.status_code == 201, created.text
            assert created.json()["url"] == url_origin(url) + "/\u2026"
            ids[name] = created.json()["id"]
        # PATCH replaces the URL (on the same receiver, another secret path).
        replaced = api.call("PATCH", f"{base}/{ids['good']}", token,
                            json={"url": f"{good_base}{HOOK}/in?token={SECRET}"})
        assert replaced.status_code == 200, replaced.text
        tested = {name: api.call("POST", f"{base}/{dest}/test", token).json()
                  for name, dest in ids.items()}
        assert [tested[n]["delivered"] for n in urls] == [True, False, False], tested
        assert tested["bad"]["status_code"] == 500
        assert tested["closed"]["error"]

        with WorkerProcess(api.settings.model_copy(update={"log_level": "DEBUG"}),
                           tmp_path / "worker.log",
                           extra_env={"AUDITRELAY_METRICS_PORT": str(worker_metrics)}) as worker:
            worker.wait_ready()
            # The API's self-audit events (created, updated, test_sent) are delivered too.
            wait_until(lambda: _delivered(api, base, token, ids), 90,
                       lambda: "no delivery outcome of every destination" + worker.tail())
            with httpx.Client(timeout=10) as plain:
                seen["worker /metrics"] = plain.get(
                    f"http://127.0.0.1:{worker_metrics}/metrics").text
        seen["worker output"] = worker.output()

        _read_pages(api, ws, token, ids, seen)
        api.call("GET", base, token)
        for response in api.responses:
            seen[f"API {response.request.method} {response.request.url.path}"] = response.text
        seen["API metrics"] = prometheus_client.generate_latest(metrics.API_REGISTRY).decode()
        seen["worker metrics, this process"] = prometheus_client.generate_latest(
            metrics.WORKER_REGISTRY).decode()
        seen.update(_database_rows(api))
        seen.update(_kafka_records(kafka_bootstrap, kafka_admin, prefix))

    seen["logs of this process"] = "\n".join(
        f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records
        if not (r.name == "uvicorn.access" and HOOK in r.getMessage()))  # the receivers' own

    # The secret was in play: the receivers were called at their secret URLs...
    assert all(HOOK in r.path and SECRET in r.path for r in good.snapshot() + bad.snapshot())
    assert len(bad.snapshot()) >= 2  # a test send, a delivery
    assert len(good.snapshot()) >= 2
    # ...and what is searched holds the run: configs, attempts, the worker's own lines.
    assert any(ids["closed"] in text for where, text in seen.items()
               if where.startswith("kafka") and "delivery-attempts" in where)
    assert "Worker ready" in seen["worker output"]
    hits = sorted(where for where, text in seen.items() if SECRET in text)
    assert hits == [], "\n".join(
        f"{where}: ...{text[max(0, text.index(SECRET) - 120):text.index(SECRET) + 40]}..."
        for where, text in seen.items() if where in hits)


def _delivered(api: ApiServer, base: str, token: str, ids: dict[str, str]) -> bool:
    """Whether the worker's outcome of each destination is known: good delivered, the
    others failed (the statuses come from the worker through Kafka)."""
    got = {name: api.call("GET", f"{base}/{dest}", token).json() for name, dest in ids.items()}
    return (got["good"]["last_delivery_ok"] is True
            and all(got[n]["last_delivery_ok"] is False and got[n]["last_error"]
                    for n in ("bad", "closed")))


def _read_pages(api: ApiServer, ws: str, token: str, ids: dict[str, str],
                seen: dict[str, str]) -> None:
    """Every page of the workspace, and the detail page's URL form used once."""
    page = PAGE.format(ws=ws)
    with sign_in(api, ws, token) as browser:
        listing = browser.get(page)
        seen["page"] = listing.text
        for name, dest in ids.items():
            seen[f"page {name}"] = browser.get(f"{page}/destinations/{dest}").text
            seen[f"page {name} delete"] = browser.get(f"{page}/destinations/{dest}/delete").text
        new_url = f"http://127.0.0.1:{free_port()}{HOOK}/new?token={SECRET}"
        replaced = browser.post(f"{page}/destinations/{ids['closed']}/url",
                                data={"csrf": csrf_of(listing.text), "url": new_url})
        assert replaced.status_code == 303, replaced.text
        seen["page after the URL form"] = browser.get(page).text
        assert "URL replaced" in seen["page after the URL form"]
        refused = browser.post(f"{page}/destinations/{ids['closed']}/url",
                               data={"csrf": csrf_of(listing.text),
                                     "url": f"https://10.0.0.1{HOOK}?token={SECRET}"})
        seen["page after a refused URL"] = browser.get(page).text
        assert refused.status_code == 303
        assert "not replaced" in seen["page after a refused URL"]


def _database_rows(api: ApiServer) -> dict[str, str]:
    tables = MetaData()
    tables.reflect(api.store.engine)
    found = {}
    with api.store.engine.connect() as conn:
        for table in tables.sorted_tables:
            rows = conn.execute(select(table)).all()
            found[f"database {table.name}"] = "\n".join(repr(tuple(row)) for row in rows)
    assert found["database destinations"].count("dst_") >= 3
    return found


def _kafka_records(bootstrap: str, admin: AdminClient, prefix: str) -> dict[str, str]:
    found = {}
    for topic in sorted(t for t in admin.list_topics(timeout=10).topics if t.startswith(prefix)):
        texts = []
        for msg in read_topic(bootstrap, topic, timeout=30):
            headers = b" ".join(k.encode() + b"=" + (v or b"") for k, v in msg.headers() or [])
            texts.append(b"|".join((msg.key() or b"", msg.value() or b"", headers)))
        found[f"kafka {topic}"] = b"\n".join(texts).decode("utf-8", errors="replace")
    assert found[f"kafka {prefix}destinations"]
    return found
