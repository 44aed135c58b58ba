"""LtSQ's signed log grid for a tensor point (delta): `LogQuantizer`."""
from __future__ import annotations

import torch
import torch.nn as nn

from qmamba.ops.fake_quant import fake_quant_fused
from qmamba.quant.primitives import log_fake_quant, log_quantize, log_signed_qrange
from qmamba.quant.quantizers.registry import SavedQuantizer, TensorLookup, register_quantizer


@register_quantizer
class LogQuantizer(SavedQuantizer, nn.Module):
    """LtSQ anchored at 0 for a tensor point (delta): signed log grid, one code for 0.

    Straight-through gradient: the forward value is the log-grid value, the gradient
    that of the identity."""

    saved_type = "log"

    def __init__(self, scale: torch.Tensor, bits: int, base: float = 2.0):
        super().__init__()
        self.register_buffer("scale", scale.detach().float().clone())
        self.bits = bits
        self.base = float(base)

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        return log_quantize(x.float(), self.scale, self.bits, self.base)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_hat = None
        if not (torch.is_grad_enabled() and x.requires_grad):
            qmin, qmax = log_signed_qrange(self.bits)
            x_hat = fake_quant_fused(x.float(), "log_signed", self.scale, None, qmin, qmax, self.base)
        if x_hat is None:  # the PyTorch path (the reference)
            x_hat = log_fake_quant(x.float(), self.scale, self.bits, self.base)
        x_hat = x_hat.to(x.dtype)
        return x_hat if not x.requires_grad else x + (x_hat - x).detach()

    def describe(self) -> dict:
        return {"grid": "ltsq_log_signed", "bits": self.bits, "log_base": self.base, "num_scales": int(self.scale.numel())}

    def extra_repr(self) -> str:
        return f"bits={self.bits}, base={self.base:.4f}"

    def saved_attrs(self) -> dict:
        return {"bits": self.bits, "base": self.base}

    @classmethod
    def rebuild(cls, entry: dict, tensor: TensorLookup) -> LogQuantizer:
        return cls(tensor("scale"), entry["bits"], entry["base"])
