"""Every metric the dashboard and the alert rules read is one auditrelay exposes
(auditrelay/observability/metrics.py), or one Prometheus makes itself (``up``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from tests.unit.deploy.promql import PROMETHEUS_OWN, exposed_names, metric_names

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"


def dashboard_exprs() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "auditrelay.json").read_text())
    exprs: list[str] = []
    for panel in dashboard["panels"]:
        for inner in [panel, *panel.get("panels", [])]:
            exprs.extend(target["expr"] for target in inner.get("targets", []))
    for variable in dashboard["templating"]["list"]:
        query: Any = variable.get("query")
        if variable["type"] == "query":
            exprs.append(query["query"] if isinstance(query, dict) else query)
    return exprs


def rule_exprs() -> list[str]:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def unknown(exprs: list[str]) -> dict[str, set[str]]:
    known = exposed_names() | PROMETHEUS_OWN
    return {expr: names - known for expr in exprs if (names := metric_names(expr)) - known}


def test_the_dashboard_reads_only_exposed_metrics() -> None:
    exprs = dashboard_exprs()
    assert len(exprs) > 30
    assert unknown(exprs) == {}


def test_the_alert_rules_read_only_exposed_metrics() -> None:
    exprs = rule_exprs()
    assert len(exprs) == 7
    assert unknown(exprs) == {}


def test_names_are_found_in_expressions() -> None:
    assert metric_names(
        'histogram_quantile(0.99, sum by (le) (rate(auditrelay_delivery_latency_seconds_bucket'
        '{job=~"$job"}[$__rate_interval])))') == {"auditrelay_delivery_latency_seconds_bucket"}
    assert metric_names('(max by (destination) (a_gauge{x!~"y|z"}) > 900) unless '
                        'sum by (destination) (increase(b_total{outcome="d"}[15m])) > 0 '
                        'and on (i) c offset 5m') == {"a_gauge", "b_total", "c"}
    assert metric_names("time() - x_seconds > 1e3") == {"x_seconds"}
    assert metric_names("label_values(g, destination)") == {"g"}


def test_a_misspelt_or_suffixless_name_is_unknown() -> None:
    assert unknown(['sum(rate(auditrelay_events_in{outcome="routed"}[5m]))',
                    "auditrelay_delivery_latency_seconds > 1",
                    "max(auditrelay_consumer_lags)"]) == {
        'sum(rate(auditrelay_events_in{outcome="routed"}[5m]))': {"auditrelay_events_in"},
        "auditrelay_delivery_latency_seconds > 1": {"auditrelay_delivery_latency_seconds"},
        "max(auditrelay_consumer_lags)": {"auditrelay_consumer_lags"}}


def test_histogram_and_counter_series_are_exposed_with_their_suffixes() -> None:
    names = exposed_names()
    assert {"auditrelay_delivery_latency_seconds_bucket", "auditrelay_delivery_latency_seconds_sum",
            "auditrelay_delivery_latency_seconds_count", "auditrelay_deliveries_total",
            "auditrelay_api_requests_total", "auditrelay_outbox_backlog",
            "process_cpu_seconds_total"} <= names
