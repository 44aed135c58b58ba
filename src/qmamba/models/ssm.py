"""The selective SSM step shared by Vim and VMamba, with its quantization points.

`SSMQuantPoints` (qmamba.nn.ssm_points) holds the named points of one scan;
`selective_ssm` runs the float scan when none of them is active (the exact upstream
math, fast path) and the quantized recurrence otherwise.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from qmamba import ops
from qmamba.nn.ssm_points import SSMQuantPoints
from qmamba.ops.scan_reference import quantized_scan_reference


def selective_ssm(
    points: SSMQuantPoints,
    u: torch.Tensor,  # (b, d, l), already through points.u
    dt: torch.Tensor,  # (b, d, l), before bias and softplus
    A: torch.Tensor,  # (d, n)
    B: torch.Tensor,  # (b, n, l) or (b, g, n, l)
    C: torch.Tensor,  # (b, n, l) or (b, g, n, l)
    D: torch.Tensor,  # (d,)
    delta_bias: torch.Tensor,  # (d,)
    z: torch.Tensor | None = None,  # (b, d, l), gate input before silu
) -> torch.Tensor:  # (b, d, l)
    if not points.active:
        return ops.selective_scan(
            u, dt, A, B, C, D, z=z, delta_bias=delta_bias, delta_softplus=True
        )
    delta = points.delta(F.softplus(dt.float() + delta_bias.float()[None, :, None]))  # (b, d, l)
    observers = {
        name: p.observer
        for name, p in (("A", points.A), ("B", points.B), ("h", points.h))
        if p.observer is not None
    }
    # the B point quantizes B_bar*u (default) or B_bar = delta*B: its quantizer says which
    b_includes_u = getattr(points.B.quantizer or points.B.observer, "includes_u", True)
    if "A" in observers or "B" in observers:
        _observe_discrete_samples(observers, u, delta, A, B, b_includes_u)
    scan_kwargs = dict(
        a_quant=points.A.scan_spec(),
        b_quant=points.B.scan_spec(),
        h_quant=points.h.scan_spec(),
        b_includes_u=b_includes_u,
        collect_stats=bool(observers),
    )
    h_trace = getattr(points.h.observer, "observe_h_steps", None)
    if h_trace is not None:  # diagnostics: every h_t of this scan, from the reference loop
        pre, post = [], []
        y, stats = quantized_scan_reference(
            u, delta, A, B, points.C(C.float()), **scan_kwargs,
            step_callback=lambda t, h_pre, h_post: (pre.append(h_pre), post.append(h_post)),
        )
        h_trace(torch.stack(pre), torch.stack(post))  # (l, b, d, n) each
    else:
        y, stats = ops.quantized_scan(u, delta, A, B, points.C(C.float()), **scan_kwargs)  # y: (b, d, l)
    if torch.is_grad_enabled() and any(t.requires_grad for t in (u, delta, B, C)):
        # Block-wise tuning (JLSS) needs gradients through the scan. The quantized scan is
        # forward-only, so pass them straight through: the value is the quantized scan's,
        # the gradient the float scan's on the same (quantized) inputs.
        y_float = ops.selective_scan(u.float(), delta, A.float(), B.float(), points.C(C.float()))  # (b, d, l)
        y = y + (y_float - y_float.detach())
    for name, observer in observers.items():
        observer.observe_scan_stats(stats[f"{name}_min"], stats[f"{name}_max"])
    out = points.y(y) + D.float()[None, :, None] * u.float()  # (b, d, l)
    if z is not None:
        out = out * points.z(F.silu(z.float()))
    return out


SAMPLES_PER_CALL = 4096


def _observe_discrete_samples(observers, u, delta, A, B, b_includes_u: bool) -> None:
    """Give the A / B observers values of A_bar and of B_bar (u) at sampled positions.

    The scan never materialises A_bar or B_bar u; their distributions (for the LtSQ
    skewness test and its scale) come from a fixed, seeded set of (b, c, t) positions,
    each with all n states: bounded memory whatever the model size.
    """
    b, d, l = delta.shape
    m = min(SAMPLES_PER_CALL, b * d * l)
    gen = torch.Generator().manual_seed(b * 1_000_003 + d * 1_009 + l)
    flat = torch.randperm(b * d * l, generator=gen)[:m].to(delta.device)
    bi, rem = flat // (d * l), flat % (d * l)
    ci, ti = rem // l, rem % l
    dl = delta[bi, ci, ti].float()  # (m,)
    if "A" in observers:
        observers["A"].observe_samples(torch.exp(dl[:, None] * A[ci].float()))  # (m, n)
    if "B" in observers:
        if B.dim() == 4:  # grouped (b, g, n, l): channel c uses group c // (d // g)
            bsel = B[bi, ci // (d // B.shape[1]), :, ti]  # (m, n)
        else:
            bsel = B[bi, :, ti]  # (m, n)
        bbar = dl[:, None] * bsel.float()  # (m, n)
        if b_includes_u:
            bbar = bbar * u[bi, ci, ti].float()[:, None]
        observers["B"].observe_samples(bbar)
