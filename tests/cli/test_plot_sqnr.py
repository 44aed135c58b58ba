"""`qmamba plot-sqnr`: the per-point SQNR figure from quantize reports."""
from __future__ import annotations

import json

from PIL import Image


def test_plot_sqnr_from_two_quantize_runs(run_cli, tiny_name, tiny_checkpoint, tmp_path):
    for method in ("minmax", "qmamba"):
        rc, _, err = run_cli("quantize", "--model", tiny_name, "--checkpoint", tiny_checkpoint, "--method", method,
                             "--w-bits", "4", "--a-bits", "4", "--calib-size", "8", "--eval-limit", "8",
                             "--batch-size", "8", "--set", "search.samples=4", "--out", tmp_path / method,
                             "--no-progress")
        assert rc == 0, err
        assert json.loads((tmp_path / method / "report.json").read_text())["sqnr"]["available"]
    rc, out, err = run_cli("plot-sqnr", tmp_path / "minmax", tmp_path / "qmamba" / "report.json",
                           "--out", tmp_path / "sqnr.png")
    assert rc == 0, err
    assert f"written: {tmp_path / 'sqnr.png'}" in out
    with Image.open(tmp_path / "sqnr.png") as im:
        assert im.format == "PNG" and im.size[0] > 800


def test_plot_sqnr_refuses_what_is_not_a_report(run_cli, tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "other.json").write_text(json.dumps({"rows": []}))
    for arg, words in ((tmp_path / "nope", "neither a report.json"), (tmp_path / "bad.json", "cannot read"),
                       (tmp_path / "other.json", "not a report.json of `qmamba quantize`")):
        rc, _, err = run_cli("plot-sqnr", arg, "--out", tmp_path / "x.png")
        assert rc == 2 and err.startswith("error: ") and words in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x.png").exists()
