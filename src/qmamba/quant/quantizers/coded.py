"""A reloaded weight quantizer: `CodedWeight` holds the integer codes of a saved model."""
from __future__ import annotations

import torch
import torch.nn as nn


class CodedWeight(nn.Module):
    """A reloaded weight quantizer: returns the dequantized codes, whatever it is given."""

    def __init__(self, codes: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, bits: int, smoothing: bool = False):
        super().__init__()
        self.register_buffer("codes", codes.to(torch.int16))
        self.register_buffer("scale", scale.float())
        self.register_buffer("zero_point", zero_point.float())
        self.bits = bits
        self.smoothing = smoothing
        self._dequant: torch.Tensor | None = None

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if self._dequant is None or self._dequant.device != w.device:
            self._dequant = ((self.codes.float() - self.zero_point) * self.scale).to(w.device)
        return self._dequant.to(w.dtype)

    def weight_codes(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int, int]:
        """The codes it was loaded with (symmetric: qmin = -(2^(bits-1) - 1)); `w` is ignored."""
        return self.codes.long(), self.scale, self.bits, -(2 ** (self.bits - 1) - 1)

    def describe(self) -> dict:
        return {"grid": "uniform", "bits": self.bits, "symmetric": True, "granularity": "channel",
                "num_scales": int(self.scale.numel()), **({"smoothing": True} if self.smoothing else {})}
