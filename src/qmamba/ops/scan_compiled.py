"""Compiled selective scan: Python side of the C++ kernels in csrc/selective_scan.cpp.

Inference (no gradient needed): the kernel reads u, delta, z, B, C through their strides
and does delta = softplus(delta + delta_bias) and gate = silu(z) itself (`_forward_fused`):
no extra passes or copies. Training: the inputs are brought to one compute dtype (float32,
or float64 when an input is float64), made contiguous, B / C laid out as (b, g, l, n), and
delta and the gate computed by PyTorch as ordinary autograd ops, so `_ScanFunction` only
deals with the recurrence out = (C . h + D u) * gate; its backward is the C++
reverse-time recurrence.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from qmamba.ops import backend
from qmamba.ops.scan_quant_spec import GRID_KINDS, ScanPointQuant, log_grid_tables
from qmamba.ops.scan_reference import STAT_NAMES, check_scan_inputs, compute_dtype, quant_tables

KIND_CODE = {kind: i + 1 for i, kind in enumerate(GRID_KINDS)}  # 0 = no quantizer
assert KIND_CODE == {"uniform": 1, "log1m": 2, "log_signed": 3}  # matches enum QKind in C++


def _ext():
    ext = backend.load_extension()
    if ext is None:
        raise RuntimeError(f"the compiled selective scan is unavailable: {backend.build_error()}")
    return ext


def _state_layout(X: torch.Tensor, dtype) -> torch.Tensor:
    """B or C (b, n, l) / (b, g, n, l) -> contiguous (b, g, l, n)."""
    if X.dim() == 3:
        X = X.unsqueeze(1)
    return X.transpose(-1, -2).to(dtype).contiguous()


def _prep(X: torch.Tensor | None, dtype) -> torch.Tensor | None:
    return None if X is None else X.to(dtype).contiguous()


class _ScanFunction(torch.autograd.Function):
    """out = (C . h + D u) * gate with the C++ recurrence forward and backward."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, gate):
        # the kernel reads B / C as (b, g, n, l) views: these are transposes of (b, g, l, n)
        out, last_state = _ext().scan_fwd(
            u, delta, None, False, A, B.transpose(-1, -2), C.transpose(-1, -2), D, gate, False)
        ctx.save_for_backward(u, delta, A, B, C, D, gate)
        ctx.set_materialize_grads(False)
        return out, last_state

    @staticmethod
    def backward(ctx, dout, dlast):
        u, delta, A, B, C, D, gate = ctx.saved_tensors
        dout = torch.zeros_like(u) if dout is None else dout.contiguous()
        dlast = None if dlast is None else dlast.contiguous()
        du, ddelta, dA, dB, dC, dD, dgate = _ext().scan_bwd(u, delta, A, B, C, D, gate, dout, dlast)
        return (
            du,
            ddelta,
            dA,
            dB,
            dC,
            dD if D is not None else None,
            dgate if gate is not None else None,
        )


def selective_scan_compiled(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
    return_last_state=False,
):
    check_scan_inputs(u, delta, A, B, C, D, z, delta_bias)
    cdt = compute_dtype(u, delta, A, B, C, D, z, delta_bias)
    inputs = (u, delta, A, B, C, D, z, delta_bias)
    if not (torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in inputs)):
        out, last_state = _forward_fused(u, delta, A, B, C, D, z, delta_bias, delta_softplus, cdt)
        out = out.to(u.dtype)
        return (out, last_state) if return_last_state else out
    # the elementwise parts are PyTorch ops (the reference's own, with their autograd);
    # the C++ function runs the recurrence
    delta = delta.to(cdt)
    if delta_bias is not None:
        delta = delta + delta_bias.to(cdt)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    gate = None if z is None else F.silu(z.to(cdt))
    out, last_state = _ScanFunction.apply(
        _prep(u, cdt),
        delta.contiguous(),
        _prep(A, cdt),
        _state_layout(B, cdt),
        _state_layout(C, cdt),
        _prep(D, cdt),
        _prep(gate, cdt),
    )
    out = out.to(u.dtype)
    return (out, last_state) if return_last_state else out


def kernel_grid_tables(kind: str, base: float, qmin: int, qmax: int, dtype, device):
    """The kernel's tables of a grid: (None, None) for uniform; for log grids (thresholds
    padded to +inf, c_qmin .. c_{qmax-1}, -inf; values p_qmin .. p_qmax)."""
    if kind == "uniform":
        return None, None
    c, p = log_grid_tables(base, qmin, qmax, dtype, device)
    inf = torch.full((1,), math.inf, dtype=dtype, device=device)
    return torch.cat([inf, c, -inf]).contiguous(), p.contiguous()


def _as_groups(X: torch.Tensor, dtype) -> torch.Tensor:
    """B or C (b, n, l) / (b, g, n, l) -> a (b, g, n, l) view (a copy only to change dtype)."""
    X = X.to(dtype)
    return X.unsqueeze(1) if X.dim() == 3 else X


def _forward_fused(u, delta, A, B, C, D, z, delta_bias, delta_softplus, cdt):
    """The inference path: the kernel reads the inputs through their strides and does
    delta = softplus(delta + delta_bias) and silu(z) itself (no autograd, no copies).
    Its softplus / silu / exp agree with PyTorch's to a few ulp (tests/ops)."""
    return _ext().scan_fwd(
        u.to(cdt),
        delta.to(cdt),
        _prep(delta_bias, cdt),
        bool(delta_softplus),
        _prep(A, cdt),
        _as_groups(B, cdt),
        _as_groups(C, cdt),
        _prep(D, cdt),
        None if z is None else z.to(cdt),
        True,
    )


def _quant_args(spec: ScanPointQuant | None, tables, dtype, device):
    if spec is None:
        return (0, None, None, None, None, None, 0.0, 0.0, 0.0)
    scale, zp, group = tables
    thr, val = kernel_grid_tables(spec.kind, spec.base, spec.qmin, spec.qmax, dtype, device)
    return (KIND_CODE[spec.kind], scale, zp, group, thr, val, float(spec.qmin),
            float(spec.qmax), float(spec.base))


@torch.no_grad()
def quantized_scan_compiled(
    u, delta, A, B, C, a_quant=None, b_quant=None, h_quant=None, b_includes_u=True,
    collect_stats=False,
):
    _, d, l, n, _ = check_scan_inputs(u, delta, A, B, C)
    cdt = compute_dtype(u, delta, A, B, C)
    dev = u.device
    args = []
    for spec in (a_quant, b_quant, h_quant):
        args.extend(_quant_args(spec, quant_tables(spec, d, n, l, cdt, dev), cdt, dev))
    y, *stats = _ext().quantized_scan_fwd(
        _prep(u, cdt),
        _prep(delta, cdt),
        _prep(A, cdt),
        _state_layout(B, cdt),
        _state_layout(C, cdt),
        *args,
        bool(b_includes_u),
        bool(collect_stats),
    )
    if not collect_stats:
        return y, None
    return y, {name: s.float() for name, s in zip(STAT_NAMES, stats, strict=True)}


def fake_quant_kernel(x: torch.Tensor, spec: ScanPointQuant, scale, zero_point) -> torch.Tensor:
    """The kernel's elementwise quantizer on x (scale / zero_point broadcast to x).

    For tests: compare with `scan_quant_spec.apply_scan_quant`. Runs the fused fake
    quantization op with one parameter per element.
    """
    x = x.contiguous()
    scale = scale.to(x.dtype).expand_as(x).contiguous().reshape(-1)
    zp = (torch.zeros_like(x) if zero_point is None else zero_point.to(x.dtype)).expand_as(x)
    thr, val = kernel_grid_tables(spec.kind, spec.base, spec.qmin, spec.qmax, x.dtype, x.device)
    out = _ext().fake_quant_broadcast(
        x.reshape(-1), KIND_CODE[spec.kind], scale, zp.contiguous().reshape(-1), thr, val,
        float(spec.qmin), float(spec.qmax), float(spec.base), 1,
    )
    return out.view(x.shape)
