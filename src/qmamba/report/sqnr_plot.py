"""Which quantization point loses how many dB, per recipe: the picture behind the table.

From the `points[*].sqnr_db` of `qmamba quantize` reports (report.json): one row of two
panels per (model, setting).
- Left: every point's SQNR grouped by role (weights, Linear inputs, u, delta, A_bar,
  B_bar, C, h, y, z), one small dot per point and a large marker at each recipe's median.
- Right: the points with the lowest SQNR (lowest over the recipes), each recipe's value.
SQNR = 10 log10(signal power / quantization-noise power): 6 dB is about one bit; higher is
better. Reports of the same (model, setting, method) with other seeds are averaged per point.
"""
from __future__ import annotations

import json
import math
import os
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path

from qmamba.report.plot_style import grouped_legend, new_figure, recipe_styles, save_png
from qmamba.report.summary import sqnr_value

ROLE_LABELS = {
    "weight": "weights", "linear_input": "Linear/Conv inputs", "ssm.u": "u (scan input)",
    "ssm.delta": "Δ (step size)", "ssm.A": "Ā = exp(ΔA)", "ssm.B": "B̄ = ΔB (·u)",
    "ssm.C": "C", "ssm.h": "h (hidden state)", "ssm.y": "y (scan output)", "ssm.z": "z (gate)",
}
WORST_POINTS = 10

Panel = dict[str, dict[str, tuple[str, float]]]  # method -> point -> (role, dB)


def _load(report) -> Mapping:
    if isinstance(report, Mapping):
        return report
    return json.loads(Path(report).read_text())


def _finite_points(report: Mapping) -> dict[str, tuple[str, float]]:
    out = {}
    for name, info in (report.get("points") or {}).items():
        v = sqnr_value(info.get("sqnr_db"))
        if v is not None and math.isfinite(v):
            out[name] = (str(info.get("role") or "other"), v)
    return out


def log_grid_methods(reports: Sequence) -> list[str]:
    """Methods whose A_bar points use a log grid (LtSQ): their A_bar SQNR is low by design."""
    out: dict[str, None] = {}
    for rep in map(_load, reports):
        for info in (rep.get("points") or {}).values():
            if info.get("role") == "ssm.A" and info.get("grid", "uniform") != "uniform":
                out[str(rep.get("method", "?"))] = None
    return list(out)


def collect_point_sqnr(reports: Sequence) -> tuple[dict[tuple[str, str], Panel], list[str]]:
    """({(model, setting): {method: {point: (role, mean dB over seeds)}}}, the reports
    without SQNR as 'model method setting')."""
    pooled: dict[tuple[str, str], dict[str, dict[str, list]]] = {}
    missing = []
    for raw in reports:
        rep = _load(raw)
        model, method = str(rep.get("model", "?")), str(rep.get("method", "?"))
        setting = str(rep.get("setting", "?"))
        points = _finite_points(rep)
        if not points:
            missing.append(f"{model} {method} {setting}")
            continue
        per_point = pooled.setdefault((model, setting), {}).setdefault(method, {})
        for name, (role, db) in points.items():
            per_point.setdefault(name, [role, []])[1].append(db)
    panels = {key: {m: {p: (role, statistics.fmean(v)) for p, (role, v) in pts.items()}
                    for m, pts in methods.items()}
              for key, methods in pooled.items()}
    return panels, missing


def _roles(panel: Panel) -> list[str]:
    roles: dict[str, None] = {}
    for points in panel.values():
        for role, _ in points.values():
            roles.setdefault(role, None)
    return list(roles)


def _offsets(n: int, band: float = 0.72) -> list[float]:
    if n == 1:
        return [0.0]
    return [-band / 2 + k * band / (n - 1) for k in range(n)]


def _draw_roles(ax, panel: Panel, styles) -> None:
    roles = _roles(panel)
    drawn = [s for s in styles if s.recipe in panel]
    for s, dy in zip(drawn, _offsets(len(drawn)), strict=True):
        points = panel[s.recipe]
        for r, role in enumerate(roles):
            values = [db for rl, db in points.values() if rl == role]
            if not values:
                continue
            ax.scatter(values, [r + dy] * len(values), s=9, color=s.colour, alpha=0.35,
                       linewidths=0, zorder=2)
            ax.plot([statistics.median(values)], [r + dy], marker=s.marker, color=s.colour,
                    markersize=s.markersize + 1, markeredgecolor="black",
                    markeredgewidth=0.6, linestyle="none", zorder=3)
    ax.set_yticks(range(len(roles)), [ROLE_LABELS.get(r, r) for r in roles])
    ax.set_ylim(len(roles) - 0.5, -0.5)
    for r in range(len(roles) - 1):
        ax.axhline(r + 0.5, color="0.88", linewidth=0.8, zorder=0)
    ax.set_xlabel("SQNR (dB; higher is better, 6 dB ≈ 1 bit)")
    ax.grid(True, axis="x", alpha=0.3)


def _worst(panel: Panel, k: int) -> list[str]:
    lowest: dict[str, float] = {}
    for points in panel.values():
        for name, (_, db) in points.items():
            lowest[name] = min(db, lowest.get(name, math.inf))
    return sorted(lowest, key=lowest.get)[:k]


def _draw_worst(ax, panel: Panel, styles, k: int) -> None:
    names = _worst(panel, k)
    drawn = [s for s in styles if s.recipe in panel]
    for r, name in enumerate(names):
        vals = [panel[s.recipe][name][1] for s in drawn if name in panel[s.recipe]]
        ax.plot([min(vals), max(vals)], [r, r], color="0.75", linewidth=1.0, zorder=1)
    for s in drawn:
        pts = [(panel[s.recipe][n][1], r) for r, n in enumerate(names) if n in panel[s.recipe]]
        if pts:
            ax.plot([x for x, _ in pts], [y for _, y in pts], marker=s.marker, color=s.colour,
                    markersize=s.markersize, linestyle="none", markeredgecolor="black",
                    markeredgewidth=0.5, zorder=3 if s.group == "method" else 2)
    ax.set_yticks(range(len(names)), names, fontsize=7.5)
    ax.set_ylim(len(names) - 0.5, -0.5)
    ax.set_xlabel("SQNR (dB)")
    ax.set_title(f"the {len(names)} points with the lowest SQNR", fontsize=9.5)
    ax.grid(True, axis="x", alpha=0.3)


def plot_point_sqnr(reports: Sequence, path: str | os.PathLike,
                    groups: Mapping[str, str] | None = None,
                    worst: int = WORST_POINTS) -> Path:
    """Draw the per-point SQNR of `reports` (report.json contents or paths) to a PNG at
    `path`, atomically. Reports without SQNR values are named in a note (a figure that
    only says so if none has any). `groups`: recipe -> group, as plot_accuracy_vs_bits."""
    reports = [_load(r) for r in reports]
    panels, missing = collect_point_sqnr(reports)
    methods = list(dict.fromkeys(m for panel in panels.values() for m in panel))
    styles = recipe_styles(methods, groups)
    rows = max(len(panels), 1)
    height = sum(max(len(_roles(p)), min(worst, 6)) * 0.42 + 1.3 for p in panels.values())
    if not panels:
        fig = new_figure(8.0, 2.5)
        fig.text(0.5, 0.5, "no SQNR values in these reports (the float model has none; "
                 "qmamba quantize\nmeasures them on a few calibration images)" + _note(missing),
                 ha="center", va="center", fontsize=10)
        return save_png(fig, path)
    fig = new_figure(13.5, max(height, 2.5))
    grid = fig.add_gridspec(rows, 2, width_ratios=(1.35, 1),
                            height_ratios=[max(len(_roles(p)), 6) for p in panels.values()])
    for row, ((model, setting), panel) in enumerate(panels.items()):
        left, right = fig.add_subplot(grid[row, 0]), fig.add_subplot(grid[row, 1])
        _draw_roles(left, panel, styles)
        _draw_worst(right, panel, styles, worst)
        left.set_title(f"{model} {setting}: every point by role (dots), each recipe's median "
                       "(large marker)", fontsize=9.5)
    grouped_legend(fig, styles, loc="outside right center", lines=False)
    fig.suptitle("quantization noise per point: SQNR on the calibration images", fontsize=11)
    caption = _caption(missing, log_grid_methods(reports), kept_wider(reports))
    fig.supxlabel(caption, fontsize=8, color="0.3")
    return save_png(fig, path)


def _note(missing: Sequence[str]) -> str:
    if not missing:
        return ""
    shown = "; ".join(missing[:3]) + (f"; ... ({len(missing)} in all)" if len(missing) > 3 else "")
    return f"\nno SQNR recorded in: {shown}"


def kept_wider(reports: Sequence[Mapping]) -> bool:
    """Whether some point has more bits than its report's setting (e.g. the 8-bit patch
    embedding and head of a W4A4 model)."""
    for rep in reports:
        top = max(int(rep.get("w_bits") or 0), int(rep.get("a_bits") or 0))
        if top and any(int(i.get("bits") or 0) > top for i in (rep.get("points") or {}).values()):
            return True
    return False


def _caption(missing: Sequence[str], log_a: Sequence[str], wider: bool) -> str:
    text = "SQNR = 10·log10(signal power / quantization-noise power)"
    if wider:
        text += ("; the dots far right are points kept at more bits than the setting "
                 "(e.g. the 8-bit patch embedding and head)")
    if log_a:
        text += (f"\nĀ on LtSQ's log grid ({', '.join(log_a)}): a lower SQNR is expected, the "
                 "grid keeps relative precision next to 1; judge it by accuracy")
    return text + _note(missing)
