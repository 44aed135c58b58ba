"""The benchmarks' --device / --backends / --out options (tiny sizes: the code paths, not
the timings)."""
from __future__ import annotations

import json

import pytest
import torch

from qmamba.bench.__main__ import main

TINY_SCAN = ["scan", "--batch", "2", "--dim", "4", "--length", "5", "--state", "3", "--threads", "1",
             "--repeats", "1"]


def test_scan_backends_and_out_file(tmp_path, capsys):
    out = tmp_path / "results" / "scan.json"
    assert main([*TINY_SCAN, "--backends", "reference,compiled", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report == json.loads(capsys.readouterr().out)
    assert report["config"]["backends"] == ["reference", "compiled"] and report["config"]["device"] == "cpu"
    for section in ("float_forward", "quantized_forward"):
        r = report[section]
        assert r["compiled_images_per_s"] > 0 and r["compiled_speedup"] == r["speedup"] > 0
        assert r["compiled_max_abs_diff"] < 1e-4


def test_scan_with_triton_through_the_interpreter(monkeypatch, capsys):
    from qmamba.ops import scan_triton

    monkeypatch.setenv("TRITON_INTERPRET", "1")
    try:
        scan_triton.kernels(True)
    except ImportError as e:
        pytest.skip(f"no Triton: {e}")
    before = scan_triton.LAUNCHES[("quant_scan_fwd_kernel", "interpreted")]
    assert main([*TINY_SCAN, "--backends", "reference,triton"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["float_forward"]["triton_max_abs_diff"] < 1e-5
    assert report["quantized_forward"]["triton_max_abs_diff"] < 1e-5
    # warm-up + 1 repeat of the quantized scan
    assert scan_triton.LAUNCHES[("quant_scan_fwd_kernel", "interpreted")] == before + 2


def test_forward_backends(capsys):
    assert main(["forward", "--model", "vim_fmnist", "--batch", "2", "--repeats", "1", "--threads", "1",
                 "--backends", "noop,compiled"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["config"]["backends"] == ["noop", "compiled"]
    assert report["compiled_images_per_s"] > 0 and report["compiled_over_floor"] > 0
    assert "reference_ms_per_image" not in report


def test_calibration_times_each_recipe_in_turns_with_ratios_against_the_first(tmp_path, capsys):
    out = tmp_path / "cal.json"
    assert main(["calibration", "--model", "vim_fmnist", "--calib", "4", "--batch", "2", "--threads", "1",
                 "--repeats", "2", "--search-samples", "2", "--recipes", "minmax",
                 "qmamba[search.candidates=[1.0,0.7]]", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report == json.loads(capsys.readouterr().out)
    assert [len(report["seconds"][r]) for r in ("minmax", "qmamba[search.candidates=[1.0,0.7]]")] == [2, 2]
    assert report["qmamba[search.candidates=[1.0,0.7]]_over_minmax"] > 0
    assert report["qmamba[search.candidates=[1.0,0.7]]_cpu_over_minmax"] > 0
    assert [len(v) for v in report["cpu_seconds"].values()] == [2, 2]
    cfg = report["config"]["configs"]["qmamba[search.candidates=[1.0,0.7]]"]
    assert cfg["search"]["candidates"] == [1.0, 0.7] and cfg["search"]["samples"] == 2 and cfg["calib_size"] == 4
    assert report["platform"]["threads"] == 1
    stages = report["stage_cpu_seconds"]["qmamba[search.candidates=[1.0,0.7]]"]
    assert len(stages) == 2 and stages[0]["search"] > 0 and "tune" not in stages[0]  # qmamba does not tune
    assert stages[0]["other"] > 0 and set(report["stage_cpu_seconds"]["minmax"][0]) == {"other"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
@pytest.mark.parametrize("command", ["scan", "forward"])
def test_cuda_without_a_gpu_and_bad_backend(command):
    with pytest.raises(SystemExit, match="CUDA is not available"):
        main([command, "--device", "cuda"])
    with pytest.raises(SystemExit, match="unknown scan backend 'fast'"):
        main([command, "--backends", "reference,fast"])


def test_int_backend_benchmarks(tmp_path, capsys):
    """`bench int` (speed, memory; models kept in --models-dir and reused) and
    `bench int_accuracy` on the built-in Vim, tiny settings: the code paths, not the numbers."""
    models = tmp_path / "models"
    args = ["int", "--model", "vim_fmnist", "--recipes", "minmax", "--settings", "W8A8", "--batch", "2",
            "--repeats", "1", "--threads", "1", "--models-dir", str(models)]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["w8a8_speedup"] == report["minmax_W8A8_speedup"] > 0
    assert report["minmax_W8A8_top1_agree_vs_simulated"] == 1.0
    assert 0 < report["minmax_W8A8_weight_bytes_over_float"] < 0.35
    assert report["cpu"]["int_kernels_isa"] in ("avx512", "avx2", "baseline")
    assert (models / "minmax-W8A8" / "quant.json").is_file()
    assert main(args) == 0  # reuses the saved model
    capsys.readouterr()
    out = tmp_path / "acc.json"
    assert main(["int_accuracy", "--models", "vim_fmnist", "--recipes", "minmax", "--settings", "W8A8",
                 "--eval-limit", "40", "--calib-size", "8", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    row = report["rows"][0]
    assert row["images"] == 40 and row["within_target"] and row["float_layers"] == []
    # the float64-scan simulation: the same model, near-ties of h decided exactly
    assert row["within_target_vs_float64"] and report["all_within_target_vs_float64"]
    assert row["simulated_float32_vs_float64_points"] == round(
        row["simulated_top1"] - row["simulated_float64_scan_top1"], 2)
    assert 0 <= row["predictions_differing_vs_float64"] <= 40


def test_int_avx2_child_runs_natively_when_the_parent_does(monkeypatch):
    """`bench --native int --isa avx2` re-runs itself with the AVX2 variables and --native
    (under the portable pins oneDNN is off and `_int_mm` leaves its fast path), and
    without --native when the parent runs under the pins."""
    import torch

    import qmamba.bench.int as bench_int

    calls = []
    monkeypatch.setattr(bench_int.subprocess, "call", lambda cmd, env: calls.append((cmd, env)) or 0)
    monkeypatch.delenv(bench_int.CHILD, raising=False)
    for enabled, expect in ((True, ["--native", "int"]), (False, ["int"])):
        monkeypatch.setattr(torch.backends.mkldnn, "enabled", enabled)
        assert bench_int.main(["--isa", "avx2", "--model", "vim_fmnist", "--batch", "2"]) == 0
        cmd, env = calls[-1]
        start = cmd.index("qmamba.bench") + 1
        assert cmd[start:start + len(expect)] == expect
        assert cmd[start + len(expect):] == ["--isa", "avx2", "--model", "vim_fmnist", "--batch", "2"]
        assert env["ATEN_CPU_CAPABILITY"] == "avx2" and env[bench_int.CHILD] == "1"
