"""The accuracy-vs-bits and per-point SQNR plots: valid PNGs, seeds, missing values, styles."""
from __future__ import annotations

import json
import math

import pytest
from PIL import Image

from qmamba.quant.recipes import list_recipes
from qmamba.report.plot_style import recipe_styles
from qmamba.report.plots import Stat, _y_range, accuracy_stats, plot_accuracy_vs_bits
from qmamba.report.sqnr_plot import collect_point_sqnr, plot_point_sqnr

SETTINGS = ["W8A8", "W6A6", "W4A4"]


def assert_png(path, min_size=(400, 250)) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.size[0] >= min_size[0] and im.size[1] >= min_size[1]
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temporary left


def results(rows, recipes, models=("m1",), limit=1000):
    return {"models": {m: {"fp": {"top1": 90.0}} for m in models}, "rows": rows,
            "recipes": ["fp", *recipes], "settings": SETTINGS,
            "eval": {"num_images": 1000, "limit": limit, "total": 10000}}


def rows_for(recipes, model="m1", seeds=(None,), base=88.0):
    out = []
    for k, r in enumerate(recipes):
        for j, s in enumerate(SETTINGS):
            for seed in seeds:
                row = {"model": model, "recipe": r, "setting": s, "top1": base - 4 * j - k + 0.1 * (seed or 0)}
                if seed is not None:
                    row["seed"] = seed
                out.append(row)
    return out


def test_styles_distinct_and_grouped():
    recipes = [r for r in list_recipes() if r != "fp"][::-1] + ["my_recipe", "other_one"]
    styles = recipe_styles(recipes, {"my_recipe": "ablation"})
    assert len({s.colour for s in styles}) == len({s.marker for s in styles}) == len(recipes)
    order = [s.recipe for s in styles]
    assert order[0] == "qmamba" and order[-1] == "other_one"
    assert order.index("my_recipe") < order.index("minmax")  # placed with the ablations
    groups = [s.group for s in styles]
    methods = groups.count("method")
    assert groups[:methods + 3] == ["method"] * methods + ["ablation"] * 3


def test_accuracy_stats_seeds_both_ways():
    rows = [{"model": "m", "recipe": "a", "setting": "W4A4", "seed": s, "top1": v}
            for s, v in enumerate([80.0, 82.0, 84.0])]
    rows.append({"model": "m", "recipe": "b", "setting": "W4A4", "top1_mean": 70.0,
                 "top1_std": 1.5, "seeds": [0, 1, 2, 3]})
    rows.append({"model": "m", "recipe": "c", "setting": "W4A4", "top1": 60.0})
    stats = accuracy_stats({"rows": rows})
    assert stats[("m", "a", "W4A4")] == Stat(82.0, 2.0, 3)
    assert stats[("m", "b", "W4A4")] == Stat(70.0, 1.5, 4)
    assert stats[("m", "c", "W4A4")] == Stat(60.0, None, 1)


def test_axis_zoomed_and_collapsed_recipe_off_axis():
    values = [(0, 90.0, 0.0), (0, 89.0, 0.0), (1, 85.0, 0.0), (1, 84.0, 0.0), (1, 83.0, 0.0),
              (1, 50.0, 0.0)]
    lo, hi = _y_range(values, fp=90.5)
    assert 80 < lo < 83 and 90.5 < hi <= 93  # 50 is a collapse, left below the axis
    lo, hi = _y_range([(0, 91.0, 0.0), (1, 80.0, 0.0)], fp=90.0)  # one recipe: nothing hidden
    assert lo < 80 and hi > 91


def test_accuracy_plot(tmp_path):
    recipes = [r for r in list_recipes() if r != "fp"]
    path = plot_accuracy_vs_bits(results(rows_for(recipes) + rows_for(recipes, "m2"), recipes,
                                         models=("m1", "m2")), tmp_path / "acc.png")
    assert_png(path, (1000, 400))


def test_accuracy_plot_seeds_single_recipe_and_gaps(tmp_path):
    rows = rows_for(["qmamba"], seeds=(0, 1, 2))
    assert_png(plot_accuracy_vs_bits(results(rows, ["qmamba"]), tmp_path / "seeds.png"))
    rows = [r for r in rows_for(["qvlm", "minmax"]) if not (r["recipe"] == "qvlm" and r["setting"] == "W6A6")]
    out = tmp_path / "gaps" / "acc.png"
    assert_png(plot_accuracy_vs_bits(results(rows, ["qvlm", "minmax"], limit=None), out,
                                     groups={"qvlm": "mine"}))


def report(method, setting="W4A4", model="m1", shift=0.0, sqnr=True):
    points = {}
    roles = ["linear_input", "weight", "ssm.A", "ssm.B", "ssm.h"]
    for b in range(3):
        for k, role in enumerate(roles):
            db = 10.0 + 5 * k + b + shift if sqnr else None
            points[f"layers.{b}.{role}"] = {"role": role, "bits": 4, "grid": "uniform",
                                            "sqnr_db": db}
    points["head.weight_quant"] = {"role": "weight", "bits": 8, "sqnr_db": "inf" if sqnr else None}
    return {"model": model, "method": method, "setting": setting, "w_bits": 4, "a_bits": 4,
            "points": points, "sqnr": {"available": sqnr}}


def test_point_sqnr_plot(tmp_path):
    reps = [report(m, shift=k) for k, m in enumerate(["qmamba", "minmax", "qmamba_no_tgq"])]
    reps += [report("qmamba", setting="W8A8", shift=20)]
    paths = []
    for k, r in enumerate(reps):  # paths to report.json files work as well as dicts
        p = tmp_path / "reports" / f"{k}.json"
        p.parent.mkdir(exist_ok=True)
        p.write_text(json.dumps(r))
        paths.append(p)
    assert_png(plot_point_sqnr(paths[:2] + reps[2:], tmp_path / "out" / "sqnr.png"), (1000, 500))


def test_point_sqnr_seeds_averaged_and_missing():
    reps = [report("qmamba", shift=0.0), report("qmamba", shift=2.0),
            report("minmax", sqnr=False)]
    panels, missing = collect_point_sqnr(reps)
    assert missing == ["m1 minmax W4A4"]
    points = panels[("m1", "W4A4")]["qmamba"]
    assert points["layers.0.ssm.A"] == ("ssm.A", 21.0)  # mean of 20 and 22
    assert "head.weight_quant" not in points  # infinite SQNR: nothing lost, nothing drawn


@pytest.mark.parametrize("reps", [[], [report("minmax", sqnr=False)]])
def test_point_sqnr_plot_without_values(tmp_path, reps):
    assert_png(plot_point_sqnr(reps, tmp_path / "none.png"), (400, 150))


def test_point_sqnr_single_recipe(tmp_path):
    rep = report("qmamba")
    rep["points"]["layers.0.ssm.A"]["grid"] = "ltsq_log1m"
    assert_png(plot_point_sqnr([rep], tmp_path / "one.png"))
    assert not math.isnan(collect_point_sqnr([rep])[0][("m1", "W4A4")]["qmamba"]["layers.0.ssm.A"][1])
