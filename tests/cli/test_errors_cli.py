"""Bad input and faults through the command line: one clear line, nothing half-written."""
from __future__ import annotations

import json
import os
import signal

import pytest

import qmamba.jobs.evaluation as evaluation_step
import qmamba.jobs.quantize as quantize_job
from qmamba.errors import CheckpointError
from qmamba.quant.serialize import META_FILE, WEIGHTS_FILE, load_quantized


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("warning: ")]
    assert len(lines) == 1, f"expected one line on stderr, got: {err!r}"
    assert lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def _quantize_args(tiny_name, tiny_checkpoint, *extra):
    return ("quantize", "--model", tiny_name, "--checkpoint", tiny_checkpoint, "--method", "minmax",
            "--w-bits", "8", "--a-bits", "8", "--calib-size", "8", "--eval-limit", "8",
            "--batch-size", "8", "--no-progress", *extra)


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory, write_image_folder, fashion_folders):
    """ImageNet layout for a 10-class 28x28 grey model (its class folders named by the
    Fashion-MNIST classes): 2 images per class and split, and one corrupt file in val/."""
    root = write_image_folder(tmp_path_factory.mktemp("images"), per_class=2, names=fashion_folders)
    bad = root / "val" / fashion_folders[3] / "zz_bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    return root, bad


def test_fp_recipe_refuses_bit_widths(run_cli, tmp_path):
    rc, _, err = run_cli("quantize", "--model", "vim_tiny", "--method", "fp", "--w-bits", "4",
                         "--a-bits", "4", "--no-progress")
    line = _one_error_line(err)
    assert rc == 2 and "recipe 'fp'" in line and "drop --w-bits/--a-bits" in line


@pytest.mark.parametrize("bits", ["-4", "-0", "2.0", "1e9", "nan", ""])
def test_more_bad_bit_widths(run_cli, bits):
    rc, _, err = run_cli("quantize", "--model", "vim_tiny", "--method", "minmax", "--w-bits", "8",
                         "--a-bits", bits, "--no-progress")
    line = _one_error_line(err)
    assert rc == 2 and "--a-bits" in line and "[2, 16]" in line


def test_calibration_size_larger_than_the_data(run_cli, tiny_name, tiny_checkpoint, tmp_path):
    rc, _, err = run_cli(*_quantize_args(tiny_name, tiny_checkpoint, "--calib-size", "5000",
                                         "--out", tmp_path / "o"))
    line = _one_error_line(err)
    assert rc == 2 and "--calib-size 5000 is more than the 1,024 images" in line
    assert "use --calib-size 1024 or less" in line and not (tmp_path / "o").exists()


def test_quantized_folder_that_does_not_exist(run_cli, tmp_path):
    rc, _, err = run_cli("eval", "--quantized", tmp_path / "nope", "--no-progress")
    line = _one_error_line(err)
    assert rc == 2 and "is not a saved quantized model" in line and "nope" in line


def test_corrupt_image_in_a_worker_names_the_file(run_cli, tiny_name, tiny_checkpoint, image_folder, tmp_path):
    root, bad = image_folder
    rc, out, err = run_cli(*_quantize_args(tiny_name, tiny_checkpoint, "--data", root, "--workers", "1",
                                           "--eval-limit", "21", "--out", tmp_path / "o"))
    line = _one_error_line(err)
    assert rc == 2 and out == ""
    assert f"cannot read image '{bad}'" in line and "--skip-corrupt-images" in line
    assert "DataLoader worker" not in line and "Original Traceback" not in line
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


@pytest.fixture(scope="module")
def skipped_run(tiny_name, tiny_checkpoint, image_folder, tmp_path_factory):
    from qmamba.cli.main import main

    root, _ = image_folder
    out = tmp_path_factory.mktemp("skip") / "run"
    rc = main(list(map(str, _quantize_args(tiny_name, tiny_checkpoint, "--data", root, "--eval-limit", "21",
                                           "--skip-corrupt-images", "--out", out))))
    assert rc == 0
    return out


def test_skip_corrupt_images_counts_them(skipped_run, image_folder):
    _, bad = image_folder
    report = json.loads((skipped_run / "report.json").read_text())
    assert report["evaluation"]["images"] == 20
    assert report["evaluation"]["skipped_unreadable"] == {"count": 1, "paths": [str(bad)]}
    assert report["calibration"]["images"] == 8
    assert report["calibration"]["skipped_unreadable"] == {"count": 0, "paths": []}


def test_damaged_quantized_model_is_a_clear_error(skipped_run, tmp_path):
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(skipped_run / "model", folder)
    assert load_quantized(folder) is not None
    weights = (folder / WEIGHTS_FILE).read_bytes()
    (folder / WEIGHTS_FILE).write_bytes(weights[: len(weights) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_quantized(folder)
    (folder / WEIGHTS_FILE).write_bytes(weights)
    meta = json.loads((folder / META_FILE).read_text())
    meta["points"][next(iter(meta["points"]))].pop("type")
    (folder / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="is damaged"):
        load_quantized(folder)
    meta["format_version"] = 99
    (folder / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="format version 99"):
        load_quantized(folder)


def _fail_in_quantized_evaluation(monkeypatch, action):
    real = evaluation_step.evaluate
    calls = []

    def evaluate(model, loader, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # after the calibration
            action()
        return real(model, loader, *args, **kwargs)

    monkeypatch.setattr(evaluation_step, "evaluate", evaluate)


def test_sigterm_unwinds_like_ctrl_c(monkeypatch, run_cli, tiny_name, tiny_checkpoint, tmp_path):
    _fail_in_quantized_evaluation(monkeypatch, lambda: os.kill(os.getpid(), signal.SIGTERM))
    out = tmp_path / "o"
    rc, stdout, err = run_cli(*_quantize_args(tiny_name, tiny_checkpoint, "--out", out))
    assert rc == 143 and stdout == ""
    assert err.startswith(f"terminated (SIGTERM): evaluating {tiny_name} minmax W8A8 (0/8 img)")
    assert "no output was written" in err
    assert not out.exists() or not any(out.iterdir())
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # restored after the command


def test_unexpected_error_says_where_it_stopped(monkeypatch, run_cli, tiny_name, tiny_checkpoint, tmp_path):
    def bug():
        raise ZeroDivisionError("a bug")

    _fail_in_quantized_evaluation(monkeypatch, bug)
    out = tmp_path / "o"
    rc, stdout, err = run_cli(*_quantize_args(tiny_name, tiny_checkpoint, "--out", out))
    last = err.strip().splitlines()[-1]
    assert rc == 1 and stdout == "" and "Traceback" in err and "ZeroDivisionError: a bug" in err
    assert last.startswith("failed: ") and "please report it" in last and "no output was written" in last
    assert not out.exists() or not any(out.iterdir())


def test_interrupt_during_the_commit_reports_the_outputs(monkeypatch, run_cli, tiny_name, tiny_checkpoint,
                                                         tmp_path):
    class InterruptedAfterCommit(quantize_job.OutputSet):
        def commit(self):
            super().commit()
            raise KeyboardInterrupt  # as a deferred Ctrl-C is delivered

    monkeypatch.setattr(quantize_job, "OutputSet", InterruptedAfterCommit)
    out = tmp_path / "o"
    rc, _, err = run_cli(*_quantize_args(tiny_name, tiny_checkpoint, "--out", out))
    assert rc == 130 and err.startswith("interrupted: ")
    assert f"these outputs were complete before it stopped: {out / 'model'}, {out / 'report.json'}" in err
    assert sorted(p.name for p in out.iterdir()) == ["model", "report.json"]
