"""The log-sqrt(2) quantizer of RepQ-ViT (Li et al., 2023) for a non-negative tensor.

RepQ-ViT quantizes post-softmax attention (values in [0, 1], power-law: dense near 0,
few large values) with q = clamp(round(-log_sqrt2(x / s)), 0, 2^b - 1),
x_hat = s * sqrt(2)^-q, and reparameterizes it to a log2 grid for inference
(2^-ceil(q/2), times sqrt(2) for odd q: a shift and one constant multiply).

Here the grid is the project's threshold-defined log grid (`scan_quant_spec`, base
sqrt(2), code range [0, 2^b - 1]), with one difference from RepQ-ViT: the top code
means exactly 0 (RepQ-ViT keeps 2^b - 1 as its smallest non-zero level and maps what
lies beyond it to 0). Negative inputs are clamped to 0 (the point it serves, delta =
softplus(.), is positive).

The scale s is chosen as in RepQ-ViT's initialisation: among the maximum and the
99.9th / 99.99th / 99.999th percentiles of the calibrated sample, the one with the
smallest squared error on that sample.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from qmamba.ops.scan_quant_spec import codes_log_signed, fake_quant_log_signed, log_grid_lookup
from qmamba.quant.quantizers.registry import SavedQuantizer, TensorLookup, register_quantizer

BASE = math.sqrt(2.0)
SCALE_PERCENTILES = (100.0, 99.9, 99.99, 99.999)


def code_range(bits: int) -> tuple[int, int]:
    return 0, 2**bits - 1


@register_quantizer
class LogSqrt2Quantizer(SavedQuantizer, nn.Module):
    """Per-tensor log-sqrt(2) quantizer; straight-through gradient."""

    saved_type = "log_sqrt2"

    def __init__(self, scale: torch.Tensor, bits: int):
        super().__init__()
        self.register_buffer("scale", torch.as_tensor(scale).detach().float().reshape(()).clone())
        self.bits = int(bits)
        self.qmin, self.qmax = code_range(self.bits)

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """Codes in [0, 2^b - 1]; 2^b - 1 is exactly 0."""
        return codes_log_signed(torch.clamp(x.float(), min=0.0), self.scale, self.qmin, self.qmax, BASE)

    def dequantize(self, codes: torch.Tensor) -> torch.Tensor:
        val = self.scale * log_grid_lookup(codes, BASE, self.qmin, self.qmax)
        return torch.where(codes >= self.qmax, torch.zeros_like(val), val)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xc = torch.clamp(x.float(), min=0.0)
        x_hat = fake_quant_log_signed(xc, self.scale, self.qmin, self.qmax, BASE).to(x.dtype)
        return x_hat if not x.requires_grad else x + (x_hat - x).detach()

    def describe(self) -> dict:
        return {"grid": "log_sqrt2", "bits": self.bits, "log_base": BASE, "num_scales": 1}

    def extra_repr(self) -> str:
        return f"bits={self.bits}, scale={float(self.scale):.4g}"

    def saved_attrs(self) -> dict:
        return {"bits": self.bits}

    @classmethod
    def rebuild(cls, entry: dict, tensor: TensorLookup) -> LogSqrt2Quantizer:
        return cls(tensor("scale"), entry["bits"])


def log_sqrt2_quantizer(samples: torch.Tensor, bits: int) -> LogSqrt2Quantizer:
    """Scale by RepQ-ViT's rule (percentile candidates, least squared error on `samples`)."""
    vals = torch.clamp(samples.detach().float().flatten(), min=0.0)
    peak = float(vals.max()) if vals.numel() else 0.0
    if peak <= 0.0:
        return LogSqrt2Quantizer(torch.tensor(1.0), bits)
    best, best_err = None, math.inf
    for pct in SCALE_PERCENTILES:
        s = peak if pct >= 100.0 else float(torch.quantile(vals, pct / 100.0))
        if s <= 0.0:
            continue
        q = LogSqrt2Quantizer(torch.tensor(s), bits)
        err = float((q(vals) - vals).double().pow(2).sum())
        if err < best_err:
            best, best_err = q, err
    return best
