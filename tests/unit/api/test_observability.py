"""The API's ``/metrics``: requests counted by route template, the outbox backlog, the format.

The API runs on 127.0.0.1 with SQLite and without Kafka (``publish=False``), so
outbox entries stay in the database and the gauge must show exactly them.
Counters are per process and shared with other tests: they are checked as deltas.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from auditrelay.api.app import create_app
from auditrelay.schemas.settings import Settings
from auditrelay.store.db import OutboxEntry
from auditrelay.store.engine import Store, make_engine, upgrade_database
from auditrelay.wire.secrets import generate_key
from tests.support.servers import serve

ADMIN = "admin-token-of-the-metrics-test-0123456789"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    settings = Settings(var_dir=tmp_path, database_url=f"sqlite:///{tmp_path}/api.db",
                        secret_key=generate_key(), admin_token=ADMIN)
    upgrade_database(settings.database_url)
    return settings


@pytest.fixture
def client(settings: Settings) -> Iterator[httpx.Client]:
    with serve(create_app(settings, publish=False)) as url, httpx.Client(base_url=url) as http:
        yield http


def scrape(client: httpx.Client) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(response.text) for s in family.samples}


def requests_seen(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], method: str,
                  route: str, status: int) -> float:
    labels = frozenset({"method": method, "route": route, "status": str(status)}.items())
    return samples.get(("auditrelay_api_requests_total", labels), 0.0)


def test_requests_are_counted_by_route_template_and_status(client: httpx.Client) -> None:
    route = "/v1/workspaces/{ws}/destinations/{dest_id}"
    before = scrape(client)
    for dest in ("dst_a", "dst_b", "dst_c"):
        assert client.get(f"/v1/workspaces/ws_x/destinations/{dest}").status_code == 401
    assert client.get("/healthz").status_code == 200
    assert client.get("/nothing/here").status_code == 404
    after = scrape(client)
    assert requests_seen(after, "GET", route, 401) - requests_seen(before, "GET", route, 401) == 3
    assert (requests_seen(after, "GET", "/healthz", 200)
            - requests_seen(before, "GET", "/healthz", 200)) == 1
    assert (requests_seen(after, "GET", "unmatched", 404)
            - requests_seen(before, "GET", "unmatched", 404)) == 1
    assert not any("dst_a" in dict(labels).get("route", "") for _, labels in after)


def test_the_outbox_backlog_is_what_waits_in_the_database(client: httpx.Client,
                                                          settings: Settings) -> None:
    created = client.post("/v1/workspaces", json={"name": "acme", "plan": "enterprise"},
                          headers={"Authorization": f"Bearer {ADMIN}"})
    assert created.status_code == 201
    store = Store(make_engine(settings.database_url))
    try:
        with store.transaction() as session:
            waiting = session.scalar(select(func.count()).select_from(OutboxEntry))
    finally:
        store.dispose()
    assert waiting  # the workspace's self-audit event, not published without Kafka
    samples = scrape(client)
    assert samples[("auditrelay_outbox_backlog", frozenset())] == waiting


def test_metrics_is_not_part_of_the_api_schema(client: httpx.Client) -> None:
    assert "/metrics" not in client.get("/openapi.json").json()["paths"]
