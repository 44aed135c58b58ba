"""The integer selective scan in PyTorch (int64 / float32 emulation): the oracle of the kernel.

`int_scan_reference` computes, op for op, what the C++ kernel (`csrc/int_kernels.cpp`,
`int_scan_fwd`) computes: the same float32 operations where the scan turns floats into
codes (A_bar through a deterministic float32 exp, B_bar u, the float32 multipliers) and
the integer recurrence of `qmamba.integer.scan_plan` in int64 (the kernel's int32 never
overflows, so int64 gives the same numbers). tests/integer/test_scan.py checks that they
agree bit for bit, and this function against the simulated scan.

Inputs (b batch, d channels, l steps, n states, gB groups of B / C along channels):
u (b, d, l) float32 (u_hat, already through its point), didx (b, d, l) int64 (index of
each delta code in `dvals`, the dequantized delta of every code, float32), A (d, n),
B (b, gB, l, n), C (b, gB, l, n) (C_hat). Returns y (b, d, l) float32, y_t = C_t . h_t.
"""
from __future__ import annotations

import torch

from qmamba.integer.scan_plan import IntScanPlan
from qmamba.ops.scan_quant_spec import codes_log1m, codes_uniform

# exp(x) for float32 x by Cody-Waite reduction and a degree-6 polynomial, every operation a
# float32 multiply or add (no FMA): the kernel performs the same operations, so the two
# agree bit for bit (0 below -87, where exp underflows float32's normal range).
LOG2E = 1.4426950408889634
LN2_HI = 0.693145751953125
LN2_LO = 1.42860682030941723212e-6
EXP_POLY = (0.001381461275741458, 0.008368710055947304, 0.04166838899254799,
            0.1666652113199234, 0.4999999403953552, 1.0, 1.0)
EXP_MIN, EXP_MAX = -87.0, 88.0


def exp_f32(x: torch.Tensor) -> torch.Tensor:
    x = x.float()
    xc = x.clamp(EXP_MIN, EXP_MAX)
    k = torch.round(xc * LOG2E)
    r = (xc - k * LN2_HI) - k * LN2_LO
    p = torch.full_like(r, EXP_POLY[0])
    for c in EXP_POLY[1:]:
        p = p * r + c
    k1 = torch.div(k, 2, rounding_mode="floor")  # 2^k in two normal halves
    two = lambda e: ((e.to(torch.int32) + 127) << 23).view(torch.float32)  # noqa: E731
    out = (p * two(k1)) * two(k - k1)
    return torch.where(x < EXP_MIN, torch.zeros_like(out), out)


def a_code_table(plan: IntScanPlan, A: torch.Tensor, dvals: torch.Tensor) -> torch.Tensor:
    """(d, J, n) int64: per channel, delta code and state, the A term's integer: the shift
    qA + F2 - F (log1m, capped at 62) or Afix = round(A_hat 2^F2) (uniform)."""
    a = plan.a
    abar = exp_f32(dvals.float()[None, :, None] * A.float()[:, None, :])  # (d, J, n)
    s, zp = a.scale[0][:, None, :], a.zero_point[0][:, None, :]  # (d, 1, n)
    if a.kind == "log1m":
        q = codes_log1m(abar, s, a.qmin, a.qmax, 2.0).long()
        return (q + plan.a_frac_bits - plan.frac_bits).clamp(max=62)
    q = codes_uniform(abar, s, zp, a.qmin, a.qmax)
    return torch.round(((q - zp).double() * s.double()) * 2.0**plan.a_frac_bits).long()


def _expand_groups(X: torch.Tensor, d: int) -> torch.Tensor:
    """(b, gB, l, n) -> (b, d, l, n): channel c reads group c // (d / gB)."""
    return X.repeat_interleave(d // X.shape[1], dim=1)


def b_terms(plan: IntScanPlan, u, didx, dvals, B) -> torch.Tensor:
    """(b, d, l, n) int64: B_hat / s_g(t) 2^F, rounded and capped at +-cap2 2^F."""
    b, h = plan.b, plan.h
    d, l = u.shape[1], u.shape[2]
    du = dvals.float()[didx] * u.float()  # (b, d, l)
    x = du[..., None] * _expand_groups(B.float(), d)  # (b, d, l, n)
    inv = 1.0 / b.scale[0]  # (d, n)
    groups = h.group if h.group is not None else torch.zeros(l, dtype=torch.long)
    rb = (b.scale[0] / h.scale) * 2.0**plan.frac_bits  # (G, d, n)
    rb_t = rb[groups].permute(1, 0, 2)[None]  # (1, d, l, n)
    cap = float(plan.cap2 * 2**plan.frac_bits)
    if b.kind == "log_signed":
        m = _log_codes(x.abs() * inv[:, None, :], b)  # (b, d, l, n)
        p2 = ((127 - m.clamp(max=126)).to(torch.int32) << 23).view(torch.float32)  # 2^-m
        mag = torch.round(torch.clamp(rb_t * p2, max=cap)).long()
        mag = torch.where(m >= b.qmax, torch.zeros_like(mag), mag)
        return torch.where(x < 0, -mag, mag)
    zp = b.zero_point[0][:, None, :]
    q = codes_uniform(x * inv[:, None, :], 1.0, zp, b.qmin, b.qmax)
    return torch.round(torch.clamp((q - zp) * rb_t, -cap, cap)).long()


def _log_codes(r: torch.Tensor, grid) -> torch.Tensor:
    """Codes m = qmin + #{k : r < c_k} of a base-2 log grid (qmax where r == 0)."""
    c = grid.thresholds
    count = c.numel() - torch.searchsorted(c.flip(0), r.contiguous(), right=True)
    count = torch.where(r == 0, torch.full_like(count, c.numel()), count)
    return count + grid.qmin


def round_shift(x: torch.Tensor, sh) -> torch.Tensor:
    """round(x / 2^sh), halves up, for int64 x and shifts sh >= 1: (x + 2^(sh-1)) >> sh."""
    one = 1 if isinstance(sh, int) else torch.ones_like(sh)
    return (x + (one << (sh - 1))) >> sh


def round_fixed(x: torch.Tensor, frac: int) -> torch.Tensor:
    """round_half_even(x / 2^frac) of int64 x."""
    q = (x + (1 << (frac - 1))) >> frac
    tie = (x & ((1 << frac) - 1)) == (1 << (frac - 1))
    return q - (tie & (q & 1).bool()).long()


def tree_sum(v: torch.Tensor) -> torch.Tensor:
    """Sum over the last dim in the kernel's order: pad to a power of two with zeros, then
    add the upper half to the lower half until one element is left."""
    n = v.shape[-1]
    width = 1 << max(0, (n - 1).bit_length())
    if width > n:
        v = torch.cat([v, v.new_zeros(*v.shape[:-1], width - n)], dim=-1)
    while width > 1:
        width //= 2
        v = v[..., :width] + v[..., width:2 * width]
    return v[..., 0]


@torch.no_grad()
def int_scan_reference(plan: IntScanPlan, u, didx, dvals, A, B, C, step_callback=None) -> torch.Tensor:
    """y (b, d, l); `step_callback(t, x, hq)` (tests) sees every step's fixed-point value x
    (in units of 2^-F of the step's h scale) and the new codes hq = q - zp, (b, d, n) int64."""
    b_, d, l = u.shape
    h = plan.h
    F, F2 = plan.frac_bits, plan.a_frac_bits
    table = a_code_table(plan, A, dvals)  # (d, J, n)
    a_terms = table[torch.arange(d)[None, :, None], didx]  # (b, d, l, n)
    t2 = b_terms(plan, u, didx, dvals, B)  # (b, d, l, n)
    Cx = _expand_groups(C.float(), d)  # (b, d, l, n)
    groups = (h.group if h.group is not None else torch.zeros(l, dtype=torch.long)).tolist()
    lo = (h.qmin - h.zero_point).long()  # (G, d, n)
    hi = (h.qmax - h.zero_point).long()
    s_a = plan.a.scale[0].double()  # (d, n)
    s2 = torch.round(s_a * 2.0**F2).long()
    cap1 = plan.cap1 << F
    hq = torch.zeros(b_, d, A.shape[1], dtype=torch.long)
    y = torch.empty(b_, d, l)
    for t in range(l):
        g, at = groups[t], a_terms[:, :, t]
        if t == 0:
            x = t2[:, :, t]
        elif groups[t - 1] == g:
            if plan.a.kind == "log1m":
                term = hq * (1 << F) - round_shift(hq * s2, at.clamp(max=31))
            else:
                term = round_shift(hq * at, F2 - F)
            x = term + t2[:, :, t]
        else:
            ratio = h.scale[groups[t - 1]].double() / h.scale[g].double()  # (d, n)
            m1 = torch.round(ratio * 2.0**F).long()
            if plan.a.kind == "log1m":
                m2 = torch.round((ratio * s_a) * 2.0**F2).long()
                term = hq * m1 - round_shift(hq * m2, at)
            else:
                term = round_shift((hq * at) * m1, F2)
            x = term.clamp(-cap1, cap1) + t2[:, :, t]
        hq = torch.minimum(torch.maximum(round_fixed(x, F), lo[g]), hi[g])
        if step_callback is not None:
            step_callback(t, x, hq)
        y[:, :, t] = tree_sum((hq.float() * h.scale[g]) * Cx[:, :, t])
    return y
