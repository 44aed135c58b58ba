"""Running calibration blocks on cached inputs.

Calibration keeps, per block, the block's positional inputs for every calibration batch
as `(args, kwargs)` pairs: `first_block_inputs` captures them at the first block,
`run_block` maps them through a block, `group_loss` scores a group of blocks against the
float model's outputs.
"""
from __future__ import annotations

import torch
import torch.nn as nn


class _StopForward(Exception):
    pass


def first_block_inputs(model, first_block: nn.Module, images, device) -> list[tuple]:
    """Run `model` on each batch until `first_block`; return its positional inputs."""
    captured = []

    def hook(_module, args, kwargs):
        captured.append((tuple(a.detach() if torch.is_tensor(a) else a for a in args), dict(kwargs)))
        raise _StopForward

    handle = first_block.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for x in images:
            try:
                model(x.to(device))
            except _StopForward:
                pass
    finally:
        handle.remove()
    return captured


def run_block(block: nn.Module, inputs: list[tuple]) -> list[tuple]:
    """The block's outputs on every cached input, cached the same way."""
    outs = []
    for args, kwargs in inputs:
        out = block(*args, **kwargs)
        outs.append(((*out,) if isinstance(out, tuple) else (out,), {}))
    return outs


def group_loss(blocks, inputs, targets, weights=None) -> float:
    """Mean squared error between the output of `blocks` run in sequence and `targets`;
    with `weights` (per batch, per output tensor, or None) a weighted squared error."""
    total, count = 0.0, 0
    for b, ((args, kwargs), (target, _)) in enumerate(zip(inputs, targets, strict=True)):
        for block in blocks:
            out = block(*args, **kwargs)
            out = out if isinstance(out, tuple) else (out,)
            args, kwargs = out, {}
        w_batch = weights[b] if weights is not None else (None,) * len(out)
        for o, t, w in zip(out, target, w_batch, strict=True):
            if torch.is_tensor(o) and o is not None:
                err = (o.float() - t.float()).pow(2)
                total += float((err * w).sum() if w is not None else err.sum())
                count += o.numel()
    return total / max(count, 1)


def first_image_batches(images: list[torch.Tensor], n: int) -> list[torch.Tensor]:
    """The first `n` images as batches cut like `first_images` cuts the cached inputs."""
    out, taken = [], 0
    for x in images:
        if taken >= n:
            break
        k = min(x.shape[0], n - taken)
        out.append(x[:k])
        taken += k
    return out


def first_images(batches: list[tuple], n: int) -> list[tuple]:
    """The cached (args, kwargs) of the first `n` images (tensors sliced on dim 0)."""
    out, taken = [], 0
    for args, kwargs in batches:
        if taken >= n:
            break
        size = next(a.shape[0] for a in args if torch.is_tensor(a))
        k = min(size, n - taken)
        out.append((tuple(a[:k] if torch.is_tensor(a) else a for a in args), kwargs))
        taken += k
    return out


def split_batches(batches: list[tuple], size: int) -> list[tuple]:
    """The cached (args, kwargs) re-cut into batches of at most `size` images (tensors
    sliced on dim 0, in order; a batch's tail stays its own smaller batch)."""
    out = []
    for args, kwargs in batches:
        n = next(a.shape[0] for a in args if torch.is_tensor(a))
        for start in range(0, n, size):
            out.append((tuple(a[start:start + size] if torch.is_tensor(a) else a for a in args), kwargs))
    return out


class WithoutQuantizers:
    """A callable that runs `model` with the quantizers of `plans` removed (restored after)."""

    def __init__(self, model, plans):
        self.model, self.plans = model, plans

    def __call__(self, x):
        saved = [p.point.quantizer for p in self.plans]
        for p in self.plans:
            p.point.quantizer = None
        try:
            return self.model(x)
        finally:
            for p, q in zip(self.plans, saved, strict=True):
                p.point.quantizer = q
