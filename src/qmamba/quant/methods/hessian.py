"""Squared-gradient weights of the Hessian-guided metric of PTQ4ViT (Yuan et al., 2021).

PTQ4ViT scores the quantization of a layer by E[(O_hat - O)^T diag((dL/dO)^2) (O_hat - O)]:
a second-order (Fisher) approximation of the task-loss increase, with L the KL
divergence between the full-precision model's prediction and the prediction of the model
whose preceding layers are already quantized (so the gradient is not zero). We apply it
to the output O of a calibration block (or of the last block of a group): the gradient is
taken with the blocks before it quantized and the block itself and everything after it
in floating point, at the block's output.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from qmamba.quant.config import QuantConfig
from qmamba.quant.engine.blocks import first_image_batches
from qmamba.quant.engine.mechanism import Mechanism


class _LeafOutputs:
    """Forward hook: replace a block's tensor outputs by leaves that require grad."""

    def __init__(self):
        self.leaves: list[torch.Tensor] = []

    def __call__(self, _module, _args, out):
        outs = out if isinstance(out, tuple) else (out,)
        leaves = tuple(o.detach().requires_grad_(True) if torch.is_tensor(o) else o for o in outs)
        self.leaves = [t for t in leaves if torch.is_tensor(t)]
        return leaves if isinstance(out, tuple) else leaves[0]


def fp_probabilities(model: nn.Module, images: list[torch.Tensor], device) -> list[torch.Tensor]:
    """Softmax of the model's logits per batch (call it before anything is quantized)."""
    with torch.no_grad():
        return [F.softmax(model(x.to(device)).float(), dim=-1) for x in images]


def block_output_weights(model: nn.Module, block: nn.Module, images: list[torch.Tensor],
                         fp_probs: list[torch.Tensor], device) -> list[tuple[torch.Tensor | None, ...]]:
    """Per batch, per tensor output of `block`: (dL/dO)^2 normalised to mean 1 (None when
    the gradient is exactly zero there: the metric falls back to the plain squared error)."""
    hook = _LeafOutputs()
    handle = block.register_forward_hook(hook)
    saved = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in saved:
        p.requires_grad_(False)
    weights = []
    try:
        with torch.enable_grad():
            for x, p_fp in zip(images, fp_probs, strict=True):
                logits = model(x.to(device)).float()
                loss = F.kl_div(F.log_softmax(logits, dim=-1), p_fp, reduction="batchmean")
                grads = torch.autograd.grad(loss, hook.leaves, allow_unused=True)
                weights.append(tuple(_normalised_square(g) for g in grads))
    finally:
        handle.remove()
        for p, flag in saved:
            p.requires_grad_(flag)
    return weights


def _normalised_square(g: torch.Tensor | None) -> torch.Tensor | None:
    if g is None:
        return None
    sq = g.detach().float().pow(2)
    mean = sq.mean()
    return None if float(mean) == 0.0 else sq / mean


class HessianMetric(Mechanism):
    """PTQ4ViT's search metric (`vit_ptq.search_metric = "hessian"`): the block search
    weighs its output error by the squared gradients above."""

    @classmethod
    def enabled(cls, config: QuantConfig) -> bool:
        return config.search.enabled and config.vit_ptq.search_metric == "hessian"

    def prepare(self, run) -> None:
        self.images = first_image_batches(run.images, self.config.search.samples)
        self.fp_probs = fp_probabilities(run.qmodel, self.images, run.device)  # nothing quantized yet

    def search_weights(self, run, group_blocks):
        return block_output_weights(run.qmodel, group_blocks[-1], self.images, self.fp_probs, run.device)
