"""Round-robin sharding of the evaluation batches (the two-process runs are in
tests/test_dist.py)."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

from qmamba.eval import evaluate
from qmamba.eval.distributed import (
    RoundRobinBatchSampler,
    batch_ranges,
    evaluate_sharded,
    merge_shards,
    shard_sizes,
)


@pytest.mark.parametrize("n,batch,world", [(45, 8, 2), (10, 3, 4), (3, 8, 4), (64, 8, 8), (1, 1, 3), (0, 4, 2)])
def test_ranks_share_the_single_process_batches_exactly(n, batch, world):
    single = [list(r) for r in batch_ranges(n, batch)]
    assert [i for b in single for i in b] == list(range(n))
    assert all(len(b) == batch for b in single[:-1])
    per_rank = [list(RoundRobinBatchSampler(n, batch, r, world)) for r in range(world)]
    # batch k goes to rank k % world, unchanged: the same batches, none padded or repeated
    for r, batches in enumerate(per_rank):
        assert batches == single[r::world]
        assert len(RoundRobinBatchSampler(n, batch, r, world)) == len(batches)
    images = sorted(i for batches in per_rank for b in batches for i in b)
    assert images == list(range(n))
    sizes = shard_sizes(n, batch, world)
    assert sizes == [sum(map(len, b)) for b in per_rank] and sum(sizes) == n
    assert max(sizes) - min(sizes) <= batch  # at most one batch apart


def test_bad_arguments():
    with pytest.raises(ValueError, match="batch size"):
        batch_ranges(10, 0)
    with pytest.raises(ValueError, match="rank 2"):
        RoundRobinBatchSampler(10, 2, 2, 2)


def test_without_a_process_group_it_is_evaluate():
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(23, 5, generator=g), torch.randint(0, 3, (23,), generator=g))
    torch.manual_seed(0)
    model = nn.Linear(5, 3)
    seen = []
    got = evaluate_sharded(model, data, 4, "cpu", progress=seen.append)
    want = evaluate(model, DataLoader(data, batch_size=4))
    assert (got.correct1, got.correct5, got.num_images) == (want.correct1, want.correct5, 23)
    assert got.top1 == want.top1 and sum(seen) == 23


@pytest.mark.parametrize("n,batch,world", [(45, 8, 2), (10, 3, 4), (3, 8, 4), (1, 1, 3), (0, 4, 2)])
def test_merge_shards_undoes_the_round_robin_deal(n, batch, world):
    values = torch.arange(n) * 3 + 1  # (n,)
    pieces = [torch.cat([values[list(b)] for b in RoundRobinBatchSampler(n, batch, r, world)] or
                        [torch.zeros(0, dtype=values.dtype)]) for r in range(world)]
    assert torch.equal(merge_shards(pieces, n, batch), values)
    if n > 1:
        with pytest.raises(ValueError, match="rank 0 sent"):
            merge_shards([pieces[0][:-1], *pieces[1:]], n, batch)


def test_without_a_process_group_the_hits_are_evaluate_s():
    g = torch.Generator().manual_seed(3)
    data = TensorDataset(torch.randn(23, 5, generator=g), torch.randint(0, 3, (23,), generator=g))
    torch.manual_seed(0)
    model = nn.Linear(5, 3)
    got = evaluate_sharded(model, data, 4, "cpu")
    want = evaluate(model, DataLoader(data, batch_size=4))
    assert torch.equal(got.hits1, want.hits1) and torch.equal(got.hits5, want.hits5)
