"""Evaluation sharded over the ranks of a torchrun launch, counted exactly.

The images are cut into the single process's batches (consecutive chunks of
`batch_size`, the last one possibly shorter) and the batches are dealt round-robin:
rank r of K runs batches r, r + K, r + 2K, ... So
- every image is evaluated once (no padding: 50,000 images count as 50,000, whatever K),
- every image is evaluated in the same batch as by one process, so even a kernel whose
  result depends on the batch (its size or its other images) gives the same logits,
- the ranks differ by at most one batch of work.
The counts (top-1 hits, top-5 hits, images) are summed over the ranks as int64
(`qmamba.dist.sum_counts`); a rank that fails (e.g. non-finite logits) makes every rank
raise instead of leaving them waiting. The per-image hits (`EvalResult.hits1`, `hits5`)
are then gathered from every rank (`qmamba.dist.all_gather`) and put back in dataset
order (`merge_shards`), so every rank holds the single process's vectors.
"""
from __future__ import annotations

import time
from collections.abc import Callable

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset, Sampler

from qmamba import dist
from qmamba.eval.evaluate import EvalResult, image_hits, make_result


def batch_ranges(num_items: int, batch_size: int) -> list[range]:
    """The single-process batches: index ranges of `batch_size` (the last may be shorter)."""
    if batch_size < 1:
        raise ValueError(f"batch size must be positive, got {batch_size}")
    return [range(i, min(i + batch_size, num_items)) for i in range(0, num_items, batch_size)]


def rank_batch_numbers(num_batches: int, rank: int, world_size: int) -> range:
    """The batches rank `rank` of `world_size` runs: rank, rank + K, ..."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, {world_size})")
    return range(rank, num_batches, world_size)


def shard_sizes(num_items: int, batch_size: int, world_size: int) -> list[int]:
    """Images per rank (they sum to num_items)."""
    batches = batch_ranges(num_items, batch_size)
    return [sum(len(batches[i]) for i in rank_batch_numbers(len(batches), r, world_size))
            for r in range(world_size)]


def merge_shards(pieces: list[torch.Tensor], num_items: int, batch_size: int) -> torch.Tensor:
    """Per-image values of the ranks (`pieces[r]`: rank r's batches in the order it ran
    them) back in dataset order: the inverse of the round-robin deal."""
    world = len(pieces)
    batches = batch_ranges(num_items, batch_size)
    dtype = pieces[0].dtype if pieces else torch.bool
    out = torch.zeros(num_items, dtype=dtype)  # (num_items,)
    for r, piece in enumerate(pieces):
        mine = [batches[b] for b in rank_batch_numbers(len(batches), r, world)]
        if sum(map(len, mine)) != piece.numel():
            raise ValueError(f"rank {r} sent {piece.numel()} values for {sum(map(len, mine))} images")
        at = 0
        for span in mine:
            out[span.start:span.stop] = piece[at:at + len(span)]
            at += len(span)
    return out


class RoundRobinBatchSampler(Sampler[list[int]]):
    """The batches of one rank, as lists of dataset indices (a DataLoader batch_sampler)."""

    def __init__(self, num_items: int, batch_size: int, rank: int, world_size: int):
        batches = batch_ranges(num_items, batch_size)
        self.batch_numbers = rank_batch_numbers(len(batches), rank, world_size)
        self.batches = [batches[i] for i in self.batch_numbers]

    def __iter__(self):
        for batch in self.batches:
            yield list(batch)

    def __len__(self) -> int:
        return len(self.batches)


def evaluate_sharded(
    model: nn.Module,
    dataset: Dataset,
    batch_size: int,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
    progress: Callable[[int], None] | None = None,
) -> EvalResult:
    """Accuracy of `model` on `dataset` with this rank's share of the batches; every rank
    gets the totals. Without a process group: the whole dataset, as `evaluate`."""
    from qmamba.data.loaders import _seed_worker

    sampler = RoundRobinBatchSampler(len(dataset), batch_size, dist.rank(), dist.world_size())
    start = time.time()
    hits = (torch.zeros(0, dtype=torch.bool), torch.zeros(0, dtype=torch.bool))
    error = None
    try:
        if len(sampler):  # a rank may have no batch at all (fewer batches than ranks)
            loader = DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers,
                                worker_init_fn=_seed_worker if num_workers > 0 else None,
                                generator=torch.Generator().manual_seed(0))
            hits = image_hits(model, loader, device, progress, batch_numbers=sampler.batch_numbers)
    except Exception as e:  # every rank must reach the all_reduce; it raises on all of them
        error = e
    counts = (int(hits[0].sum()), int(hits[1].sum()), int(hits[0].numel()))
    correct1, correct5, n = dist.sum_counts(counts, error, "evaluating")
    seconds = dist.max_value(time.time() - start)
    # every rank got here without an error (sum_counts raised otherwise): gather the hits
    pieces = dist.all_gather(hits)
    hits1 = merge_shards([p[0] for p in pieces], len(dataset), batch_size)
    hits5 = merge_shards([p[1] for p in pieces], len(dataset), batch_size)
    return make_result(correct1, correct5, n, seconds, hits1, hits5)
