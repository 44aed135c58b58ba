"""`qmamba demo` on a tiny subset: 1 model, 2 recipes, 1 setting, 32 test images."""
from __future__ import annotations

import json

import pytest

import qmamba.jobs.demo as demo_job


@pytest.fixture
def tiny_builtin(monkeypatch, tiny_name, tiny_checkpoint):
    """Make the tiny model play the part of a built-in model (shipped weights)."""
    real_load = demo_job.load_model

    def load(name, checkpoint=None, *args, **kwargs):
        if name == tiny_name and checkpoint is None:
            return real_load(name, tiny_checkpoint)
        return real_load(name, checkpoint, *args, **kwargs)

    monkeypatch.setattr(demo_job, "builtin_model_names", lambda: (tiny_name,))
    monkeypatch.setattr(demo_job, "load_model", load)
    return tiny_name


def test_demo_writes_three_files(tiny_builtin, run_cli, tmp_path):
    out = tmp_path / "demo"
    rc, stdout, err = run_cli("demo", "--out", out, "--models", tiny_builtin, "--recipes", "fp", "minmax",
                              "--settings", "W8A8", "--eval-limit", "32", "--calib-size", "16",
                              "--batch-size", "16", "--no-progress")
    assert rc == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["accuracy_vs_bits.png", "results.json", "results.md"]
    results = json.loads((out / "results.json").read_text())
    rows = results["rows"]
    assert [(r["recipe"], r["setting"]) for r in rows] == [("fp", "FP"), ("minmax", "W8A8")]
    for r in rows:
        assert {"model", "recipe", "w_bits", "a_bits", "top1", "top5", "calib_images", "eval_images",
                "seconds", "config"} <= set(r)
        assert r["eval_images"] == 32
    assert rows[1]["calib_images"] == 16 and rows[1]["config"]["w_bits"] == 8
    assert results["eval"]["limit"] == 32 and results["command"].startswith("qmamba demo")
    assert results["models"][tiny_builtin]["fp"]["top1"] == rows[0]["top1"]
    assert results["platform"]["threads"] == 1 and "pinned" in results["platform"]
    md = (out / "results.md").read_text()
    assert "| recipe | W8A8 |" in md and "| minmax |" in md and "first 32 of the 5,000 reporting images" in md
    assert results["eval"]["part"]["name"] == "reporting" and results["eval"]["part"]["first"] == 5000
    assert (out / "accuracy_vs_bits.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| minmax |" in stdout


def test_demo_rejects_non_builtin_model(tiny_builtin, run_cli, tmp_path):
    rc, _, err = run_cli("demo", "--out", tmp_path / "d", "--models", "vim_tiny", "--no-progress")
    assert rc == 2 and "built-in" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "d").exists()
