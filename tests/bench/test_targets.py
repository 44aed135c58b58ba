"""`python -m qmamba.bench targets`: the accuracy checks read judged claims (intervals,
never one row against another); the grid checks trace real scans."""
import json

import torch

from qmamba.bench.targets import _calibration_images, accuracy_checks, grid_checks, main


def _claim(a, b, setting, low, high, verdict, model="vim_fmnist"):
    return {"model": model, "setting": setting, "claim": f"{a} vs {b}", "a": a, "b": b, "seeds": [0, 1, 2],
            "num_images": 5000, "difference": (low + high) / 2, "low": low, "high": high, "verdict": verdict}


CLAIMS = [_claim("qmamba", "fp", "W8A8", -0.4, 0.1, "ties"),
          _claim("qmamba", "minmax", "W4A4", 2.0, 9.0, "wins"),
          _claim("qmamba", "percentile", "W4A4", -0.5, 1.5, "ties"),  # ahead, but not established
          _claim("qmamba", "qmamba_no_ltsq", "W4A4", 0.3, 2.0, "wins"),
          _claim("qmamba", "qmamba_no_tgq", "W4A4", -0.4, 2.0, "ties"),
          _claim("qmamba", "minmax", "W8A8", -3.0, -1.0, "loses"),  # no check at W8A8
          _claim("qmamba", "fp", "W8A8", -0.9, -0.2, "loses", model="other")]


def test_accuracy_checks_judge_the_intervals():
    result = {c["check"]: c["pass"] for c in accuracy_checks(CLAIMS) if c["model"] == "vim_fmnist"}
    assert result == {
        "qmamba W8A8 within 0.5 of FP (interval of qmamba - FP above -0.5)": True,
        "W4A4 qmamba beats minmax": True,
        "W4A4 qmamba beats percentile": False,
        "W4A4 LtSQ helps (qmamba vs qmamba_no_ltsq)": True,
        "W4A4 TGQ helps (qmamba vs qmamba_no_tgq)": False,
    }
    other = [c for c in accuracy_checks(CLAIMS) if c["model"] == "other"]
    assert [c["pass"] for c in other] == [False]  # loses up to 0.9 points: not within 0.5
    assert other[0]["values"]["low"] == -0.9 and other[0]["values"]["verdict"] == "loses"


def test_main_reads_the_accuracy_results(tmp_path, capsys):
    results = tmp_path / "accuracy.json"
    results.write_text(json.dumps({"claims": CLAIMS}))
    out = tmp_path / "targets.json"
    torch.set_num_threads(1)
    assert main(["--accuracy-results", str(results), "--grid-images", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "FAIL  vim_fmnist     W4A4 qmamba beats percentile" in printed
    saved = json.loads(out.read_text())
    assert saved["accuracy_source"] == str(results) and len(saved["accuracy"]) == 6
    assert len(saved["grids"]) == 2


def test_grid_checks_trace_every_scan_of_a_builtin_model():
    torch.set_num_threads(1)
    images = _calibration_images(4)
    assert images.shape == (4, 1, 28, 28)
    out = grid_checks("vim_fmnist", images)
    assert len(out["scans"]) == 8  # 4 blocks x 2 directions
    for scan in out["scans"]:
        assert set(scan["h"]) == {"per_tensor_sqnr_db", "tgq_8_sqnr_db", "per_step_sqnr_db"}
        assert scan["A_bar"]["ltsq_rel_err_1m_above_median"] >= 0
    assert [c["pass"] for c in out["checks"]] == [
        all(s["h"]["tgq_8_sqnr_db"] > s["h"]["per_tensor_sqnr_db"] for s in out["scans"]),
        all(s["A_bar"]["ltsq_rel_err_1m_above_median"] < s["A_bar"]["uniform_rel_err_1m_above_median"]
            for s in out["scans"]),
    ]
