"""Report writers: strict JSON, Markdown tables, the plot, progress tracking."""
from __future__ import annotations

import json
import math

import pytest
import torch

from qmamba.report import Progress, demo_markdown, jsonable, markdown_table, write_json
from qmamba.report.plots import plot_accuracy_vs_bits
from qmamba.report.summary import human_bytes, quantize_summary, worst_points


def _results(limit=2000):
    rows = [{"model": "m1", "recipe": "fp", "setting": "FP", "top1": 90.0},
            {"model": "m1", "recipe": "minmax", "setting": "W8A8", "top1": 89.5},
            {"model": "m1", "recipe": "minmax", "setting": "W4A4", "top1": 40.25},
            {"model": "m1", "recipe": "qmamba", "setting": "W8A8", "top1": 89.75},
            {"model": "m2", "recipe": "minmax", "setting": "W8A8", "top1": 80.0}]
    return {
        "models": {"m1": {"fp": {"top1": 90.0, "top5": 99.5, "num_images": 2000}},
                   "m2": {"fp": {"top1": 81.0, "top5": 99.0, "num_images": 2000}}},
        "rows": rows, "recipes": ["fp", "minmax", "qmamba"], "settings": ["W8A8", "W4A4"],
        "eval": {"source": "built-in Fashion-MNIST test images", "num_images": 2000, "limit": limit,
                 "total": 10000},
        "calibration": {"images": 256, "seed": 0}, "command": "qmamba demo", "seconds": 12.0,
    }


def test_markdown_table():
    text = markdown_table(["recipe", "W4A4"], [["a|b", 1.5], ["c", None]])
    assert text.splitlines() == ["| recipe | W4A4 |", "| :--- | ---: |", "| a\\|b | 1.5 |", "| c |  |"]
    with pytest.raises(ValueError):
        markdown_table(["a", "b"], [["only one"]])


def test_demo_markdown_tables_and_caption():
    md = demo_markdown(_results())
    assert "## m1" in md and "## m2" in md
    assert "full precision (FP) top-1 90.00" in md
    assert "| minmax | 89.50 | 40.25 |" in md
    assert "| qmamba | 89.75 | — |" in md  # missing cell
    assert "the first 2,000 of the 10,000 built-in Fashion-MNIST test images" in md
    assert "| fp |" not in md  # FP is in the caption, not a row
    full = demo_markdown(_results(limit=None) | {"eval": {**_results()["eval"], "num_images": 10000, "limit": None}})
    assert "all 10,000 built-in" in full and "first" not in full.split("\n")[2]


def test_jsonable_is_strict_json():
    data = {"inf": math.inf, "ninf": -math.inf, "nan": math.nan, "t": torch.tensor(1.5),
            "v": torch.arange(3), "tuple": (1, 2), "nested": {3: [math.inf]}}
    out = jsonable(data)
    assert out == {"inf": "inf", "ninf": "-inf", "nan": None, "t": 1.5, "v": [0, 1, 2],
                   "tuple": [1, 2], "nested": {"3": ["inf"]}}
    json.dumps(out, allow_nan=False)


def test_write_json_atomic(tmp_path):
    path = tmp_path / "sub" / "r.json"
    write_json(path, {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1}

    class Boom:
        def __str__(self):
            raise RuntimeError("cannot convert")

    with pytest.raises(RuntimeError):
        write_json(path, {"a": Boom()})
    assert json.loads(path.read_text()) == {"a": 1}  # the old file is intact
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]  # no temporary left


def test_plot_writes_png(tmp_path):
    path = plot_accuracy_vs_bits(_results(), tmp_path / "acc.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["acc.png"]


def test_progress_where():
    p = Progress(enabled=False)
    assert p.where == "before any step started"
    with p.stage("outer", total=3, unit="run") as outer:
        outer.update(1)
        with p.stage("calibrating minmax W8A8", total=4, unit="block") as inner:
            inner.set_done(2)
            assert p.where == "calibrating minmax W8A8 (2/4 block)"
        assert p.where == "outer (1/3 run)"
    with pytest.raises(KeyboardInterrupt):
        with p.stage("evaluating", total=10, unit="img") as st:
            st.update(5)
            raise KeyboardInterrupt
    p.context = "run 2 of 5"
    assert p.where == "evaluating (5/10 img), run 2 of 5"


def test_summary_helpers():
    assert human_bytes(512) == "512 B" and human_bytes(2048) == "2.0 KiB"
    points = {"a": {"sqnr_db": 10.0, "role": "ssm.h"}, "b": {"sqnr_db": "inf"}, "c": {"sqnr_db": 3.0},
              "d": {}}
    assert [n for n, _, _ in worst_points(points, k=2)] == ["c", "a"]
    report = {"model": "m", "weights": "w", "method": "minmax", "setting": "W8A8",
              "fp": {"top1": 90.0, "top5": 99.0}, "quantized": {"top1": 89.0, "top5": 99.0},
              "calibration": {"images": 16, "source": "s", "seed": 0, "seconds": 1.0},
              "evaluation": {"images": 32, "source": "t", "limit": 32, "total": 100}, "points": points}
    text = quantize_summary(report)
    assert "(-1.00 top-1)" in text and "lowest SQNR : c 3.0 dB" in text
