"""Integer codes of activations and of delta: the kernel against its PyTorch reference,
and both against the simulated quantizers (the same codes, the same values)."""
from __future__ import annotations

import math

import pytest
import torch
from int_helpers import ISAS

from qmamba.integer.codes import ActCodes, DeltaTable
from qmamba.integer.scan_plan import NotInteger
from qmamba.ops import scan_backend
from qmamba.quant.quantizers import (
    LogQuantizer,
    SmoothedInput,
    TwinUniformQuantizer,
    UniformQuantizer,
)
from qmamba.quant.quantizers.log_sqrt2 import LogSqrt2Quantizer


def _x(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 3


@pytest.mark.parametrize("bits,symmetric", [(8, False), (8, True), (4, False), (6, True)])
@pytest.mark.parametrize("granularity", ["tensor", "token"])
def test_codes_are_the_quantizers_codes(bits, symmetric, granularity, isa):
    x = _x(3, 7, 24)  # (B, L, K): channels last
    shape = (1, 1, 1) if granularity == "tensor" else (1, 7, 1)
    lo, hi = x.amin((0, 2), keepdim=True), x.amax((0, 2), keepdim=True)
    if granularity == "tensor":
        lo, hi = lo.min().view(shape), hi.max().view(shape)
    q = UniformQuantizer.from_range(lo * 0.8, hi * 0.8, bits, symmetric)
    act = ActCodes(q, -1)
    with scan_backend("reference"):
        ref_codes, ref_values = act.codes(x, want_values=True)
    for level in ISAS:
        isa(level)
        codes, values = act.codes(x, want_values=True)
        assert torch.equal(codes, ref_codes) and torch.equal(values, ref_values)
    assert torch.equal(codes.float() + act.offset, q.codes(x))  # the simulated codes
    with torch.no_grad():
        assert torch.equal(values, q(x))  # and its fake-quantized values, bit for bit
    rows = x.reshape(-1, 24)
    wide = torch.cat([rows, rows], dim=1)[:, :24]  # a strided view (rows of a wider tensor)
    if granularity == "tensor":
        assert torch.equal(act.codes(wide)[0], codes.reshape(-1, 24))


def test_smoothing_and_per_channel_zero_points():
    x = _x(4, 10, 16)
    inner = UniformQuantizer.from_range(torch.tensor(-2.0), torch.tensor(3.0), 8, False)
    smooth = torch.linspace(0.5, 2.0, 16)
    q = SmoothedInput(inner, smooth)
    codes, values = ActCodes(q, -1).codes(x, want_values=True)
    with torch.no_grad():
        assert torch.equal(values, q(x))
    zp = torch.arange(16).float().view(1, 1, 16) + 100  # RepQ-ViT's folded norms
    q = UniformQuantizer(torch.tensor([[[0.02]]]), zp, 8, False)
    act = ActCodes(q, -1)
    assert act.channel_zero_point
    assert torch.equal(act.codes(x)[0].float() + act.offset, q.codes(x))


def test_what_has_no_integer_codes():
    with pytest.raises(NotInteger, match="TwinUniformQuantizer"):
        ActCodes(TwinUniformQuantizer(torch.tensor(0.1), 2, 4), 1)
    with pytest.raises(NotInteger, match="at most 8"):
        ActCodes(UniformQuantizer.from_range(torch.tensor(-1.0), torch.tensor(1.0), 12, False), -1)
    per_channel = UniformQuantizer(torch.rand(1, 1, 16) + 0.1, torch.zeros(1, 1, 16), 8, False)
    with pytest.raises(NotInteger, match="channel axis"):
        ActCodes(per_channel, -1)


@pytest.mark.parametrize("kind", ["uniform8", "uniform4", "log8", "log4", "log_sqrt2"])
def test_delta_table_values_are_the_fake_quantized_delta(kind, isa):
    delta = torch.nn.functional.softplus(_x(2, 6, 50) - 2)
    delta[0, 0, :3] = 0.0
    if kind.startswith("uniform"):
        q = UniformQuantizer.from_range(delta.min(), delta.max() * 0.9, int(kind[-1]), False)
    elif kind == "log_sqrt2":
        q = LogSqrt2Quantizer(delta.max() * 0.8, 4)
    else:
        q = LogQuantizer(delta.max() * 0.8, int(kind[-1]), base=2.0)
    table = DeltaTable(q)
    with scan_backend("reference"):
        ref = table.index(delta)
    for level in ISAS:
        isa(level)
        index = table.index(delta)
        assert torch.equal(index, ref)
    with torch.no_grad():
        assert torch.equal(table.values[index.long() + table.offset], q(delta))
    assert table.values.numel() <= 256 and not math.isnan(float(table.values.sum()))
