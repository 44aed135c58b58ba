"""Integer Linear / conv layers against the simulated layers they replace (float32
rounding apart), and their kernels against the PyTorch references (bit for bit)."""
from __future__ import annotations

import pytest
import torch
from int_helpers import ISAS

from qmamba.integer.layers import (
    IntConv1dCausal,
    IntConv2d,
    IntLinear,
    epilogue,
    epilogue_reference,
)
from qmamba.nn.layers import QuantConv1d, QuantConv2d, QuantLinear
from qmamba.ops import scan_backend
from qmamba.quant.primitives import qrange
from qmamba.quant.quantizers import UniformQuantizer, WeightQuantizer


def _quantize(layer, x, w_bits, a_bits, per_token=False):
    """Attach min/max quantizers (per-channel symmetric weights, asymmetric inputs)."""
    w = layer.weight.detach()
    amax = w.abs().flatten(1).amax(1).view(-1, *([1] * (w.dim() - 1)))
    scale = amax / qrange(w_bits, True)[1]
    layer.weight_quant.quantizer = WeightQuantizer(scale, torch.zeros_like(scale), w_bits)
    axis = layer.input_quant.channel_axis
    if per_token:
        keep = [d for d in range(x.dim()) if d not in (0, axis % x.dim())]
        lo, hi = x.amin(dim=(0, axis), keepdim=True), x.amax(dim=(0, axis), keepdim=True)
        assert keep
    else:
        lo, hi = x.min().reshape([1] * x.dim()), x.max().reshape([1] * x.dim())
    layer.input_quant.quantizer = UniformQuantizer.from_range(lo, hi, a_bits, False)
    return layer.eval()


def _close(a, b):
    torch.testing.assert_close(a, b, rtol=2e-5, atol=2e-5 * float(b.abs().max()))


@pytest.mark.parametrize("w_bits,a_bits", [(8, 8), (4, 8), (4, 4)])
@pytest.mark.parametrize("per_token", [False, True])
def test_linear_matches_simulated(w_bits, a_bits, per_token):
    torch.manual_seed(0)
    x = torch.randn(3, 9, 48) * 2
    layer = _quantize(QuantLinear(48, 40), x, w_bits, a_bits, per_token)
    with torch.no_grad():
        _close(IntLinear.from_layer(layer)(x), layer(x))


@pytest.mark.parametrize("conv", ["patch", "3x3s2", "depthwise"])
def test_conv2d_matches_simulated(conv):
    torch.manual_seed(0)
    x = torch.randn(2, 6, 16, 16)
    layer = {"patch": QuantConv2d(6, 10, 4, stride=4), "3x3s2": QuantConv2d(6, 10, 3, stride=2, padding=1),
             "depthwise": QuantConv2d(6, 6, 3, padding=1, groups=6)}[conv]
    _quantize(layer, x, 8, 8)
    with torch.no_grad():
        _close(IntConv2d(layer)(x), layer(x))


def test_causal_conv1d_kernel_reference_and_simulated(isa):
    torch.manual_seed(0)
    x = torch.randn(2, 20, 13)
    layer = _quantize(QuantConv1d(20, 20, 4, groups=20, padding=3), x, 8, 8)
    conv = IntConv1dCausal(layer)
    with scan_backend("reference"), torch.no_grad():
        ref = conv(x)
    for level in ISAS:
        isa(level)
        assert torch.equal(conv(x), ref)
    with torch.no_grad():
        _close(ref, layer(x)[..., :13])


@pytest.mark.parametrize("split", [False, True])
def test_epilogue_kernel_equals_reference(split, isa):
    g = torch.Generator().manual_seed(0)
    m, n = 37, 21
    acc = torch.randint(-2**20, 2**20, (m, 2 * n if split else n), generator=g, dtype=torch.int32)
    args = (torch.rand(m, generator=g), torch.randint(-128, 128, (m,), generator=g, dtype=torch.int32),
            torch.randint(-5000, 5000, (n,), generator=g, dtype=torch.int32), torch.rand(n, generator=g),
            torch.randn(n, generator=g))
    ref = epilogue_reference(acc, *args, split)
    for level in ISAS:
        isa(level)
        assert torch.equal(epilogue(acc, *args, split), ref)
        assert torch.equal(epilogue(acc, args[0][:1], args[1][:1], *args[2:], split),
                           epilogue_reference(acc, args[0][:1], args[1][:1], *args[2:], split))
