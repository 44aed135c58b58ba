"""LtSQ (qmamba.quant.methods.ltsq) on synthetic discrete SSM parameters."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qmamba.errors import ConfigError
from qmamba.ops import scan_quant_spec as spec
from qmamba.quant import primitives as P
from qmamba.quant.methods import ltsq as L

SETTINGS = settings(derandomize=True, deadline=None, max_examples=25)


def synthetic_a_bar(
    seed: int = 0, b: int = 4, d: int = 16, n: int = 16, l: int = 32
) -> torch.Tensor:
    """A_bar = exp(-delta * a): delta = softplus(dt) with dt ~ N(-4, 1.5) (mostly small
    steps, a long tail of large ones), a = 1..n as in Mamba's A = -exp(A_log)."""
    g = torch.Generator().manual_seed(seed)
    delta = torch.nn.functional.softplus(torch.randn(b, d, 1, l, generator=g) * 1.5 - 4.0)
    a = torch.arange(1, n + 1, dtype=torch.float32).reshape(1, 1, n, 1)
    return torch.exp(-delta * a)


def test_synthetic_a_bar_is_long_tailed():
    a = synthetic_a_bar()
    assert L.skewness_test(a, alpha=0.5)
    assert a.min().item() < 0.2  # the long tail towards 0
    assert not L.skewness_test(torch.linspace(0.0, 1.0, 1001), alpha=0.6)


@pytest.mark.parametrize("base", [2.0, P.SQRT2])
def test_ltsq_beats_uniform_minmax_on_relative_error_near_one(base):
    a = synthetic_a_bar()
    mask = L.above_median_mask(a)
    params = L.ltsq_params_a_bar(a, bits=4, base=base)
    a_hat = params.fake_quant(a)
    rel_ltsq = L.relative_error_1m(a, a_hat, mask)
    scale, zp, qmin, qmax = P.minmax_qparams(a, 4, symmetric=False)
    rel_uniform = L.relative_error_1m(a, P.fake_quant(a, scale, zp, qmin, qmax), mask)
    assert rel_ltsq < rel_uniform
    assert rel_ltsq <= base**0.5 - 1 + 1e-4  # half a code step, nothing clipped above the median
    assert rel_uniform > 0.3


def test_ltsq_a_bar_params_and_codes():
    a = synthetic_a_bar(1)
    p = L.ltsq_params_a_bar(a, bits=4)
    assert p.kind == "log1m" and p.bits == 4 and p.base == 2.0
    assert (p.qmin, p.qmax) == (0, 15) and p.code_range == (0, 15)
    codes = p.quantize(a)
    assert torch.equal(codes, codes.round()) and codes.min() >= 0 and codes.max() <= 15
    assert torch.equal(p.dequantize(codes), p.fake_quant(a))
    # the scan sees the same grid
    sp = p.scan_spec()
    assert sp.kind == "log1m" and sp.scale.shape == (1, 1, 1)
    s, zp = sp.expand_params(16, 16)
    a_t = a[0, :, :, 0]  # one step: (d, n)
    assert torch.equal(spec.apply_scan_quant(a_t, sp, s[0], zp[0]), p.fake_quant(a_t))
    # the search minimised the default MSE over its candidates (multiplier 1 included)
    s0 = (1 - a).max()
    mse_at_s0 = (P.log1m_fake_quant(a, s0, 4) - a).double().pow(2).mean().item()
    assert p.error <= mse_at_s0 + 1e-12
    assert 1.0 in L.DEFAULT_SCALE_MULTIPLIERS


def test_ltsq_search_uses_error_fn_and_bases():
    a = synthetic_a_bar(2)
    s0 = (1 - a).max().item()
    target = s0 * 2 ** (-3 / 4)
    seen = []

    def error_fn(fq):
        seen.append(fq)
        # an "engine" criterion: distance of the grid value at A_bar = 1 - target to it
        probe = torch.tensor([1.0 - target])
        return abs(fq(probe).item() - probe.item()) + abs(
            math.log(fq.keywords["scale"].item() / target)
        )

    p = L.ltsq_params_a_bar(a, bits=4, base=(2.0, P.SQRT2), error_fn=error_fn)
    assert len(seen) == 2 * len(L.DEFAULT_SCALE_MULTIPLIERS)
    assert p.scale.item() == pytest.approx(target, rel=1e-6)
    assert p.base == 2.0  # tie between bases -> the first
    # searching both bases is never worse than one of them
    both = L.ltsq_params_a_bar(a, bits=4, base=(2.0, P.SQRT2))
    only2 = L.ltsq_params_a_bar(a, bits=4, base=2.0)
    only_r2 = L.ltsq_params_a_bar(a, bits=4, base=P.SQRT2)
    assert both.error == min(only2.error, only_r2.error)
    # deterministic
    again = L.ltsq_params_a_bar(a, bits=4, base=(2.0, P.SQRT2))
    assert torch.equal(again.scale, both.scale) and again.base == both.base


def test_ltsq_search_rejects_bad_options():
    a = synthetic_a_bar()
    with pytest.raises(ConfigError):
        L.ltsq_params_a_bar(a, bits=1)
    with pytest.raises(ConfigError):
        L.ltsq_params_a_bar(a, bits=4, base=1.0)
    with pytest.raises(ConfigError):
        L.ltsq_params_a_bar(a, bits=4, search=[])
    with pytest.raises(ConfigError):
        L.ltsq_params_a_bar(torch.empty(0), bits=4)
    with pytest.raises(ConfigError, match="NaN"):
        L.ltsq_params_a_bar(a, bits=4, error_fn=lambda fq: math.nan)


@SETTINGS
@given(
    seed=st.integers(0, 2**31 - 1),
    bits=st.sampled_from([2, 3, 4, 6, 8, 16]),
    base=st.sampled_from([2.0, P.SQRT2]),
)
def test_ltsq_signed_properties(seed, bits, base):
    g = torch.Generator().manual_seed(seed)
    # B_bar u like: dense near 0, long tails both ways
    x = torch.randn(512, generator=g) * torch.exp(torch.randn(512, generator=g) * 1.5)
    x[:8] = 0.0
    p = L.ltsq_params_signed(x, bits=bits, base=base)
    assert p.kind == "log_signed" and (p.qmin, p.qmax) == P.log_signed_qrange(bits)
    assert p.code_range == P.qrange(bits, symmetric=True)
    codes = p.quantize(x)
    lo, hi = p.code_range
    assert torch.equal(codes, codes.round()) and codes.min() >= lo and codes.max() <= hi
    xhat = p.fake_quant(x)
    assert torch.equal(p.dequantize(codes), xhat)
    assert torch.equal(xhat[:8], torch.zeros(8))
    assert bool(((torch.sign(xhat) == torch.sign(x)) | (xhat == 0)).all())
    assert torch.equal(p.fake_quant(xhat), xhat)
    s0 = x.abs().max()
    mse_at_s0 = (P.log_fake_quant(x, s0, bits, base) - x).double().pow(2).mean().item()
    assert p.error <= mse_at_s0 + 1e-12


def test_skewness_test_signed():
    g = torch.Generator().manual_seed(0)
    heavy = torch.randn(4096, generator=g) * torch.exp(torch.randn(4096, generator=g) * 2)
    assert L.skewness_test_signed(heavy, beta=0.05)
    assert not L.skewness_test_signed(torch.rand(4096, generator=g) * 2 - 1, beta=0.05)


def test_relative_error_1m():
    a = torch.tensor([0.5, 0.9, 0.99, 1.0])
    assert L.relative_error_1m(a, a) == 0.0
    a_hat = torch.tensor([0.5, 0.8, 0.99, 0.5])  # the 1.0 element has no distance to 1: left out
    assert L.relative_error_1m(a, a_hat) == pytest.approx((0 + 1.0 + 0) / 3)
    mask = torch.tensor([False, True, False, True])
    assert L.relative_error_1m(a, a_hat, mask) == pytest.approx(1.0)
    assert math.isnan(L.relative_error_1m(a, a_hat, torch.zeros(4, dtype=torch.bool)))
    assert torch.equal(L.above_median_mask(a), torch.tensor([False, False, True, True]))


def test_samples_may_be_a_list_and_are_subsampled_deterministically():
    a = synthetic_a_bar(3)
    parts = list(a.unbind(0))
    p_list = L.ltsq_params_a_bar(parts, bits=3)
    p_full = L.ltsq_params_a_bar(a, bits=3)
    assert torch.equal(p_list.scale, p_full.scale)
    p_sub = L.ltsq_params_a_bar(a, bits=3, max_samples=1000, seed=1)
    p_sub2 = L.ltsq_params_a_bar(a, bits=3, max_samples=1000, seed=1)
    assert torch.equal(p_sub.scale, p_sub2.scale) and p_sub.error == p_sub2.error
