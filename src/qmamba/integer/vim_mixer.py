"""Vim's bidirectional mixer on integers, fused and channels-last: `IntBiMambaMixer`.

The simulated `BiMambaMixer` transposes x and z to (B, E, L), flips them for the backward
branch, runs each branch and flips y back, with a dozen elementwise passes around the two
scans. When every point of both branches is per tensor (the `qmamba` and `minmax` recipes;
`fast_path_reason` says why not otherwise), this module computes the same thing on the
(B, L, E) layout that in_proj produces, without transposes or flips:

    codes of x -> conv + silu + codes of u (one kernel; the backward conv reads the
    sequence backwards) -> x_proj on u's codes -> dt_proj and delta's codes (one kernel,
    softplus fused)
    -> the integer scan (the backward one steps from the end) -> Q_y(y) + D u, times
    Q_z(silu(z)), the two directions averaged (one kernel) -> out_proj.

Every step is the generic integer path's (qmamba.integer.vim) up to float rounding (silu,
softplus in float32 arithmetic); each kernel has its PyTorch reference
(`fused_reference`), used when the kernels are unavailable or the scan backend is
"reference".
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn

from qmamba.integer.codes import DeltaTable, use_kernels
from qmamba.integer.fused_reference import conv_silu_codes_ref, delta_codes_ref, scan_out_ref
from qmamba.integer.layers import IntConv1dCausal, IntLinear
from qmamba.integer.scan import IntegerScan
from qmamba.integer.scan_plan import NotInteger
from qmamba.integer.vim import apply_c_point
from qmamba.models.layers import at_least_float32
from qmamba.ops.int_extension import int_kernels
from qmamba.quant.quantizers import UniformQuantizer


def _per_tensor(q) -> tuple[float, float, float, float]:
    """(scale, zero point, qmin, qmax) of a per-tensor uniform quantizer, else NotInteger."""
    if type(q) is not UniformQuantizer or q.scale.numel() != 1 or q.zero_point.numel() != 1:
        raise NotInteger(f"{type(q).__name__} is not a per-tensor uniform quantizer")
    return float(q.scale.reshape(())), float(q.zero_point.reshape(())), float(q.qmin), float(q.qmax)


class _Direction(nn.Module):
    """One branch's integer pieces."""

    def __init__(self, conv, x_proj, dt_proj, branch, A_log, D):
        super().__init__()
        if not isinstance(conv, IntConv1dCausal) or not isinstance(x_proj, IntLinear) \
                or not isinstance(dt_proj, IntLinear) or x_proj.act is not None:
            raise NotInteger("a projection or the conv of the branch stays float")
        if not isinstance(branch.scan, IntegerScan) or branch.u_codes is None:
            raise NotInteger("the branch's scan or u stays float")
        if dt_proj.act.scale.numel() != 1 or dt_proj.act.channel_zero_point:
            raise NotInteger("dt_proj's input is not per tensor")
        self.conv, self.x_proj, self.dt_proj, self.scan = conv, x_proj, dt_proj, branch.scan
        self.quant = branch.quant
        self.u = _per_tensor(branch.quant.u.quantizer)
        self.u_rows = copy.copy(branch.u_codes)  # the same codes, channels last
        self.u_rows.channel_axis = -1
        self.yq = _per_tensor(branch.quant.y.quantizer)
        self.zq = _per_tensor(branch.quant.z.quantizer) if branch.quant.z is not None and \
            branch.quant.z.quantizer is not None else None
        self.A_log, self.D = A_log, D
        self.delta: DeltaTable = branch.scan.delta
        self.dt_rank, self.d_state = branch.dt_rank, branch.d_state


class IntBiMambaMixer(nn.Module):
    def __init__(self, mixer: nn.Module):
        super().__init__()
        self.in_proj, self.out_proj = mixer.in_proj, mixer.out_proj
        self.d_inner = mixer.d_inner
        self.dirs = nn.ModuleList([
            _Direction(mixer.conv1d, mixer.x_proj, mixer.dt_proj, mixer.forward_branch, mixer.A_log, mixer.D),
            _Direction(mixer.conv1d_b, mixer.x_proj_b, mixer.dt_proj_b, mixer.backward_branch,
                       mixer.A_b_log, mixer.D_b),
        ])
        # in_proj on integers, channels last: its epilogue can write the convs' input codes
        self.fused_in = isinstance(self.in_proj, IntLinear) and self.in_proj.act is not None \
            and self.in_proj.channel_axis % 3 == 2 and self.in_proj.act.channel_axis % 3 == 2
        # the convs' input quantizers (per tensor) for that epilogue: scale, zero point,
        # qmin, qmax, offset of each direction
        self.register_buffer("conv_params", torch.tensor(
            [[float(d.conv.act.scale.reshape(())), float(d.conv.act.zero_point.reshape(())), d.conv.act.qmin,
              d.conv.act.qmax, d.conv.act.offset] for d in self.dirs], dtype=torch.float32), persistent=False)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:  # (B, L, D)
        b, L, _ = hidden.shape
        E = self.d_inner
        ops = int_kernels() if use_kernels() else None
        if ops is not None and self.fused_in:  # in_proj's epilogue writes the convs' input codes and z only
            lin = self.in_proj
            codes = lin.input_codes(hidden)  # (B, L, D) int8
            acc, split, row_scale, row_zc, colsum = lin.accumulate(codes, lin.act)
            xcodes, z = ops.epilogue_split_codes(acc, row_scale, row_zc, colsum, lin.weight_scale, lin.bias,
                                                 split, E, self.conv_params)  # (2, B L, E) int8, (B L, E)
        else:
            xz = self.in_proj(hidden).reshape(b * L, 2 * E)  # (B L, 2E)
            x, z = xz[:, :E], xz[:, E:]  # (B L, E) views
            xcodes = [d.conv.act.codes(x)[0] for d in self.dirs]  # (B L, E) int8 each
        out = torch.empty(b * L, E)
        for i, d in enumerate(self.dirs):
            self._direction(d, xcodes[i], z, out, b, L, reverse=i == 1)
        return self.out_proj(out.view(b, L, E))  # (B, L, D)

    def _direction(self, d: _Direction, xc, z, out, b: int, L: int, reverse: bool) -> None:
        """One branch from the codes xc (B L, E) of its conv's input."""
        E, R, N = self.d_inner, d.dt_rank, d.d_state
        ops = int_kernels() if use_kernels() else None
        conv_args = (d.conv.weight_codes, d.conv.act.offset - int(d.conv.act.zero_point.reshape(()).round()),
                     float(d.conv.act.scale.reshape(())), d.conv.weight_scale, d.conv.bias, reverse,
                     *d.u, d.u_rows.offset)
        fn = ops.conv_silu_codes if ops is not None else conv_silu_codes_ref
        ucodes, u = fn(xc.view(b, L, E), *conv_args)  # (B, L, E) each
        x_dbl = d.x_proj.from_codes(ucodes, d.u_rows)  # (B, L, R + 2N)
        bias = at_least_float32(d.dt_proj.bias).float()
        if ops is not None:  # dt_proj and delta's codes in one pass: no float dt in memory
            t, lin = d.delta, d.dt_proj
            dt_in = x_dbl[..., :R] if lin.rotation is None else lin.rotation.transform(x_dbl[..., :R])
            dtc, _ = lin.act.codes(dt_in)  # (B, L, R) int8
            row_scale, row_zc = lin.act.row_params(tuple(dtc.shape))
            didx = ops.dt_delta_codes(dtc.reshape(b * L, R).contiguous(), lin.weight.codes, row_scale, row_zc,
                                      lin.weight.colsum, lin.weight_scale, bias, t.kind == "uniform",
                                      float(t.scale), float(t.zero_point), float(t.qmin), float(t.qmax), t.offset,
                                      t.thresholds if t.kind != "uniform" else None)  # (B L, E)
        else:
            dt = d.dt_proj(x_dbl[..., :R], with_bias=False).reshape(b * L, E)  # (B L, E)
            didx = delta_codes_ref(dt, bias, d.delta)
        C_hat = apply_c_point(d.quant.C, x_dbl[..., R + N:])  # (B, L, N)
        A = -torch.exp(at_least_float32(d.A_log))  # (E, N)
        y = torch.empty(b, L, E)
        d.scan(u.transpose(1, 2), didx.view(b, L, E).transpose(1, 2), A, x_dbl[..., R:R + N][:, None],
               C_hat[:, None], reverse=reverse, y_out=y.transpose(1, 2))
        D = at_least_float32(d.D).float()
        prev = out if reverse else None
        if ops is not None:
            zq = d.zq if d.zq is not None else (1.0, 0.0, 0.0, 0.0)
            ops.scan_out(y.view(b * L, E), u.view(b * L, E), z if d.zq is not None else None, D, prev, out,
                         *d.yq, *zq)
        else:
            out.copy_(scan_out_ref(y.view(b * L, E), u.reshape(b * L, E), z, D, prev, d.yq, d.zq))
