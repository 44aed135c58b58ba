"""The log-sqrt(2) quantizer (RepQ-ViT) used at delta."""
import math

import pytest
import torch

from qmamba.quant.quantizers.log_sqrt2 import LogSqrt2Quantizer, log_sqrt2_quantizer


@pytest.mark.parametrize("bits", [3, 4, 8])
def test_grid_is_scale_times_powers_of_sqrt2_and_the_top_code_is_zero(bits):
    q = LogSqrt2Quantizer(torch.tensor(0.5), bits)
    x = torch.logspace(-12, 0, 5000, base=2.0)  # (0, 1]
    codes = q.codes(x)
    assert codes.min() >= 0 and codes.max() <= 2**bits - 1
    values = q.dequantize(codes)
    assert torch.equal(values, q(x))
    nonzero = codes < 2**bits - 1
    expected = 0.5 * torch.sqrt(torch.tensor(2.0)) ** (-codes[nonzero])
    assert torch.allclose(values[nonzero], expected, rtol=1e-6)
    assert torch.all(values[~nonzero] == 0)
    # away from the rounding thresholds, the code is round(-2 log2(x / s))
    ref = torch.clamp(torch.round(-2 * torch.log2(x / 0.5)), 0, 2**bits - 1)
    frac = (-2 * torch.log2(x / 0.5)) % 1.0
    safe = (frac - 0.5).abs() > 1e-3
    assert torch.equal(codes[safe & nonzero], ref[safe & nonzero])


def test_relative_error_is_bounded_on_a_power_law_sample():
    g = torch.Generator().manual_seed(0)
    x = torch.exp(-6 * torch.rand(20000, generator=g))  # log-uniform over e^-6 .. 1
    q = log_sqrt2_quantizer(x, 6)
    rel = ((q(x) - x) / x).abs()
    assert float(rel.max()) < math.sqrt(2) ** 0.5 - 1 + 1e-3  # half a sqrt(2) step


def test_scale_is_one_of_repq_vits_candidates_with_the_least_error():
    g = torch.Generator().manual_seed(1)
    x = torch.cat([torch.rand(5000, generator=g) * 0.01, torch.tensor([3.0])])  # one outlier
    q = log_sqrt2_quantizer(x, 4)
    cands = [float(x.max())] + [float(torch.quantile(x, p)) for p in (0.999, 0.9999, 0.99999)]
    assert any(float(q.scale) == pytest.approx(c) for c in cands)
    err = float((q(x) - x).pow(2).sum())
    assert all(err <= float((LogSqrt2Quantizer(torch.tensor(c), 4)(x) - x).pow(2).sum()) + 1e-12 for c in cands)
