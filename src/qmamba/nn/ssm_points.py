"""The named quantization points of one selective scan (method.md's table).

`u`, `delta`, `A` (A_bar), `B` (B_bar u), `C`, `h` (hidden state, TGQ), `y`, `z`;
`qmamba.models.ssm.selective_ssm` calls them.
"""
from __future__ import annotations

import torch.nn as nn

from qmamba.nn.point import QuantPoint


class SSMQuantPoints(nn.Module):
    def __init__(self, has_z: bool, directions: int = 1):
        """`directions`: scan directions stacked along the channels of this one scan
        (VMamba: 4); TGQ gives each its own scales."""
        super().__init__()
        self.directions = directions
        # all (b, d, l) tensors here are channels-first
        self.u = QuantPoint("ssm.u", channel_axis=1)  # applied by the model: u feeds x_proj and the scan
        self.delta = QuantPoint("ssm.delta", channel_axis=1)
        self.A = QuantPoint("ssm.A")
        self.B = QuantPoint("ssm.B")
        self.C = QuantPoint("ssm.C")
        self.h = QuantPoint("ssm.h")
        self.y = QuantPoint("ssm.y", channel_axis=1)
        self.z = QuantPoint("ssm.z", channel_axis=1) if has_z else None

    def scan_points(self) -> tuple[QuantPoint, ...]:
        points = (self.delta, self.A, self.B, self.C, self.h, self.y)
        return points + ((self.z,) if self.z is not None else ())

    @property
    def active(self) -> bool:
        return any(p.active for p in self.scan_points())
