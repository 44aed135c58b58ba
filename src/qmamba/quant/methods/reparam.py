"""Scale reparameterization of RepQ-ViT (Li et al., 2023) across (norm, linear) pairs.

RepQ-ViT calibrates the output X of a LayerNorm with per-channel quantization
parameters (s_c, z_c), then moves the per-channel part into the model so that inference
uses one per-tensor quantizer: with s~ = mean(s), z~ = round(mean(z)),
r1 = s / s~ and r2 = z - z~ (integers),

    norm:   gamma <- gamma / r1,   beta <- beta / r1 + s~ * r2
    linear: W[:, c] <- W[:, c] * r1_c,   b <- b - W_folded (s~ * r2)

and round(X_folded / s~) + z~ = round(X_c / s_c) + z_c: the per-tensor quantizer on the
folded tensor reproduces the per-channel one exactly, and the float output of the pair
is unchanged.

Our norms do not all have the biases this needs. Vim's RMSNorm has a weight only and
in_proj / out_proj / the patch-merging reduction have no bias. For those pairs only the
scales r1 are folded (norm weight, linear weight); the shift s~ * r2 stays in the input
quantizer as per-channel integer zero points z_c = z~ + r2_c on top of the per-tensor
scale s~. That is the same arithmetic: an integer kernel applies it as the constant
correction s~ W (r2) of the accumulator, which is what the folded linear bias holds.
Where both biases exist (VMamba's norm2 -> mlp.fc1) the full fold above is done and the
input quantizer is per tensor in scale and zero point.

Pairs come from the blocks themselves (`block.norm_linear_pairs()`), never from names.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from qmamba.models import contract
from qmamba.quant.config import QuantConfig
from qmamba.quant.engine.mechanism import Mechanism
from qmamba.quant.observers.base import MSEObserver
from qmamba.quant.primitives import choose_qparams
from qmamba.quant.quantizers import UniformQuantizer

SAMPLES = 1 << 16  # values kept per point (spread over the channels) for the clipping search
CANDIDATES = 20


def norm_linear_pairs(block: nn.Module) -> list[tuple[nn.Module, nn.Module]]:
    """The (norm, linear) pairs `block` declares (its submodules' included: QuantBlock)."""
    return contract.norm_linear_pairs(block)


def channel_observer(channel_axis: int) -> MSEObserver:
    """Per-channel ranges with the clipping searched per channel (least squared error)."""
    return MSEObserver(keep_dims=(channel_axis,), num_candidates=CANDIDATES, max_samples=SAMPLES, min_per_slice=256)


def per_channel_qparams(observer: MSEObserver, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, zero point) per channel, in the keepdim shape of the observed tensors."""
    lo, hi = observer.clip_range(bits)
    return choose_qparams(lo, hi, bits, symmetric=False)


@torch.no_grad()
def fold_pair(norm: nn.Module, linear: nn.Module, scale: torch.Tensor, zero_point: torch.Tensor, bits: int) -> tuple[UniformQuantizer, str]:
    """Fold per-channel (scale, zero_point) (keepdim shape, channels on the linear input's
    channel axis) into `norm` and `linear` in place; returns the inference quantizer of
    the linear's input and how the zero points were handled ("bias" or "zero_point")."""
    shape = scale.shape
    s = scale.flatten().double()  # (C,)
    z = zero_point.flatten().double()  # (C,)
    target_s = s.mean()
    target_z = torch.round(z.mean())
    r1 = s / target_s  # (C,)
    r2 = z - target_z  # (C,) integers
    _scale_(norm.weight, 1.0 / r1)
    if getattr(norm, "bias", None) is not None:
        _scale_(norm.bias, 1.0 / r1)
    w = linear.weight  # (out, C)
    w.copy_((w.double() * r1[None, :]).to(w.dtype))
    one = torch.ones(1)
    if getattr(norm, "bias", None) is not None and getattr(linear, "bias", None) is not None:
        shift = target_s * r2  # (C,)
        norm.bias.copy_((norm.bias.double() + shift).to(norm.bias.dtype))
        linear.bias.copy_((linear.bias.double() - w.double() @ shift).to(linear.bias.dtype))
        q = UniformQuantizer(one * target_s.float(), one * target_z.float(), bits, symmetric=False)
        return q, "bias"
    zp = (target_z + r2).float().reshape(shape)  # per channel: z~ + r2 = z
    q = UniformQuantizer(target_s.float().reshape([1] * len(shape)), zp, bits, symmetric=False)
    return q, "zero_point"


def _scale_(param: torch.Tensor, factor: torch.Tensor) -> None:
    param.copy_((param.double() * factor).to(param.dtype))


def reparam_pairs(block: nn.Module, plans) -> list[tuple]:
    """(input plan, weight plan, (norm, linear)) of the block's norm -> linear pairs whose
    linear input sees the norm output itself (no active rotation) and has no stem/head tag."""
    by_point = {id(p.point): p for p in plans}
    out = []
    for norm, linear in norm_linear_pairs(block):
        rotation = getattr(linear, "input_rotation", None)
        if rotation is not None and rotation.active:
            continue  # the input point sees the rotated norm output, not the norm output
        p_in = by_point.get(id(getattr(linear, "input_quant", None)))
        p_w = by_point.get(id(getattr(linear, "weight_quant", None)))
        if p_in is not None and p_w is not None and not p_in.point.tags:
            out.append((p_in, p_w, (norm, linear)))
    return out


class Reparameterization(Mechanism):
    """RepQ-ViT (`vit_ptq.reparam`): per-channel observers at the norm outputs, folded
    into norm + linear once observed (the per-tensor quantizer is then fixed)."""

    @classmethod
    def enabled(cls, config: QuantConfig) -> bool:
        return config.vit_ptq.reparam

    def before_observe(self, run, block, plans) -> None:
        self.pairs = reparam_pairs(block, plans)
        for p_in, _, _ in self.pairs:
            p_in.observer = channel_observer(p_in.point.channel_axis)

    def after_observe(self, run, block, plans, inputs) -> None:
        for p_in, p_w, (norm, linear) in self.pairs:
            scale, zero_point = per_channel_qparams(p_in.observer, p_in.bits)
            p_in.point.quantizer, how = fold_pair(norm, linear, scale, zero_point, p_in.bits)
            p_in.info["reparam"] = how
            p_in.searchable = False
            p_w.observer.weight = linear.weight.detach()  # the folded weight
