"""docs/operating.md's metric table names what the backends export: each Prometheus name with its
labels, each CloudWatch name an EMF document can hold; and every metric squall defines is there.
Metric names quoted anywhere else in the docs are defined too."""

from __future__ import annotations

import re

from squall.observability.emf import cloudwatch_name
from squall.observability.metrics import COMPONENT_OUTCOMES, METRICS, RECORD_OUTCOMES
from tests.test_doc_links import ROOT
from tests.test_doc_snippets import user_docs

#: The values each labelled metric's label takes in EMF (its CloudWatch names are suffixed with them).
LABEL_VALUES = {
    "records": [label for _, label in COMPONENT_OUTCOMES],
    "outcomes": list(RECORD_OUTCOMES),
    "batches": ["ok", "records_failed", "failed"],
    "sink_rows": ["written", "present"],
    "cache": ["hit", "miss"],
}
PROMETHEUS = re.compile(r"`(squall_\w+)(?:\{([\w,]*)\})?")


def cloudwatch_names() -> set[str]:
    names = {"ColdStart"}  # Powertools' own
    for spec in METRICS:
        if spec.cloudwatch is None:  # Prometheus only
            continue
        labels = LABEL_VALUES.get(spec.key)
        names |= {cloudwatch_name(spec.key, v) for v in labels} if labels else {spec.cloudwatch}
    return names


def metrics_table() -> list[list[str]]:
    text = (ROOT / "docs" / "operating.md").read_text()
    body = text.split("\n## Metrics\n", 1)[1].split("\n\n", 1)[0]
    return [re.split(r"(?<!\\)\|", line)[1:-1] for line in body.splitlines()[2:]]


def test_the_metric_table_lists_every_metric_with_its_labels():
    specs = {spec.prometheus: spec for spec in METRICS}
    documented = {}
    for cells in metrics_table():
        for name, labels in PROMETHEUS.findall(cells[0]):
            documented[name] = tuple(labels.split(",")) if labels else ()
    assert documented == {name: spec.labels for name, spec in specs.items()}


def test_every_cloudwatch_name_of_the_table_is_one_emf_writes():
    known = cloudwatch_names()
    written = {
        name
        for cells in metrics_table()
        for name in re.findall(r"`([A-Z]\w+)`", cells[1])
        if name not in ("Topology", "Component")  # dimensions
    }
    assert written - known == set()
    assert written >= known - {"Checkpoints"}  # Lambda checkpoints itself: no EMF metric


def test_every_metric_name_quoted_in_the_docs_is_defined():
    prefixes = {spec.prometheus for spec in METRICS}
    defined = prefixes | {f"{p}_{s}" for p in prefixes for s in ("bucket", "sum", "count")}
    metric_like = re.compile(
        r"\bsquall_\w+_(?:total|seconds|bytes|milliseconds|latest|bucket|sum|count)\b"
    )
    quoted = {
        (path.relative_to(ROOT).as_posix(), name)
        for path in user_docs()
        for name in metric_like.findall(path.read_text())
    }
    assert {(where, name) for where, name in quoted if name not in defined} == set()
