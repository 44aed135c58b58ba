"""Rotations and smoothing set up before calibration: float output kept, KLT decorrelates."""
import copy

import pytest
import torch
import torch.nn.functional as F
from quant_helpers import image_loader

from qmamba.quant.config import QuantConfig
from qmamba.quant.methods.hadamard import mixing_rotation
from qmamba.quant.methods.outliers import InputStatistics, apply_outlier_transforms, klt_rotation

MODELS = [("vim_model", 28), ("vmamba_model", 32)]


def _images(size, n=16, seed=0):
    return [x for x, _ in image_loader(n, size, seed=seed)]


def _transformed(model, recipe, size):
    rotated = copy.deepcopy(model)
    info = apply_outlier_transforms(rotated, QuantConfig.from_recipe(recipe, 8, 8), _images(size))
    return rotated, info


@pytest.mark.parametrize("model_name,size", MODELS)
@pytest.mark.parametrize("recipe", ["quamba", "mambaquant"])
def test_folded_rotations_keep_the_float_output(request, model_name, size, recipe):
    model = request.getfixturevalue(model_name)
    rotated, info = _transformed(model, recipe, size)
    assert info and all(entry["size"] > 0 for entry in info.values())
    x = _images(size, 8, seed=5)[0]  # not the statistics' images
    with torch.no_grad():
        ref, out = model(x), rotated(x)
    assert float((out - ref).abs().max() / ref.abs().max()) < 1e-5
    # the weights really changed (folded), the original model did not
    assert not torch.equal(rotated.state_dict()[_first_out_proj(model) + ".weight"],
                           model.state_dict()[_first_out_proj(model) + ".weight"])


def _first_out_proj(model):
    return "layers.0.mixer.out_proj" if hasattr(model.layers[0], "mixer") else "layers.0.blocks.0.op.out_proj"


def test_quamba_rotates_y_by_a_hadamard_and_out_proj_rotates_it_back(vim_model):
    rotated, info = _transformed(vim_model, "quamba", 28)
    assert set(info) == {f"layers.{i}.mixer.out_proj" for i in range(len(vim_model.layers))}
    before, after = vim_model.layers[1].mixer.out_proj, rotated.layers[1].mixer.out_proj
    h = after.input_rotation.matrix
    n = h.shape[0]
    torch.testing.assert_close(h.abs(), torch.full((n, n), n**-0.5))  # a true Hadamard matrix
    y = torch.randn(3, 9, n)
    y[..., 5] *= 50.0  # one outlier channel, as in the scan outputs Quamba describes
    yh = after.input_rotation(y)
    assert yh.abs().max() < 0.5 * y.abs().max()  # the outlier channel is spread over all
    torch.testing.assert_close(after(y), before(y), atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(F.linear(yh, after.weight), before(y), atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("model_name,size", MODELS)
def test_klt_rotation_decorrelates_and_aligns_variances(request, model_name, size):
    model = request.getfixturevalue(model_name)
    rotated, info = _transformed(model, "mambaquant", size)
    layer = rotated.layers[0].mixer.in_proj if model_name == "vim_model" else rotated.layers[0].blocks[0].op.in_proj
    assert layer.input_rotation.kind == "klt_hadamard" and layer.input_rotation.online
    stats = InputStatistics(layer.input_quant.channel_axis)
    layer.input_quant.observer = stats  # sees x K H, on the calibration images
    with torch.no_grad():
        for x in _images(size):
            rotated(x)
    layer.input_quant.observer = None
    cov_rot = stats.covariance()  # (n, n) of x K H
    n = cov_rot.shape[0]
    h, _ = mixing_rotation(n, QuantConfig().seed)
    cov_klt = h @ cov_rot @ h.T  # covariance of x K
    off = cov_klt - torch.diag(torch.diagonal(cov_klt))
    assert off.abs().max() < 1e-4 * cov_klt.diagonal().max()  # decorrelated
    var = cov_rot.diagonal()  # after H: every channel has the mean variance
    assert (var.max() - var.min()) < 1e-4 * var.mean()


def test_klt_rotation_of_a_known_covariance():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(12, 12, generator=g, dtype=torch.float64)
    cov = a @ a.T
    r, kind = klt_rotation(cov)
    assert kind == "klt_hadamard"
    rotated = r.T @ cov @ r
    torch.testing.assert_close(rotated.diagonal(), torch.full((12,), float(cov.trace()) / 12, dtype=torch.float64))


def test_dt_rotation_is_folded_into_x_proj(vim_model):
    rotated, info = _transformed(vim_model, "mambaquant", 28)
    mixer, orig = rotated.layers[0].mixer, vim_model.layers[0].mixer
    slot = mixer.dt_proj.input_rotation
    assert slot.active and not slot.online and info["layers.0.mixer.dt_proj"]["online"] is False
    r = slot.matrix.double()
    rank = mixer.dt_rank
    u = torch.randn(4, mixer.d_inner, dtype=torch.float64)
    # rows of x_proj that feed dt_proj now produce dt_r R; its other rows are untouched up
    # to the online Hadamard of x_proj's own input (folded into its columns)
    h = mixer.x_proj.input_rotation.matrix.double()
    dt_new = (u @ h) @ mixer.x_proj.weight.double()[:rank].T
    dt_old = u @ orig.x_proj.weight.double()[:rank].T
    torch.testing.assert_close(dt_new, dt_old @ r, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mixer.dt_proj.weight.double(), orig.dt_proj.weight.double() @ r, atol=1e-6, rtol=1e-5)
