"""Twin uniform quantization (PTQ4ViT) at the SiLU outputs."""
import math

import pytest
import torch
import torch.nn.functional as F

from qmamba.quant.primitives import choose_qparams, fake_quant
from qmamba.quant.quantizers.twin_uniform import (
    TwinUniformQuantizer,
    candidates,
    covering_exponent,
    twin_codes,
    twin_fake_quant,
)


def _silu_sample(n=20000, seed=0, mean=0.0, std=3.0):
    g = torch.Generator().manual_seed(seed)
    return F.silu(mean + std * torch.randn(n, generator=g))


@pytest.mark.parametrize("bits", [4, 8])
def test_two_ranges_with_a_power_of_two_ratio(bits):
    q = TwinUniformQuantizer(torch.tensor(0.01), exponent=5, bits=bits)
    x = torch.linspace(-0.3, 3.0, 4001)
    x_hat = q(x)
    neg_levels = torch.unique(x_hat[x_hat < 0])
    pos_levels = torch.unique(x_hat[x_hat > 0])
    d1 = float(torch.diff(neg_levels).min())
    d2 = float(torch.diff(pos_levels).min())
    assert d1 == pytest.approx(0.01, rel=1e-5) and d2 == pytest.approx(0.32, rel=1e-5)
    assert math.log2(d2 / d1) == pytest.approx(5.0)
    codes = q.codes(x)
    half = 2 ** (bits - 1)
    # one code bit selects the range: k-bit signed codes, negatives in R1, the rest in R2
    assert codes.min() >= -half and codes.max() <= half - 1
    assert torch.equal(codes == codes.round(), torch.ones_like(codes, dtype=torch.bool))
    assert torch.equal(x_hat, torch.where(codes < 0, codes * 0.01, codes * 0.32))
    assert torch.unique(codes).numel() <= 2**bits


def test_codes_round_trip_and_straight_through_gradient():
    x = _silu_sample(1000).requires_grad_(True)
    q = TwinUniformQuantizer(torch.tensor(0.2785 / 8), exponent=4, bits=4)
    y = q(x)
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))
    # inference (no grad) is exactly the grid; the training form x + (x_hat - x) to rounding
    assert torch.equal(twin_fake_quant(x.detach(), q.scale, 4, 4), q(x.detach()))
    assert torch.allclose(y.detach(), q(x.detach()), atol=1e-6)
    assert torch.equal(twin_codes(x.detach(), q.scale, 4, 4), q.codes(x.detach()))


@pytest.mark.parametrize("bits", [4, 6])
def test_lower_error_than_one_uniform_range_on_a_lopsided_sample(bits):
    # SiLU of a pre-activation centred below 0: most values crowd in [-0.28, 0.5], a long
    # positive tail (like u and silu(z) of the built-in Vim). On a symmetric wide
    # pre-activation (silu(N(0, 3^2))) asymmetric uniform wins from 4 bits on: twin
    # spends half its codes on the negatives.
    x = _silu_sample(mean=-1.0, std=1.5)
    lo, hi = x.min(), x.max()
    scale, zp = choose_qparams(lo, hi, bits, symmetric=False)
    uniform_err = float((fake_quant(x, scale, zp, 0, 2**bits - 1) - x).pow(2).mean())
    twin_err = min(
        float((twin_fake_quant(x, torch.tensor(d1), m, bits) - x).pow(2).mean())
        for d1, m in candidates(float(lo), float(hi), bits)
    )
    assert twin_err < uniform_err
    # and the covering candidate alone already keeps the negatives that uniform merges
    d1, m = candidates(float(lo), float(hi), bits)[0]
    neg = x[x < 0]
    assert float((twin_fake_quant(neg, torch.tensor(d1), m, bits) - neg).pow(2).mean()) < float(
        (fake_quant(neg, scale, zp, 0, 2**bits - 1) - neg).pow(2).mean()
    ) / 10


def test_covering_pair_covers_the_calibrated_range():
    for bits in (4, 6, 8):
        d1, m0 = covering_exponent(0.2785, 7.3, bits)
        half = 2 ** (bits - 1)
        assert half * d1 == pytest.approx(0.2785)
        assert (half - 1) * d1 * 2**m0 >= 7.3 > (half - 1) * d1 * 2 ** (m0 - 1)
    cands = candidates(-0.2785, 7.3, 4)
    assert cands[0] == covering_exponent(0.2785, 7.3, 4)
    assert all(m >= 0 and d1 > 0 for d1, m in cands)
