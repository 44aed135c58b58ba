"""Selective scan: float (forward + backward) and quantized (forward), two backends.

- `selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None,
  delta_softplus=False, return_last_state=False)`: upstream mamba_ssm
  `selective_scan_fn` semantics (docs/architectures.md, "Selective scan").
- `quantized_scan(u, delta, A, B, C, a_quant=None, b_quant=None, h_quant=None,
  b_includes_u=True, collect_stats=False) -> (y, stats)`: the recurrence with in-loop
  quantizers (`ScanPointQuant`), y = C . h only (docs/design.md, "Scan boundary").
- Backends: "reference" (PyTorch loop, the oracle), "compiled" (C++ CPU kernel, built on
  first use), "auto" (default). `with scan_backend("reference"): ...` forces one.
"""
from __future__ import annotations

import torch

from qmamba.ops import backend
from qmamba.ops.backend import compiled_available, get_scan_backend, scan_backend
from qmamba.ops.scan_compiled import quantized_scan_compiled, selective_scan_compiled
from qmamba.ops.scan_quant_spec import GRID_KINDS, ScanPointQuant, apply_scan_quant
from qmamba.ops.scan_reference import quantized_scan_reference, selective_scan_reference

__all__ = [
    "GRID_KINDS",
    "ScanPointQuant",
    "apply_scan_quant",
    "compiled_available",
    "get_scan_backend",
    "quantized_scan",
    "scan_backend",
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
    chosen = backend.resolve(u, delta, A, B, C, D, z, delta_bias)
    if chosen == "noop":  # benchmark floor: no recurrence at all
        out = torch.zeros_like(u)
        return (out, u.new_zeros(u.shape[0], u.shape[1], A.shape[1])) if return_last_state else out
    impl = selective_scan_compiled if chosen == "compiled" else selective_scan_reference
    return impl(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)


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

    y is in the compute dtype (float32, float64 if an input is float64). stats: dict of
    (l, d, n) float32 min / max over the batch of A_bar (before Q_A), the input of Q_B and
    h (before Q_h): `A_min, A_max, B_min, B_max, h_min, h_max`.
    """
    impl = (
        quantized_scan_compiled
        if backend.resolve(u, delta, A, B, C) == "compiled"
        else quantized_scan_reference
    )
    return impl(u, delta, A, B, C, a_quant, b_quant, h_quant, b_includes_u, collect_stats)
