"""PyTorch references of the fused Vim-mixer kernels (csrc/int_kernels.cpp, "fused Vim
mixer"): the same float32 operations in the same order, so kernel and reference agree bit
for bit (tests/integer/test_fused.py).

silu and softplus are written in plain float32 operations on `exp_f32` (PyTorch's own
differ from them by about an ulp: where that decides a code the simulated model and the
integer one take different sides of a tie, which the model tests bound).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from qmamba.integer.scan_reference import exp_f32

ATANH_SERIES = tuple(1.0 / k for k in (17, 15, 13, 11, 9, 7, 5, 3, 1))


def _f32(v: float) -> torch.Tensor:
    return torch.tensor(v, dtype=torch.float32)


def silu_f32(x: torch.Tensor) -> torch.Tensor:
    return x / (1.0 + exp_f32(-x))


def softplus_f32(x: torch.Tensor) -> torch.Tensor:
    """x above 20, else max(x, 0) + log1p(e), e = exp(-|x|): 2 atanh(w), w = e / (2 + e)
    in (0, 1/3] (odd series to w^17)."""
    e = exp_f32(-x.abs())
    w = e / (2.0 + e)
    w2 = w * w
    p = torch.full_like(w, ATANH_SERIES[0])
    for c in ATANH_SERIES[1:]:
        p = p * w2 + _f32(c)
    v = torch.clamp(x, min=0.0) + (2.0 * w) * p
    return torch.where(x > 20.0, x, v)


def inverse(s: float) -> torch.Tensor:
    """1 / s in float32 (the fused kernels multiply by it where the quantizers divide)."""
    return _f32(1.0) / _f32(s)


def quant_value(x, s, zp, qmin, qmax):
    q = torch.clamp(torch.round(x * inverse(s)) + zp, qmin, qmax)
    return (q - zp) * s


def conv_silu_codes_ref(x, w, zc: int, sx: float, sw, bias, reverse: bool, su, zpu, qmin, qmax, off):
    """(u codes int8, u values) of `conv_silu_codes` for x codes (B, L, E) int8."""
    k = w.shape[1]
    vals = x.float().transpose(1, 2) + zc  # (B, E, L) integer values
    if reverse:
        vals = vals.flip(-1)
    acc = F.conv1d(F.pad(vals, (k - 1, 0)), w.float().unsqueeze(1), None, 1, 0, 1, x.shape[2])
    if reverse:
        acc = acc.flip(-1)
    scale = _f32(sx) * sw.float()  # (E,)
    pre = acc.transpose(1, 2) * scale + bias.float()  # (B, L, E)
    u = silu_f32(pre)
    q = torch.clamp(torch.round(u * inverse(su)) + zpu, qmin, qmax)
    return (q - off).to(torch.int8), (q - zpu) * su


def delta_codes_ref(dt, bias, table) -> torch.Tensor:
    """`delta_codes`: the DeltaTable index (minus its offset) of softplus(dt + bias)."""
    delta = softplus_f32(dt.float() + bias.float())
    inv = inverse(float(table.scale))
    if table.kind == "uniform":
        q = torch.clamp(torch.round(delta * inv) + table.zero_point, table.qmin, table.qmax)
        return (q - table.qmin - table.offset).to(torch.int8)
    r = torch.clamp(delta * inv, min=0.0)
    c = table.thresholds
    count = c.numel() - torch.searchsorted(c.flip(0), r.contiguous(), right=True)
    count = torch.where(r == 0, torch.full_like(count, c.numel()), count)
    return (count - table.offset).to(torch.int8)


def scan_out_ref(y, u, z, D, prev, yq: tuple, zq: tuple | None) -> torch.Tensor:
    """`scan_out` on (M, E) tensors: (Q_y(y) + D u) * Q_z(silu(z)), averaged with prev."""
    v = quant_value(y, *yq) + D.float() * u
    if zq is not None:
        v = v * quant_value(silu_f32(z), *zq)
    return v if prev is None else (prev + v) * 0.5
