"""Quantized selective scan: compiled vs reference, statistics, and the float limit.

The quantizer grids (scan_quant_spec.py) use only exact IEEE operations (division,
round half to even, comparisons with the spec's threshold tables, one multiplication and
subtraction with table values), so on equal inputs the kernel's elementwise quantizers
agree with the spec bit for bit: the elementwise tests require exact equality, NaN
included.

Whole scans are not compared exactly: exp (A_bar) comes from different implementations
(PyTorch's vectorized exp vs the kernel's own), which may differ in the last bit, and y
sums C . h in a different order. A value that lies within that last bit of a code
boundary can then get a neighbouring code, so whole scans (float64) must agree to 1e-9
of the output's scale except a fraction <= 1% that may differ by a bounded amount (a
flipped code moves h by one step of some quantizer, which y sees through C).
"""
from __future__ import annotations

import math

import pytest
import torch

from qmamba import ops
from qmamba.ops import ScanPointQuant, apply_scan_quant
from qmamba.ops import scan_quant_spec as spec_mod
from qmamba.ops.scan_compiled import fake_quant_kernel, quantized_scan_compiled
from qmamba.ops.scan_reference import quantized_scan_reference, selective_scan_reference

STATS = ("A_min", "A_max", "B_min", "B_max", "h_min", "h_max")


def scan_inputs(make_inputs, b=2, d=6, l=9, n=4, g=None, dtype=torch.float64, seed=0):
    x = make_inputs(b, d, l, n, g=g, dtype=dtype, seed=seed)
    delta = torch.nn.functional.softplus(x["delta"] + x["delta_bias"][:, None])
    return x["u"], delta, x["A"], x["B"], x["C"]


# ------------------------------------------------------------------------------------
# elementwise quantizers: kernel code vs scan_quant_spec (exact)
# ------------------------------------------------------------------------------------


def _threshold_values(spec, dtype):
    """Inputs whose r lands exactly on, and one ulp around, every threshold (scale 1)."""
    c, _ = spec_mod.log_grid_tables(spec.base, spec.qmin, spec.qmax, dtype)
    c = c[c > 0]
    around = torch.cat([c, torch.nextafter(c, torch.zeros_like(c)),
                        torch.nextafter(c, torch.full_like(c, 2.0))])
    return around if spec.kind == "log_signed" else 1.0 - around


def _elementwise_case(kind, dtype, gen, base=2.0, qmax=None):
    N = 40000
    r = lambda *s: torch.rand(*s, generator=gen, dtype=torch.float64)  # noqa: E731
    if kind == "uniform":
        scale = 0.01 + 0.1 * r(N)
        zp = torch.randint(-20, 21, (N,), generator=gen).double()
        x = 4 * torch.randn(N, generator=gen, dtype=torch.float64)
        x[:50] = (torch.arange(50, dtype=torch.float64) - 25.5) * scale[:50]  # exact halves
        spec = ScanPointQuant(kind, torch.ones(1, 1, 1), torch.zeros(1, 1, 1), qmin=-100, qmax=100)
    elif kind == "log1m":
        scale, zp = 0.5 + r(N), None
        x = 1 - r(N) ** 4 * 1.5  # (-0.5, 1], dense near 1
        x[:100] = 1.0  # distance 0 -> the top code
        x[100:200] = 1.5  # above 1 -> clamped distance 0
        spec = ScanPointQuant(kind, torch.ones(1, 1, 1), None, qmin=0, qmax=qmax or 15, base=base)
    else:
        scale, zp = 1 + 3 * r(N), None
        x = torch.randn(N, generator=gen, dtype=torch.float64) * torch.exp(3 * torch.randn(N, generator=gen, dtype=torch.float64))
        x[:100] = 0.0
        x[100:200] = torch.randn(100, generator=gen, dtype=torch.float64) * 1e-300  # tiny / 0 in float32
        spec = ScanPointQuant(kind, torch.ones(1, 1, 1), None, qmin=0, qmax=qmax or 127, base=base)
    zp = torch.zeros(N, dtype=torch.float64) if zp is None else zp
    x, scale, zp = x.to(dtype), scale.to(dtype), zp.to(dtype)
    if kind != "uniform":
        edge = _threshold_values(spec, dtype)
        special = torch.tensor([math.nan, math.inf, -math.inf], dtype=dtype)
        x = torch.cat([x, edge, special])
        scale = torch.cat([scale, torch.ones(edge.numel() + 3, dtype=dtype)])
        zp = torch.cat([zp, torch.zeros(edge.numel() + 3, dtype=dtype)])
    return spec, x, scale, zp


def _assert_same(got, ref):
    assert got.dtype == ref.dtype and got.shape == ref.shape
    same = (got == ref) | (torch.isnan(got) & torch.isnan(ref))
    assert bool(same.all()), f"{int((~same).sum())} differ, e.g. {got[~same][:5]} vs {ref[~same][:5]}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "kind,base,qmax",
    [
        ("uniform", 2.0, None),
        ("log1m", 2.0, None),  # base 2: the kernel's bit-level count
        ("log1m", 2.0, 255),
        ("log1m", 2.0, 65535),  # 16 bits: deep thresholds underflow
        ("log1m", math.sqrt(2.0), 255),  # estimate + two comparisons
        ("log_signed", 2.0, None),
        ("log_signed", 1.5, None),
        ("log_signed", 1.05, 127),  # base close to 1: binary search
        ("log_signed", 2.0, 32767),
    ],
)
def test_kernel_quantizer_matches_spec_exactly(kind, base, qmax, dtype):
    gen = torch.Generator().manual_seed(7)
    spec, x, scale, zp = _elementwise_case(kind, dtype, gen, base=base, qmax=qmax)
    ref = apply_scan_quant(x, spec, scale, zp)
    got = fake_quant_kernel(x, spec, scale, zp)
    _assert_same(got, ref)
    assert bool(torch.isfinite(ref[~torch.isnan(x)]).all())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", ["log1m", "log_signed"])
@pytest.mark.parametrize("base", [2.0, math.sqrt(2.0), 1.5])
def test_threshold_grid_is_rounded_log_away_from_ties(kind, base, dtype):
    """The threshold definition equals clamp(round(-log_base(r))) where r is no tie."""
    gen = torch.Generator().manual_seed(3)
    N = 20000
    qmin, qmax = 0, 31
    scale = (0.5 + torch.rand(N, generator=gen, dtype=torch.float64)).to(dtype)
    expo = (torch.rand(N, generator=gen, dtype=torch.float64) * 40 - 4)  # codes -4 .. 36
    mag = (base ** -expo).to(dtype)
    if kind == "log1m":
        x = 1 - mag * scale
        codes = spec_mod.codes_log1m(x, scale, qmin, qmax, base)
        r = torch.clamp(1 - x, min=0) / scale
    else:
        sign = torch.where(torch.rand(N, generator=gen) < 0.5, -1.0, 1.0).to(dtype)
        x = sign * mag * scale
        codes = spec_mod.codes_log_signed(x, scale, qmin, qmax, base)
        r = x.abs() / scale
    t = -torch.log(r.double()) / math.log(base)
    expect = torch.clamp(torch.round(t), qmin, qmax).to(dtype)
    assert bool((codes[r == 0] == qmax).all())
    # not near a tie (1e-4 of a code step is far beyond the rounding of r and the log)
    away = torch.isfinite(t) & (((t - torch.floor(t)) - 0.5).abs() > 1e-4)
    assert away.double().mean() > 0.5
    assert torch.equal(codes[away], expect[away])
    assert torch.equal(codes, codes.round()) and codes.min() >= qmin and codes.max() <= qmax
    # the values are the table values of the codes
    fq = (spec_mod.fake_quant_log1m if kind == "log1m" else spec_mod.fake_quant_log_signed)(
        x, scale, qmin, qmax, base)
    p = spec_mod.log_grid_lookup(codes, base, qmin, qmax)
    if kind == "log1m":
        assert torch.equal(fq, 1.0 - scale * p)
    else:
        val = torch.sign(x) * scale * p
        assert torch.equal(fq, torch.where(codes == qmax, torch.zeros_like(val), val))


def test_log_grid_edge_cases():
    s = torch.ones(5)
    # r = 0 -> qmax even where deep thresholds underflow to 0 (16-bit log1m table)
    assert spec_mod.codes_log1m(torch.ones(1), s[:1], 0, 65535).item() == 65535
    x = torch.tensor([0.0, -0.0, math.inf, -math.inf, math.nan])
    m = spec_mod.codes_log_signed(x, s, 0, 127)
    assert m[:4].tolist() == [127, 127, 0, 0] and math.isnan(m[4].item())
    v = spec_mod.fake_quant_log_signed(x, s, 0, 127)
    assert v[:4].tolist() == [0.0, 0.0, 1.0, -1.0] and math.isnan(v[4].item())
    # a tie r == c_k takes code k (the larger grid value)
    c, p = spec_mod.log_grid_tables(2.0, 0, 15)
    assert spec_mod.codes_log_signed(c[3:4], s[:1], 0, 15).item() == 3
    assert spec_mod.codes_log_signed(torch.nextafter(c[3:4], torch.zeros(1)), s[:1], 0, 15).item() == 4
    assert spec_mod.fake_quant_log1m(torch.tensor([math.nan, 2.0]), s[:2], 0, 15)[1].item() == 1 - p[15].item()


def test_uniform_ties_round_half_to_even():
    scale = torch.full((8,), 0.125, dtype=torch.float32)
    zp = torch.zeros(8)
    x = (torch.arange(8, dtype=torch.float32) - 4 + 0.5) * 0.125  # exact halves
    spec = ScanPointQuant("uniform", torch.ones(1, 1, 1), torch.zeros(1, 1, 1), qmin=-10, qmax=10)
    got = fake_quant_kernel(x, spec, scale, zp)
    assert torch.equal(got, apply_scan_quant(x, spec, scale, zp))
    assert torch.equal(got / 0.125, torch.tensor([-4.0, -2, -2, 0, 0, 2, 2, 4]))


# ------------------------------------------------------------------------------------
# whole quantized scans
# ------------------------------------------------------------------------------------


def _uniform_from_range(lo, hi, bits, group_index=None):
    lo, hi = lo.clamp(max=0), hi.clamp(min=0)
    scale = ((hi - lo) / (2**bits - 1)).clamp(min=1e-8)
    zp = torch.round(-lo / scale)
    return ScanPointQuant("uniform", scale.float(), zp.float(), qmin=0, qmax=2**bits - 1,
                          group_index=group_index)


def _per_tensor(t):
    return t.reshape(1, 1, 1)


def make_quantizers(config, stats, d, n, l):
    """Quantizers calibrated on the float statistics (l, d, n) of the same inputs."""
    A_min, A_max, B_min, B_max, h_min, h_max = (stats[k].double() for k in STATS)
    groups = torch.arange(l) * 3 // l  # TGQ: 3 time groups
    tgq_lo = torch.stack([h_min[groups == i].amin(0) for i in range(3)])  # (3, d, n)
    tgq_hi = torch.stack([h_max[groups == i].amax(0) for i in range(3)])
    h_tgq = _uniform_from_range(tgq_lo, tgq_hi, 8, groups)  # G=3, K=d, N'=n
    if config == "uniform_per_tensor":
        a = _uniform_from_range(_per_tensor(A_min.min()), _per_tensor(A_max.max()), 8)
        b = _uniform_from_range(_per_tensor(B_min.min()), _per_tensor(B_max.max()), 8)
        h = _uniform_from_range(_per_tensor(h_min.min()), _per_tensor(h_max.max()), 8)
        return a, b, h
    if config == "tgq_per_channel":
        b = _uniform_from_range(B_min.amin((0, 2))[None, :, None], B_max.amax((0, 2))[None, :, None], 6)
        return None, b, h_tgq  # B per channel (K=d, N'=1)
    if config == "log":
        a = ScanPointQuant("log1m", _per_tensor((1 - A_min.min()).float()), None, qmin=0, qmax=15)
        b_abs = torch.maximum(B_min.abs(), B_max.abs()).max()
        b = ScanPointQuant("log_signed", _per_tensor(b_abs.float()), None, qmin=0, qmax=31)
        return a, b, h_tgq
    raise AssertionError(config)


def _max_step(spec, mult=1.0):
    if spec is None:
        return 0.0
    s = float(spec.scale.max())
    if spec.kind == "uniform":
        return s * mult
    return s * spec.base ** (-spec.qmin) * (1 - 1 / spec.base) * mult


def assert_mostly_equal(got, ref, bound, name, rel=1e-9, max_fraction=0.01):
    """Equal to rel * scale except a fraction <= max_fraction, each within `bound`."""
    assert got.shape == ref.shape and got.dtype == ref.dtype, name
    err = (got - ref).abs()
    bad = err > rel * max(1.0, float(ref.abs().max()))
    assert bad.double().mean() <= max_fraction, f"{name}: {int(bad.sum())} mismatches"
    bound = torch.as_tensor(bound, dtype=err.dtype).expand_as(err)
    assert (err[bad] <= bound[bad]).all(), f"{name}: mismatch beyond one quantization step"


CASES = [
    ("uniform_per_tensor", True, None),
    ("uniform_per_tensor", False, None),
    ("tgq_per_channel", True, 2),
    ("tgq_per_channel", False, None),
    ("log", True, None),
    ("log", False, 3),
]


@pytest.mark.parametrize("config,b_includes_u,groups", CASES)
def test_compiled_matches_reference(make_inputs, config, b_includes_u, groups):
    b, d, l, n = 3, 6, 12, 5
    u, delta, A, B, C = scan_inputs(make_inputs, b, d, l, n, g=groups, seed=11)
    _, stats = quantized_scan_reference(u, delta, A, B, C, b_includes_u=b_includes_u,
                                        collect_stats=True)
    a_q, b_q, h_q = make_quantizers(config, stats, d, n, l)
    y_ref, st_ref = quantized_scan_reference(u, delta, A, B, C, a_q, b_q, h_q,
                                             b_includes_u=b_includes_u, collect_stats=True)
    y, st = quantized_scan_compiled(u, delta, A, B, C, a_q, b_q, h_q,
                                    b_includes_u=b_includes_u, collect_stats=True)
    # quantization really acts: y differs clearly from the float scan
    y_float = quantized_scan_reference(u, delta, A, B, C)[0]
    assert (y_ref - y_float).abs().max() > 1e-4 * y_float.abs().max()

    h_max_abs = float(st_ref["h_max"].abs().max().clamp(min=st_ref["h_min"].abs().max()))
    u_max = 1.0 if b_includes_u else float(u.abs().max())
    step = _max_step(h_q) + _max_step(b_q, u_max) + _max_step(a_q, h_max_abs)
    Cg = C if C.dim() == 4 else C[:, None]
    c_abs = Cg.abs().sum(2).repeat_interleave(d // Cg.shape[1], dim=1)  # (b, d, l): sum_k |C|
    assert_mostly_equal(y, y_ref, 2 * step * c_abs, "y")
    assert set(st) == set(STATS)
    for name in STATS:
        assert st[name].dtype == torch.float32 and st[name].shape == (l, d, n)
        # statistics are float32: compare at float32 resolution
        assert_mostly_equal(st[name].double(), st_ref[name].double(), 2 * step, name, rel=1e-6)


@pytest.mark.parametrize("backend_name", ["reference", "compiled"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_no_quantizers_is_the_float_scan(make_inputs, backend_name, dtype):
    u, delta, A, B, C = scan_inputs(make_inputs, 2, 4, 10, 9, g=2, dtype=dtype, seed=4)
    with ops.scan_backend(backend_name):
        y, stats = ops.quantized_scan(u, delta, A, B, C)
        y_nb, _ = ops.quantized_scan(u, delta, A, B, C, b_includes_u=False)
        y_float = ops.selective_scan(u, delta, A, B, C)
    assert stats is None and y.dtype == dtype
    if backend_name == "reference":
        assert torch.equal(y, y_float)  # same code path: bit-identical
    else:
        # the float kernel uses its vectorized exp and a lane-wise sum (see
        # selective_scan.cpp), the quantized one std::exp and a sequential sum
        rel = 1e-12 if dtype == torch.float64 else 2e-6
        torch.testing.assert_close(y, y_float, rtol=rel, atol=rel * float(y_float.abs().max()))
    torch.testing.assert_close(y_nb, y, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(y, selective_scan_reference(u, delta, A, B, C),
                               rtol=1e-5, atol=1e-5 * float(y.abs().max()))


@pytest.mark.parametrize("backend_name", ["reference", "compiled"])
def test_statistics_are_the_float_quantities(make_inputs, backend_name):
    """Without quantizers: A_bar, delta*B*u (or delta*B) and h, min / max over the batch."""
    b, d, l, n = 3, 4, 6, 3
    u, delta, A, B, C = scan_inputs(make_inputs, b, d, l, n, seed=2)
    with ops.scan_backend(backend_name):
        _, st = ops.quantized_scan(u, delta, A, B, C, collect_stats=True)
        _, st_nb = ops.quantized_scan(u, delta, A, B, C, b_includes_u=False, collect_stats=True)
        # h_t is the last state of the prefix of length t + 1
        h = torch.stack([
            ops.selective_scan(u[..., : t + 1], delta[..., : t + 1], A, B[..., : t + 1],
                               C[..., : t + 1], return_last_state=True)[1]
            for t in range(l)
        ])  # (l, b, d, n)
    A_bar = torch.exp(delta.permute(2, 0, 1)[..., None] * A)  # (l, b, d, n)
    dB = delta.permute(2, 0, 1)[..., None] * B.permute(2, 0, 1)[:, :, None, :]
    Bu = dB * u.permute(2, 0, 1)[..., None]
    expect = {
        "A_min": A_bar.amin(1), "A_max": A_bar.amax(1), "B_min": Bu.amin(1), "B_max": Bu.amax(1),
        "h_min": h.amin(1), "h_max": h.amax(1),
    }
    for name, value in expect.items():
        torch.testing.assert_close(st[name], value.float(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(st_nb["B_min"], dB.amin(1).float(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(st_nb["B_max"], dB.amax(1).float(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("backend_name", ["reference", "compiled"])
def test_uniform_16bit_tight_ranges_is_close_to_float(make_inputs, backend_name):
    b, d, l, n = 2, 4, 8, 3
    u, delta, A, B, C = scan_inputs(make_inputs, b, d, l, n, dtype=torch.float32, seed=9)
    with ops.scan_backend(backend_name):
        y_float, st = ops.quantized_scan(u, delta, A, B, C, collect_stats=True)
        per_step = torch.arange(l)  # one time group per step, per channel and state

        def q(name):
            return _uniform_from_range(st[f"{name}_min"].double(), st[f"{name}_max"].double(),
                                       16, per_step)

        y, _ = ops.quantized_scan(u, delta, A, B, C, q("A"), q("B"), q("h"))
    err = float((y - y_float).abs().max())
    assert 0 < err <= 1e-3 * float(y_float.abs().max())


def test_quantized_scan_is_forward_only(make_inputs):
    u, delta, A, B, C = scan_inputs(make_inputs, dtype=torch.float32)
    u = u.requires_grad_(True)
    for name in ("reference", "compiled"):
        with ops.scan_backend(name):
            y, _ = ops.quantized_scan(u, delta, A, B, C)
        assert not y.requires_grad


def test_bad_quantizer_parameters(make_inputs):
    u, delta, A, B, C = scan_inputs(make_inputs, d=6, l=9, n=4)
    wrong_length = ScanPointQuant("uniform", torch.ones(2, 1, 1), None, qmin=0, qmax=255,
                                  group_index=torch.zeros(5, dtype=torch.long))
    out_of_range = ScanPointQuant("uniform", torch.ones(2, 1, 1), None, qmin=0, qmax=255,
                                  group_index=torch.full((9,), 2))
    bad_k = ScanPointQuant("uniform", torch.ones(1, 4, 1), None, qmin=0, qmax=255)
    for name in ("reference", "compiled"):
        with ops.scan_backend(name):
            with pytest.raises(ValueError, match="calibrated for sequences of 5"):
                ops.quantized_scan(u, delta, A, B, C, h_quant=wrong_length)
            with pytest.raises(ValueError, match="group_index values"):
                ops.quantized_scan(u, delta, A, B, C, h_quant=out_of_range)
            with pytest.raises(ValueError, match="do not fit"):
                ops.quantized_scan(u, delta, A, B, C, b_quant=bad_k)


def _bench_like_quantizers(stats, l, groups=3):
    """log1m A (8 bits), log_signed B u (8 bits) per tensor, uniform h TGQ per channel."""
    A_min, B_min, B_max = (stats[k].double() for k in ("A_min", "B_min", "B_max"))
    a = ScanPointQuant("log1m", _per_tensor((1 - A_min.min()).float()), None, qmin=0, qmax=255)
    b_abs = torch.maximum(B_min.abs(), B_max.abs()).max()
    b = ScanPointQuant("log_signed", _per_tensor(b_abs.float()), None, qmin=0, qmax=127)
    group_index = torch.arange(l) * groups // l
    lo = torch.stack([stats["h_min"][group_index == i].amin(0) for i in range(groups)])
    hi = torch.stack([stats["h_max"][group_index == i].amax(0) for i in range(groups)])
    h = _uniform_from_range(lo.double(), hi.double(), 8, group_index)
    return a, b, h


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_compiled_rows_and_channels_agree(make_inputs, dtype):
    """Row tasks (no statistics) and channel tasks (statistics) give the same y; batch
    sizes that are not a multiple of the kernel's row block are covered."""
    for b in (1, 6):
        u, delta, A, B, C = scan_inputs(make_inputs, b, 8, 11, 16, g=2, dtype=dtype, seed=5 + b)
        _, stats = quantized_scan_reference(u, delta, A, B, C, collect_stats=True)
        a_q, b_q, h_q = _bench_like_quantizers(stats, 11)
        y, _ = quantized_scan_compiled(u, delta, A, B, C, a_q, b_q, h_q)
        y_st, st = quantized_scan_compiled(u, delta, A, B, C, a_q, b_q, h_q, collect_stats=True)
        assert torch.equal(y, y_st)
        y_ref, _ = quantized_scan_reference(u, delta, A, B, C, a_q, b_q, h_q)
        scale = float(y_ref.abs().max())
        close = (y - y_ref).abs() <= (1e-5 if dtype == torch.float32 else 1e-9) * scale
        assert close.double().mean() >= 0.99


def test_step_callback_sees_h_before_and_after_q_h(make_inputs):
    b, d, l, n = 2, 4, 7, 3
    u, delta, A, B, C = scan_inputs(make_inputs, b, d, l, n, seed=8)
    _, stats = quantized_scan_reference(u, delta, A, B, C, collect_stats=True)
    a_q, b_q, h_q = make_quantizers("log", stats, d, n, l)
    seen = []

    def record(t, h_pre, h_post):
        seen.append((t, h_pre.clone(), h_post.clone()))

    y, _ = quantized_scan_reference(u, delta, A, B, C, a_q, b_q, h_q, step_callback=record)
    y_plain, _ = quantized_scan_reference(u, delta, A, B, C, a_q, b_q, h_q)
    assert torch.equal(y, y_plain)
    assert [t for t, _, _ in seen] == list(range(l))
    scale, zp = h_q.expand_params(d, n, dtype=u.dtype)
    for t, h_pre, h_post in seen:
        assert h_pre.shape == (b, d, n) and h_post.shape == (b, d, n)
        g = int(h_q.group_index[t])
        assert torch.equal(h_post, apply_scan_quant(h_pre, h_q, scale[g], zp[g]))
    # h_pre of step t is Q_A(A_bar_t) h_{t-1} + Q_B(B_bar_t u_t) with h_{t-1} = h_post of t - 1
    C_tm = C.permute(2, 0, 1)  # (l, b, n)
    y_from_h = torch.stack([(h * C_tm[t][:, None, :]).sum(-1) for t, _, h in seen], dim=-1)
    torch.testing.assert_close(y_from_h, y, rtol=1e-12, atol=1e-12)
    # without Q_h the two are the same tensor
    pairs = []
    quantized_scan_reference(u, delta, A, B, C, a_q, b_q, None,
                             step_callback=lambda t, pre, post: pairs.append(pre is post))
    assert pairs == [True] * l


@pytest.mark.parametrize("backend_name", ["reference", "compiled"])
def test_scan_precision_runs_the_arithmetic_in_float64(make_inputs, backend_name):
    """Under scan_precision(float64), float32 inputs give the float64 scan of the same
    values, returned as float32; outside it, the float32 scan; a bad dtype is refused."""
    b, d, l, n = 2, 4, 12, 5
    u, delta, A, B, C = scan_inputs(make_inputs, b, d, l, n, g=2, dtype=torch.float32, seed=5)
    _, stats = quantized_scan_reference(u, delta, A, B, C, collect_stats=True)
    a_q, b_q, h_q = make_quantizers("tgq_per_channel", stats, d, n, l)
    with ops.scan_backend(backend_name):
        y32, _ = ops.quantized_scan(u, delta, A, B, C, a_q, b_q, h_q)
        y64, _ = ops.quantized_scan(*(t.double() for t in (u, delta, A, B, C)), a_q, b_q, h_q)
        with ops.scan_precision(torch.float64):
            assert ops.get_scan_precision() == torch.float64
            y, _ = ops.quantized_scan(u, delta, A, B, C, a_q, b_q, h_q)
        assert ops.get_scan_precision() is None
    assert y32.dtype == torch.float32 and y.dtype == torch.float32
    assert torch.equal(y, y64.float())
    with pytest.raises(ValueError, match="float32 or torch.float64"):
        with ops.scan_precision(torch.float16):
            pass
