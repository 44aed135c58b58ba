"""Reference selective scan: a time-major PyTorch loop, the oracle for the compiled kernel.

Semantics are upstream mamba_ssm's `selective_scan_fn` (docs/architectures.md,
"Selective scan"). Everything is laid out time-major, (l, b, d, n) contiguous, so each
step of the Python loop touches one contiguous (b, d, n) slab:

    A_bar[t] = exp(delta[t] * A)            Bu[t] = delta[t] * B[t] * u[t]
    h[t]     = A_bar[t] * h[t-1] + Bu[t]    y[t]  = sum_k h[t, k] * C[t, k]

Autograd comes from PyTorch. This file also holds the input checks shared by both
backends (`check_scan_inputs`, `compute_dtype`, `quant_tables`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from qmamba.ops.scan_quant_spec import ScanPointQuant, apply_scan_quant

# ---------------------------------------------------------------------------------------
# shared input handling
# ---------------------------------------------------------------------------------------


def compute_dtype(*tensors: torch.Tensor | None) -> torch.dtype:
    """float64 if any input is float64, else float32 (upstream computes in float32)."""
    if any(t is not None and t.dtype == torch.float64 for t in tensors):
        return torch.float64
    return torch.float32


def check_scan_inputs(u, delta, A, B, C, D=None, z=None, delta_bias=None):
    """Validate shapes; returns (b, d, l, n, g) with g = 1 for ungrouped B / C."""
    if u.dim() != 3:
        raise ValueError(f"u must be (b, d, l), got shape {tuple(u.shape)}")
    b, d, l = u.shape
    if delta.shape != u.shape:
        raise ValueError(f"delta must have u's shape {tuple(u.shape)}, got {tuple(delta.shape)}")
    if A.dim() != 2 or A.shape[0] != d:
        raise ValueError(f"A must be (d={d}, n), got shape {tuple(A.shape)}")
    n = A.shape[1]
    g = None
    for name, X in (("B", B), ("C", C)):
        if X.dim() == 3:
            shape_ok, xg = X.shape == (b, n, l), 1
        elif X.dim() == 4:
            xg = X.shape[1]
            shape_ok = X.shape == (b, xg, n, l) and xg > 0 and d % xg == 0
        else:
            shape_ok, xg = False, None
        if not shape_ok:
            raise ValueError(
                f"{name} must be (b={b}, n={n}, l={l}) or (b, g, n, l) with g dividing d={d}, "
                f"got shape {tuple(X.shape)}"
            )
        if g is not None and xg != g:
            raise ValueError(f"B and C have different group counts ({g} and {xg})")
        g = xg
    for name, X, shape in (("D", D, (d,)), ("delta_bias", delta_bias, (d,)), ("z", z, (b, d, l))):
        if X is not None and tuple(X.shape) != shape:
            raise ValueError(f"{name} must have shape {shape}, got {tuple(X.shape)}")
    return b, d, l, n, g


def quant_tables(spec: ScanPointQuant | None, d: int, n: int, length: int, dtype, device):
    """Dense (G, d, n) scale / zero point and the (l,) int64 group map of one quantizer."""
    if spec is None:
        return None
    scale, zp = spec.expand_params(d, n, dtype=dtype, device=device)
    group = spec.groups_for_length(length, device=device)
    if group.numel() and (int(group.min()) < 0 or int(group.max()) >= spec.num_groups):
        raise ValueError(
            f"group_index values must lie in [0, {spec.num_groups}), "
            f"got [{int(group.min())}, {int(group.max())}]"
        )
    return scale.contiguous(), zp.contiguous(), group.contiguous()


def _time_major_state(X: torch.Tensor, d: int) -> torch.Tensor:
    """B or C, (b, n, l) or (b, g, n, l) -> (l, b, d, n): channel c uses group c // (d / g)."""
    if X.dim() == 3:
        X = X.unsqueeze(1)
    b, g, n, l = X.shape
    X = X.permute(3, 0, 1, 2)  # (l, b, g, n)
    return X.unsqueeze(3).expand(l, b, g, d // g, n).reshape(l, b, d, n)


def _discretize(u, delta, A, B):
    """A_bar (l, b, d, n) and delta*B (l, b, d, n), u time-major (l, b, d)."""
    d = u.shape[1]
    u_tm = u.permute(2, 0, 1)  # (l, b, d)
    delta_tm = delta.permute(2, 0, 1)  # (l, b, d)
    A_bar = torch.exp(delta_tm[..., None] * A)  # (l, b, d, n)
    dB = delta_tm[..., None] * _time_major_state(B, d)  # (l, b, d, n)
    return u_tm, A_bar, dB


def _contract_c(hs: list[torch.Tensor], C_tm: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """y (b, d, l) from the states h_t (b, d, n) and C (l, b, d, n)."""
    if not hs:
        return like.new_zeros(like.shape)
    return torch.stack([(h * C_tm[t]).sum(-1) for t, h in enumerate(hs)], dim=-1)


# ---------------------------------------------------------------------------------------
# float scan
# ---------------------------------------------------------------------------------------


def selective_scan_reference(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
    return_last_state=False,
):
    b, d, l, n, _ = check_scan_inputs(u, delta, A, B, C, D, z, delta_bias)
    dtype_in = u.dtype
    cdt = compute_dtype(u, delta, A, B, C, D, z, delta_bias)
    u = u.to(cdt)
    delta = delta.to(cdt)
    if delta_bias is not None:
        delta = delta + delta_bias.to(cdt)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    u_tm, A_bar, dB = _discretize(u, delta, A.to(cdt), B.to(cdt))
    Bu = dB * u_tm[..., None]  # delta * B * u, (l, b, d, n)
    C_tm = _time_major_state(C.to(cdt), d)
    h = u.new_zeros(b, d, n)
    hs = []
    for t in range(l):
        h = A_bar[t] * h + Bu[t]
        hs.append(h)
    y = _contract_c(hs, C_tm, u)
    out = y if D is None else y + D.to(cdt)[:, None] * u
    if z is not None:
        out = out * F.silu(z.to(cdt))
    out = out.to(dtype_in)
    return (out, h) if return_last_state else out


# ---------------------------------------------------------------------------------------
# quantized scan (forward only)
# ---------------------------------------------------------------------------------------


def _quantize_all_steps(x, spec, tables):
    """Q(x) for x (l, b, d, n), each step with the params of its time group."""
    scale, zp, group = tables
    return apply_scan_quant(x, spec, scale[group][:, None], zp[group][:, None])


@torch.no_grad()
def quantized_scan_reference(
    u, delta, A, B, C, a_quant=None, b_quant=None, h_quant=None, b_includes_u=True,
    collect_stats=False, step_callback=None,
):
    """The quantized recurrence as a time loop; (y (b, d, l), stats or None).

    Arguments and results as `qmamba.ops.quantized_scan`. `step_callback` (reference
    backend only; diagnostics use it to measure the SQNR of h and to plot h_t per step):
    called after every step as `step_callback(t, h_pre, h_post)` with (b, d, n) tensors in
    the compute dtype, h_pre = Q_A(A_bar_t) h_{t-1} + Q_B(..) (before Q_h) and h_post =
    Q_h(h_pre) (the same tensor when there is no h quantizer). Every step makes new
    tensors, so they may be kept (e.g. stacked into (l, b, d, n)); h_post is the scan's
    state, so do not modify it in place.
    """
    b, d, l, n, _ = check_scan_inputs(u, delta, A, B, C)
    cdt = compute_dtype(u, delta, A, B, C)
    u, delta = u.to(cdt), delta.to(cdt)
    dev = u.device
    ta, tb, th = (quant_tables(s, d, n, l, cdt, dev) for s in (a_quant, b_quant, h_quant))
    stats = {}

    u_tm, A_bar, dB = _discretize(u, delta, A.to(cdt), B.to(cdt))
    if collect_stats:
        stats["A_min"], stats["A_max"] = A_bar.amin(1), A_bar.amax(1)
    if a_quant is not None:
        A_bar = _quantize_all_steps(A_bar, a_quant, ta)

    pre_b = dB * u_tm[..., None] if b_includes_u else dB  # what Q_B sees
    if collect_stats:
        stats["B_min"], stats["B_max"] = pre_b.amin(1), pre_b.amax(1)
    Bu = _quantize_all_steps(pre_b, b_quant, tb) if b_quant is not None else pre_b
    if not b_includes_u:
        Bu = Bu * u_tm[..., None]

    C_tm = _time_major_state(C.to(cdt), d)
    h = u.new_zeros(b, d, n)
    hs, h_min, h_max = [], [], []
    h_groups = th[2].tolist() if th is not None else None
    for t in range(l):
        h = A_bar[t] * h + Bu[t]
        h_pre = h
        if collect_stats:
            h_min.append(h.amin(0))
            h_max.append(h.amax(0))
        if h_quant is not None:
            g = h_groups[t]
            h = apply_scan_quant(h, h_quant, th[0][g], th[1][g])
        if step_callback is not None:
            step_callback(t, h_pre, h)
        hs.append(h)
    y = _contract_c(hs, C_tm, u)

    if not collect_stats:
        return y, None
    empty = u.new_zeros(0, d, n)
    stats["h_min"] = torch.stack(h_min) if h_min else empty
    stats["h_max"] = torch.stack(h_max) if h_max else empty
    return y, {k: stats[k].float().contiguous() for k in STAT_NAMES}


STAT_NAMES = ("A_min", "A_max", "B_min", "B_max", "h_min", "h_max")
