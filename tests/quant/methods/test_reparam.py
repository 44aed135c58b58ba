"""RepQ-ViT scale reparameterization across (norm, linear) pairs."""
import copy

import pytest
import torch
import torch.nn as nn
from quant_helpers import image_loader

from qmamba.models.layers import RMSNorm
from qmamba.nn.layers import QuantLinear
from qmamba.nn.point import iter_points
from qmamba.quant.config import QuantConfig
from qmamba.quant.engine import quantize
from qmamba.quant.methods.reparam import (
    channel_observer,
    fold_pair,
    norm_linear_pairs,
    per_channel_qparams,
)
from qmamba.quant.primitives import choose_qparams
from qmamba.quant.quantizers import UniformQuantizer


def _lopsided_channels(n=512, c=24, seed=0):
    """Tokens whose channels differ in range and offset (the case RepQ-ViT targets)."""
    g = torch.Generator().manual_seed(seed)
    spread = torch.logspace(-1, 1, c)  # (C,) ranges from 0.1 to 10
    offset = torch.linspace(-3, 3, c)  # (C,)
    return torch.randn(n, c, generator=g) * spread + offset  # (n, C)


def _rel(a, b):
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("with_bias", [False, True])
def test_fold_keeps_the_float_output_and_the_per_channel_codes(with_bias):
    torch.manual_seed(0)
    c = 24
    norm = RMSNorm(c) if not with_bias else nn.LayerNorm(c)
    linear = QuantLinear(c, 16, bias=with_bias)
    with torch.no_grad():
        norm.weight.copy_(torch.logspace(-1, 1, c))
        if with_bias:
            norm.bias.copy_(torch.linspace(-3, 3, c))
    x = _lopsided_channels(c=c)
    before = linear(norm(x))
    x_norm = norm(x).detach()
    obs = channel_observer(-1)
    obs(x_norm)
    scale, zp = per_channel_qparams(obs, 4)
    quantizer, how = fold_pair(norm, linear, scale, zp, 4)
    assert how == ("bias" if with_bias else "zero_point")
    # the float output of norm -> linear does not change
    assert _rel(linear(norm(x)), before) < 1e-5
    # inference: one scale for the whole tensor (and one zero point where biases took the shift)
    assert isinstance(quantizer, UniformQuantizer) and quantizer.scale.numel() == 1
    assert quantizer.zero_point.numel() == (1 if with_bias else c)
    assert torch.equal(quantizer.zero_point, quantizer.zero_point.round())
    # the per-tensor quantizer on the folded tensor makes the per-channel quantizer's codes
    folded = norm(x).detach()
    if with_bias:
        codes = torch.clamp(torch.round(folded / quantizer.scale) + quantizer.zero_point, 0, 15)
    else:
        codes = quantizer.codes(folded)
    per_channel = torch.clamp(torch.round(x_norm / scale) + zp, 0, 15)
    agree = float((codes == per_channel).float().mean())
    assert agree > 0.999  # equal up to float rounding exactly at a tie


def test_per_tensor_after_folding_beats_per_tensor_before():
    torch.manual_seed(0)
    c = 24
    norm, linear = RMSNorm(c), QuantLinear(c, 16, bias=False)
    with torch.no_grad():
        norm.weight.copy_(torch.logspace(-1, 1, c))
    x = _lopsided_channels(c=c)
    ref = linear(norm(x)).detach()
    xn = norm(x).detach()
    scale, zp = choose_qparams(xn.min(), xn.max(), 4, symmetric=False)
    plain = UniformQuantizer(scale, zp, 4, symmetric=False)
    err_plain = float((linear(plain(xn)).detach() - ref).pow(2).mean())
    obs = channel_observer(-1)
    obs(xn)
    quantizer, _ = fold_pair(norm, linear, *per_channel_qparams(obs, 4), 4)
    err_folded = float((linear(quantizer(norm(x))).detach() - ref).pow(2).mean())
    assert err_folded < err_plain / 4


def test_blocks_declare_their_pairs(vim_model, vmamba_model):
    vim_pairs = norm_linear_pairs(vim_model.layers[0])
    assert vim_pairs == [(vim_model.layers[0].norm, vim_model.layers[0].mixer.in_proj)]
    for block in vmamba_model.quant_blocks():
        pairs = norm_linear_pairs(block)
        for norm, linear in pairs:
            assert isinstance(norm, nn.LayerNorm) and hasattr(linear, "input_quant")
        # each pair once: a pair listed twice was folded twice (commit e7abc22 did that to
        # VMamba's out_norm -> out_proj, declared by SS2D and again by its block), which
        # left its per-tensor quantizer off the folded tensor's range
        assert len({(id(n), id(lin)) for n, lin in pairs}) == len(pairs)
        if hasattr(block, "op"):
            assert (block.op.out_norm, block.op.out_proj) in pairs


@pytest.mark.parametrize("model_name,size", [("vim_model", 28), ("vmamba_model", 32)])
def test_repq_recipe_folds_without_changing_the_float_model(request, model_name, size):
    model = request.getfixturevalue(model_name)
    q = quantize(model, QuantConfig.from_recipe("repq_vit", 4, 4, calib_size=8), image_loader(8, size))
    info = q.qmamba_info["points"]
    pair_inputs = [name for name, e in info.items() if "reparam" in e]
    assert pair_inputs
    points = dict(iter_points(q))
    for name in pair_inputs:
        quantizer = points[name].quantizer
        assert isinstance(quantizer, UniformQuantizer) and quantizer.scale.numel() == 1
    # norms and linears were changed, the float function was not
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, q.state_dict()[k])]
    assert any("norm" in k for k in changed)
    float_copy = copy.deepcopy(q)
    for _, p in iter_points(float_copy):
        p.quantizer = None
    x = image_loader(8, size, seed=3)[0][0]
    assert _rel(float_copy(x), model(x)) < 1e-5
