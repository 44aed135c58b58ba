"""One look per recipe in every plot: its group, colour, marker and line.

Recipes are grouped as the recipe registry groups them (qmamba.quant.recipes), so a
reader sees at once the paper's method, its ablations and the baselines: the method is
drawn thick and red, its ablations dashed in warm colours, the simple baselines dotted
in greys, the published baselines thin in cool colours. Every drawn recipe gets its own
colour and its own marker, assigned in registry order (the same recipe set gives the same
look in every plot). A caller may pass its own recipe -> group mapping; unknown recipes
and groups get colours no other drawn recipe has.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from qmamba.io_utils import atomic_path
from qmamba.quant.recipes import get_recipe, list_recipes

GROUP_TITLES = {"method": "QMamba (the paper's method)", "ablation": "QMamba ablations",
                "baseline": "simple baselines", "literature": "published baselines"}
GROUP_LINES = {"method": ("-", 2.6, 7.5), "ablation": ("--", 1.6, 6.0),
               "baseline": (":", 1.6, 6.0), "literature": ("-", 1.1, 6.0)}  # style, width, marker size
_DEFAULT_LINE = ("-.", 1.2, 6.0)
_PALETTES = {
    "method": ("#d62728", "#e7298a"),
    "ablation": ("#ff7f0e", "#8c564b", "#e6550d", "#fdae6b"),
    "baseline": ("#4d4d4d", "#a6a6a6", "#737373"),
    "literature": ("#1f77b4", "#2ca02c", "#9467bd", "#e377c2", "#bcbd22", "#17becf", "#393b79",
                   "#637939", "#3182bd"),
}
_SPARE_COLOURS = ("#8c6d31", "#843c39", "#7b4173", "#31a354", "#756bb1", "#636363", "#6baed6",
                  "#74c476", "#9e9ac8", "#fd8d3c")
_MARKERS = ("o", "s", "D", "v", "^", "P", "X", "*", "h", "p", "<", ">", "d", "8", "H", "1", "2", "3",
            "4", "+", "x", (5, 1, 0), (6, 1, 0), (7, 1, 0), (8, 2, 0))  # the tuples: matplotlib's stars / asterisks


def registry_groups() -> dict[str, str]:
    """recipe -> its registered group, for every registered recipe."""
    return {name: get_recipe(name).group for name in list_recipes()}


@dataclass(frozen=True)
class RecipeStyle:
    recipe: str
    group: str
    colour: str
    marker: str | tuple  # a matplotlib marker: a code or (sides, style, angle)
    linestyle: str
    linewidth: float
    markersize: float

    @property
    def group_title(self) -> str:
        return GROUP_TITLES.get(self.group, self.group)


def recipe_styles(recipes: Sequence[str], groups: Mapping[str, str] | None = None
                  ) -> list[RecipeStyle]:
    """The styles of `recipes`, ordered by group (method, ablations, simple baselines,
    published baselines, then other groups) and within a group by registry order, then
    the given order. `groups`: recipe -> group (default: the registry's; recipes it lacks
    fall back to the registry, then 'other')."""
    registered = registry_groups()
    groups = {**registered, **(groups or {})}
    recipes = list(dict.fromkeys(recipes))
    order = list(GROUP_TITLES)
    for r in recipes:
        if groups.get(r, "other") not in order:
            order.append(groups.get(r, "other"))
    rank = {name: i for i, name in enumerate(registered)}
    ordered = sorted(recipes, key=lambda r: (order.index(groups.get(r, "other")),
                                             rank.get(r, len(rank)), recipes.index(r)))
    spare = list(_SPARE_COLOURS)
    taken: dict[str, int] = {}
    out = []
    for k, r in enumerate(ordered):
        g = groups.get(r, "other")
        palette = _PALETTES.get(g, ())
        i = taken.get(g, 0)
        taken[g] = i + 1
        colour = palette[i] if i < len(palette) else spare.pop(0) if spare else "#000000"
        ls, lw, ms = GROUP_LINES.get(g, _DEFAULT_LINE)
        out.append(RecipeStyle(r, g, colour, _MARKERS[k % len(_MARKERS)], ls, lw, ms))
    return out


def grouped_legend(fig, styles: Sequence[RecipeStyle], loc: str = "outside right upper",
                   fontsize: float = 8.5, extra: Sequence = (), lines: bool = True):
    """A figure legend listing the recipes under bold group titles; `extra`: more
    (handle, label) pairs at the end (e.g. the FP line); `lines=False`: markers only."""
    from matplotlib.lines import Line2D

    handles, labels, titles = [], [], []
    group = None
    for s in styles:
        if s.group != group:
            group = s.group
            titles.append(len(labels))
            handles.append(Line2D([], [], linestyle="none"))
            labels.append(s.group_title)
        handles.append(Line2D([], [], color=s.colour, marker=s.marker,
                              linestyle=s.linestyle if lines else "none",
                              linewidth=s.linewidth, markersize=s.markersize))
        labels.append(f"  {s.recipe}")
    for h, lab in extra:
        handles.append(h)
        labels.append(lab)
    legend = fig.legend(handles, labels, loc=loc, fontsize=fontsize, frameon=False,
                        handlelength=2.6, borderaxespad=0.6)
    for i in titles:
        legend.get_texts()[i].set_fontweight("bold")
    return legend


def new_figure(width: float, height: float):
    """A matplotlib Figure on the Agg canvas (no pyplot, no global state, no display)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_png(fig, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Write `fig` to `path` as PNG, atomically."""
    out = Path(path)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return out
