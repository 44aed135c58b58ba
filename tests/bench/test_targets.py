"""`python -m qmamba.bench targets`: the checks read demo rows and trace real scans."""
import torch

from qmamba.bench.targets import _calibration_images, accuracy_checks, grid_checks


def _row(recipe, setting, top1, model="vim_fmnist"):
    return {"model": model, "recipe": recipe, "setting": setting, "top1": top1}


def test_accuracy_checks_compare_the_right_rows():
    rows = [_row("fp", "FP", 90.0), _row("qmamba", "W8A8", 89.6), _row("qmamba", "W4A4", 80.0),
            _row("minmax", "W4A4", 70.0), _row("percentile", "W4A4", 81.0),
            _row("qmamba_no_ltsq", "W4A4", 75.0), _row("qmamba_no_tgq", "W4A4", 80.0),
            _row("qmamba", "W4A4", 10.0, model="other")]
    result = {c["check"]: c["pass"] for c in accuracy_checks(rows) if c["model"] == "vim_fmnist"}
    assert result == {
        "qmamba W8A8 within 0.5 of FP": True,
        "W4A4 qmamba above minmax": True,
        "W4A4 qmamba above percentile": False,
        "W4A4 qmamba_no_ltsq below qmamba": True,
        "W4A4 qmamba_no_tgq below qmamba": False,  # a tie is not a win
    }


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
