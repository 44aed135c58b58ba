"""The selective SSM step shared by Vim and VMamba, with its quantization points.

`SSMQuantPoints` holds the named points of one scan (method.md's table):
`u`, `delta`, `A` (A_bar), `B` (B_bar u), `C`, `h` (hidden state, TGQ), `y`, `z`.
`selective_ssm` runs the float scan when none of them is active (the exact upstream
math, fast path) and the quantized recurrence otherwise.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from qmamba import ops
from qmamba.quant.point import QuantPoint


class SSMQuantPoints(nn.Module):
    def __init__(self, has_z: bool):
        super().__init__()
        self.u = QuantPoint("ssm.u")  # applied by the model: u feeds x_proj and the scan
        self.delta = QuantPoint("ssm.delta")
        self.A = QuantPoint("ssm.A")
        self.B = QuantPoint("ssm.B")
        self.C = QuantPoint("ssm.C")
        self.h = QuantPoint("ssm.h")
        self.y = QuantPoint("ssm.y")
        self.z = QuantPoint("ssm.z") if has_z else None

    def scan_points(self) -> tuple[QuantPoint, ...]:
        points = (self.delta, self.A, self.B, self.C, self.h, self.y)
        return points + ((self.z,) if self.z is not None else ())

    @property
    def active(self) -> bool:
        return any(p.active for p in self.scan_points())


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
    y, stats = ops.quantized_scan(
        u,
        delta,
        A,
        B,
        points.C(C.float()),
        a_quant=points.A.scan_spec(),
        b_quant=points.B.scan_spec(),
        h_quant=points.h.scan_spec(),
        collect_stats=bool(observers),
    )  # y: (b, d, l)
    for name, observer in observers.items():
        observer.observe_scan_stats(stats[f"{name}_min"], stats[f"{name}_max"])
    out = points.y(y) + D.float()[None, :, None] * u.float()  # (b, d, l)
    if z is not None:
        out = out * points.z(F.silu(z.float()))
    return out
