"""`qmamba eval --quantized DIR --backend int|simulated`: the saved model on the integer
backend, its report (backend, the layer table) and its summary of integer and float layers."""
from __future__ import annotations

import json

import pytest
import torch

import qmamba
from qmamba.data import BuiltinFashionMNIST


@pytest.fixture(scope="module")
def saved(tmp_path_factory, tiny_name, one_thread):
    """The tiny Vim quantized W8A8 (minmax) on 8 built-in images, its hidden state h left in
    float (so one scan per direction stays float, with a reason), saved."""
    torch.manual_seed(0)
    model = qmamba.create_model(tiny_name).eval()
    images = torch.stack([BuiltinFashionMNIST("calib")[i][0] for i in range(8)])  # (8, 1, 28, 28)
    config = qmamba.QuantConfig.from_recipe("minmax", w_bits=8, a_bits=8, calib_size=8,
                                            role_bits={"ssm.h": None})
    path = tmp_path_factory.mktemp("saved") / "model"
    qmamba.save_quantized(qmamba.quantize(model, config, [(images, None)]), path)
    return path


def _eval(run_cli, saved, out, *extra):
    rc, stdout, err = run_cli("eval", "--quantized", saved, "--eval-limit", "16", "--batch-size", "8",
                              "--out", out, "--no-progress", *extra)
    assert rc == 0, err
    return stdout, json.loads(out.read_text())


def test_int_backend_reports_its_layers(saved, run_cli, tmp_path):
    stdout, report = _eval(run_cli, saved, tmp_path / "int.json", "--backend", "int")
    assert report["backend"] == "int" and report["device"] == "cpu"
    layers = {r["name"]: r for r in report["layers"]}
    assert layers["layers.0.mixer.in_proj"]["integer"] and layers["layers.0.mixer.in_proj"]["kind"] == "linear"
    scan = layers["layers.0.mixer.forward_branch.scan"]
    assert not scan["integer"] and "ssm.h is not quantized" in scan["reason"]
    n_int = sum(r["integer"] for r in report["layers"] if r["kind"] != "mixer")
    n_all = sum(r["kind"] != "mixer" for r in report["layers"])
    assert 0 < n_int < n_all
    assert "integer backend" in stdout.splitlines()[0]  # the summary line says which backend
    assert f"integer backend: {n_int} of {n_all} layers and scans run on integers" in stdout
    assert "float: layers.0.mixer.forward_branch.scan (scan): ssm.h is not quantized" in stdout


def test_int_backend_agrees_with_simulated(saved, run_cli, tmp_path):
    stdout, sim = _eval(run_cli, saved, tmp_path / "sim.json")
    _, integer = _eval(run_cli, saved, tmp_path / "int.json", "--backend", "int")
    assert sim["backend"] == "simulated" and "layers" not in sim and "integer backend" not in stdout
    assert integer["result"]["num_images"] == sim["result"]["num_images"] == 16
    assert (integer["result"]["top1"], integer["result"]["top5"]) == (sim["result"]["top1"], sim["result"]["top5"])


def test_int_backend_needs_a_quantized_model(run_cli, tiny_name, tiny_checkpoint):
    rc, _, err = run_cli("eval", "--model", tiny_name, "--checkpoint", tiny_checkpoint, "--backend", "int",
                         "--no-progress")
    assert rc == 2 and err.startswith("error: --backend int needs --quantized (a saved quantized model)")


def test_unknown_backend_is_refused(run_cli, saved):
    rc, _, err = run_cli("eval", "--quantized", saved, "--backend", "int4")
    assert rc == 2 and "--backend: invalid choice: 'int4' (choose from 'simulated', 'int')" in err


def test_int_backend_refuses_cuda(saved, monkeypatch):
    """A CUDA device is a clear error before anything is loaded (checked where CUDA exists
    or not: the device is resolved as if it did)."""
    from qmamba.jobs import EvalJob, evaluate

    monkeypatch.setattr(evaluate, "resolve_device", lambda name: torch.device(name))
    with pytest.raises(qmamba.ConfigError, match=r"`backend` int runs on the CPU only, not on cuda:0") as e:
        evaluate.run_eval(EvalJob(quantized=str(saved), backend="int", device="cuda:0"))
    assert e.value.params == ("backend", "device")
    with pytest.raises(qmamba.ConfigError, match="unknown `backend` 'int8'"):
        evaluate.run_eval(EvalJob(quantized=str(saved), backend="int8"))
