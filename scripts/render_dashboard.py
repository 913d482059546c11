"""Render the Grafana dashboard squall generates for a topology to a PNG, with data from a real run.

    python scripts/render_dashboard.py examples/pistats/topology.yaml docs/images/dashboard.png [--rows 4]

Needs matplotlib (``pip install matplotlib``; not a squall dependency). The layout, titles, units
and legends come from the generated dashboard JSON (``squall dashboards``); each panel's series
come from running the topology on a copy of its directory with the metrics recorder and reading,
for each target, the metric its PromQL names. Nothing is drawn by hand.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from squall.deploy.local import LocalRunner  # noqa: E402
from squall.observability.dashboards import grafana_dashboard  # noqa: E402
from squall.observability.metrics import BatchSample, Recorder  # noqa: E402
from squall.topology.loader import load  # noqa: E402

METRIC = re.compile(r"squall_[a-z_]+")
COMPONENT = re.compile(r'component="([^"]+)"')
BY = re.compile(r"by \((\w+)\)")


class Samples:
    def __init__(self) -> None:
        self.items: list[BatchSample] = []

    def record(self, s: BatchSample) -> None:
        self.items.append(s)


def series(expr: str, samples: list[BatchSample], t: list[float]) -> dict[str, list[float]]:
    """The values a target would show, per legend key, one point per batch."""
    name = METRIC.search(expr).group(0)  # type: ignore[union-attr]
    comp = COMPONENT.search(expr)
    by = BY.search(expr)
    dt = [max(b - a, 1e-6) for a, b in zip([0.0, *t], t, strict=False)]
    out: dict[str, list[float]] = {}
    if name == "squall_topology_records_total":
        for o in ("committed", "dead_lettered", "filtered", "failed"):
            out[o] = [s.outcomes.get(o, 0) / d for s, d in zip(samples, dt, strict=True)]
    elif name == "squall_records_total" and comp:
        for s, d in zip(samples, dt, strict=True):
            c = next(c for c in s.components if c.id == comp.group(1))
            for label, n in c.outcome_counts():
                out.setdefault(label, []).append(n / d)
    elif name == "squall_component_duration_seconds_bucket" and comp:
        out["p99"] = [
            next(c.seconds for c in s.components if c.id == comp.group(1)) for s in samples
        ]
    elif name.startswith("squall_batch_duration_seconds"):
        out["p99" if "quantile" in expr else "mean"] = [s.seconds for s in samples]
    elif name == "squall_batches_total":
        for status in ("ok", "records_failed", "failed"):
            out[status] = [float(s.status == status) / d for s, d in zip(samples, dt, strict=True)]
    elif name == "squall_millis_behind_latest":
        out.update(
            {
                k: [s.millis_behind.get(k, 0) for s in samples]
                for s in samples[:1]
                for k in s.millis_behind
            }
        )
    elif name == "squall_iterator_age_seconds":  # plotted in ms (`* 1000`), as the lag
        if any(s.iterator_age_ms for s in samples):
            out["iterator age"] = [max(s.iterator_age_ms.values(), default=0) for s in samples]
    if by is None and len(out) > 1:
        out = {k: v for k, v in out.items() if k in expr}
    return {k: v for k, v in out.items() if any(v)}


def render(topology: Path, png: Path, rows: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / topology.parent.name
        shutil.copytree(topology.parent, work, ignore=shutil.ignore_patterns("out", "*.db"))
        topo = load(work / topology.name)
        samples = Samples()
        recorder = Recorder(topo.name, [samples])
        LocalRunner(topo, batch_size=100, recorder=recorder).run()
    t, acc = [], 0.0
    for s in samples.items:
        acc += s.seconds
        t.append(acc)
    dash = grafana_dashboard(topo)
    panels = dash["panels"]
    row_ys = [p["gridPos"]["y"] for p in panels if p["type"] == "row"]
    limit = row_ys[rows] if rows < len(row_ys) else 10_000
    panels = [p for p in panels if p["gridPos"]["y"] < limit]
    height = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    unit_px = 0.42
    fig = plt.figure(figsize=(24 * unit_px * 1.6, height * unit_px))
    fig.patch.set_facecolor("#111217")
    for p in panels:
        g = p["gridPos"]
        left, width = g["x"] / 24, g["w"] / 24
        bottom, h = 1 - (g["y"] + g["h"]) / height, g["h"] / height
        if p["type"] == "row":
            fig.text(
                left + 0.005,
                bottom + h / 2,
                p["title"],
                color="#d8d9da",
                fontsize=12,
                weight="bold",
                va="center",
            )
            continue
        ax = fig.add_axes(
            (left + 0.035, bottom + 0.02 * 9 / height * 3, width - 0.045, h - 0.09 * 9 / height * 3)
        )
        ax.set_facecolor("#181b1f")
        for side in ax.spines.values():
            side.set_color("#2c3235")
        ax.tick_params(colors="#9fa7b3", labelsize=7)
        unit = p["fieldConfig"]["defaults"]["unit"]
        ax.set_title(f"{p['title']}  [{unit}]", color="#d8d9da", fontsize=9, loc="left")
        drawn = 0
        for target in p["targets"]:
            for label, values in series(target["expr"], samples.items, t).items():
                ax.plot(t, values, linewidth=1.2, label=label)
                drawn += 1
        if drawn:
            ax.legend(
                fontsize=7,
                loc="upper right",
                facecolor="#181b1f",
                labelcolor="#d8d9da",
                edgecolor="#2c3235",
            )
        else:
            ax.text(
                0.5,
                0.5,
                "no data in this run",
                color="#9fa7b3",
                ha="center",
                va="center",
                transform=ax.transAxes,
                fontsize=8,
            )
    fig.text(
        0.99,
        0.002,
        f"{dash['title']} — generated by squall dashboards; data: {len(t)} batches of "
        f"{topology.parent.name}",
        color="#6e7681",
        fontsize=7,
        ha="right",
    )
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=80, facecolor=fig.get_facecolor())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("topology", type=Path)
    ap.add_argument("png", type=Path)
    ap.add_argument(
        "--rows", type=int, default=5, help="rows of the dashboard to draw (overview + components)"
    )
    a = ap.parse_args()
    render(a.topology, a.png, a.rows)


if __name__ == "__main__":
    main()
