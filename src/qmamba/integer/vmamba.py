"""VMamba's SS2D on the integer backend: `IntSS2D` replaces an `SS2D`.

`qmamba.models.vmamba_blocks.SS2D` applies its four directions' x projections and dt
projections as einsums of raw (directions, out, in) weights with their own points, then
the scan. Here each direction's projection is an integer GEMM on the codes of u (resp.
dt_r) and the scan the integer scan; every part without an integer form (`reasons`) runs
the simulated computation instead. in_proj, conv2d and out_proj are the block's own child
modules (integer layers where `qmamba.integer.convert` could make them).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from qmamba.integer.codes import ActCodes
from qmamba.integer.layers import IntLinear, weight_codes
from qmamba.integer.scan import IntegerScan
from qmamba.integer.scan_plan import NotInteger
from qmamba.integer.vim import apply_c_point
from qmamba.models.layers import at_least_float32
from qmamba.models.ssm import selective_ssm
from qmamba.models.vmamba_blocks import K_DIRECTIONS, SS2D, cross_merge, cross_scan


def _direction_linears(point, weight: torch.Tensor, act: ActCodes) -> nn.ModuleList:
    """One IntLinear per direction of a stacked (K, out, in) weight, reading `act`'s codes
    (one scale: the directions reorder the tokens, so per-token scales would not follow)."""
    if act.scale.numel() != 1 or act.zero_point.numel() != 1:
        raise NotInteger("u / dt_r scales are not per tensor")
    codes, scale = weight_codes(point, weight)  # (K, out, in), (K, out)
    return nn.ModuleList(IntLinear(codes[k], scale[k], None, None) for k in range(codes.shape[0]))


class IntSS2D(nn.Module):
    def __init__(self, op: nn.Module, scan: IntegerScan | None, reasons: dict[str, str]):
        super().__init__()
        for name in ("in_proj", "conv2d", "act", "out_norm", "out_proj", "quant", "quant_x_proj_weight",
                     "quant_dt_projs_weight", "quant_dt_r"):
            setattr(self, name, getattr(op, name))
        self.has_z, self.channel_first = op.has_z, op.channel_first
        self.d_state, self.dt_rank = op.d_state, op.dt_rank
        self.A_logs, self.Ds, self.dt_projs_bias = op.A_logs, op.Ds, op.dt_projs_bias
        self.scan = scan
        self.reasons = reasons
        self.u_codes = self.dt_codes = self.x_projs = self.dt_projs = None
        try:
            self.u_codes = ActCodes(op.quant.u.quantizer, 1)
            self.x_projs = _direction_linears(op.quant_x_proj_weight, op.x_proj_weight, self.u_codes)
        except NotInteger as e:
            reasons["x_proj"] = str(e)
            self.u_codes = None
            self.x_proj_weight = op.x_proj_weight
        try:
            self.dt_codes = ActCodes(op.quant_dt_r.quantizer, 2)
            self.dt_projs = _direction_linears(op.quant_dt_projs_weight, op.dt_projs_weight, self.dt_codes)
        except NotInteger as e:
            reasons["dt_projs"] = str(e)
            self.dt_codes = None
            self.dt_projs_weight = op.dt_projs_weight

    def forward_core(self, x: torch.Tensor) -> torch.Tensor:
        """u = silu(conv(.)) (B, E, H, W) -> merged scan output (B, E, H, W)."""
        b, E, H, W = x.shape
        L, N, R, K = H * W, self.d_state, self.dt_rank, K_DIRECTIONS
        if self.u_codes is not None:
            ucodes, u = self.u_codes.codes(x, want_values=True)  # (B, E, H, W) each
            xcodes = cross_scan(ucodes)  # (B, K, E, L) int8
            x_dbl = torch.stack([lin.from_codes(xcodes[:, k], self.u_codes) for k, lin in enumerate(self.x_projs)],
                                dim=1)  # (B, K, L, R+2N)
        else:
            u = self.quant.u(x)
            x_dbl = torch.einsum("bkdl,kcd->bklc", cross_scan(u),
                                 self.quant_x_proj_weight(self.x_proj_weight))  # (B, K, L, R+2N)
        xs = cross_scan(u)  # (B, K, E, L)
        dt_r, Bs, Cs = torch.split(x_dbl, [R, N, N], dim=3)  # (B, K, L, R|N|N)
        if self.dt_codes is not None:
            dcodes, _ = self.dt_codes.codes(dt_r.transpose(2, 3))  # (B, K, R, L) as the point sees it
            dts = torch.cat([lin.from_codes(dcodes[:, k:k + 1], self.dt_codes) for k, lin in enumerate(self.dt_projs)],
                            dim=1).transpose(2, 3)  # (B, K, E, L)
        else:
            dts = torch.einsum("bkrl,kdr->bkdl", self.quant_dt_r(dt_r.transpose(2, 3)),
                               self.quant_dt_projs_weight(self.dt_projs_weight))  # (B, K, E, L)
        u_all, dt_all = xs.reshape(b, K * E, L), dts.reshape(b, K * E, L)
        A = -torch.exp(at_least_float32(self.A_logs))  # (K*E, N)
        D, bias = at_least_float32(self.Ds), at_least_float32(self.dt_projs_bias).flatten()
        if self.scan is None:
            ys = selective_ssm(self.quant, u_all, dt_all, A, Bs.transpose(2, 3).contiguous(),
                               Cs.transpose(2, 3).contiguous(), D, bias)  # (B, K*E, L)
        else:
            delta = F.softplus(dt_all.float() + bias.float()[None, :, None])
            C_hat = apply_c_point(self.quant.C, Cs)  # (B, K, L, N)
            y = self.scan(u_all, self.scan.delta.index(delta), A, Bs, C_hat)  # (B, K*E, L)
            ys = self.quant.y(y) + D.float()[None, :, None] * u_all.float()
        return cross_merge(ys.view(b, K, E, L), H, W)  # (B, E, H, W)

    # SS2D's own forward around this forward_core (projections, conv, norm, gate): the
    # same attributes are taken over in __init__, so the two cannot drift apart
    forward = SS2D.forward
