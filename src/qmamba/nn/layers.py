"""Layers with explicit quantization points; parameter names are those of torch.nn.

`QuantLinear`, `QuantConv1d` and `QuantConv2d` are the torch layers plus two points:
`input_quant` (role `linear_input`) and `weight_quant` (role `weight`). Layers whose
input is quantized elsewhere (for example x_proj, whose input u is the scan point
`ssm.u`) are built with `quantize_input=False` and have no input point at all.
`QuantLinear` also has an `input_rotation` slot (`qmamba.nn.rotation.InputRotation`),
applied before the input point: the identity until a rotating recipe (Quamba,
MambaQuant) sets it; for layers without an input point it owns the point that
quantizes the rotated input.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from qmamba.nn.point import QuantPoint
from qmamba.nn.rotation import InputRotation


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
