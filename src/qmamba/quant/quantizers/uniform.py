"""Uniform affine quantizers: activations (`UniformQuantizer`) and weights (`WeightQuantizer`).

`UniformQuantizer` is static uniform affine fake quantization; its scale broadcasts
against the input (per tensor, per channel, per token). `WeightQuantizer` is
per-output-channel symmetric and caches its fake-quantized weight (weights do not change
after calibration).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from qmamba.ops.fake_quant import fake_quant_fused
from qmamba.ops.scan_quant_spec import fake_quant_uniform
from qmamba.quant.primitives import choose_qparams, fake_quant, qrange
from qmamba.quant.quantizers.registry import SavedQuantizer, TensorLookup, register_quantizer


@register_quantizer
class UniformQuantizer(SavedQuantizer, nn.Module):
    saved_type = "uniform"

    def __init__(self, scale: torch.Tensor, zero_point: torch.Tensor, bits: int, symmetric: bool, granularity: str = "tensor"):
        super().__init__()
        self.register_buffer("scale", scale.detach().float().clone())
        self.register_buffer("zero_point", zero_point.detach().float().clone())
        self.bits = bits
        self.symmetric = symmetric
        self.granularity = granularity
        self.qmin, self.qmax = qrange(bits, symmetric)

    @classmethod
    def from_range(cls, xmin, xmax, bits: int, symmetric: bool, granularity: str = "tensor"):
        scale, zero_point = choose_qparams(xmin.float(), xmax.float(), bits, symmetric)
        return cls(scale, zero_point, bits, symmetric, granularity)

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        q = torch.round(x.float() / self.scale) + self.zero_point
        return torch.clamp(q, self.qmin, self.qmax)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale.requires_grad:  # block-wise tuning (JLSS): LSQ gradient for the step size
            return fake_quant(x.float(), self.scale, self.zero_point, self.qmin, self.qmax,
                              learnable_scale=True).to(x.dtype)
        if not (torch.is_grad_enabled() and x.requires_grad):  # inference: no STE mask to build
            xf = x.float()
            fused = fake_quant_fused(xf, "uniform", self.scale, self.zero_point, self.qmin, self.qmax)
            if fused is None:  # the PyTorch path (the reference)
                fused = fake_quant_uniform(xf, self.scale, self.zero_point, self.qmin, self.qmax)
            return fused.to(x.dtype)
        return fake_quant(x.float(), self.scale, self.zero_point, self.qmin, self.qmax).to(x.dtype)

    def describe(self) -> dict:
        return {
            "grid": "uniform",
            "bits": self.bits,
            "symmetric": self.symmetric,
            "granularity": self.granularity,
            "num_scales": int(self.scale.numel()),
        }

    def extra_repr(self) -> str:
        return f"bits={self.bits}, symmetric={self.symmetric}, granularity={self.granularity}"

    def saved_attrs(self) -> dict:
        return {"bits": self.bits, "symmetric": self.symmetric, "granularity": self.granularity}

    @classmethod
    def rebuild(cls, entry: dict, tensor: TensorLookup) -> UniformQuantizer:
        return cls(tensor("scale"), tensor("zero_point"), entry["bits"], entry["symmetric"], entry["granularity"])


class WeightQuantizer(UniformQuantizer):
    """Per-output-channel symmetric quantizer that caches its fake-quantized weight."""

    def __init__(self, scale, zero_point, bits, symmetric=True, granularity="channel"):
        super().__init__(scale, zero_point, bits, symmetric, granularity)
        self._cache: tuple[int, int, int, torch.Tensor] | None = None

    def clear_cache(self) -> None:
        self._cache = None

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        # weights are Parameters (requires_grad) even in inference: what counts is whether
        # autograd records now (JLSS tuning) or the step size is being learned
        if (torch.is_grad_enabled() and w.requires_grad) or self.scale.requires_grad:
            return super().forward(w)
        key = (id(w), w._version, self.scale._version)
        if self._cache is None or self._cache[:3] != key or self._cache[3].device != w.device:
            self._cache = (*key, super().forward(w))
        return self._cache[3]

    def weight_codes(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int, int]:
        """(integer codes of `w`, per-channel scale, bits, qmin): what a saved model stores."""
        return self.codes(w.detach().float()).long(), self.scale, self.bits, self.qmin
