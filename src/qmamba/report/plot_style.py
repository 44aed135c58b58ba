"""One look per recipe in every plot: its group, colour, marker and line.

Recipes are grouped so a reader sees at once the paper's method, its ablations and the
baselines: the paper's method is drawn thick and red, its ablations dashed in warm
colours, the simple baselines dotted in greys, the published baselines thin in cool
colours. Every recipe has its own colour and its own marker. A caller (e.g. the recipe
registry) may pass its own recipe -> group mapping; unknown recipes and groups get
colours and markers no other drawn recipe has.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from qmamba.io_utils import atomic_path

RECIPE_GROUPS: dict[str, str] = {
    "qmamba": "paper",
    "qmamba_no_ltsq": "ablation", "qmamba_no_tgq": "ablation",
    "minmax": "simple", "percentile": "simple",
    "ptq4vm": "literature", "quamba": "literature", "mambaquant": "literature",
    "ptq4vit": "literature", "repq_vit": "literature", "qvlm": "literature",
}
GROUP_TITLES = {"paper": "QMamba (the paper's method)", "ablation": "QMamba ablations",
                "simple": "simple baselines", "literature": "published baselines"}
GROUP_LINES = {"paper": ("-", 2.6, 7.5), "ablation": ("--", 1.6, 6.0),
               "simple": (":", 1.6, 6.0), "literature": ("-", 1.1, 6.0)}  # style, width, marker size
_DEFAULT_LINE = ("-.", 1.2, 6.0)
_KNOWN = {  # recipe -> (colour, marker)
    "qmamba": ("#d62728", "o"),
    "qmamba_no_ltsq": ("#ff7f0e", "s"), "qmamba_no_tgq": ("#8c564b", "D"),
    "minmax": ("#4d4d4d", "v"), "percentile": ("#a6a6a6", "^"),
    "ptq4vm": ("#1f77b4", "P"), "quamba": ("#2ca02c", "X"), "mambaquant": ("#9467bd", "*"),
    "ptq4vit": ("#e377c2", "h"), "repq_vit": ("#bcbd22", "p"), "qvlm": ("#17becf", "<"),
}
_SPARE_COLOURS = ("#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd",
                  "#e6550d", "#31a354", "#756bb1", "#636363")
_SPARE_MARKERS = (">", "d", "8", "H", "1", "2", "3", "4", "+", "x")


@dataclass(frozen=True)
class RecipeStyle:
    recipe: str
    group: str
    colour: str
    marker: str
    linestyle: str
    linewidth: float
    markersize: float

    @property
    def group_title(self) -> str:
        return GROUP_TITLES.get(self.group, self.group)


def recipe_styles(recipes: Sequence[str], groups: Mapping[str, str] | None = None
                  ) -> list[RecipeStyle]:
    """The styles of `recipes`, ordered by group (paper, ablations, simple, published,
    then other groups) and within a group in the given order. `groups`: recipe -> group
    (default RECIPE_GROUPS; recipes it lacks fall back to RECIPE_GROUPS, then 'other')."""
    groups = {**RECIPE_GROUPS, **(groups or {})}
    recipes = list(dict.fromkeys(recipes))
    used_colours = {_KNOWN[r][0] for r in recipes if r in _KNOWN}
    used_markers = {_KNOWN[r][1] for r in recipes if r in _KNOWN}
    spare_c = [c for c in _SPARE_COLOURS if c not in used_colours]
    spare_m = [m for m in _SPARE_MARKERS if m not in used_markers]
    styles = []
    for k, r in enumerate(x for x in recipes if x not in _KNOWN):
        styles.append((r, spare_c[k % len(spare_c)], spare_m[k % len(spare_m)]))
    styles += [(r, *_KNOWN[r]) for r in recipes if r in _KNOWN]
    order = list(GROUP_TITLES)
    for r in recipes:
        g = groups.get(r, "other")
        if g not in order:
            order.append(g)

    def key(item):
        return order.index(groups.get(item[0], "other")), recipes.index(item[0])

    out = []
    for r, colour, marker in sorted(styles, key=key):
        g = groups.get(r, "other")
        ls, lw, ms = GROUP_LINES.get(g, _DEFAULT_LINE)
        out.append(RecipeStyle(r, g, colour, marker, ls, lw, ms))
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
