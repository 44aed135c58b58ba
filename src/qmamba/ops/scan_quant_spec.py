"""What the quantized selective scan needs to know about one in-loop quantizer.

The quantized recurrence (method.md) is

    h_t = Q_h( Q_A(A_bar_t) * h_{t-1} + Q_B(B_bar_t u_t) ),    y_t = C_t . h_t

`Q_A`, `Q_B` and `Q_h` run inside the time loop, so the scan kernels (reference and
compiled) receive them as plain tensors, not modules: a `ScanPointQuant` per point.
This file also holds the elementwise fake-quantization math of the three grid kinds;
it is the single definition that the reference scan, the quantizer modules and the
tests share (the compiled kernel re-implements it in C++ and is tested against it).

Grid kinds (codes q are integers in [qmin, qmax]):
  "uniform":    q = clamp(round(x / s) + zp, qmin, qmax);      x_hat = (q - zp) * s
  "log1m":      q = clamp(round(-log_base((1 - x) / s)), qmin, qmax)
                x_hat = 1 - s * base^(-q)        (LtSQ for A_bar in (0, 1], dense near 1)
  "log_signed": m = clamp(round(-log_base(|x| / s)), qmin, qmax)
                x_hat = sign(x) * s * base^(-m), and 0 when m == qmax
                (LtSQ anchored at 0 for B_bar u and delta; one code is kept for zero,
                 the sign is one extra bit: qmax = 2^(bits-1) - 1)

Parameter layout. `scale` and `zero_point` have shape (G, K, N') where
  G  = number of time groups (TGQ); `group_index` (L,) int64 maps step t -> group,
  K  divides the channel count d of the scan; channel c uses row c // (d // K)
       (K = 1 per tensor, K = number of directions in VMamba, K = d per channel),
  N' is 1 or the state size n.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

GRID_KINDS = ("uniform", "log1m", "log_signed")


@dataclass
class ScanPointQuant:
    kind: str
    scale: torch.Tensor  # (G, K, N') float32, > 0
    zero_point: torch.Tensor | None  # (G, K, N') float32 integer-valued; uniform only
    qmin: int
    qmax: int
    base: float = 2.0  # log kinds only
    group_index: torch.Tensor | None = None  # (L,) int64, values in [0, G); None -> group 0

    def __post_init__(self):
        if self.kind not in GRID_KINDS:
            raise ValueError(f"unknown grid kind {self.kind!r}; known: {GRID_KINDS}")
        if self.scale.dim() != 3:
            raise ValueError(f"scale must be (G, K, N'), got shape {tuple(self.scale.shape)}")
        if self.zero_point is not None and self.zero_point.shape != self.scale.shape:
            raise ValueError("zero_point must have the shape of scale")
        if self.qmin >= self.qmax:
            raise ValueError(f"empty code range [{self.qmin}, {self.qmax}]")

    @property
    def num_groups(self) -> int:
        return self.scale.shape[0]

    def groups_for_length(self, length: int, device=None) -> torch.Tensor:
        """(L,) int64 group of every time step."""
        if self.group_index is None:
            return torch.zeros(length, dtype=torch.long, device=device)
        if self.group_index.numel() != length:
            raise ValueError(
                f"quantizer calibrated for sequences of {self.group_index.numel()} steps, got {length}"
            )
        return self.group_index.to(device=device, dtype=torch.long)

    def expand_params(self, d: int, n: int, dtype=torch.float32, device=None):
        """scale, zero_point expanded to (G, d, n) (zero_point None -> zeros)."""
        g, k, n_ = self.scale.shape
        if d % k != 0 or n_ not in (1, n):
            raise ValueError(f"quantizer params {tuple(self.scale.shape)} do not fit d={d}, n={n}")
        scale = self.scale.to(device=device, dtype=dtype).repeat_interleave(d // k, dim=1)
        scale = scale.expand(g, d, n)
        if self.zero_point is None:
            zp = torch.zeros_like(scale)
        else:
            zp = self.zero_point.to(device=device, dtype=dtype).repeat_interleave(d // k, dim=1)
            zp = zp.expand(g, d, n)
        return scale, zp


def fake_quant_uniform(x, scale, zero_point, qmin: int, qmax: int):
    """Uniform affine fake quantization (round half to even, as torch.round)."""
    q = torch.clamp(torch.round(x / scale) + zero_point, qmin, qmax)
    return (q - zero_point) * scale


def fake_quant_log1m(x, scale, qmin: int, qmax: int, base: float = 2.0):
    """Log grid on the distance from 1: x_hat = 1 - s * base^(-q)."""
    log_base = math.log(base)
    dist = torch.clamp(1.0 - x, min=0.0)
    # dist == 0 -> +inf exponent -> clamped to qmax (the value closest to 1)
    q = torch.clamp(torch.round(-torch.log(dist / scale) / log_base), qmin, qmax)
    return 1.0 - scale * torch.exp(-q * log_base)


def fake_quant_log_signed(x, scale, qmin: int, qmax: int, base: float = 2.0):
    """Log grid anchored at 0 with the sign kept; magnitude code qmax means exactly 0."""
    log_base = math.log(base)
    mag = x.abs()
    m = torch.clamp(torch.round(-torch.log(mag / scale) / log_base), qmin, qmax)
    val = torch.sign(x) * scale * torch.exp(-m * log_base)
    return torch.where(m >= qmax, torch.zeros_like(val), val)


def apply_scan_quant(x: torch.Tensor, spec: ScanPointQuant, scale, zero_point) -> torch.Tensor:
    """Fake-quantize `x` with already broadcast `scale` / `zero_point` (same rank as x)."""
    if spec.kind == "uniform":
        return fake_quant_uniform(x, scale, zero_point, spec.qmin, spec.qmax)
    if spec.kind == "log1m":
        return fake_quant_log1m(x, scale, spec.qmin, spec.qmax, spec.base)
    return fake_quant_log_signed(x, scale, spec.qmin, spec.qmax, spec.base)
