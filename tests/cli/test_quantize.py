"""`qmamba quantize` / `qmamba eval` end to end on a tiny untrained model and tiny data."""
from __future__ import annotations

import json

import pytest
import torch

REPORT_FIELDS = {
    "model", "checkpoint", "weights", "method", "w_bits", "a_bits", "setting", "config",
    "calibration", "evaluation", "fp", "quantized", "points", "sqnr", "size", "wall_seconds",
    "versions", "command", "device", "platform",
}


@pytest.fixture(scope="module")
def quantized_run(tmp_path_factory, tiny_name, tiny_checkpoint):
    """One CLI run shared by the tests of its outputs."""
    from qmamba.cli.main import main

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("q") / "run"
    rc = main(["quantize", "--model", tiny_name, "--checkpoint", tiny_checkpoint, "--method", "qmamba",
               "--w-bits", "4", "--a-bits", "4", "--calib-size", "16", "--eval-limit", "32",
               "--batch-size", "16", "--out", str(out), "--no-progress"])
    assert rc == 0
    return out


def test_report_fields(quantized_run, tiny_name, tiny_checkpoint):
    report = json.loads((quantized_run / "report.json").read_text())
    assert REPORT_FIELDS <= set(report)
    assert (report["model"], report["checkpoint"], report["method"], report["w_bits"], report["a_bits"]) == (
        tiny_name, tiny_checkpoint, "qmamba", 4, 4)
    assert report["config"]["recipe"] == "qmamba" and report["config"]["calib_size"] == 16
    assert report["calibration"]["images"] == 16 and report["calibration"]["seed"] == 0
    assert "training" in report["calibration"]["source"]
    for key in ("fp", "quantized"):
        assert report[key]["num_images"] == 32
        assert 0 <= report[key]["top1"] <= report[key]["top5"] <= 100
    assert report["evaluation"] == {"source": "built-in Fashion-MNIST test images", "images": 32,
                                    "total": 10000, "limit": 32, "seed": None,
                                    "part": {"name": "all", "first": 0, "images": 10000,
                                             "rule": report["evaluation"]["part"]["rule"]}}
    points = report["points"]
    assert points and all({"role", "bits"} <= set(p) for p in points.values())
    assert {p["role"] for p in points.values()} >= {"weight", "linear_input", "ssm.h"}
    if report["sqnr"]["available"]:
        assert all("sqnr_db" in p for p in points.values())
    assert report["size"]["file_bytes"] > 0 and report["size"]["path"] == str(quantized_run / "model")
    assert report["versions"]["qmamba"] and report["versions"]["torch"] == torch.__version__
    assert report["command"].startswith("qmamba quantize --model")
    # nothing but the two outputs (no temporary folders left behind)
    assert sorted(p.name for p in quantized_run.iterdir()) == ["model", "report.json"]


def test_eval_of_saved_model_matches_report(quantized_run, run_cli, tmp_path):
    report = json.loads((quantized_run / "report.json").read_text())
    rc, out, _ = run_cli("eval", "--quantized", quantized_run / "model", "--eval-limit", "32",
                         "--out", tmp_path / "e.json", "--no-progress")
    assert rc == 0 and "W4A4" in out
    ev = json.loads((tmp_path / "e.json").read_text())
    assert ev["result"]["top1"] == report["quantized"]["top1"]
    assert ev["result"]["num_images"] == 32 and ev["method"] == "qmamba"


def test_eval_float_checkpoint(run_cli, tiny_name, tiny_checkpoint):
    rc, out, err = run_cli("eval", "--model", tiny_name, "--checkpoint", tiny_checkpoint,
                           "--eval-limit", "16", "--no-progress")
    assert rc == 0, err
    assert f"{tiny_name} FP" in out and "16 images" in out


def test_interrupt_leaves_no_outputs(monkeypatch, run_cli, tiny_name, tiny_checkpoint, tmp_path):
    import qmamba.jobs.quantize as quantize_job

    real = quantize_job.evaluate_split
    calls = []

    def interrupted(model, split, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the quantized evaluation, after calibration
            raise KeyboardInterrupt
        return real(model, split, *args, **kwargs)

    monkeypatch.setattr(quantize_job, "evaluate_split", interrupted)
    out = tmp_path / "o"
    rc, stdout, err = run_cli("quantize", "--model", tiny_name, "--checkpoint", tiny_checkpoint,
                              "--method", "minmax", "--w-bits", "8", "--a-bits", "8", "--calib-size", "8",
                              "--eval-limit", "8", "--out", out, "--no-progress")
    assert rc == 130 and stdout == ""
    assert err.startswith("interrupted: ") and "no output was written" in err and len(err.splitlines()) == 1
    assert not out.exists() or not any(out.iterdir())


def test_refuses_to_replace_a_foreign_model_folder(run_cli, tiny_name, tiny_checkpoint, tmp_path):
    (tmp_path / "o" / "model").mkdir(parents=True)
    (tmp_path / "o" / "model" / "notes.txt").write_text("mine")
    rc, _, err = run_cli("quantize", "--model", tiny_name, "--checkpoint", tiny_checkpoint,
                         "--method", "minmax", "--w-bits", "8", "--a-bits", "8", "--out", tmp_path / "o",
                         "--no-progress")
    assert rc == 2 and "not a saved quantized model" in err
    assert (tmp_path / "o" / "model" / "notes.txt").read_text() == "mine"


def test_analyze_writes_plots(quantized_run, run_cli, tiny_name, tiny_checkpoint, tmp_path):
    out = tmp_path / "an"
    rc, stdout, err = run_cli("analyze", "--model", tiny_name, "--checkpoint", tiny_checkpoint,
                              "--quantized", quantized_run / "model", "--layer", "0", "--direction", "1",
                              "--images", "8", "--out", out, "--no-progress")
    assert rc == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["analysis.json", "layer0_scan1_W4A4.png", "layer0_scan1_fp.png"]
    summary = json.loads((out / "analysis.json").read_text())
    assert summary["images"] == 8 and [p["model"] for p in summary["plots"]] == ["fp", "W4A4"]
    assert (out / "layer0_scan1_fp.png").read_bytes()[:4] == b"\x89PNG"
    rc, _, err = run_cli("analyze", "--model", tiny_name, "--checkpoint", tiny_checkpoint, "--layer", "3",
                         "--out", tmp_path / "bad", "--no-progress")
    assert rc == 2 and "--layer 3 is out of range" in err


def test_set_changes_the_recipe_config_and_the_report_records_it(run_cli, tiny_name, tiny_checkpoint, tmp_path):
    rc, _, err = run_cli("quantize", "--model", tiny_name, "--checkpoint", tiny_checkpoint,
                         "--method", "ptq4vm", "--w-bits", "4", "--a-bits", "4", "--calib-size", "8",
                         "--eval-limit", "8", "--set", "tune.jlss=true", "--set", "tune.steps=2",
                         "--set", "tune.samples=4", "--out", tmp_path / "o", "--no-progress")
    assert rc == 0, err
    config = json.loads((tmp_path / "o" / "report.json").read_text())["config"]
    assert config["tune"] == {"jlss": True, "steps": 2, "lr": 1e-3, "samples": 4, "batch": None,
                              "after_search": False}
    rc, _, err = run_cli("quantize", "--model", tiny_name, "--checkpoint", tiny_checkpoint,
                         "--method", "minmax", "--w-bits", "4", "--a-bits", "4",
                         "--set", "ssm.h_grups=4", "--out", tmp_path / "p", "--no-progress")
    assert rc == 2 and "h_grups" in err and not (tmp_path / "p").exists()
