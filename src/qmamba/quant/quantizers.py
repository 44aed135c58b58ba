"""Quantizer modules: calibrated state (scales, zero points, grids) around pure functions.

They are what `QuantPoint.quantizer` holds after calibration:
- `UniformQuantizer`: static uniform affine fake quantization; its scale broadcasts
  against the input (per tensor, per channel, per token).
- `WeightQuantizer`: per-output-channel symmetric uniform; caches the fake-quantized
  weight (weights do not change after calibration).
- `SmoothedInput` / `SmoothedWeight`: SmoothQuant-style smoothing of one Linear: the
  input is divided and the weight multiplied by the same per-input-channel factors
  before their quantizers, so the float product is unchanged.
- `ScanQuantizer`: an in-loop quantizer of the selective scan (A_bar, B_bar u, h) with
  a uniform or LtSQ log grid and TGQ time groups; the scan reads it via `scan_spec()`.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from qmamba.ops.fake_quant import fake_quant_fused
from qmamba.ops.scan_quant_spec import ScanPointQuant, apply_scan_quant, fake_quant_uniform
from qmamba.quant.primitives import (
    choose_qparams,
    fake_quant,
    log_fake_quant,
    log_quantize,
    log_signed_qrange,
    qrange,
)


class UniformQuantizer(nn.Module):
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


class LogQuantizer(nn.Module):
    """LtSQ anchored at 0 for a tensor point (delta): signed log grid, one code for 0.

    Straight-through gradient: the forward value is the log-grid value, the gradient
    that of the identity."""

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


class SmoothedInput(nn.Module):
    """x -> Q(x / s): the activation side of SmoothQuant-style smoothing."""

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

    def describe(self) -> dict:
        return {**self.inner.describe(), "smoothing": True}


class ScanQuantizer(nn.Module):
    """In-loop quantizer of the selective scan: uniform or LtSQ grid, TGQ time groups.

    `scale`/`zero_point` are (G, K, N') (see `qmamba.ops.scan_quant_spec`);
    `group_index` (L,) maps each time step to its group (TGQ), absent for G = 1.
    """

    def __init__(
        self,
        kind: str,
        bits: int,
        scale: torch.Tensor,
        zero_point: torch.Tensor | None,
        qmin: int,
        qmax: int,
        base: float = 2.0,
        group_index: torch.Tensor | None = None,
        includes_u: bool = True,
    ):
        super().__init__()
        self.kind = kind
        self.includes_u = includes_u  # B point only: quantizes B_bar*u (True) or B_bar
        self.bits = bits
        self.qmin, self.qmax = int(qmin), int(qmax)
        self.base = float(base)
        self.register_buffer("scale", scale.detach().float().clone())
        zp = torch.zeros_like(self.scale) if zero_point is None else zero_point.detach().float().clone()
        self.register_buffer("zero_point", zp)
        gi = torch.zeros(0, dtype=torch.long) if group_index is None else group_index.detach().long().clone()
        self.register_buffer("group_index", gi)

    @property
    def num_groups(self) -> int:
        return int(self.scale.shape[0])

    def scan_spec(self) -> ScanPointQuant:
        return ScanPointQuant(
            kind=self.kind,
            scale=self.scale,
            zero_point=self.zero_point if self.kind == "uniform" else None,
            qmin=self.qmin,
            qmax=self.qmax,
            base=self.base,
            group_index=self.group_index if self.group_index.numel() else None,
        )

    def fake_quant(self, x: torch.Tensor, channel_dim: int = 1, state_dim: int = -1, time_dim: int | None = None) -> torch.Tensor:
        """Fake-quantize a tensor laid out like the scan's (b, d, l, n) (for analysis and tests)."""
        b, d, l, n = x.shape
        spec = self.scan_spec()
        scale, zp = spec.expand_params(d, n, device=x.device)  # (G, d, n)
        groups = spec.groups_for_length(l, device=x.device)  # (l,)
        scale = scale[groups].permute(1, 0, 2)[None]  # (1, d, l, n)
        zp = zp[groups].permute(1, 0, 2)[None]
        return apply_scan_quant(x.float(), spec, scale, zp)

    def describe(self) -> dict:
        grid = {"uniform": "uniform", "log1m": "ltsq_log1m", "log_signed": "ltsq_log_signed"}[self.kind]
        info = {
            "grid": grid,
            "bits": self.bits,
            "groups": self.num_groups,
            "scale_shape": list(self.scale.shape),
        }
        if self.kind != "uniform":
            info["log_base"] = self.base
        if self.group_index.numel():
            bounds = (torch.nonzero(self.group_index[1:] != self.group_index[:-1]).flatten() + 1).tolist()
            info["group_starts"] = [0, *bounds]
        return info

    def extra_repr(self) -> str:
        return f"kind={self.kind}, bits={self.bits}, groups={self.num_groups}, scale={tuple(self.scale.shape)}"
