"""Twin uniform quantization (PTQ4ViT, Yuan et al., 2021), for the SiLU outputs of Mamba.

PTQ4ViT quantizes post-GELU activations with two uniform ranges: R1 = [-2^(k-1) D1, 0]
for the negative values, which GELU confines to a short interval, and
R2 = [0, (2^(k-1) - 1) D2] for the positive ones, with D2 = 2^m D1 so that the two
ranges line up with a shift (one code bit selects the range, k - 1 bits index it).
SiLU (x * sigmoid(x), minimum -0.2785) has the shape of GELU, so the same split applies
to Mamba's u = silu(conv(x)) and to the gate silu(z).

Codes are k-bit signed integers q in [-2^(k-1), 2^(k-1) - 1]:
  x < 0:   q = clamp(round(x / D1), -2^(k-1), 0),     x_hat = q * D1
  x >= 0:  q = clamp(round(x / D2), 0, 2^(k-1) - 1),  x_hat = q * D2
(q = 0 is exactly 0 in both ranges; round half to even, like torch.round).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from qmamba.quant.quantizers.registry import SavedQuantizer, TensorLookup, register_quantizer

# Candidates of the block-wise search (PTQ4ViT searches D2 with D1 fixed by the negative
# range; with D2 = 2^m D1 that is a search over m). To search the positive range finer
# than octaves, D1 is also scaled by 2^(-j/3): the negatives are then clipped by at most 37%.
D1_FACTORS = (1.0, 2.0 ** (-1.0 / 3.0), 2.0 ** (-2.0 / 3.0))
EXPONENT_STEPS = (0, 1, 2)  # m = m0 - step, m0 the exponent that covers the positive maximum


def twin_codes(x: torch.Tensor, scale_neg, exponent: int, bits: int) -> torch.Tensor:
    """Signed integer codes (float dtype) in [-2^(bits-1), 2^(bits-1) - 1]."""
    half = 2 ** (bits - 1)
    scale_pos = scale_neg * (2.0**exponent)
    neg = torch.clamp(torch.round(torch.clamp(x, max=0.0) / scale_neg), -half, 0)
    pos = torch.clamp(torch.round(torch.clamp(x, min=0.0) / scale_pos), 0, half - 1)
    return neg + pos


def twin_dequantize(codes: torch.Tensor, scale_neg, exponent: int) -> torch.Tensor:
    scale_pos = scale_neg * (2.0**exponent)
    return torch.where(codes < 0, codes * scale_neg, codes * scale_pos)


def twin_fake_quant(x: torch.Tensor, scale_neg, exponent: int, bits: int) -> torch.Tensor:
    return twin_dequantize(twin_codes(x, scale_neg, exponent, bits), scale_neg, exponent)


@register_quantizer
class TwinUniformQuantizer(SavedQuantizer, nn.Module):
    """Per-tensor twin uniform quantizer; `scale` is D1, D2 = D1 * 2^exponent.

    Straight-through gradient (identity), like the other activation quantizers."""

    saved_type = "twin_uniform"

    def __init__(self, scale: torch.Tensor, exponent: int, bits: int):
        super().__init__()
        self.register_buffer("scale", torch.as_tensor(scale).detach().float().reshape(()).clone())
        self.exponent = int(exponent)
        self.bits = int(bits)

    @property
    def scale_pos(self) -> torch.Tensor:
        return self.scale * (2.0**self.exponent)

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        return twin_codes(x.float(), self.scale, self.exponent, self.bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_hat = twin_fake_quant(x.float(), self.scale, self.exponent, self.bits).to(x.dtype)
        return x_hat if not x.requires_grad else x + (x_hat - x).detach()

    def describe(self) -> dict:
        return {"grid": "twin_uniform", "bits": self.bits, "scale_neg": float(self.scale),
                "scale_pos": float(self.scale_pos), "ratio_log2": self.exponent, "num_scales": 2}

    def extra_repr(self) -> str:
        return f"bits={self.bits}, scale_neg={float(self.scale):.4g}, ratio=2^{self.exponent}"

    def saved_attrs(self) -> dict:
        return {"bits": self.bits, "exponent": self.exponent}

    @classmethod
    def rebuild(cls, entry: dict, tensor: TensorLookup) -> TwinUniformQuantizer:
        return cls(tensor("scale"), entry["exponent"], entry["bits"])


def covering_exponent(neg_extent: float, pos_extent: float, bits: int) -> tuple[float, int]:
    """(D1, m0): D1 covers the negative extent with 2^(bits-1) steps; m0 >= 0 is the
    smallest exponent with (2^(bits-1) - 1) * D1 * 2^m0 >= the positive extent."""
    half = 2 ** (bits - 1)
    pos_extent = max(float(pos_extent), 1e-12)
    # a point with (almost) no negative values still needs a finite D1
    neg_extent = max(float(neg_extent), pos_extent * 2.0**-20)
    d1 = neg_extent / half
    m0 = max(0, math.ceil(math.log2(pos_extent / ((half - 1) * d1)) - 1e-9))
    return d1, m0


def candidates(xmin: float, xmax: float, bits: int) -> list[tuple[float, int]]:
    """(D1, m) pairs the search tries, the covering one (no clipping) first."""
    d1, m0 = covering_exponent(-min(xmin, 0.0), max(xmax, 0.0), bits)
    out = []
    for step in EXPONENT_STEPS:
        m = m0 - step
        if m < 0:
            continue
        for f in D1_FACTORS:
            out.append((d1 * f, m))
    return out


def twin_quantizer(xmin: float, xmax: float, bits: int, candidate: tuple[float, int] | None = None) -> TwinUniformQuantizer:
    """The quantizer of one candidate (default: the covering one, from the calibrated range)."""
    d1, m = candidate if candidate is not None else candidates(xmin, xmax, bits)[0]
    return TwinUniformQuantizer(torch.tensor(d1), m, bits)
