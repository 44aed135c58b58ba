"""Selective scan: float (forward + backward) and quantized (forward), two backends.

- `selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None,
  delta_softplus=False, return_last_state=False)`: upstream mamba_ssm
  `selective_scan_fn` semantics (docs/architectures.md, "Selective scan").
- `quantized_scan(u, delta, A, B, C, a_quant=None, b_quant=None, h_quant=None,
  b_includes_u=True, collect_stats=False) -> (y, stats)`: the recurrence with in-loop
  quantizers (`ScanPointQuant`), y = C . h only (docs/design.md, "Scan boundary").
- Backends: "reference" (PyTorch loop, the oracle), "compiled" (C++ CPU kernel, built on
  first use), "triton" (GPU kernels, forward only), "auto" (default: compiled on CPU,
  triton on CUDA). `with scan_backend("reference"): ...` forces one (backend.py).
- `with scan_precision(torch.float64): ...` runs the quantized scan's arithmetic in
  float64 (inputs cast, y returned in u's dtype), on any backend that takes float64.
"""
from __future__ import annotations

import torch

from qmamba.ops import backend
from qmamba.ops.backend import (
    compiled_available,
    get_scan_backend,
    get_scan_precision,
    scan_backend,
    scan_precision,
)
from qmamba.ops.scan_compiled import quantized_scan_compiled, selective_scan_compiled
from qmamba.ops.scan_quant_spec import GRID_KINDS, ScanPointQuant, apply_scan_quant
from qmamba.ops.scan_reference import quantized_scan_reference, selective_scan_reference
from qmamba.ops.scan_triton import quantized_scan_triton, selective_scan_triton

__all__ = [
    "GRID_KINDS",
    "ScanPointQuant",
    "apply_scan_quant",
    "compiled_available",
    "get_scan_backend",
    "get_scan_precision",
    "quantized_scan",
    "scan_backend",
    "scan_precision",
    "selective_scan",
]


def selective_scan(
    u: torch.Tensor,  # (b, d, l)
    delta: torch.Tensor,  # (b, d, l)
    A: torch.Tensor,  # (d, n)
    B: torch.Tensor,  # (b, n, l) or (b, g, n, l)
    C: torch.Tensor,  # (b, n, l) or (b, g, n, l)
    D: torch.Tensor | None = None,  # (d,)
    z: torch.Tensor | None = None,  # (b, d, l)
    delta_bias: torch.Tensor | None = None,  # (d,)
    delta_softplus: bool = False,
    return_last_state: bool = False,
):
    """out (b, d, l) in u's dtype, or (out, last_state (b, d, n)) with return_last_state."""
    inputs = (u, delta, A, B, C, D, z, delta_bias)
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in inputs)
    chosen = backend.resolve(*inputs, needs_grad=needs_grad)
    if chosen == "noop":  # benchmark floor: no recurrence at all
        out = torch.zeros_like(u)
        return (out, u.new_zeros(u.shape[0], u.shape[1], A.shape[1])) if return_last_state else out
    impl = {"compiled": selective_scan_compiled, "triton": selective_scan_triton}.get(
        chosen, selective_scan_reference)
    return _run(chosen, impl, selective_scan_reference,
                (*inputs, delta_softplus, return_last_state))


def _run(chosen: str, impl, reference, args):
    """impl(*args); under "auto", a failed Triton launch (a compiler or driver problem,
    not bad inputs or memory) falls back to the reference once and for all."""
    if chosen != "triton" or backend.get_scan_backend() != "auto":
        return impl(*args)
    try:
        return impl(*args)
    except (ValueError, torch.OutOfMemoryError):
        raise
    except Exception as exc:
        backend.triton_failed(exc)
        return reference(*args)


def quantized_scan(
    u: torch.Tensor,  # (b, d, l)
    delta: torch.Tensor,  # (b, d, l), final (after bias, softplus and its own point)
    A: torch.Tensor,  # (d, n)
    B: torch.Tensor,  # (b, n, l) or (b, g, n, l)
    C: torch.Tensor,  # (b, n, l) or (b, g, n, l)
    a_quant: ScanPointQuant | None = None,
    b_quant: ScanPointQuant | None = None,
    h_quant: ScanPointQuant | None = None,
    b_includes_u: bool = True,
    collect_stats: bool = False,
):
    """(y (b, d, l), stats or None). Forward only (runs under no_grad).

    y is in the compute dtype (float32, float64 if an input is float64; under
    `scan_precision`, u's dtype). stats: dict of
    (l, d, n) float32 min / max over the batch of A_bar (before Q_A), the input of Q_B and
    h (before Q_h): `A_min, A_max, B_min, B_max, h_min, h_max`.
    """
    precision = backend.get_scan_precision()
    if precision is not None and any(t.dtype != precision for t in (u, delta, A, B, C)):
        y, stats = quantized_scan(u.to(precision), delta.to(precision), A.to(precision), B.to(precision),
                                  C.to(precision), a_quant, b_quant, h_quant, b_includes_u, collect_stats)
        return y.to(u.dtype), stats
    chosen = backend.resolve(u, delta, A, B, C)
    impl = {"compiled": quantized_scan_compiled, "triton": quantized_scan_triton}.get(
        chosen, quantized_scan_reference)
    return _run(chosen, impl, quantized_scan_reference,
                (u, delta, A, B, C, a_quant, b_quant, h_quant, b_includes_u, collect_stats))
