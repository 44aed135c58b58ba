"""Block-wise joint tuning of smoothing scales and step sizes (PTQ4VM's JLSS).

PTQ4VM (Cho et al., 2025, "PTQ4VM: Post-Training Quantization for Visual Mamba") calibrates
per-token static activation scales with SmoothQuant-style smoothing, then, block by block,
learns the smoothing factors and the quantizers' step sizes together by gradient descent
on 1 - cosine(FP block output, quantized block output). Our version, on the quantizers the
engine already built for one block:

- learnable: every smoothing vector s (shared by the input side x / s and the weight side
  w * s of the same Linear, so the float product stays exact), the step sizes of the
  uniform activation quantizers (per tensor or per token) and of the per-channel weight
  quantizers; zero points, log grids and the scan's in-loop quantizers stay as calibrated;
- gradients: LSQ's straight-through estimator for the step sizes
  (`primitives.fake_quant(learnable_scale=True)`), and through the quantized selective scan
  the float scan's gradient (`models.ssm.selective_ssm`);
- Adam, `steps` iterations over the cached block inputs of `samples` calibration images,
  one batch at a time (`tune.batch` images per step, or each cached calibration batch
  whole); the best loss seen is kept (never worse than the start).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from qmamba.nn.point import QuantPoint
from qmamba.quant.config import QuantConfig
from qmamba.quant.engine.blocks import first_images, split_batches
from qmamba.quant.engine.mechanism import Mechanism
from qmamba.quant.quantizers import SmoothedInput, SmoothedWeight, UniformQuantizer, WeightQuantizer


@dataclass
class TunedTensors:
    """The tensors one block's tuning changes, and the loss before and after."""

    tensors: list[torch.Tensor]
    loss_before: float
    loss_after: float


def _cosine_loss(out, target) -> torch.Tensor:
    """1 - cosine similarity per image (flattened), averaged over the outputs of a block."""
    out = out if isinstance(out, tuple) else (out,)
    losses = []
    for o, t in zip(out, target, strict=True):
        if torch.is_tensor(o):
            o2 = o.float().reshape(o.shape[0], -1)  # (b, features)
            t2 = t.float().reshape(t.shape[0], -1)  # (b, features)
            losses.append(1.0 - F.cosine_similarity(o2, t2, dim=1, eps=1e-12).mean())
    return torch.stack(losses).mean()


def _clear_weight_caches(block: nn.Module) -> None:
    for m in block.modules():
        if isinstance(m, WeightQuantizer):
            m.clear_cache()  # its input w * s or its step size may have changed


def _tie_smoothing(block: nn.Module) -> None:
    """Make the weight side of each smoothed Linear use the input side's tensor."""
    for module in block.modules():
        inp, wq = getattr(module, "input_quant", None), getattr(module, "weight_quant", None)
        if isinstance(inp, QuantPoint) and isinstance(wq, QuantPoint):
            if isinstance(inp.quantizer, SmoothedInput) and isinstance(wq.quantizer, SmoothedWeight):
                wq.quantizer.smooth = inp.quantizer.smooth  # one tensor for both sides


def _untie_smoothing(block: nn.Module) -> None:
    """Give each weight side its own copy of the (equal) smoothing vector again:
    saved tensors must not share memory."""
    for m in block.modules():
        if isinstance(m, SmoothedWeight):
            m.smooth = m.smooth.detach().clone()


def learnable_tensors(block: nn.Module) -> list[torch.Tensor]:
    """The smoothing vectors and step sizes of `block`'s quantizers, each once.

    The weight side's vector of a smoothed Linear is left out: `_tie_smoothing` makes it
    the input side's tensor while tuning.
    """
    out: dict[int, torch.Tensor] = {}
    for module in block.modules():
        if isinstance(module, SmoothedInput):
            out.setdefault(id(module.smooth), module.smooth)
        if isinstance(module, UniformQuantizer):  # includes WeightQuantizer
            out.setdefault(id(module.scale), module.scale)
    return list(out.values())


def tune_block(block: nn.Module, inputs: list[tuple], targets: list[tuple], steps: int, lr: float) -> TunedTensors:
    """Tune `block`'s learnable quantizer tensors in place (see the module docstring).

    `inputs`: cached (args, kwargs) of the block on the quantized trunk; `targets`: the
    float block's outputs for the same images, as (outputs tuple, {}).
    """
    _tie_smoothing(block)
    tensors = learnable_tensors(block)
    frozen = [p for p in block.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    originals = [t.detach().clone() for t in tensors]

    def total_loss() -> float:
        with torch.no_grad():
            return sum(float(_cosine_loss(block(*a, **k), t)) for (a, k), (t, _) in zip(inputs, targets, strict=True))

    try:
        before = best = total_loss()
        best_values = originals
        if not tensors or steps <= 0 or not inputs:
            return TunedTensors(tensors, before, before)
        for t in tensors:
            t.requires_grad_(True)
        opt = torch.optim.Adam(tensors, lr=lr)
        with torch.enable_grad():
            for step in range(steps):
                (args, kwargs), (target, _) = inputs[step % len(inputs)], targets[step % len(targets)]
                opt.zero_grad(set_to_none=True)
                loss = _cosine_loss(block(*args, **kwargs), target)
                loss.backward()
                opt.step()
                with torch.no_grad():
                    for t, t0 in zip(tensors, originals, strict=True):
                        t.clamp_(min=1e-3 * float(t0.abs().min().clamp(min=1e-8)))  # steps and factors stay > 0
        for t in tensors:
            t.requires_grad_(False)
        _clear_weight_caches(block)
        after = total_loss()
        if after < best:
            best, best_values = after, None
        if best_values is not None:  # tuning made it worse: keep the calibrated values
            with torch.no_grad():
                for t, t0 in zip(tensors, best_values, strict=True):
                    t.copy_(t0)
        return TunedTensors(tensors, before, best)
    finally:
        for t in tensors:
            t.requires_grad_(False)
        _clear_weight_caches(block)
        _untie_smoothing(block)
        for p in frozen:
            p.requires_grad_(True)


class JLSS(Mechanism):
    """PTQ4VM's block-wise tuning (`tune.jlss`), after each block is built."""

    @classmethod
    def enabled(cls, config: QuantConfig) -> bool:
        return config.tune.jlss

    def __init__(self, config: QuantConfig):
        super().__init__(config)
        self.records: list[dict] = []

    def tune_block(self, run, index, block, inputs, targets) -> None:
        n, size = self.config.tune.samples, self.config.tune.batch
        inputs, targets = first_images(inputs, n), first_images(targets, n)
        if size is not None:  # minibatches: each Adam step on `size` images
            inputs, targets = split_batches(inputs, size), split_batches(targets, size)
        tuned = tune_block(block, inputs, targets, self.config.tune.steps, self.config.tune.lr)
        self.records.append({"block": index, "loss_before": tuned.loss_before, "loss_after": tuned.loss_after})

    def finish(self, run) -> None:
        if self.records:
            run.info["jlss"] = self.records
