"""deploy/grafana/auditrelay.json loads as a Grafana dashboard.

Checked against the JSON Schema of the dashboard model's required fields
(``grafana_dashboard.schema.json``), then what a schema cannot say: unique panel
ids and refIds, panels that fit the 24-column grid without overlapping, every
``$variable`` defined, every panel on the dashboard's datasource variable, and the
panels the operators need (issue #15) present.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest

from tests.unit.deploy.promql import metric_names

ROOT = Path(__file__).resolve().parents[3]
DASHBOARD = ROOT / "deploy" / "grafana" / "auditrelay.json"
SCHEMA = Path(__file__).with_name("grafana_dashboard.schema.json")
#: Grafana's own variables.
BUILTIN_VARIABLES = frozenset({"__rate_interval", "__interval", "__range", "__range_s",
                               "__interval_ms", "__name"})


def load() -> dict[str, Any]:
    data = json.loads(DASHBOARD.read_text())
    assert isinstance(data, dict)
    return data


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, those inside collapsed rows too."""
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def schema_errors(dashboard: dict[str, Any]) -> list[str]:
    validator = jsonschema_rs.validator_for(json.loads(SCHEMA.read_text()))
    return [f"{list(error.instance_path)}: {error.message}"
            for error in validator.iter_errors(dashboard)]


def test_the_dashboard_matches_the_schema() -> None:
    assert schema_errors(load()) == []


@pytest.mark.parametrize("breakage", ["no schemaVersion", "panel without gridPos",
                                      "target without expr", "unknown panel type"])
def test_the_schema_refuses_a_broken_dashboard(breakage: str) -> None:
    dashboard = load()
    graph = next(p for p in dashboard["panels"] if p["type"] == "timeseries")
    if breakage == "no schemaVersion":
        del dashboard["schemaVersion"]
    elif breakage == "panel without gridPos":
        del graph["gridPos"]
    elif breakage == "target without expr":
        del graph["targets"][0]["expr"]
    else:
        graph["type"] = "graph-that-does-not-exist"
    assert schema_errors(dashboard)


def test_panel_ids_and_ref_ids_are_unique() -> None:
    every = panels(load())
    ids = [p["id"] for p in every]
    assert len(ids) == len(set(ids))
    for panel in every:
        refs = [t["refId"] for t in panel.get("targets", [])]
        assert len(refs) == len(set(refs)), panel["title"]


def test_panels_fit_the_grid_without_overlapping() -> None:
    taken: dict[tuple[int, int], str] = {}
    for panel in load()["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in taken, f"{panel['title']} overlaps {taken[(x, y)]}"
                taken[(x, y)] = panel["title"]


def test_every_variable_is_defined_and_every_panel_uses_the_datasource_variable() -> None:
    dashboard = load()
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert "datasource" in variables
    text = json.dumps(dashboard["panels"])
    used = set(re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", text))
    assert used - variables - BUILTIN_VARIABLES == set()
    for panel in panels(dashboard):
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert all(t["datasource"] == panel["datasource"] for t in panel["targets"])


def test_the_panels_operators_need_are_there() -> None:
    """Issue #15: throughput, lag per stage, oldest undelivered age per destination,
    failing and disabled destinations, dead letters, retry tiers, worker heartbeat and up."""
    used: set[str] = set()
    for panel in panels(load()):
        for target in panel.get("targets", []):
            used |= metric_names(target["expr"])
    assert {"auditrelay_events_in_total", "auditrelay_batches_out_total",
            "auditrelay_deliveries_total", "auditrelay_consumer_lag",
            "auditrelay_destination_oldest_undelivered_age_seconds",
            "auditrelay_parked_destinations", "auditrelay_dead_letters",
            "auditrelay_dead_lettered_total", "auditrelay_retry_tier_size",
            "auditrelay_worker_heartbeat_timestamp_seconds", "up"} <= used
