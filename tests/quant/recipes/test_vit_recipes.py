"""The ptq4vit, repq_vit and qvlm recipes on small models: mechanisms on, reload exact."""
import math

import pytest
import torch
from quant_helpers import image_loader

from qmamba.nn.point import iter_points
from qmamba.quant.config import QuantConfig
from qmamba.quant.engine import quantize
from qmamba.quant.methods import hessian
from qmamba.quant.quantizers.log_sqrt2 import LogSqrt2Quantizer
from qmamba.quant.quantizers.twin_uniform import TwinUniformQuantizer
from qmamba.quant.serialize import load_quantized, save_quantized

FAST = {"search.candidates": (1.0, 0.8), "search.samples": 4}


def _quantize(model, recipe, size, bits=(4, 4)):
    cfg = QuantConfig.from_recipe(recipe, *bits, calib_size=8)
    if cfg.search.enabled:
        cfg = cfg.replace(**FAST)
    return quantize(model, cfg, image_loader(8, size))


@pytest.fixture(scope="module")
def vim_ptq4vit(vim_model):
    return _quantize(vim_model, "ptq4vit", 28)


def test_ptq4vit_puts_twin_uniform_at_the_silu_outputs(vim_ptq4vit):
    points = dict(iter_points(vim_ptq4vit))
    twin = {n: p.quantizer for n, p in points.items() if p.role in ("ssm.u", "ssm.z")}
    assert twin and all(isinstance(q, TwinUniformQuantizer) for q in twin.values())
    for q in twin.values():
        ratio = float(q.scale_pos / q.scale)
        assert ratio >= 1 and math.log2(ratio) == pytest.approx(round(math.log2(ratio)))
    others = [p.quantizer for p in points.values() if p.role == "linear_input"]
    assert not any(isinstance(q, TwinUniformQuantizer) for q in others)
    # the block search went over every activation point of the blocks (twin: (D1, m) pairs)
    info = vim_ptq4vit.qmamba_info["points"]
    in_blocks = {n: e for n, e in info.items() if n.startswith("layers.")}
    assert all("clip" in e for e in in_blocks.values() if e["role"] != "weight")
    assert all(len(in_blocks[n]["clip"]) == 2 for n in twin)
    assert not any("clip" in e for e in in_blocks.values() if e["role"] == "weight")


def test_weight_points_are_searched_only_when_asked(vim_model):
    from qmamba.quant.engine.build import searchable
    from qmamba.quant.engine.observe import WeightCapture
    from qmamba.quant.engine.plan import PointPlan

    point = vim_model.layers[0].mixer.in_proj.weight_quant
    plan = PointPlan("w", point, 4, observer=WeightCapture())
    cfg = QuantConfig.from_recipe("ptq4vit", 4, 4)
    assert not searchable(plan, cfg)
    assert searchable(plan, cfg.replace(**{"vit_ptq.search_weights": True}))


def test_hessian_weights_are_squared_gradients_of_the_kl_at_the_block_output(vim_model):
    images = [image_loader(4, 28)[0][0]]
    probs = hessian.fp_probabilities(vim_model, images, "cpu")
    q = _quantize(vim_model, "minmax", 28)  # every block quantized before layers[1]'s output
    for name, p in iter_points(q):
        if name.startswith("layers.1.") or name.startswith("head."):
            p.quantizer = None
    weights = hessian.block_output_weights(q, q.layers[1], images, probs, "cpu")[0]
    hidden_w = weights[0]
    assert hidden_w is not None and hidden_w.shape == (4, 50, 32)
    assert float(hidden_w.mean()) == pytest.approx(1.0, rel=1e-5) and float(hidden_w.min()) >= 0
    assert float(hidden_w.std()) > 0.1  # a weighting, not the plain squared error
    assert hessian._normalised_square(torch.zeros(3)) is None  # zero gradient: plain error


def test_repq_uses_log_sqrt2_at_delta_and_per_tensor_inputs(vim_model):
    q = _quantize(vim_model, "repq_vit", 28)
    points = dict(iter_points(q))
    deltas = [p.quantizer for p in points.values() if p.role == "ssm.delta"]
    assert deltas and all(isinstance(d, LogSqrt2Quantizer) for d in deltas)
    info = q.qmamba_info["points"]
    assert {e["reparam"] for e in info.values() if "reparam" in e} == {"zero_point"}  # RMSNorm: no bias


def test_repq_folds_zero_points_into_biases_where_both_exist(vmamba_model):
    q = _quantize(vmamba_model, "repq_vit", 32)
    hows = {e.get("reparam") for e in q.qmamba_info["points"].values()} - {None}
    assert "zero_point" in hows  # in_proj has no bias
    fc1_inputs = [e for n, e in q.qmamba_info["points"].items() if n.endswith("mlp.fc1.input_quant")]
    assert all(e["reparam"] == "bias" for e in fc1_inputs)


@pytest.mark.parametrize("recipe", ["ptq4vit", "repq_vit", "qvlm"])
def test_save_and_reload_is_bit_identical(tmp_path, vim_model, vim_ptq4vit, recipe):
    q = vim_ptq4vit if recipe == "ptq4vit" else _quantize(vim_model, recipe, 28)
    save_quantized(q, tmp_path / "m")
    reloaded = load_quantized(tmp_path / "m")
    x = image_loader(8, 28, seed=4)[0][0]
    assert torch.equal(reloaded(x), q(x))
    assert reloaded.qmamba_config == q.qmamba_config
    kinds = {type(p.quantizer) for _, p in iter_points(reloaded) if p.quantizer is not None}
    expected = {"ptq4vit": TwinUniformQuantizer, "repq_vit": LogSqrt2Quantizer}.get(recipe)
    assert expected is None or expected in kinds
