"""Layers with explicit quantization points; parameter names are those of torch.nn.

`QuantLinear`, `QuantConv1d` and `QuantConv2d` are the torch layers plus two points:
`input_quant` (role `linear_input`) and `weight_quant` (role `weight`). Layers whose
input is quantized elsewhere (for example x_proj, whose input u is the scan point
`ssm.u`) are built with `quantize_input=False` and have no input point at all.
`QuantLinear` also has an `input_rotation` slot (`qmamba.quant.rotation.InputRotation`),
applied before the input point: the identity until a rotating recipe (Quamba,
MambaQuant) sets it; for layers without an input point it owns the point that
quantizes the rotated input.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from qmamba.quant.point import QuantPoint
from qmamba.quant.rotation import InputRotation


class _QuantLayerMixin:
    def _init_points(self, quantize_input: bool, tags: tuple[str, ...], channel_axis: int = -1) -> None:
        self.input_quant = (
            QuantPoint("linear_input", tags, channel_axis=channel_axis) if quantize_input else None
        )
        self.weight_quant = QuantPoint("weight", tags)

    def _q_input(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.input_quant is None else self.input_quant(x)


class QuantLinear(nn.Linear, _QuantLayerMixin):
    def __init__(self, in_features, out_features, bias=True, *, quantize_input=True, tags=(), **kw):
        super().__init__(in_features, out_features, bias=bias, **kw)
        self._init_points(quantize_input, tags)
        self.input_rotation = InputRotation(own_point=not quantize_input, tags=tags)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_rotation(x)  # identity unless a recipe rotates this input
        return F.linear(self._q_input(x), self.weight_quant(self.weight), self.bias)


class QuantConv1d(nn.Conv1d, _QuantLayerMixin):
    def __init__(self, *args, quantize_input=True, tags=(), **kw):
        super().__init__(*args, **kw)
        self._init_points(quantize_input, tags, channel_axis=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(self._q_input(x), self.weight_quant(self.weight), self.bias)


class QuantConv2d(nn.Conv2d, _QuantLayerMixin):
    def __init__(self, *args, quantize_input=True, tags=(), **kw):
        super().__init__(*args, **kw)
        self._init_points(quantize_input, tags, channel_axis=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(self._q_input(x), self.weight_quant(self.weight), self.bias)


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
