"""The integer selective scan's plan: whether a scan can run on integers, and its constants.

The simulated scan (`qmamba.ops.quantized_scan`, method.md) runs

    h_t = Q_h( Q_A(A_bar_t) * h_{t-1} + Q_B(B_bar_t u_t) ),   y_t = C_t . h_t

in float32 on dequantized values. The integer scan keeps h as its code: with hq = q - zp
of the previous step (an integer in [qmin - zp, qmax - zp]) and s_g the scale of step t's
time group g (TGQ), the value to round is, in units of s_g,

    X = hq * R * A_hat + B_hat / s_g,          R = s_{g(t-1)} / s_g  (1 inside a group)

held as a fixed-point int32 with F fractional bits (`frac_bits`), and the new code is
clamp(round_half_even(X), qmin - zp, qmax - zp) (the quantizer's round / clamp, in the
hq domain). Inside a time group:

* LtSQ A (log1m, base 2): A_hat = 1 - s_A 2^-qA, so hq * A_hat = hq - (s_A hq) >> qA: the
  A code is a shift, s_A one multiplier S2 = round(s_A 2^F2) per (channel, state):
  term = (hq << F) - round((hq * S2) / 2^(qA + F2 - F)) (a rounding shift);
* uniform A: term = round((hq * Afix) / 2^(F2 - F)) with Afix = round(A_hat 2^F2), one
  int32 per A code;
* B_hat / s_g 2^F = +-(s_B / s_g 2^F) 2^-m (log_signed B, a shift of one float32
  multiplier per (group, channel, state)) or (qB - zpB)(s_B / s_g 2^F) (uniform B),
  rounded to an integer and capped at +-cap2 (codes) so the sum stays in int32.

At the first step of a group (R != 1) the term is computed in int64 with M1 = round(R 2^F)
and M2 = round(R s_A 2^F2) and capped at +-cap1. The caps do not change any code: a
capped term is more than the code range away from every value the other term can undo
(cap2 = 2 range + 1, cap1 = cap2 + range + 1, range = qmax - qmin).

The codes of A_bar and B_bar u are those of the quantizers' grids, computed from float32
values as the simulated scan computes them (A_bar = exp(delta_hat A) tabulated per delta
code, B_bar u = (delta_hat u_hat) B): they are the simulated codes except where float
rounding decides between two codes (a tie within about one float32 ulp). The fixed-point
arithmetic is exact up to 2^-(F2 - 8) code units (S2 and Afix rounding) and 2^-F (shifts,
roundings): about float32's own precision, so the integer codes of h equal the simulated
ones except within that distance of a rounding tie (tests/integer/test_scan.py bounds it).

This module decides (`plan_scan`) and holds the constants (`IntScanPlan`); the reference
arithmetic is `qmamba.integer.scan_reference`, the kernel `csrc/int_kernels.cpp`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from qmamba.ops.scan_quant_spec import log_grid_tables

MAX_BITS = 8  # wider codes fall back to the simulated scan
INT32_LIMIT = 2**31 - 1
MAX_RATIO = 2.0**12  # largest s_{g-1} / s_g handled at a group boundary (int64 products)
KIND_CODE = {"uniform": 1, "log1m": 2, "log_signed": 3}  # as the simulated kernel's QKind


@dataclass
class ScanGrid:
    """One in-loop quantizer, expanded to the scan's channels and states."""

    kind: str
    scale: torch.Tensor  # (G, d, n) float32
    zero_point: torch.Tensor  # (G, d, n) float32, integer-valued (zeros for log grids)
    qmin: int
    qmax: int
    thresholds: torch.Tensor | None  # log grids: c_qmin .. c_{qmax-1}, float32 (N,)
    group: torch.Tensor | None  # (l,) int64 time group of each step (h only)

    @property
    def code_range(self) -> int:
        return self.qmax - self.qmin


@dataclass
class IntScanPlan:
    a: ScanGrid  # G = 1
    b: ScanGrid  # G = 1
    h: ScanGrid
    frac_bits: int  # F
    a_frac_bits: int  # F2

    @property
    def cap2(self) -> int:
        return 2 * self.h.code_range + 1

    @property
    def cap1(self) -> int:
        return self.cap2 + self.h.code_range + 1

    def describe(self) -> dict:
        return {"A": self.a.kind, "B": self.b.kind, "h_groups": int(self.h.scale.shape[0]),
                "frac_bits": self.frac_bits, "a_frac_bits": self.a_frac_bits}


class NotInteger(ValueError):
    """Why a scan (or layer) stays on the simulated float path."""


def _grid(q, d: int, n: int, role: str) -> ScanGrid:
    spec = q.scan_spec()
    if q.bits > MAX_BITS:
        raise NotInteger(f"{role} has {q.bits} bits (integer scan: at most {MAX_BITS})")
    scale, zp = spec.expand_params(d, n)  # (G, d, n) each
    thresholds = None
    if spec.kind != "uniform":
        if spec.base != 2.0:
            raise NotInteger(f"{role}: log base {spec.base:.4g} (the shift form needs base 2)")
        thresholds, _ = log_grid_tables(2.0, spec.qmin, spec.qmax, torch.float32)
    group = spec.group_index.long() if spec.group_index is not None else None
    return ScanGrid(spec.kind, scale.float().contiguous(), zp.float().contiguous(), spec.qmin,
                    spec.qmax, thresholds, group)


def plan_scan(points, d: int, n: int) -> IntScanPlan:
    """The plan of one scan from its `SSMQuantPoints` (d channels, n states); raises
    `NotInteger` with the reason when the scan must stay simulated."""
    quantizers = {}
    for role in ("A", "B", "h"):
        q = getattr(points, role).quantizer
        if q is None or not hasattr(q, "scan_spec"):
            raise NotInteger(f"ssm.{role} is not quantized (left in float)")
        quantizers[role] = q
    if not getattr(quantizers["B"], "includes_u", True):
        raise NotInteger("ssm.B quantizes B_bar without u (the integer scan needs B_bar u)")
    a, b, h = (_grid(quantizers[r], d, n, f"ssm.{r}") for r in ("A", "B", "h"))
    if a.kind not in ("log1m", "uniform") or b.kind not in ("log_signed", "uniform"):
        raise NotInteger(f"grids A={a.kind}, B={b.kind} have no integer form here")
    if h.kind != "uniform":
        raise NotInteger(f"ssm.h on a {h.kind} grid (the integer scan keeps h uniform)")
    if a.scale.shape[0] != 1 or b.scale.shape[0] != 1:
        raise NotInteger("A or B with time groups (only h has TGQ groups in the integer scan)")
    if not bool((a.scale > 0).all() and (b.scale > 0).all() and (h.scale > 0).all()):
        raise NotInteger("a scale is not positive")
    frac, a_frac = _frac_bits(a, h)
    plan = IntScanPlan(a, b, h, frac, a_frac)
    _check_ratios(plan)
    return plan


def _frac_bits(a: ScanGrid, h: ScanGrid) -> tuple[int, int]:
    """(F, F2): the largest fractions that keep every int32 intermediate in range."""
    rng = h.code_range
    cap2 = 2 * rng + 1
    cap1 = cap2 + rng + 1
    frac = int(math.floor(math.log2(INT32_LIMIT / (cap1 + cap2 + 2))))
    hq_max = float(torch.maximum((h.qmax - h.zero_point).abs(), (h.qmin - h.zero_point).abs()).max())
    hq_max = max(hq_max, 1.0)
    if a.kind == "log1m":
        a_max = float(a.scale.max())  # |hq * S2| with S2 = s_A 2^F2
        a_hat = max(1.0, abs(1.0 - a_max))
    else:
        lo = (a.qmin - a.zero_point) * a.scale
        hi = (a.qmax - a.zero_point) * a.scale
        a_max = a_hat = float(torch.maximum(lo.abs(), hi.abs()).max())
    if a_hat * hq_max > cap1 - 1:
        raise NotInteger(f"|A_hat| up to {a_hat:.3g}: too large for the fixed-point range")
    # |hq * S2| (or |hq * Afix|) below 2^30: the rounding shift adds up to 2^30
    a_frac = min(30, int(math.floor(math.log2(2.0**30 / (hq_max * max(a_max, 1e-30) + 1)))))
    if a_frac <= frac:
        raise NotInteger(f"A scale {a_max:.3g} leaves {a_frac} fraction bits (< {frac})")
    return frac, a_frac


def _check_ratios(plan: IntScanPlan) -> None:
    h = plan.h
    if h.group is not None and h.group.numel() > 1:
        g = h.group
        starts = torch.nonzero(g[1:] != g[:-1]).flatten() + 1  # steps entering a new group
        entered = g[starts]
        if entered.unique().numel() != entered.numel():
            raise NotInteger("a TGQ group is entered more than once (groups must be contiguous)")
        ratio = h.scale[g[starts - 1]] / h.scale[entered]
        # uniform A at a boundary: (hq * Afix) (< 2^31) times M1 = R 2^F in int64
        limit = MAX_RATIO if plan.a.kind == "log1m" else min(MAX_RATIO, 2.0 ** (31 - plan.frac_bits))
        if float(ratio.max()) >= limit:
            raise NotInteger(f"h scale ratio {float(ratio.max()):.3g} between time groups is too large")
    rb = plan.b.scale / h.scale * 2.0**plan.frac_bits
    # below 2^90, every B code past 99 gives the term 0 (the kernel relies on it)
    if not bool((rb < 2.0**90).all()):
        raise NotInteger("B scale / h scale too large")
