"""Vim's scan branch on the integer backend: `IntScanBranch` replaces a `ScanBranch`.

The mixer passes the branch its conv1d, x_proj and dt_proj (`BiMambaMixer.forward`), which
`qmamba.integer.convert` has replaced by integer layers where they have an integer form.
The branch runs the simulated branch's steps (`qmamba.models.vim.ScanBranch`) on codes:
u = silu(conv1d(x)) quantized once to its codes (x_proj reads the codes, the scan u_hat),
dt from dt_proj, delta's codes, C through its point, the integer scan, then y's point,
D u and the gate as `qmamba.models.ssm.selective_ssm`. A scan without an integer plan
(`scan_plan.plan_scan` said why) runs `selective_ssm`, the simulated scan.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from qmamba.integer.codes import ActCodes
from qmamba.integer.layers import IntConv1dCausal, IntLinear
from qmamba.integer.scan import IntegerScan
from qmamba.models.layers import at_least_float32
from qmamba.models.ssm import selective_ssm


def apply_c_point(point, C: torch.Tensor) -> torch.Tensor:
    """C (..., l, n) through its point, which the simulated scan applies to (..., n, l)
    (the same rank); a per-tensor quantizer runs on (..., l, n) directly (same values)."""
    q = point.quantizer
    if q is None:
        return C.float()
    if getattr(q, "scale", None) is not None and q.scale.numel() == 1:
        return point(C.float())
    return point(C.transpose(-1, -2).contiguous().float()).transpose(-1, -2)


class IntScanBranch(nn.Module):
    def __init__(self, branch: nn.Module, scan: IntegerScan | None, u_codes: ActCodes | None):
        super().__init__()
        self.dt_rank, self.d_state = branch.dt_rank, branch.d_state
        self.quant = branch.quant  # the branch's points (u, delta, C, y, z; A, B, h)
        self.scan = scan  # None: the simulated scan (selective_ssm)
        self.u_codes = u_codes  # None: u through its point (float)

    def forward(self, x, z, conv1d, x_proj, dt_proj, A_log, D) -> torch.Tensor:  # (B, E, L)
        seqlen = x.shape[-1]
        pre = conv1d(x) if isinstance(conv1d, IntConv1dCausal) else conv1d(x)[..., :seqlen]
        u_float = F.silu(pre)  # (B, E, L)
        ucodes = None
        if self.u_codes is not None:
            ucodes, u = self.u_codes.codes(u_float, want_values=True)  # (B, E, L) each
        else:
            u = self.quant.u(u_float)
        x_dbl = self._x_proj(x_proj, u_float, u, ucodes)  # (B, L, R + 2N)
        dt_r, B, C = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        if isinstance(dt_proj, IntLinear):
            dt = dt_proj(dt_r, with_bias=False)  # (B, L, E)
        else:
            dt_in = dt_proj.input_quant(dt_proj.input_rotation(dt_r))
            dt = F.linear(dt_in, dt_proj.weight_quant(dt_proj.weight))
        A = -torch.exp(at_least_float32(A_log))  # (E, N)
        delta_bias = at_least_float32(dt_proj.bias)
        if self.scan is None:
            return selective_ssm(self.quant, u, dt.transpose(1, 2), A, B.transpose(1, 2).contiguous(),
                                 C.transpose(1, 2).contiguous(), at_least_float32(D), delta_bias, z)
        delta = F.softplus(dt.transpose(1, 2).float() + delta_bias.float()[None, :, None])  # (B, E, L)
        C_hat = apply_c_point(self.quant.C, C)  # (B, L, N)
        y = self.scan(u, self.scan.delta.index(delta), A, B[:, None], C_hat[:, None])  # (B, E, L)
        out = self.quant.y(y) + at_least_float32(D).float()[None, :, None] * u.float()
        return out * self.quant.z(F.silu(z.float()))

    def _x_proj(self, x_proj, u_float, u, ucodes) -> torch.Tensor:
        """x_proj reads u's codes (or, rotated, the float u through its own point)."""
        if isinstance(x_proj, IntLinear):
            if x_proj.act is not None:
                return x_proj(u_float.transpose(1, 2))
            return x_proj.from_codes(ucodes, self.u_codes)  # codes (B, E, L): rows (B, L)
        return x_proj(u_float.transpose(1, 2) if x_proj.input_rotation.active else u.transpose(1, 2))
