"""Properties of the pure quantization primitives (qmamba.quant.primitives)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from qmamba.errors import ConfigError
from qmamba.ops import scan_quant_spec as spec
from qmamba.quant import primitives as P

SETTINGS = settings(derandomize=True, deadline=None, max_examples=50)
BITS = st.sampled_from([2, 3, 4, 5, 6, 7, 8, 16])
FLOATS = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False, width=32)


def _tensor(seed: int, shape, kind: str, magnitude: float) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if kind == "normal":
        x = torch.randn(shape, generator=g)
    elif kind == "uniform":
        x = torch.rand(shape, generator=g) * 2 - 0.5
    elif kind == "positive":
        x = torch.rand(shape, generator=g) + 0.25
    else:  # heavy-tailed
        x = torch.randn(shape, generator=g) * torch.randn(shape, generator=g).exp()
    return x * magnitude


# granularity name -> (tensor shape, keep dims on the (possibly grouped) tensor, group axis)
GRANULARITIES = {
    "tensor": ((4, 6, 8), (), None),
    "channel": ((4, 6, 8), (1,), None),
    "token": ((4, 6, 8), (-1,), None),
    "group": ((6, 16), None, 1),  # groups of 4 along dim 1, one range per (row, group)
}


def _params_for(x, granularity, bits, symmetric):
    shape, keep, group_axis = GRANULARITIES[granularity]
    if group_axis is not None:
        xv = P.group_view(x, group_axis, 4)
        keep = P.group_keep_dims(group_axis, (0,))
    else:
        xv = x
    xmin, xmax = P.reduce_minmax(xv, keep)
    scale, zp = P.choose_qparams(xmin, xmax, bits, symmetric)
    qmin, qmax = P.qrange(bits, symmetric)
    return xv, scale, zp, qmin, qmax, keep


# ------------------------------------------------------------------ bits and ranges


@pytest.mark.parametrize("bits", list(range(2, 17)))
def test_validate_bits_accepts_2_to_16(bits):
    assert P.validate_bits(bits) == bits


@pytest.mark.parametrize("bad", [0, 1, -4, 17, 32, 4.0, 4.5, True, "4", None])
def test_validate_bits_rejects(bad):
    with pytest.raises(ConfigError, match="bit width"):
        P.validate_bits(bad)


def test_qrange():
    assert P.qrange(8, symmetric=True) == (-127, 127)
    assert P.qrange(8, symmetric=False) == (0, 255)
    assert P.qrange(2, symmetric=True) == (-1, 1)
    assert P.qrange(16, symmetric=False) == (0, 65535)
    assert P.log1m_qrange(4) == (0, 15)
    assert P.log_signed_qrange(4) == (0, 7)
    with pytest.raises(ConfigError):
        P.qrange(1, symmetric=True)


# ------------------------------------------------------------------ granularity helpers


def test_reduce_minmax_shapes():
    x = torch.randn(3, 4, 5)
    lo, hi = P.reduce_minmax(x, ())
    assert lo.shape == (1, 1, 1) and lo.item() == x.min().item() and hi.item() == x.max().item()
    lo, hi = P.reduce_minmax(x, (1,))
    assert lo.shape == (1, 4, 1)
    assert torch.equal(lo.flatten(), x.transpose(0, 1).reshape(4, -1).min(1).values)
    lo, hi = P.reduce_minmax(x, (-1, 0))
    assert lo.shape == (3, 1, 5) and torch.equal(hi, x.amax(1, keepdim=True))
    lo, hi = P.reduce_minmax(x, (0, 1, 2))
    assert torch.equal(lo, x) and torch.equal(hi, x)
    with pytest.raises(ConfigError):
        P.reduce_minmax(x, (3,))
    assert P.per_tensor() == () and P.per_channel(0) == (0,) and P.per_token(1) == (1,)


def test_group_view_roundtrip_and_keep_dims():
    x = torch.arange(2 * 12 * 3, dtype=torch.float32).reshape(2, 12, 3)
    xg = P.group_view(x, 1, 4)
    assert xg.shape == (2, 3, 4, 3)
    assert torch.equal(xg[:, 1, :, :], x[:, 4:8, :])
    assert torch.equal(P.group_unview(xg, 1), x)
    assert torch.equal(P.group_unview(P.group_view(x, -1, 3), -1), x)
    assert P.group_keep_dims(1) == (1,)
    assert P.group_keep_dims(1, (0,)) == (0, 1)
    assert P.group_keep_dims(1, (2,)) == (1, 3)
    assert P.group_keep_dims(-2, (-1,), ndim=3) == (1, 3)
    with pytest.raises(ConfigError, match="does not divide"):
        P.group_view(x, 1, 5)
    with pytest.raises(ConfigError):
        P.group_view(x, 1, 0)


# ------------------------------------------------------------------ qparams


@SETTINGS
@given(lo=FLOATS, hi=FLOATS, bits=BITS, symmetric=st.booleans())
def test_choose_qparams_zero_exact_and_zp_integer(lo, hi, bits, symmetric):
    lo, hi = min(lo, hi), max(lo, hi)
    scale, zp = P.choose_qparams(torch.tensor(lo), torch.tensor(hi), bits, symmetric)
    qmin, qmax = P.qrange(bits, symmetric)
    assert scale.item() > 0 and scale.dtype == torch.float32
    assert zp.item() == round(zp.item()) and qmin <= zp.item() <= qmax
    if symmetric:
        assert zp.item() == 0
    # 0 is always exactly representable
    assert P.fake_quant(torch.zeros(1), scale, zp, qmin, qmax).item() == 0.0


def test_choose_qparams_values():
    s, zp = P.choose_qparams(torch.tensor(-1.0), torch.tensor(3.0), 2, symmetric=False)
    assert math.isclose(s.item(), 4 / 3, rel_tol=1e-6) and zp.item() == 1.0
    s, zp = P.choose_qparams(torch.tensor(1.0), torch.tensor(3.0), 8, symmetric=False)
    assert math.isclose(s.item(), 3 / 255, rel_tol=1e-6) and zp.item() == 0.0  # 0 included
    s, zp = P.choose_qparams(torch.tensor(-2.0), torch.tensor(1.0), 8, symmetric=True)
    assert math.isclose(s.item(), 2 / 127, rel_tol=1e-6) and zp.item() == 0.0
    s, _ = P.choose_qparams(0.0, 0.0, 4, symmetric=False)
    assert s.item() == pytest.approx(1e-8)


# ------------------------------------------------------------------ uniform quantization


@SETTINGS
@given(
    seed=st.integers(0, 2**31 - 1),
    kind=st.sampled_from(["normal", "uniform", "positive", "heavy"]),
    magnitude=st.sampled_from([1e-3, 1.0, 37.0, 1e3]),
    bits=BITS,
    symmetric=st.booleans(),
    granularity=st.sampled_from(sorted(GRANULARITIES)),
)
def test_uniform_properties(seed, kind, magnitude, bits, symmetric, granularity):
    x = _tensor(seed, GRANULARITIES[granularity][0], kind, magnitude)
    xv, scale, zp, qmin, qmax, keep = _params_for(x, granularity, bits, symmetric)
    codes = P.quantize(xv, scale, zp, qmin, qmax)
    # codes: integers in [qmin, qmax]
    assert torch.equal(codes, codes.round())
    assert codes.min() >= qmin and codes.max() <= qmax
    # the code/dequant halves are exactly the shared spec math
    xhat = P.fake_quant(xv, scale, zp, qmin, qmax)
    assert torch.equal(P.dequantize(codes, scale, zp), xhat)
    assert torch.equal(spec.fake_quant_uniform(xv, scale, zp, qmin, qmax), xhat)
    # in-range error <= scale / 2 (+ float rounding)
    amax = torch.maximum(*(t.abs() for t in P.reduce_minmax(xv, keep)))
    err = (xhat - xv).abs()
    assert bool((err <= scale * 0.5 + 2e-6 * amax).all())
    # idempotence
    assert torch.equal(P.fake_quant(xhat, scale, zp, qmin, qmax), xhat)
    # symmetric grids are symmetric about 0
    if symmetric:
        assert torch.equal(P.fake_quant(-xv, scale, zp, qmin, qmax), -xhat)
    if granularity == "group":
        assert P.group_unview(xhat, 1).shape == x.shape


@SETTINGS
@given(values=st.lists(FLOATS, min_size=1, max_size=40), bits=BITS, symmetric=st.booleans())
def test_uniform_error_bound_on_arbitrary_values(values, bits, symmetric):
    x = torch.tensor(values, dtype=torch.float32)
    scale, zp, qmin, qmax = P.minmax_qparams(x, bits, symmetric)
    xhat = P.fake_quant(x, scale, zp, qmin, qmax)
    assert bool(((xhat - x).abs() <= scale * 0.5 + 2e-6 * x.abs().max()).all())
    assert torch.equal(P.fake_quant(xhat, scale, zp, qmin, qmax), xhat)


def _max_err(x, bits, symmetric):
    scale, zp, qmin, qmax = P.minmax_qparams(x, bits, symmetric)
    return (P.fake_quant(x, scale, zp, qmin, qmax) - x).abs().max().item(), scale.item()


def test_more_bits_can_increase_max_error_on_grid_data():
    """The strong property 'max error at b+1 <= max error at b' is false in general:
    data lying on the b-bit grid has zero error at b bits but not at b+1 (the grids are
    not nested)."""
    x = torch.tensor([0.0, 1 / 3, 2 / 3, 1.0])
    err2, _ = _max_err(x, 2, symmetric=False)
    err3, _ = _max_err(x, 3, symmetric=False)
    assert err2 == 0.0 and err3 > 0.0


@SETTINGS
@given(
    seed=st.integers(0, 2**31 - 1),
    lo=st.floats(-100.0, 0.0),
    hi=st.floats(0.0, 100.0),
    bits_pair=st.sampled_from(
        [(b, b2) for b in (2, 3, 4, 5, 6, 7, 8) for b2 in (3, 4, 5, 6, 7, 8, 16) if b2 > b]
    ),
    symmetric=st.booleans(),
)
def test_more_bits_never_worse_on_dense_data(seed, lo, hi, bits_pair, symmetric):
    """What does hold, with min/max params (b < b'):
    (1) always: max error at b' <= scale_b' / 2 < scale_b / 4 (scale_b'/scale_b < 1/2);
    (2) if the data is dense over its clipping range [min(x, 0), max(x, 0)] (gaps <=
        scale_b / 2), max error at b >= scale_b / 4, hence max error at b' <= at b."""
    b, b2 = bits_pair
    assume(hi - lo >= 1e-2)
    g = torch.Generator().manual_seed(seed)
    grid = torch.linspace(lo, hi, 2 * 2**b + 1)  # lo <= 0 <= hi: dense over the clip range
    x = torch.cat([grid, lo + (hi - lo) * torch.rand(200, generator=g)])
    err_b, s_b = _max_err(x, b, symmetric)
    err_b2, s_b2 = _max_err(x, b2, symmetric)
    tol = 2e-6 * x.abs().max().item()
    assert s_b2 < s_b / 2
    assert err_b2 <= s_b2 / 2 + tol
    assert err_b >= s_b / 4 - tol
    assert err_b2 <= err_b


def test_ste_gradient_is_clipping_mask():
    scale, zp, qmin, qmax = torch.tensor(0.1), torch.tensor(3.0), 0, 15
    x = torch.linspace(-1.0, 2.0, 301, requires_grad=True)
    y = P.fake_quant(x, scale, zp, qmin, qmax)
    w = torch.randn(301)
    (y * w).sum().backward()
    v = torch.round(x.detach() / scale) + zp
    inside = ((v >= qmin) & (v <= qmax)).float()
    assert torch.equal(x.grad, w * inside)
    assert 0 < inside.sum() < 301  # both sides exercised


def test_lsq_scale_gradient():
    torch.manual_seed(0)
    x = torch.randn(64) * 2
    scale = torch.tensor(0.2, requires_grad=True)
    zp = torch.tensor(5.0)
    qmin, qmax = 0, 15
    xr = x.clone().requires_grad_(True)
    y = P.fake_quant(xr, scale, zp, qmin, qmax, learnable_scale=True)
    assert torch.equal(y.detach(), spec.fake_quant_uniform(x, scale.detach(), zp, qmin, qmax))
    y.sum().backward()
    s = scale.detach()
    v = torch.round(x / s) + zp
    inside = (v >= qmin) & (v <= qmax)
    expect_s = torch.where(inside, torch.round(x / s) - x / s, torch.clamp(v, qmin, qmax) - zp)
    assert scale.grad.item() == pytest.approx(expect_s.sum().item(), rel=1e-5, abs=1e-5)
    assert torch.equal(xr.grad, inside.float())
    # grad_scale multiplies the scale gradient only
    scale2 = torch.tensor(0.2, requires_grad=True)
    P.fake_quant(x, scale2, zp, qmin, qmax, learnable_scale=True, grad_scale=0.5).sum().backward()
    assert scale2.grad.item() == pytest.approx(0.5 * scale.grad.item(), rel=1e-5)


# ------------------------------------------------------------------ log grids


@SETTINGS
@given(
    values=st.lists(FLOATS, min_size=1, max_size=40),
    scale_exp=st.floats(-6, 6),
    bits=BITS,
    base=st.sampled_from([2.0, P.SQRT2]),
)
def test_log_signed_properties(values, scale_exp, bits, base):
    x = torch.tensor(values + [0.0], dtype=torch.float32)
    s = torch.tensor(2.0**scale_exp)
    qmin, qmax = P.log_signed_qrange(bits)
    codes = P.log_quantize(x, s, bits, base)
    assert torch.equal(codes, codes.round())
    assert codes.min() >= -qmax and codes.max() <= qmax
    xhat = P.log_fake_quant(x, s, bits, base)
    assert torch.equal(P.log_dequantize(codes, s, bits, base), xhat)
    assert torch.equal(spec.fake_quant_log_signed(x, s, qmin, qmax, base), xhat)
    # zero maps to zero, the sign is kept (or the value becomes 0)
    assert xhat[-1].item() == 0.0 and codes[-1].item() == 0.0
    assert bool(((torch.sign(xhat) == torch.sign(x)) | (xhat == 0)).all())
    # codes order like values
    order = torch.argsort(x)
    assert bool((codes[order].diff() >= 0).all())
    # idempotence
    assert torch.equal(P.log_fake_quant(xhat, s, bits, base), xhat)
    # relative error within a half code step inside the representable range
    mag = x.abs()
    inrange = (mag >= s * base ** -(qmax - 1)) & (mag <= s * base**0.5) & (mag >= 1e-30)
    ratio = xhat[inrange] / x[inrange]
    assert bool((ratio <= base**0.5 * (1 + 1e-5)).all())
    assert bool((ratio >= base**-0.5 * (1 - 1e-5)).all())


@SETTINGS
@given(
    dists=st.lists(st.floats(1e-4, 1.0), min_size=1, max_size=40),
    scale=st.floats(1e-3, 1.0),
    bits=BITS,
    base=st.sampled_from([2.0, P.SQRT2]),
)
def test_log1m_properties(dists, scale, bits, base):
    x = 1.0 - torch.tensor(dists, dtype=torch.float32)
    x = torch.cat([x, torch.ones(1)])
    s = torch.tensor(scale)
    qmin, qmax = P.log1m_qrange(bits)
    codes = P.log1m_quantize(x, s, bits, base)
    assert torch.equal(codes, codes.round())
    assert codes.min() >= qmin and codes.max() <= qmax
    assert codes[-1].item() == qmax  # A_bar = 1 -> the value closest to 1
    xhat = P.log1m_fake_quant(x, s, bits, base)
    assert torch.equal(P.log1m_dequantize(codes, s, base), xhat)
    assert torch.equal(spec.fake_quant_log1m(x, s, qmin, qmax, base), xhat)
    assert bool((xhat < 1.0 + 1e-7).all())
    assert torch.equal(P.log1m_fake_quant(xhat, s, bits, base), xhat)
    # relative error of the distance to 1 within a half code step inside the range
    d = 1.0 - x[:-1]
    dhat = 1.0 - xhat[:-1]
    inrange = (d >= s * base ** -(qmax - 0.5)) & (d <= s * base**0.5)
    ratio = dhat[inrange] / d[inrange]
    assert bool((ratio <= base**0.5 * (1 + 1e-4)).all())
    assert bool((ratio >= base**-0.5 * (1 - 1e-4)).all())


def test_log_base_checked():
    with pytest.raises(ConfigError, match="base"):
        P.log_quantize(torch.ones(2), torch.tensor(1.0), 4, base=1.0)


# ------------------------------------------------------------------ metrics, sampling


def test_sqnr_db():
    x = torch.tensor([1.0, 1.0])
    assert P.sqnr_db(x, x) == math.inf
    assert P.sqnr_db(x, torch.tensor([1.0, 0.0])) == pytest.approx(10 * math.log10(2))
    assert P.sqnr_db(torch.zeros(2), x) == -math.inf


def test_sample_values_deterministic_and_bounded():
    x = torch.randn(10_000)
    a = P.sample_values(x, 1000, seed=3)
    b = P.sample_values(x, 1000, seed=3)
    assert a.numel() == 1000 and torch.equal(a, b)
    assert torch.equal(P.sample_values(x, 10_000), x)
    assert torch.isin(a, x).all()
