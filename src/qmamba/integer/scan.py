"""The integer selective scan of one scan: `IntegerScan` runs a plan (`scan_plan`) on codes.

Inputs as the simulated `selective_ssm` prepares them, with the delta codes instead of
delta: u (b, d, l) (u_hat, through its point), the delta codes (`DeltaTable.index`), A
(d, n), B and C (b, g, l, n) (C through its point; the state dimension contiguous, as
Vim's x_proj output already is). Returns y (b, d, l), y_t = C_t . h_t; the caller adds
D u and the gate as the simulated path does. The C++ kernel (`int_scan_fwd`) runs it, or
`scan_reference.int_scan_reference` (same numbers) where the kernels are unavailable or
`scan_backend("reference")` is set.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from qmamba.integer.codes import DeltaTable, use_kernels
from qmamba.integer.scan_plan import KIND_CODE, IntScanPlan
from qmamba.integer.scan_reference import int_scan_reference
from qmamba.ops.int_extension import int_kernels


class IntegerScan(nn.Module):
    def __init__(self, plan: IntScanPlan, delta: DeltaTable):
        super().__init__()
        self.plan = plan
        self.delta = delta

    def forward(self, u, didx, A, B, C, reverse: bool = False, y_out: torch.Tensor | None = None) -> torch.Tensor:
        """y (b, d, l); `reverse`: step s reads (and writes y at) position l - 1 - s (Vim's
        backward branch, without flipping); `y_out`: write y into this (b, d, l) view."""
        p, dt = self.plan, self.delta
        if B.stride(-1) != 1:
            B = B.contiguous()
        if C.stride(-1) != 1:
            C = C.contiguous()
        if not use_kernels():
            flip = (lambda t: t.flip(-2 if t.dim() == 4 else -1)) if reverse else (lambda t: t)  # noqa: E731
            index = didx.long() + dt.offset
            y = int_scan_reference(p, flip(u.float()), flip(index), dt.values, A.float(), flip(B.float()),
                                   flip(C.float()))
            y = flip(y)
            if y_out is None:
                return y
            y_out.copy_(y)
            return y_out
        return int_kernels().int_scan_fwd(
            u.float(), didx, dt.offset, dt.values, A.float().contiguous(), B.float(), C.float(),
            KIND_CODE[p.a.kind], p.a.scale, p.a.zero_point, p.a.qmin, p.a.qmax, p.a.thresholds,
            KIND_CODE[p.b.kind], p.b.scale, p.b.zero_point, p.b.qmin, p.b.qmax, p.b.thresholds,
            p.h.scale, p.h.zero_point, p.h.qmin, p.h.qmax, p.h.group, p.frac_bits, p.a_frac_bits,
            reverse, y_out)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.plan.describe().items())
