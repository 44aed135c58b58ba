"""SmoothQuant-style smoothing of one Linear: `SmoothedInput` and `SmoothedWeight`.

The input is divided and the weight multiplied by the same per-input-channel factors
before their quantizers, so the float product is unchanged.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from qmamba.quant.quantizers.registry import (
    SavedQuantizer,
    TensorLookup,
    rebuild_entry,
    register_quantizer,
)


@register_quantizer
class SmoothedInput(SavedQuantizer, nn.Module):
    """x -> Q(x / s): the activation side of SmoothQuant-style smoothing."""

    saved_type = "smoothed_input"

    def __init__(self, inner: nn.Module, smooth: torch.Tensor, channel_axis: int = -1):
        super().__init__()
        self.inner = inner
        self.register_buffer("smooth", smooth.detach().float().clone())
        self.channel_axis = channel_axis

    def _shape(self, x: torch.Tensor) -> list[int]:
        shape = [1] * x.dim()
        shape[self.channel_axis] = -1
        return shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x / self.smooth.view(self._shape(x)).to(x.dtype))

    def describe(self) -> dict:
        return {**self.inner.describe(), "smoothing": True}

    def save_entry(self, prefix: str, tensors: dict[str, torch.Tensor]) -> dict:
        tensors[f"{prefix}.smooth"] = self.smooth.contiguous()
        return {"type": self.saved_type, "channel_axis": self.channel_axis,
                "inner": self.inner.save_entry(prefix + ".inner", tensors)}

    @classmethod
    def rebuild(cls, entry: dict, tensor: TensorLookup) -> SmoothedInput:
        inner = rebuild_entry(entry["inner"], lambda name: tensor(f"inner.{name}"))
        return cls(inner, tensor("smooth"), entry["channel_axis"])


class SmoothedWeight(nn.Module):
    """w -> Q(w * s) along the input-channel axis (1): the weight side of smoothing."""

    def __init__(self, inner: nn.Module, smooth: torch.Tensor):
        super().__init__()
        self.inner = inner
        self.register_buffer("smooth", smooth.detach().float().clone())

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        shape = [1] * w.dim()
        shape[1] = -1
        return self.inner(w * self.smooth.view(shape).to(w.dtype))

    def weight_codes(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int, int]:
        """The inner quantizer's codes of the smoothed weight w * s."""
        shape = [1] * w.dim()
        shape[1] = -1
        return self.inner.weight_codes(w.detach().float() * self.smooth.view(shape))

    def describe(self) -> dict:
        return {**self.inner.describe(), "smoothing": True}
