"""Activation-entropy grouping of consecutive blocks (Q-VLM, Wang et al., 2024).

Q-VLM observes that the cross-layer dependency of the output discretization error
correlates with the entropy of the activations, and uses the entropy as a cheap proxy to
partition the network into blocks that are searched jointly: large blocks capture the
dependency, small ones keep the search cheap.

Our interpretation (the paper's exact partition rule was not available to us as code):
- the proxy of calibration block i is the Shannon entropy (bits) of its first output
  tensor quantized to 8 bits over its observed range on the float model, i.e. how much
  information the block passes on at a usual activation precision;
- block i is joined with block i + 1 in one group when its entropy exceeds the
  `quantile` of all the blocks' entropies (strong dependency), as long as the group
  holds fewer than `max_group` blocks; otherwise a group ends after block i.
"""
from __future__ import annotations

import contextlib

import torch

from qmamba.quant.config import QuantConfig
from qmamba.quant.engine.mechanism import Mechanism

ENTROPY_BINS = 256  # 8-bit activation
SAMPLES_PER_BATCH = 1 << 15  # values kept per block and batch (seeded subsample)


class OutputSampler:
    """Forward hook that keeps a bounded, seeded sample of a block's first output."""

    def __init__(self, seed: int = 0):
        self.samples: list[torch.Tensor] = []
        self._gen = torch.Generator().manual_seed(seed)

    def __call__(self, _module, _args, out):
        t = out[0] if isinstance(out, tuple) else out
        flat = t.detach().float().flatten().cpu()
        if flat.numel() > SAMPLES_PER_BATCH:
            idx = torch.randperm(flat.numel(), generator=self._gen)[:SAMPLES_PER_BATCH]
            flat = flat[idx]
        self.samples.append(flat)

    def entropy(self) -> float:
        return activation_entropy(torch.cat(self.samples))


def activation_entropy(values: torch.Tensor, bins: int = ENTROPY_BINS) -> float:
    """Entropy in bits of `values` quantized uniformly to `bins` levels over [min, max]."""
    v = values.detach().double().flatten()
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:
        return 0.0
    counts = torch.histc(v, bins=bins, min=lo, max=hi)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * torch.log2(p)).sum())


def group_blocks(entropies: list[float], quantile: float = 0.5, max_group: int = 2) -> list[list[int]]:
    """Consecutive groups of block indices: block i joins block i + 1 when its entropy
    exceeds the `quantile` of `entropies` and the group has room (`max_group`)."""
    if not entropies:
        return []
    threshold = float(torch.quantile(torch.tensor(entropies, dtype=torch.float64), quantile))
    groups, current = [], []
    for i, h in enumerate(entropies):
        current.append(i)
        last = i == len(entropies) - 1
        if last or not (h > threshold and len(current) < max_group):
            groups.append(current)
            current = []
    return groups


class EntropyGroups(Mechanism):
    """Q-VLM's grouping (`vit_ptq.entropy_groups`): sample every block's output during the
    float pass, then group the blocks by entropy; the search runs per group."""

    @classmethod
    def enabled(cls, config: QuantConfig) -> bool:
        return config.vit_ptq.entropy_groups

    @contextlib.contextmanager
    def trunk_hooks(self, run):
        self.samplers = [OutputSampler(self.config.seed) for _ in run.blocks]
        handles = [b.register_forward_hook(s) for b, s in zip(run.blocks, self.samplers, strict=True)]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def block_groups(self, run) -> list[list[int]]:
        entropies = [s.entropy() for s in self.samplers]
        cfg = self.config.vit_ptq
        groups = group_blocks(entropies, cfg.entropy_quantile, cfg.max_group)
        run.info["block_entropy_bits"] = entropies
        run.info["block_groups"] = groups
        return groups
