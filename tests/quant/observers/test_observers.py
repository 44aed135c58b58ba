"""Calibration observers (qmamba.quant.observers)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qmamba.errors import ConfigError
from qmamba.quant import primitives as P
from qmamba.quant.observers.base import MinMaxObserver, MSEObserver, PercentileObserver

SETTINGS = settings(derandomize=True, deadline=None, max_examples=30)
BITS = st.sampled_from([2, 3, 4, 5, 6, 7, 8, 16])


def _batches(seed, n=3, shape=(2, 5, 7), heavy=True):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        x = torch.randn(shape, generator=g)
        if heavy:
            x = x * torch.exp(torch.randn(shape, generator=g))
        out.append(x + 0.3)
    return out


def _mse(x, scale, zp, bits, symmetric):
    qmin, qmax = P.qrange(bits, symmetric)
    return (P.fake_quant(x, scale, zp, qmin, qmax) - x).double().pow(2)


# ------------------------------------------------------------------ MinMax


@pytest.mark.parametrize("keep", [(), (1,), (-1,), (0, 2)])
@pytest.mark.parametrize("symmetric", [False, True])
def test_minmax_running_equals_minmax_of_all(keep, symmetric):
    xs = _batches(0)
    obs = MinMaxObserver(keep_dims=keep, symmetric=symmetric)
    for x in xs:
        obs(x)
    allx = torch.cat(xs, dim=0)
    lo, hi = P.reduce_minmax(allx, keep)
    if 0 not in P.normalize_dims(keep, 3):
        assert torch.equal(obs.min_val, lo) and torch.equal(obs.max_val, hi)
    for bits in (2, 4, 8, 16):
        s, zp = obs.qparams(bits)
        assert s.dtype == torch.float32 and s.shape == obs.min_val.shape
        es, ezp = P.choose_qparams(obs.min_val, obs.max_val, bits, symmetric)
        assert torch.equal(s, es) and torch.equal(zp, ezp)
    obs.reset()
    assert not obs.observed
    with pytest.raises(ValueError, match="before any tensor"):
        obs.qparams(4)


def test_minmax_no_grad_float32_and_layout_checks():
    obs = MinMaxObserver(keep_dims=(1,))
    x = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    obs(x)
    assert obs.min_val.dtype == torch.float32 and not obs.min_val.requires_grad
    obs(torch.randn(5, 3, 9, dtype=torch.bfloat16))  # other dims may vary
    with pytest.raises(ValueError, match="do not match"):
        obs(torch.randn(2, 4, 4))
    with pytest.raises(ValueError, match="NaN or infinite"):
        obs(torch.tensor([[[float("nan")]] * 3]))
    with pytest.raises(ValueError, match="NaN or infinite"):
        MinMaxObserver()(torch.tensor([1.0, float("inf")]))
    with pytest.raises(ConfigError):
        obs.qparams(1)


def test_minmax_scan_stats():
    g = torch.Generator().manual_seed(0)
    lmin1, lmax1 = -torch.rand(6, 4, 3, generator=g), torch.rand(6, 4, 3, generator=g)
    lmin2, lmax2 = -torch.rand(6, 4, 3, generator=g), torch.rand(6, 4, 3, generator=g)
    obs = MinMaxObserver()
    obs.observe_scan_stats(lmin1, lmax1)
    obs.observe_scan_stats(lmin2, lmax2)
    assert torch.equal(obs.per_step_min, torch.minimum(lmin1, lmin2))
    assert torch.equal(obs.per_step_max, torch.maximum(lmax1, lmax2))
    assert obs.min_val.item() == obs.per_step_min.min().item()
    assert obs.max_val.item() == obs.per_step_max.max().item()
    # per channel d on the (l, d, n) layout
    obs_c = MinMaxObserver(keep_dims=(1,))
    obs_c.observe_scan_stats(lmin1, lmax1)
    assert obs_c.min_val.shape == (1, 4, 1)
    assert torch.equal(obs_c.max_val.flatten(), lmax1.amax(dim=(0, 2)))
    with pytest.raises(ValueError):
        obs.observe_scan_stats(lmin1[:3], lmax1[:3])
    obs.reset()
    assert obs.per_step_min is None and obs.min_val is None


def test_value_observers_refuse_scan_stats():
    for obs in (PercentileObserver(), MSEObserver()):
        with pytest.raises(ConfigError, match="MinMaxObserver"):
            obs.observe_scan_stats(torch.zeros(2, 2, 2), torch.ones(2, 2, 2))


# ------------------------------------------------------------------ Percentile


@pytest.mark.parametrize("keep", [(), (1,)])
def test_percentile_exact_when_small(keep):
    xs = _batches(1)
    obs = PercentileObserver(percentile=99.0, keep_dims=keep)
    for x in xs:
        obs(x)
    allx = torch.cat(xs, dim=0)
    if keep:
        flat = allx.transpose(0, 1).reshape(allx.shape[1], -1)
    else:
        flat = allx.reshape(1, -1)
    lo, hi = obs.clip_range(8)
    assert torch.allclose(hi.flatten(), torch.quantile(flat.double(), 0.99, dim=1).float())
    assert torch.allclose(lo.flatten(), torch.quantile(flat.double(), 0.01, dim=1).float())
    s, zp = obs.qparams(8)
    assert torch.equal(s, P.choose_qparams(lo, hi, 8, False)[0])
    # symmetric: percentile of |x|
    sym = PercentileObserver(percentile=99.0, keep_dims=keep, symmetric=True)
    for x in xs:
        sym(x)
    _, amax = sym.clip_range(8)
    assert torch.allclose(amax.flatten(), torch.quantile(flat.abs().double(), 0.99, dim=1).float())
    # 100th percentile = min/max
    full = PercentileObserver(percentile=100.0, keep_dims=keep)
    for x in xs:
        full(x)
    lo, hi = full.clip_range(4)
    assert torch.equal(lo, full.min_val) and torch.equal(hi, full.max_val)


def test_percentile_bounded_deterministic_reservoir():
    xs = [torch.randn(4000, generator=torch.Generator().manual_seed(i)) for i in range(5)]

    def run(seed):
        obs = PercentileObserver(percentile=99.9, max_samples=3000, min_per_slice=10, seed=seed)
        for x in xs:
            obs(x)
        return obs

    a, b, c = run(0), run(0), run(1)
    assert a.samples.shape == (1, 3000)
    assert torch.equal(a.samples, b.samples)
    assert torch.equal(a.clip_range(8)[1], b.clip_range(8)[1])
    assert not torch.equal(a.samples, c.samples)
    assert torch.isin(a.samples, torch.cat(xs)).all()
    # a uniform sample: values from every batch are kept
    counts = [int(torch.isin(a.samples, x).sum()) for x in xs]
    assert min(counts) > 400
    # close to the exact percentile of all 20,000 values
    exact = torch.quantile(torch.cat(xs), 0.999).item()
    assert abs(a.clip_range(8)[1].item() - exact) < 0.5


def test_percentile_memory_bound_per_channel():
    obs = PercentileObserver(keep_dims=(0,), max_samples=1000, min_per_slice=50)
    obs(torch.randn(8, 1000))
    assert obs.samples.shape == (8, 125)
    obs = PercentileObserver(keep_dims=(0,), max_samples=1000, min_per_slice=300)
    obs(torch.randn(8, 1000))
    assert obs.samples.shape == (8, 300)


def test_percentile_rejects_bad_percentile():
    with pytest.raises(ConfigError):
        PercentileObserver(percentile=120)


# ------------------------------------------------------------------ MSE


@SETTINGS
@given(
    seed=st.integers(0, 2**31 - 1),
    bits=BITS,
    symmetric=st.booleans(),
    keep=st.sampled_from([(), (1,), (-1,)]),
    heavy=st.booleans(),
)
def test_mse_never_worse_than_minmax(seed, bits, symmetric, keep, heavy):
    xs = _batches(seed, heavy=heavy)
    mse = MSEObserver(keep_dims=keep, symmetric=symmetric, num_candidates=40)
    mm = MinMaxObserver(keep_dims=keep, symmetric=symmetric)
    for x in xs:
        mse(x)
        mm(x)
    allx = torch.cat(xs, dim=0)
    s1, z1 = mse.qparams(bits)
    s0, z0 = mm.qparams(bits)
    red = tuple(d for d in range(3) if d not in P.normalize_dims(keep, 3))
    e1 = _mse(allx, s1, z1, bits, symmetric).mean(dim=red)
    e0 = _mse(allx, s0, z0, bits, symmetric).mean(dim=red)
    assert bool((e1 <= e0).all())  # per slice, hence in total
    # deterministic
    mse2 = MSEObserver(keep_dims=keep, symmetric=symmetric, num_candidates=40)
    for x in xs:
        mse2(x)
    assert torch.equal(mse2.qparams(bits)[0], s1) and torch.equal(mse2.qparams(bits)[1], z1)


def test_mse_clips_heavy_tails_at_low_bits():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(20000, generator=g)
    x[:5] = torch.tensor([40.0, -35.0, 30.0, 25.0, -50.0])
    mse, mm = MSEObserver(), MinMaxObserver()
    mse(x)
    mm(x)
    lo, hi = mse.clip_range(4)
    assert hi.item() < 0.5 * mm.max_val.item()
    e1 = _mse(x, *mse.qparams(4), 4, False).mean().item()
    e0 = _mse(x, *mm.qparams(4), 4, False).mean().item()
    assert e1 < 0.5 * e0
    # more data invalidates the cached search
    mse(x * 0.1)
    assert mse.clip_range(4)[1].item() == pytest.approx(hi.item())
    mse.reset()
    assert not mse.observed


def test_mse_ratios_and_options():
    obs = MSEObserver(num_candidates=100, min_ratio=0.3)
    assert len(obs.ratios) == 100 and obs.ratios[0] == 1.0 and obs.ratios[-1] == 0.3
    assert all(a > b for a, b in zip(obs.ratios[:-1], obs.ratios[1:], strict=True))
    with pytest.raises(ConfigError):
        MSEObserver(min_ratio=0.0)
