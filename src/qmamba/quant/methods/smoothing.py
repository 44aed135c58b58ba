"""SmoothQuant-style smoothing of every Linear input in a block (PTQ4VM).

s_j = max|X_j|^alpha / max|W_j|^(1 - alpha) per input channel j; the input point
quantizes X / s and the weight point W * s (qmamba.quant.quantizers.smoothed), so the
float product is unchanged. The input statistics are observed again on X / s.
"""
from __future__ import annotations

import torch.nn as nn

from qmamba.nn.point import QuantPoint
from qmamba.quant.config import QuantConfig
from qmamba.quant.engine.blocks import run_block
from qmamba.quant.engine.mechanism import Mechanism
from qmamba.quant.engine.observe import CheckedObserver, new_observer
from qmamba.quant.methods import builders
from qmamba.quant.quantizers import SmoothedInput, SmoothedWeight

SMOOTH_MIN = 1e-5


class _ObserveThenPass(nn.Module):
    """Placed inside SmoothedInput while calibrating: observe x / s, pass it on."""

    def __init__(self, observer):
        super().__init__()
        self.observer = observer

    def forward(self, x):
        self.observer(x)
        return x


def smoothing_pairs(block: nn.Module, plans) -> list[tuple]:
    """(module, input plan, weight plan) of every Linear in `block` whose input and weight
    are both planned (no stem/head tags)."""
    by_point = {id(p.point): p for p in plans}
    pairs = []
    for module in block.modules():
        inp, wq = getattr(module, "input_quant", None), getattr(module, "weight_quant", None)
        if not isinstance(inp, QuantPoint) or not isinstance(wq, QuantPoint) or inp.tags:
            continue
        if id(inp) not in by_point or id(wq) not in by_point or module.weight.dim() != 2:
            continue
        pairs.append((module, by_point[id(inp)], by_point[id(wq)]))
    return pairs


def apply_smoothing(block: nn.Module, plans, config: QuantConfig, inputs, alpha: float) -> None:
    """Smooth every (input, weight) pair of `block` with factor `alpha`; the inputs'
    observers must have tracked per-channel maxima (`track_channels`)."""
    pairs = []
    for module, p_in, p_w in smoothing_pairs(block, plans):
        act_max = p_in.observer.channel_absmax()  # (in_features,)
        w_max = module.weight.detach().abs().amax(dim=0).float()  # (in_features,)
        s = (act_max.clamp(min=SMOOTH_MIN) ** alpha) / (w_max.clamp(min=SMOOTH_MIN) ** (1 - alpha))
        s = s.clamp(min=SMOOTH_MIN)
        p_in.observer = new_observer(p_in, config)
        p_in.point.quantizer = SmoothedInput(_ObserveThenPass(CheckedObserver(p_in.observer, p_in)), s,
                                             p_in.point.channel_axis)
        p_w.point.quantizer = SmoothedWeight(nn.Identity(), s)  # keeps the float product while observing
        pairs.append((p_in, p_w, s))
    if not pairs:
        return
    run_block(block, inputs)
    for p_in, p_w, s in pairs:
        xmin, xmax = p_in.observer.range(p_in.bits)
        inner = builders.act_quantizer(xmin, xmax, p_in.bits, 1.0, p_in.observer.granularity)
        p_in.point.quantizer = SmoothedInput(inner, s, p_in.point.channel_axis)
        w = p_w.observer.weight * s.view(1, -1)
        p_w.point.quantizer = SmoothedWeight(
            builders.weight_quantizer(w, p_w.bits, config.weight.observer, p_w.point.weight_channel_dims), s
        )
        p_in.info["smoothing_alpha"] = alpha
        p_in.searchable = False  # its range is the smoothed one; the search does not revisit it


class Smoothing(Mechanism):
    """`act.smoothing_alpha`: smooth a block's Linear inputs once it has been observed."""

    @classmethod
    def enabled(cls, config: QuantConfig) -> bool:
        return config.act.smoothing_alpha is not None

    def after_observe(self, run, block, plans, inputs) -> None:
        apply_smoothing(block, plans, self.config, inputs, self.config.act.smoothing_alpha)
