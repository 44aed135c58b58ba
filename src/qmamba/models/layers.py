"""Normalisation layers of the model families and their float32 rule.

The layers with quantization points (QuantLinear, QuantConv1d, QuantConv2d) are in
`qmamba.nn.layers`, shared with the quantization engine.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def at_least_float32(t: torch.Tensor) -> torch.Tensor:
    """float32 for half/bfloat16/float32 tensors; float64 stays float64.

    Upstream computes norms, the residual stream and exp(A_log) in float32; this keeps
    that for float32 models and makes a `model.double()` run exact (conformance tests)."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


class RMSNorm(nn.Module):
    """RMSNorm with a weight only (Vim / mamba_ssm), computed in float32."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = at_least_float32(x)
        rstd = torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (xf * rstd * at_least_float32(self.weight)).to(x.dtype)


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over channels of a (B, C, H, W) tensor ("channel-first LayerNorm")."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)  # (B, H, W, C)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)  # (B, C, H, W)
