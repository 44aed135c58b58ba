"""The block-wise PTQ engine on small Vim and VMamba models."""
import pytest
import torch
from quant_helpers import image_loader

from qmamba.nn.point import iter_points
from qmamba.nn.rotation import idle_rotation_points
from qmamba.quant.config import QuantConfig
from qmamba.quant.engine import quantize
from qmamba.quant.quantizers import LogQuantizer, ScanQuantizer, SmoothedInput
from qmamba.quant.serialize import load_quantized, save_quantized

FAST_SEARCH = {"search.candidates": (1.0, 0.8), "search.samples": 8}


def _rel_err(out, ref):
    out, ref = out.detach(), ref.detach()
    return float((out - ref).pow(2).mean() / ref.pow(2).mean())


def test_quantize_returns_a_copy_and_leaves_the_input_alone(vim_model):
    before = {k: v.clone() for k, v in vim_model.state_dict().items()}
    q = quantize(vim_model, QuantConfig.from_recipe("minmax", 8, 8, calib_size=8), image_loader(8, 28))
    assert q is not vim_model
    assert all(p.quantizer is None and p.observer is None for _, p in iter_points(vim_model))
    after = vim_model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    # every planned point got a quantizer, and no observer is left behind; the points
    # of idle rotation slots (x_proj's, used only by rotating recipes) are not planned
    idle = idle_rotation_points(q)
    points = {k: p for k, p in iter_points(q) if id(p) not in idle}
    assert all(p.quantizer is not None and p.observer is None for p in points.values())


def test_16_bit_is_nearly_lossless(vim_model):
    x = image_loader(8, 28)[0][0]  # calibration images: nothing falls outside the ranges
    cfg = QuantConfig.from_recipe("minmax", 16, 16, calib_size=8, first_last_bits=16)
    q = quantize(vim_model, cfg, image_loader(8, 28))
    assert _rel_err(q(x), vim_model(x)) < 1e-6


@pytest.mark.parametrize("model_name,size", [("vim_model", 28), ("vmamba_model", 32)])
def test_qmamba_recipe_places_ltsq_and_tgq(request, model_name, size):
    model = request.getfixturevalue(model_name)
    cfg = QuantConfig.from_recipe("qmamba", 4, 4, calib_size=16).replace(**FAST_SEARCH)
    q = quantize(model, cfg, image_loader(16, size))
    points = dict(iter_points(q))
    h = [p.quantizer for p in points.values() if p.role == "ssm.h"]
    assert h and all(isinstance(qz, ScanQuantizer) and qz.num_groups == 8 for qz in h)
    a = [p.quantizer for p in points.values() if p.role == "ssm.A"]
    # A_bar of an initialised Mamba crowds next to 1: the skewness test picks LtSQ
    assert any(qz.kind == "log1m" for qz in a)
    info = q.qmamba_info["points"]
    assert all("grid" in entry and "bits" in entry for entry in info.values())
    x = image_loader(8, size, seed=2)[0][0]
    assert torch.isfinite(q(x)).all()


def test_ablations_switch_exactly_their_part(vim_model):
    loader = image_loader(16, 28)
    no_ltsq = quantize(vim_model, QuantConfig.from_recipe("qmamba_no_ltsq", 4, 4, calib_size=16).replace(**FAST_SEARCH), loader)
    no_tgq = quantize(vim_model, QuantConfig.from_recipe("qmamba_no_tgq", 4, 4, calib_size=16).replace(**FAST_SEARCH), loader)
    for _, p in iter_points(no_ltsq):
        if p.role in ("ssm.A", "ssm.B"):
            assert p.quantizer.kind == "uniform"
        if p.role == "ssm.delta":
            assert not isinstance(p.quantizer, LogQuantizer)
    assert all(p.quantizer.num_groups == 1 for _, p in iter_points(no_tgq) if p.role == "ssm.h")


def test_calibration_is_deterministic(vim_model):
    cfg = QuantConfig.from_recipe("qmamba", 4, 4, calib_size=16).replace(**FAST_SEARCH)
    s1 = quantize(vim_model, cfg, image_loader(16, 28)).state_dict()
    s2 = quantize(vim_model, cfg, image_loader(16, 28)).state_dict()
    assert s1.keys() == s2.keys() and all(torch.equal(s1[k], s2[k]) for k in s1)


def test_ptq4vm_smoothing_keeps_the_float_product(vim_model):
    cfg = QuantConfig.from_recipe("ptq4vm", 16, 16, calib_size=8, first_last_bits=16)
    q = quantize(vim_model, cfg, image_loader(8, 28))
    smoothed = [p for _, p in iter_points(q) if isinstance(p.quantizer, SmoothedInput)]
    assert smoothed, "ptq4vm must smooth the Linear inputs"
    x = image_loader(8, 28)[0][0]
    assert _rel_err(q(x), vim_model(x)) < 1e-5


@pytest.mark.parametrize("recipe", ["minmax", "ptq4vm", "qmamba"])
def test_save_and_reload_gives_bit_identical_logits(tmp_path, vim_model, recipe):
    cfg = QuantConfig.from_recipe(recipe, 4, 4, calib_size=8).replace(**FAST_SEARCH)
    q = quantize(vim_model, cfg, image_loader(8, 28))
    info = save_quantized(q, tmp_path / "m")
    reloaded = load_quantized(tmp_path / "m")
    x = image_loader(8, 28, seed=4)[0][0]
    assert torch.equal(reloaded(x), q(x))
    assert reloaded.qmamba_config == q.qmamba_config
    # 4-bit codes (plus per-channel scales) are at most 1/7 of the float32 weights
    assert info["weight_code_bytes"] <= info["weight_float32_bytes"] / 7


def test_backends_agree_on_a_quantized_model(vim_model):
    from qmamba import ops

    if not ops.compiled_available():
        pytest.skip("no compiler")
    q = quantize(vim_model, QuantConfig.from_recipe("qmamba", 4, 4, calib_size=8).replace(**FAST_SEARCH), image_loader(8, 28))
    x = image_loader(8, 28, seed=5)[0][0]
    with ops.scan_backend("reference"):
        ref = q(x)
    with ops.scan_backend("compiled"):
        fast = q(x)
    # the backends make the same quantization decisions except where an exp differs in
    # its last bit right at a grid boundary: outputs agree to well within one step
    assert _rel_err(fast, ref) < 1e-4


def test_role_bits_sets_the_width_of_one_role_and_none_keeps_it_float(vim_model):
    cfg = QuantConfig.from_recipe("minmax", 4, 4, calib_size=8).replace(role_bits={"ssm.h": 8, "ssm.C": None})
    q = quantize(vim_model, cfg, image_loader(8, 28))
    points = dict(iter_points(q))
    h = [p for p in points.values() if p.role == "ssm.h"]
    c = [p for p in points.values() if p.role == "ssm.C"]
    u = [p for p in points.values() if p.role == "ssm.u"]
    assert h and all(p.quantizer.bits == 8 for p in h)
    assert c and all(p.quantizer is None for p in c)
    assert u and all(p.quantizer.bits == 4 for p in u)


@pytest.mark.parametrize("model_name", ["vim_model", "vmamba_model"])
def test_per_channel_roles_give_y_and_the_gate_a_scale_per_channel(request, tmp_path, model_name):
    model, size = request.getfixturevalue(model_name), 28 if model_name == "vim_model" else 32
    cfg = QuantConfig.from_recipe("qmamba", 4, 4, calib_size=8).replace(
        **FAST_SEARCH, **{"act.per_channel_roles": ["ssm.y", "ssm.z"]})
    q = quantize(model, cfg, image_loader(8, size))
    points = dict(iter_points(q))
    channel = [p for p in points.values() if p.role in ("ssm.y", "ssm.z")]
    assert channel and any(p.role == "ssm.y" for p in channel)
    for p in channel:  # (1, d, 1) on the (b, d, l) tensors: a scale and a zero point per channel
        qz = p.quantizer
        assert qz.granularity == "channel" and qz.bits == 4
        assert qz.scale.dim() == 3 and qz.scale.shape[0] == qz.scale.shape[2] == 1 and qz.scale.shape[1] > 1
        assert qz.zero_point.shape == qz.scale.shape
    others = [p for p in points.values() if p.role == "ssm.u"]
    assert others and all(p.quantizer.scale.numel() == 1 for p in others)  # the rest stays per tensor
    save_quantized(q, tmp_path / "m")
    x = image_loader(8, size, seed=4)[0][0]
    assert torch.equal(load_quantized(tmp_path / "m")(x), q(x))
