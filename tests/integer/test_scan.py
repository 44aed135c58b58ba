"""The integer selective scan: the kernel against its PyTorch reference (bit for bit, on
every instruction-set path, forwards and backwards, strided inputs), and the reference
against the simulated scan (the same codes of h except where float rounding decides a
tie)."""
from __future__ import annotations

import pytest
import torch
from int_helpers import ISAS, scan_case

from qmamba.integer.codes import DeltaTable
from qmamba.integer.scan import IntegerScan
from qmamba.integer.scan_plan import NotInteger, plan_scan
from qmamba.integer.scan_reference import exp_f32, int_scan_reference, round_fixed, tree_sum
from qmamba.ops import scan_backend
from qmamba.ops.scan_quant_spec import codes_log_signed, codes_uniform
from qmamba.ops.scan_reference import quantized_scan_reference

KINDS = [("log1m", "log_signed"), ("log1m", "uniform"), ("uniform", "log_signed"), ("uniform", "uniform")]


def _scan(case, n):
    d = case.u.shape[1]
    table = DeltaTable(case.delta_quantizer)
    return IntegerScan(plan_scan(case.points, d, n), table), table.index(case.delta)


def _bln(X):
    """(b, n, l) -> (b, 1, l, n), the state dimension contiguous inside a wider tensor."""
    wide = torch.cat([X.transpose(1, 2), torch.zeros(X.shape[0], X.shape[2], 3)], dim=-1)
    return wide[..., : X.shape[1]][:, None]


@pytest.mark.parametrize("a_kind,b_kind", KINDS)
@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("n", [16, 8, 5, 1])
def test_kernel_equals_reference_on_every_path(a_kind, b_kind, bits, n, isa):
    case = scan_case(a_kind, b_kind, bits, b=5, d=6, l=37, n=n, seed=bits + n)
    scan, didx = _scan(case, n)
    u = case.u.transpose(1, 2).contiguous().transpose(1, 2)  # (b, d, l), strided in time
    B, C = _bln(case.B), _bln(case.C)
    for reverse in (False, True):
        with scan_backend("reference"), torch.no_grad():
            ref = scan(u, didx, case.A, B, C, reverse=reverse)
        for level in ISAS:
            isa(level)
            assert torch.equal(scan(u, didx, case.A, B, C, reverse=reverse), ref), (level, reverse)


@pytest.mark.parametrize("a_kind,b_kind", KINDS)
def test_kernel_blocks_of_channels_and_rows(a_kind, b_kind, isa):
    """More rows than one register group (8) and channels over several blocks of 16, with a
    partial block; channels-last u and y as the fused mixer passes them."""
    case = scan_case(a_kind, b_kind, 8, b=11, d=37, l=23, n=16, seed=3)
    scan, didx = _scan(case, 16)
    u = case.u.transpose(1, 2).contiguous().transpose(1, 2)  # (b, d, l) over (b, l, d)
    di = didx.transpose(1, 2).contiguous().transpose(1, 2)
    B, C = _bln(case.B), _bln(case.C)
    for reverse in (False, True):
        with scan_backend("reference"), torch.no_grad():
            ref = scan(u, di, case.A, B, C, reverse=reverse)
        for level in ISAS:
            isa(level)
            y = torch.empty(u.shape[0], u.shape[2], u.shape[1]).transpose(1, 2)
            scan(u, di, case.A, B, C, reverse=reverse, y_out=y)
            assert torch.equal(y, ref), (level, reverse)


def test_reverse_is_the_scan_of_the_flipped_sequence(isa):
    case = scan_case("log1m", "log_signed", 4, n=16)
    scan, didx = _scan(case, 16)
    B, C = _bln(case.B), _bln(case.C)
    y_rev = scan(case.u, didx, case.A, B, C, reverse=True)
    y_flip = scan(case.u.flip(-1), didx.flip(-1), case.A, B.flip(2), C.flip(2)).flip(-1)
    assert torch.equal(y_rev, y_flip)


def test_tiny_b_terms_take_the_exact_path(isa):
    """B_bar u below 2^-100 of its scale: the SIMD code counts stop there, the terms are 0."""
    case = scan_case("log1m", "log_signed", 8, n=16, b_scale=1e-33)
    case.B[0, :, :5] = 1.0  # a few ordinary values for contrast
    scan, didx = _scan(case, 16)
    B, C = _bln(case.B), _bln(case.C)
    with scan_backend("reference"):
        ref = scan(case.u, didx, case.A, B, C)
    for level in ISAS:
        isa(level)
        assert torch.equal(scan(case.u, didx, case.A, B, C), ref)


@pytest.mark.parametrize("a_kind,b_kind", [("log1m", "uniform"), ("uniform", "uniform")])
@pytest.mark.parametrize("bits", [8, 4])
def test_exact_ties_round_half_to_even_on_every_path(a_kind, b_kind, bits, isa):
    """h scales of exactly 2 s_B: every odd B code puts B_hat / s_g on a half-integer, so the
    fixed-point value meets exact ties (first steps, and wherever the A term is whole);
    each path rounds them to even as the reference does."""
    case = scan_case(a_kind, b_kind, bits, b=9, d=18, l=41, n=16, seed=11)
    hq = case.points.h.quantizer
    s_b = float(case.points.B.quantizer.scale.reshape(()))
    case.points.h.quantizer = type(hq)("uniform", bits, torch.full_like(hq.scale, 2 * s_b), hq.zero_point,
                                       0, 2**bits - 1, group_index=hq.group_index)
    scan, didx = _scan(case, 16)
    plan = scan.plan
    half, mask = 1 << (plan.frac_bits - 1), (1 << plan.frac_bits) - 1
    ties = []
    int_scan_reference(plan, case.u, case.didx, case.dvals, case.A, case.B.transpose(1, 2)[:, None],
                       case.C.transpose(1, 2)[:, None],
                       step_callback=lambda t, x, q: ties.append(int(((x & mask) == half).sum())))
    assert sum(ties) > 100  # the case does exercise the ties
    B, C = _bln(case.B), _bln(case.C)
    u = case.u.transpose(1, 2).contiguous().transpose(1, 2)  # channels last, the fused layout
    with scan_backend("reference"), torch.no_grad():
        ref = scan(u, didx, case.A, B, C)
    for level in ISAS:
        isa(level)
        assert torch.equal(scan(u, didx, case.A, B, C), ref), level


def _codes_of_both(case, plan):
    """A and B codes (b, d, l, n) as the simulated scan (float32 exp, (delta B) u / s) and
    as the integer scan (exp_f32 table, (delta u) B * (1 / s)) compute them."""
    pa, pb = case.points.A.quantizer, case.points.B.quantizer
    x = case.dhat[..., None] * case.A[None, :, None, :]  # (b, d, l, n)
    b_sim = (case.dhat[..., None] * case.B.transpose(1, 2)[:, None]) * case.u[..., None]
    b_int = (case.dhat * case.u)[..., None] * case.B.transpose(1, 2)[:, None]
    inv = 1.0 / pb.scale.reshape(())

    def a_codes(abar):
        return pa.fake_quant(abar)

    def b_codes(v, scaled):
        spec = pb.scan_spec()
        if spec.kind == "uniform":
            return codes_uniform(v * inv if scaled else v / pb.scale.reshape(()), 1.0, pb.zero_point.reshape(()),
                                 spec.qmin, spec.qmax) * torch.sign(v).abs().clamp(min=1)
        r = v.abs() * inv if scaled else v.abs() / pb.scale.reshape(())
        return torch.sign(v) * codes_log_signed(r, 1.0, spec.qmin, spec.qmax)

    return (a_codes(torch.exp(x)), a_codes(exp_f32(x)), b_codes(b_sim, False), b_codes(b_int, True))


@pytest.mark.parametrize("a_kind,b_kind", KINDS)
@pytest.mark.parametrize("bits", [8, 4])
def test_reference_has_the_simulated_codes_but_at_ties(a_kind, b_kind, bits):
    """h's codes step by step against the simulated scan (float32): where a trajectory first
    leaves the simulated one, a rounding tie decided it: the A or B code of that step differs
    (float rounding at their grids), or the value of h lies within 2^-18 code units of a
    half-integer in both computations (the integer path resolves 2^-21, float32 |h| 2^-24)."""
    case = scan_case(a_kind, b_kind, bits, b=4, d=16, l=60, n=16, seed=7)
    plan = plan_scan(case.points, 16, 16)
    h = case.points.h.quantizer
    sim_pre, sim_codes, int_x, int_codes = [], [], [], []

    def sim_step(t, pre, post):
        s = h.scale[h.group_index[t]]
        sim_pre.append(pre / s)
        sim_codes.append(torch.round(post / s).long())  # q - zp

    quantized_scan_reference(case.u, case.dhat, case.A, case.B, case.C, case.points.A.quantizer.scan_spec(),
                             case.points.B.quantizer.scan_spec(), h.scan_spec(), step_callback=sim_step)
    int_scan_reference(plan, case.u, case.didx, case.dvals, case.A, case.B.transpose(1, 2)[:, None],
                               case.C.transpose(1, 2)[:, None],
                               step_callback=lambda t, x, hq: (int_x.append(x), int_codes.append(hq)))
    a_sim, a_int, b_sim, b_int = _codes_of_both(case, plan)
    diverged = torch.zeros_like(int_codes[0], dtype=torch.bool)
    events = 0
    for t in range(len(int_codes)):
        first = (sim_codes[t] != int_codes[t]) & ~diverged  # (b, d, n)
        for b, c, k in first.nonzero().tolist():
            events += 1
            code_tie = a_sim[b, c, t, k] != a_int[b, c, t, k] or b_sim[b, c, t, k] != b_int[b, c, t, k]
            half = torch.floor(sim_pre[t][b, c, k]) + 0.5
            x_int = int_x[t][b, c, k].item() / 2**plan.frac_bits
            h_tie = abs(sim_pre[t][b, c, k] - half) <= 2**-18 * max(1, half.abs()) and abs(x_int - half) <= 2**-18
            assert code_tie or h_tie, (t, b, c, k, float(sim_pre[t][b, c, k]), x_int)
        diverged |= first
    assert events <= 0.02 * diverged.numel()
    assert diverged.float().mean() <= 0.05


def test_round_fixed_is_round_half_even():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(-(2**40), 2**40, (10000,), generator=g)
    ties = torch.arange(-20, 21) * (1 << 20) + (1 << 19)  # exactly k + 1/2 at 20 bits
    for v in (x, ties):
        assert torch.equal(round_fixed(v, 20), torch.round(v.double() / 2**20).long())


def test_tree_sum_order_and_exp_accuracy():
    v = torch.tensor([[1e8, 1.0, -1e8, 1.0, 3.0]])  # float32: 1e8 + 3 rounds to 1e8
    # padded to 8: ((v0 + v4) + (v2 + 0)) + ((v1 + 0) + (v3 + 0)), not the left-to-right 5.0
    assert tree_sum(v).item() == 2.0
    x = torch.linspace(-87, 10, 100001)
    rel = ((exp_f32(x).double() - torch.exp(x.double())) / torch.exp(x.double())).abs()
    assert float(rel.max()) < 3 * 2.0**-24


def test_plan_says_why_a_scan_stays_float():
    case = scan_case("log1m", "log_signed", 8)
    case.points.B.quantizer = None
    with pytest.raises(NotInteger, match="ssm.B is not quantized"):
        plan_scan(case.points, 8, 16)
    case = scan_case("log1m", "log_signed", 8)
    case.points.h.quantizer.bits = 12
    with pytest.raises(NotInteger, match="12 bits"):
        plan_scan(case.points, 8, 16)
    case = scan_case("log1m", "log_signed", 8)
    case.points.A.quantizer.base = 2.0**0.5
    with pytest.raises(NotInteger, match="base"):
        plan_scan(case.points, 8, 16)
