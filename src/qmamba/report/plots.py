"""The demo's plot: top-1 accuracy against the bit setting, one line per recipe,
one panel per model, the full-precision accuracy as a dashed line.

Uses matplotlib's object API with the Agg canvas (no pyplot, no global state, no display).
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from qmamba.io_utils import atomic_path


def plot_accuracy_vs_bits(results: Mapping, path: str | os.PathLike) -> Path:
    """Draw `results` (the demo's results.json content) to a PNG at `path`, atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    settings = list(results["settings"])
    recipes = [r for r in results["recipes"] if r != "fp"]
    models = list(results["models"])
    n = max(len(models), 1)
    fig = Figure(figsize=(5.2 * n, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, n, squeeze=False)[0]
    xs = list(range(len(settings)))
    markers = "osD^vP*X"
    for ax, model in zip(axes, models, strict=False):
        rows = [r for r in results["rows"] if r["model"] == model]
        for k, recipe in enumerate(recipes):
            by_setting = {r["setting"]: r["top1"] for r in rows if r["recipe"] == recipe}
            ys = [by_setting.get(s) for s in settings]
            pts = [(x, y) for x, y in zip(xs, ys, strict=True) if y is not None]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=markers[k % len(markers)],
                        label=recipe, linewidth=1.5, markersize=5)
        fp = results["models"][model]["fp"]["top1"]
        ax.axhline(fp, color="black", linestyle="--", linewidth=1, label=f"FP ({fp:.2f})")
        ax.set_xticks(xs, settings)
        ax.set_xlim(-0.3, max(len(settings) - 0.7, 0.3))
        ax.set_ylim(0, 100)
        ax.set_xlabel("setting (weight bits, activation bits)")
        ax.set_ylabel("top-1 (%)")
        ax.set_title(model)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    ev = results.get("eval", {})
    if ev.get("limit"):
        fig.suptitle(f"first {ev['num_images']:,} of {ev.get('total', 0):,} test images", fontsize=9)
    out = Path(path)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return out
