"""The metric names in PromQL expressions, and the names auditrelay exposes.

Enough PromQL for the expressions of deploy/ (not a parser): strings, label
matchers, range selectors and grouping clauses are removed, then every
identifier that is not a function call, a keyword or a unit is a metric name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

from prometheus_client import CollectorRegistry

from auditrelay.observability.metrics import API_REGISTRY, WORKER_REGISTRY

__all__ = ["PROMETHEUS_OWN", "exposed_names", "metric_names"]

#: Series Prometheus makes itself for every target.
PROMETHEUS_OWN: Final = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped"})

_KEYWORDS: Final = frozenset({"and", "or", "unless", "bool", "offset", "by", "without", "on",
                              "ignoring", "group_left", "group_right", "inf", "nan"})
_SUFFIXES: Final = {"counter": ("_total", "_created"), "gauge": ("",),
                    "histogram": ("_bucket", "_sum", "_count", "_created"),
                    "summary": ("", "_sum", "_count", "_created"), "info": ("_info",)}
_LABEL_VALUES: Final = re.compile(r"label_values\(\s*([A-Za-z_:][A-Za-z0-9_:]*)\s*,")


def metric_names(expr: str) -> set[str]:
    """The metric names an expression (or a ``label_values(metric, label)`` query) reads."""
    found = _LABEL_VALUES.match(expr.strip())
    if found:
        return {found.group(1)}
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        before = text[match.start() - 1] if match.start() else " "
        after = text[match.end():].lstrip()
        if before.isdigit() or before in ".$" or after.startswith("("):
            continue
        if match.group().lower() not in _KEYWORDS:
            names.add(match.group())
    return names


def exposed_names(registries: Iterable[CollectorRegistry] = (WORKER_REGISTRY, API_REGISTRY),
                  ) -> set[str]:
    """Every series name the registries can show, label children created or not."""
    names: set[str] = set()
    for registry in registries:
        for family in registry.collect():
            names.update(sample.name for sample in family.samples)
            names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",)))
    return names
