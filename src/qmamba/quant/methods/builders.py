"""Turn calibration statistics into quantizers, one function per kind of point.

Every builder takes a `clip` ratio in (0, 1]: 1.0 is the calibrated range, smaller
values clip it. The block-wise search (`qmamba.quant.engine`) tries several ratios
per point and keeps the one with the smallest block-output error.
"""
from __future__ import annotations

import torch

from qmamba.quant.config import SSMQuantConfig
from qmamba.quant.methods.ltsq import (
    ltsq_params_a_bar,
    ltsq_params_signed,
    skewness_test,
    skewness_test_signed,
)
from qmamba.quant.methods.tgq import tgq_quantizer
from qmamba.quant.primitives import choose_qparams, log1m_qrange, log_signed_qrange, qrange
from qmamba.quant.quantizers import LogQuantizer, ScanQuantizer, UniformQuantizer, WeightQuantizer

WEIGHT_MSE_RATIOS = tuple(1.0 - 0.025 * i for i in range(21))  # 1.0 .. 0.5


# --------------------------------------------------------------------------- weights
def weight_quantizer(weight: torch.Tensor, bits: int, observer: str, channel_dims: tuple[int, ...], clip: float = 1.0) -> WeightQuantizer:
    """Per-output-channel symmetric; with observer 'mse' the clipping of each channel is
    searched on the weight itself (data-free). `clip` scales every channel's range first
    (the block-output search of weight points tries several). 'gptq' needs the layer's
    inputs (qmamba.quant.methods.gptq); where it has none, it is 'mse'."""
    w = weight.detach().float()
    reduce = tuple(i for i in range(w.dim()) if i not in channel_dims)
    absmax = w.abs().amax(dim=reduce, keepdim=True) if reduce else w.abs()
    absmax = absmax * clip
    qmin, qmax = qrange(bits, symmetric=True)
    best_scale = torch.clamp(absmax / qmax, min=1e-12)
    if observer in ("mse", "gptq"):
        best_err = None
        for ratio in WEIGHT_MSE_RATIOS:
            scale = torch.clamp(absmax * ratio / qmax, min=1e-12)
            w_hat = torch.clamp(torch.round(w / scale), qmin, qmax) * scale
            err = (w_hat - w).pow(2).sum(dim=reduce, keepdim=True) if reduce else (w_hat - w).pow(2)
            if best_err is None:
                best_err = err
            else:
                better = err < best_err
                best_scale = torch.where(better, scale, best_scale)
                best_err = torch.where(better, err, best_err)
    return WeightQuantizer(best_scale, torch.zeros_like(best_scale), bits, symmetric=True)


# --------------------------------------------------------------------------- activations
def act_quantizer(
    xmin: torch.Tensor, xmax: torch.Tensor, bits: int, clip: float = 1.0, granularity: str = "tensor",
    symmetric: bool = False,
) -> UniformQuantizer:
    """Uniform over [xmin, xmax] scaled by `clip` (about zero); asymmetric unless
    `symmetric` (then over +-max(|xmin|, |xmax|), Quamba)."""
    return UniformQuantizer.from_range(xmin * clip, xmax * clip, bits, symmetric=symmetric, granularity=granularity)


def delta_quantizer(obs, bits: int, cfg: SSMQuantConfig, clip: float = 1.0, symmetric: bool = False):
    """delta = softplus(...) > 0, dense near 0 with a tail: LtSQ anchored at 0 when the
    skewness test says so, else the uniform activation quantizer."""
    xmin, xmax = obs.range(bits)
    if cfg.delta_grid == "ltsq" and skewness_test_signed(obs.samples(), cfg.ltsq_b_ratio):
        peak = torch.maximum(xmax.abs(), xmin.abs()).amax()
        if cfg.ltsq_scale == "mse":
            peak = ltsq_params_signed(obs.samples(), bits, cfg.ltsq_base).scale
        return LogQuantizer(peak * clip, bits, cfg.ltsq_base)
    return act_quantizer(xmin, xmax, bits, clip, symmetric=symmetric)


# --------------------------------------------------------------------------- scan points
def a_bar_quantizer(obs, bits: int, cfg: SSMQuantConfig, clip: float = 1.0) -> ScanQuantizer:
    """LtSQ (log grid on 1 - A_bar) when the calibrated median exceeds alpha, else uniform."""
    lo = float(obs.step_min.min())
    hi = float(obs.step_max.max())
    one = torch.ones(1, 1, 1)
    if cfg.a_grid == "ltsq" and skewness_test(obs.samples, cfg.ltsq_alpha):
        s0 = max(1.0 - lo, 1e-12)
        if cfg.ltsq_scale == "mse":
            s0 = float(ltsq_params_a_bar(obs.samples, bits, cfg.ltsq_base).scale)
        s = min(1.0, s0 * clip)
        return ScanQuantizer("log1m", bits, one * s, None, *log1m_qrange(bits), base=cfg.ltsq_base)
    # uniform: clip towards 1, where A_bar crowds
    lo_c = hi - (hi - lo) * clip
    scale, zp = choose_qparams(one * lo_c, one * hi, bits, symmetric=False)
    qmin, qmax = qrange(bits, symmetric=False)
    return ScanQuantizer("uniform", bits, scale, zp, qmin, qmax)


def b_bar_quantizer(obs, bits: int, cfg: SSMQuantConfig, clip: float = 1.0) -> ScanQuantizer:
    """LtSQ anchored at 0 (sign kept) when |B_bar u| is long-tailed, else uniform."""
    lo = float(obs.step_min.min())
    hi = float(obs.step_max.max())
    peak = max(abs(lo), abs(hi), 1e-12)
    one = torch.ones(1, 1, 1)
    if cfg.b_grid == "ltsq" and skewness_test_signed(obs.samples, cfg.ltsq_b_ratio):
        if cfg.ltsq_scale == "mse":
            peak = float(ltsq_params_signed(obs.samples, bits, cfg.ltsq_base).scale)
        # one bit is the sign; the top magnitude code means exactly 0
        return ScanQuantizer(
            "log_signed", bits, one * peak * clip, None, *log_signed_qrange(bits), base=cfg.ltsq_base,
            includes_u=cfg.b_includes_u,
        )
    scale, zp = choose_qparams(one * lo * clip, one * hi * clip, bits, symmetric=False)
    qmin, qmax = qrange(bits, symmetric=False)
    return ScanQuantizer("uniform", bits, scale, zp, qmin, qmax, includes_u=cfg.b_includes_u)


def h_quantizer(obs, bits: int, cfg: SSMQuantConfig, directions: int, clip: float = 1.0) -> ScanQuantizer:
    """TGQ: G time groups, per scan direction (or per channel), optionally per state."""
    d = obs.step_min.shape[1]
    channel_groups = d if cfg.h_channel == "channel" else directions
    return tgq_quantizer(
        obs.step_min, obs.step_max, bits,
        groups=cfg.h_groups, group_mode=cfg.h_group_mode,
        channel_groups=channel_groups, per_state=cfg.h_per_state, clip_ratio=clip,
    )
