"""Fused fake quantization: the inference path of the activation quantizers.

`fake_quant_fused(x, kind, scale, zero_point, qmin, qmax, base)` gives the values of the
spec (`scan_quant_spec.apply_scan_quant` with `scale` / `zero_point` broadcast against
`x`) from the compiled kernel in one pass over x, where PyTorch needs five or six
(divide, round, add, clamp, subtract, multiply; for log grids a search and gathers). It
returns None where it does not apply, and the caller runs the PyTorch path (the
reference, which tests/ops/test_fake_quant.py compares it with, bit for bit):
- the compiled extension is not in use (the "reference" or "triton" backend, no compiler);
- x is not a float32 / float64 CPU tensor, or gradients are being recorded;
- the parameters vary along dims of x that are not one contiguous run (then the kernel's
  (outer, mid, inner) view does not fit).
"""
from __future__ import annotations

import math

import torch

from qmamba.ops import backend
from qmamba.ops.scan_compiled import KIND_CODE, kernel_grid_tables


def broadcast_layout(x_shape: tuple[int, ...], p_shape: tuple[int, ...]) -> tuple[int, int] | None:
    """(mid, inner) when parameters of shape `p_shape` broadcast against `x_shape` vary
    along one contiguous run of x's dims (mid = their product, inner = the product of the
    dims after them); (1, 1) for a single parameter; None otherwise."""
    if len(p_shape) > len(x_shape):
        return None
    p = (1,) * (len(x_shape) - len(p_shape)) + tuple(p_shape)
    varying = [i for i, (ps, xs) in enumerate(zip(p, x_shape, strict=True)) if ps != 1]
    if any(p[i] != x_shape[i] for i in varying):
        return None
    if not varying:
        return 1, 1
    first, last = varying[0], varying[-1]
    if any(p[i] == 1 and x_shape[i] != 1 for i in range(first, last + 1)):
        return None
    return math.prod(x_shape[first:last + 1]), math.prod(x_shape[last + 1:])


def _extension_for(x: torch.Tensor):
    """The compiled extension if the fused op applies to x, else None."""
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64):
        return None
    if torch.is_grad_enabled() and x.requires_grad:
        return None
    if backend.get_scan_backend() not in ("auto", "compiled"):
        return None
    return backend.load_extension()


def fake_quant_fused(
    x: torch.Tensor,
    kind: str,
    scale: torch.Tensor,
    zero_point: torch.Tensor | None,
    qmin: int,
    qmax: int,
    base: float = 2.0,
) -> torch.Tensor | None:
    """Q(x) by the compiled kernel, or None where it does not apply (see the module)."""
    ext = _extension_for(x) if kind in KIND_CODE else None
    if ext is None:
        return None
    layout = broadcast_layout(tuple(x.shape), tuple(scale.shape))
    if zero_point is not None and layout != broadcast_layout(tuple(x.shape), tuple(zero_point.shape)):
        return None
    if layout is None or x.numel() == 0:
        return None
    mid, inner = layout
    s = scale.detach().to(x.dtype).contiguous().reshape(-1)
    z = (torch.zeros_like(s) if zero_point is None
         else zero_point.detach().to(x.dtype).contiguous().reshape(-1))
    if s.numel() != mid or z.numel() != mid:
        return None
    thr, val = kernel_grid_tables(kind, base, qmin, qmax, x.dtype, x.device)
    if mid == 1 and _dense(x):
        # one parameter: any dense layout is processed in memory order and keeps its strides
        flat = x.detach().as_strided((x.numel(),), (1,))
        out = ext.fake_quant_broadcast(flat, KIND_CODE[kind], s, z, thr, val, float(qmin),
                                       float(qmax), float(base), 1)
        return out.as_strided(x.shape, x.stride())
    out = ext.fake_quant_broadcast(x.detach().contiguous(), KIND_CODE[kind], s, z, thr, val,
                                   float(qmin), float(qmax), float(base), inner)
    return out.view(x.shape)


def _dense(x: torch.Tensor) -> bool:
    """Whether x's elements fill one block of memory without gaps or overlaps."""
    if x.is_contiguous():
        return True
    dims = sorted((st, sz) for st, sz in zip(x.stride(), x.shape, strict=True) if sz != 1)
    expected = 1
    for st, sz in dims:
        if st != expected:
            return False
        expected *= sz
    return True
