"""The demo's accuracy plot: top-1 against the bit setting, one line per recipe, one
panel per model, the full-precision accuracy as a reference line, the axis zoomed to the
data. The per-point SQNR plot lives in qmamba.report.sqnr_plot.

Input (the demo's results.json content): `models` {name: {fp: {top1}}}, `settings`
(x order), `recipes`, `rows` [{model, recipe, setting, top1, ...}], `eval`
{num_images, limit, total}. Several seeds, either way:
- one row per seed: rows that share (model, recipe, setting) and differ in `seed`; the
  plot draws their mean and, as an error bar, their sample standard deviation;
- one row holding the summary: `top1_mean` (or `top1`), `top1_std` and `seeds` (a count
  or a list).
"""
from __future__ import annotations

import math
import os
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from qmamba.report.plot_style import grouped_legend, new_figure, recipe_styles, save_png
from qmamba.report.sqnr_plot import plot_point_sqnr

__all__ = ["Stat", "accuracy_stats", "plot_accuracy_vs_bits", "plot_point_sqnr"]


@dataclass(frozen=True)
class Stat:
    """A top-1 accuracy over `n` seeds: mean and sample standard deviation (None for one)."""

    mean: float
    std: float | None
    n: int


def _row_stat(row: Mapping) -> Stat | None:
    mean = row.get("top1_mean", row.get("top1"))
    if mean is None:
        return None
    seeds = row.get("seeds")
    n = len(seeds) if isinstance(seeds, (list, tuple)) else int(seeds or 1)
    std = row.get("top1_std")
    return Stat(float(mean), float(std) if std is not None else None, n)


def _combine(stats: list[Stat]) -> Stat:
    if len(stats) == 1:
        return stats[0]
    values = [s.mean for s in stats]
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    return Stat(mean, std, len(values))


def accuracy_stats(results: Mapping) -> dict[tuple[str, str, str], Stat]:
    """(model, recipe, setting) -> Stat over the rows' seeds (see the module docstring)."""
    grouped: dict[tuple[str, str, str], list[Stat]] = {}
    for row in results.get("rows", []):
        stat = _row_stat(row)
        if stat is not None:
            grouped.setdefault((row["model"], row["recipe"], row["setting"]), []).append(stat)
    return {k: _combine(v) for k, v in grouped.items()}


def _fp_top1(results: Mapping, model: str, stats) -> float | None:
    fp = results.get("models", {}).get(model, {}).get("fp") or {}
    if fp.get("top1") is not None:
        return float(fp["top1"])
    stat = stats.get((model, "fp", "FP"))
    return stat.mean if stat is not None else None


def _y_range(values: list[tuple[int, float, float]], fp: float | None) -> tuple[float, float]:
    """The axis zoomed to `values` ((setting, mean, error) triples) and FP, with a margin,
    within 0..100. A collapsed recipe (at most two per panel: far below at least three
    others at the same setting) stays off the axis so that it does not flatten the rest;
    the panel marks it with its value at the bottom edge."""
    hi = max([v + e for _, v, e in values] + ([fp] if fp is not None else []))
    collapsed = []
    for x in dict.fromkeys(x for x, _, _ in values):
        here = sorted(v - e for k, v, e in values if k == x)
        if len(here) >= 4 and here[1] - here[0] > 0.5 * (hi - here[1]):
            collapsed.append((here[0], here[1] - here[0]))
    skip = {v for v, _ in sorted(collapsed, key=lambda c: -c[1])[:2]}
    lows = [v - e for _, v, e in values if v - e not in skip] + ([fp] if fp is not None else [])
    lo = min(lows) if lows else min(v - e for _, v, e in values)
    pad = max(0.06 * (hi - lo), 0.5)
    return max(lo - pad, 0.0), min(hi + pad, 100.0)


def _mark_off_axis(ax, xs, ys, style, lo: float) -> bool:
    """Values below the axis: a marker on the bottom edge and the value beside it.
    Returns whether there were any."""
    off = False
    for x, y in zip(xs, ys, strict=True):
        if y < lo:
            ax.plot([x], [lo], marker="v", color=style.colour, markersize=7, clip_on=False,
                    linestyle="none", zorder=4)
            ax.annotate(f"{style.recipe} {y:.1f}", (x, lo), xytext=(-4, 4),
                        textcoords="offset points", ha="right", va="bottom", fontsize=7.5,
                        color=style.colour)
            off = True
    return off


def _series(model: str, recipe: str, settings, stats, offset: float):
    """x, mean, std per setting; NaN where a setting did not run (the line breaks there)."""
    xs, ys, errs = [], [], []
    for x, setting in enumerate(settings):
        st = stats.get((model, recipe, setting))
        xs.append(x + offset)
        ys.append(st.mean if st is not None else math.nan)
        errs.append((st.std or 0.0) if st is not None else 0.0)
    return xs, ys, errs


def _bridge_gaps(ax, xs, ys, style) -> None:
    """A faint line across settings a recipe did not run, so its trend stays readable."""
    present = [(x, y) for x, y in zip(xs, ys, strict=True) if not math.isnan(y)]
    for (x0, y0), (x1, y1) in zip(present, present[1:], strict=False):
        if x1 - x0 > 1.5:  # a setting between them is missing
            ax.plot([x0, x1], [y0, y1], color=style.colour, linestyle=style.linestyle,
                    linewidth=style.linewidth, alpha=0.35, zorder=1)


def _draw_model(ax, model: str, settings, styles, stats, fp: float | None
                ) -> tuple[bool, bool]:
    """One panel; returns whether any recipe has error bars, and any value is off the axis."""
    spread = 0.36  # recipes side by side within a setting, so points and bars do not overlap
    width = spread / max(len(styles) - 1, 1)
    any_err, any_off, values, drawn = False, False, [], []
    for k, s in enumerate(styles):
        xs, ys, errs = _series(model, s.recipe, settings, stats, -spread / 2 + k * width)
        if all(math.isnan(y) for y in ys):
            continue
        drawn.append((s, xs, ys))
        values += [(x, y, e) for x, (y, e) in enumerate(zip(ys, errs, strict=True))
                   if not math.isnan(y)]
        any_err = any_err or any(errs)
        ax.errorbar(xs, ys, yerr=errs if any(errs) else None, color=s.colour, marker=s.marker,
                    linestyle=s.linestyle, linewidth=s.linewidth, markersize=s.markersize,
                    capsize=2.5, elinewidth=1.0, zorder=3 if s.group == "method" else 2,
                    markeredgecolor="white" if s.group == "method" else s.colour)
        _bridge_gaps(ax, xs, ys, s)
    if fp is not None:
        ax.axhline(fp, color="black", linestyle=(0, (5, 3)), linewidth=1.1, zorder=1)
        ax.annotate(f"FP {fp:.2f}", (1.0, fp), xycoords=("axes fraction", "data"),
                    xytext=(-3, 3), textcoords="offset points", ha="right", va="bottom",
                    fontsize=8.5)
    if values:
        lo, hi = _y_range(values, fp)
        ax.set_ylim(lo, hi)
        for s, xs, ys in drawn:
            any_off |= _mark_off_axis(ax, xs, ys, s, lo)
    ax.set_xticks(range(len(settings)), settings)
    ax.set_xlim(-0.5, len(settings) - 0.5)
    ax.set_title(model, fontsize=11)
    ax.set_xlabel("setting: W = weight bits, A = activation bits")
    ax.grid(True, axis="y", alpha=0.3)
    for x in range(len(settings) - 1):
        ax.axvline(x + 0.5, color="0.9", linewidth=0.8, zorder=0)
    return any_err, any_off


def _caption(results: Mapping, stats, any_err: bool, any_off: bool) -> str:
    ev = results.get("eval", {})
    notes = []
    if ev.get("limit") and ev.get("num_images"):
        n = int(ev["num_images"])
        notes.append(f"first {n:,} of {int(ev.get('total') or 0):,} test images "
                     f"(sampling error about ±{100 * math.sqrt(0.9 * 0.1 / n):.1f} points at 90%)")
    if any_err:
        seeds = sorted({s.n for s in stats.values() if s.n > 1})
        notes.append(f"error bars: ±1 standard deviation over {'/'.join(map(str, seeds))} seeds")
    notes.append("y axis zoomed to the data" + ("; ▼ marks a value below it" if any_off else ""))
    return "; ".join(notes)


def plot_accuracy_vs_bits(results: Mapping, path: str | os.PathLike,
                          groups: Mapping[str, str] | None = None) -> Path:
    """Draw `results` (the demo's results.json content, see the module docstring) to a
    PNG at `path`, atomically. `groups`: recipe -> group ('method', 'ablation', 'baseline',
    'literature' or a name of your own); default: the recipe registry's groups."""
    from matplotlib.lines import Line2D

    stats = accuracy_stats(results)
    listed = [r for r in results.get("recipes", []) if r != "fp"]
    recipes = listed + [r for (_, r, _) in stats if r != "fp" and r not in listed]
    styles = recipe_styles(recipes, groups)
    settings = list(results.get("settings") or
                    dict.fromkeys(s for (_, r, s) in stats if r != "fp"))
    models = list(results.get("models") or dict.fromkeys(m for m, _, _ in stats))
    n = max(len(models), 1)
    fig = new_figure(4.6 * n + 2.2, 4.6)
    axes = fig.subplots(1, n, squeeze=False)[0]
    any_err = any_off = False
    for ax, model in zip(axes, models, strict=False):
        err, off = _draw_model(ax, model, settings, styles, stats, _fp_top1(results, model, stats))
        any_err, any_off = any_err or err, any_off or off
    axes[0].set_ylabel("top-1 (%)")
    fp_handle = Line2D([], [], color="black", linestyle=(0, (5, 3)), linewidth=1.1)
    grouped_legend(fig, styles, loc="outside right center",
                   extra=[(fp_handle, "full precision (FP)")])
    fig.suptitle("top-1 accuracy (%) of each quantization recipe by bit setting", fontsize=11)
    caption = textwrap.fill(_caption(results, stats, any_err, any_off), int(fig.get_figwidth() * 15))
    fig.supxlabel(caption, fontsize=8, color="0.3")
    return save_png(fig, path)
